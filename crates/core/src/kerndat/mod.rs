//! Kernel feature probes ("kerndat"): what this kernel offers a dumper. `tsdump check` prints
//! them and the dump consults them (through the TypeScript cache in src/check.ts), so each probe
//! exercises the real syscall rather than trusting a version number.
//!
//! Probes never fail as a whole: a probe that cannot run reports `supported: false` with the
//! reason in `detail`.

mod memory;
mod ptrace;
mod system;

/// One probed feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Stable name (CRIU's `--feature` name where CRIU has one).
    pub name: &'static str,
    pub supported: bool,
    /// What the probe saw (errno, feature bits, path), for the log and `check --all`.
    pub detail: String,
}

impl Probe {
    pub(crate) fn yes(name: &'static str, detail: impl Into<String>) -> Self {
        Probe { name, supported: true, detail: detail.into() }
    }
    pub(crate) fn no(name: &'static str, detail: impl Into<String>) -> Self {
        Probe { name, supported: false, detail: detail.into() }
    }
    pub(crate) fn from_errno(name: &'static str, what: &str, errno: nix::errno::Errno) -> Self {
        Probe::no(name, format!("{what}: {}", errno.desc()))
    }
}

/// Names of every probe, in the order `probe_all` returns them.
pub const PROBE_NAMES: &[&str] = &[
    "ptrace_seize",
    "get_rseq_conf",
    "ptrace_sigmask",
    "ptrace_syscall_info",
    "seccomp_suspend",
    "mem_dirty_track",
    "pagemap_scan",
    "uffd",
    "uffd_wp_async",
    "vmsplice",
    "memfd",
    "kcmp",
    "cgroup_freezer_v1",
    "cgroup_freezer_v2",
    "timens",
    "tcp_repair",
    "clone3_set_tid",
    "prctl_mm_map",
    "loginuid",
];

/// Runs every probe. Takes a few milliseconds (one short-lived child for the ptrace probes).
pub fn probe_all() -> Vec<Probe> {
    let mut out = ptrace::probe();
    out.push(memory::soft_dirty());
    out.push(memory::pagemap_scan());
    out.extend(memory::userfaultfd());
    out.push(memory::vmsplice());
    out.push(memory::memfd());
    out.push(system::kcmp());
    out.extend(system::cgroup_freezers());
    out.push(system::time_namespace());
    out.push(system::tcp_repair());
    out.push(system::clone3_set_tid());
    out.push(system::prctl_mm_map());
    out.push(system::loginuid());
    debug_assert_eq!(out.iter().map(|p| p.name).collect::<Vec<_>>(), PROBE_NAMES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_reports_once_in_order() {
        let probes = probe_all();
        let names: Vec<_> = probes.iter().map(|p| p.name).collect();
        assert_eq!(names, PROBE_NAMES);
        assert!(probes.iter().all(|p| !p.detail.is_empty()));
    }

    #[test]
    fn features_every_linux_dumper_relies_on() {
        let probes = probe_all();
        let get = |n: &str| probes.iter().find(|p| p.name == n).unwrap().supported;
        // present since 3.x kernels; a "no" here means the probe itself is broken
        assert!(get("vmsplice"));
        assert!(get("memfd"));
    }
}
