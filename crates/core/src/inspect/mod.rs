//! What the kernel shows about a process from outside: procfs (through the procfs crate where it
//! has the field, raw text parsing where it does not) and, for seized threads, ptrace.
//!
//! Every error names the pid and the file it came from.

pub mod fdinfo;
pub mod parse;
pub mod thread;

use std::os::unix::fs::MetadataExt;

use procfs::process::Process;

use crate::error::{Error, ErrorCode, Result};
pub use fdinfo::FdInfoText;

/// Credentials and capability sets (/proc/PID/status).
#[derive(Debug, Clone, Default)]
pub struct Creds {
    /// real, effective, saved, filesystem
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
    pub seccomp_mode: u32,
    pub seccomp_filters: u32,
}

/// Process-wide signal sets from /proc/PID/status (the leader's SigBlk/SigPnd).
#[derive(Debug, Clone, Default)]
pub struct SignalSets {
    pub blocked: u64,
    pub ignored: u64,
    pub caught: u64,
    pub pending: u64,
    pub shared_pending: u64,
}

/// mm fields from /proc/PID/stat (what mm-PID.img's mm_entry wants).
#[derive(Debug, Clone, Default)]
pub struct MmFields {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    /// End of [heap] (page-aligned brk); the exact brk needs sys_brk(0) from the parasite.
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

/// One VMA.
#[derive(Debug, Clone, Default)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// PROT_READ | PROT_WRITE | PROT_EXEC
    pub prot: u32,
    /// MAP_SHARED or MAP_PRIVATE, plus MAP_ANONYMOUS for anonymous and MAP_GROWSDOWN for "gd".
    pub flags: u32,
    pub shared: bool,
    pub pgoff: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    /// The path or the bracketed name as printed (without " (deleted)").
    pub path: Option<String>,
    /// file, anon, heap, stack, vdso, vvar, vvar_vclock, vsyscall, shmem_anon, sysv_shm, other
    pub kind: String,
    pub deleted: bool,
    /// Two-letter VmFlags from smaps (rd, wr, ex, sh, gd, dd, mg, hg, nh, lo, io, ...).
    pub vm_flags: Vec<String>,
    /// A file mapping's file, through /proc/PID/map_files/START-END (None when unreadable).
    pub file: Option<FileStat>,
    /// The permission bits of that map_files link itself (lstat): its owner bits are the access
    /// mode the mapped file was opened with (r, w). None for other kinds, or when unreadable.
    pub link_mode: Option<u32>,
}

/// What stat(2) says of a file the task holds (through one of its /proc links).
#[derive(Debug, Clone, Copy, Default)]
pub struct FileStat {
    pub mode: u32,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
}

impl FileStat {
    /// stat(2) of `path` (following links), None when it cannot be had.
    pub fn of(path: &str) -> Option<FileStat> {
        std::fs::metadata(path).ok().map(|m| FileStat { mode: m.mode(), size: m.size(), dev: m.dev(), ino: m.ino() })
    }
}

impl FdEntry {
    /// The open file's inode: fdinfo's `ino:` where the kernel prints one (anonymous inodes
    /// such as eventfd, where stat through the link gives the shared anon inode), else stat's.
    pub fn file_ino(&self) -> u64 {
        self.info.ino.unwrap_or(self.ino)
    }
}

/// One open file descriptor.
#[derive(Debug, Clone, Default)]
pub struct FdEntry {
    pub fd: i32,
    /// readlink /proc/PID/fd/N
    pub target: String,
    pub info: FdInfoText,
    /// stat of the open file (through the /proc/PID/fd/N magic link).
    pub mode: u32,
    pub dev: u64,
    pub rdev: u64,
    pub ino: u64,
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Default)]
pub struct NamespaceId {
    pub kind: String,
    pub inode: u64,
    pub dev: u64,
}

#[derive(Debug, Clone, Default)]
pub struct CgroupEntry {
    pub hierarchy: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

/// One resource limit; `u64::MAX` is RLIM_INFINITY.
#[derive(Debug, Clone, Default)]
pub struct Rlimit {
    pub resource: u32,
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Sched {
    /// sched_getscheduler() result, SCHED_RESET_ON_FORK bit included.
    pub policy: i32,
    /// sched_getparam() priority (real-time policies only).
    pub priority: i32,
    /// getpriority(PRIO_PROCESS) as a nice value.
    pub nice: i32,
}

/// Everything tsdump reads about one process from procfs.
#[derive(Debug, Clone, Default)]
pub struct ProcessInfo {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub tgid: i32,
    pub nspid: Vec<i32>,
    pub nspgid: Vec<i32>,
    pub nssid: Vec<i32>,
    pub flags: u32,
    pub exit_code: i32,
    pub threads: Vec<i32>,
    pub creds: Creds,
    pub signals: SignalSets,
    pub umask: Option<u32>,
    pub thp_enabled: Option<bool>,
    pub personality: u32,
    pub timerslack_ns: Option<u64>,
    pub mm: MmFields,
    pub vmas: Vec<Vma>,
    /// /proc/PID/auxv's (key, value) pairs before AT_NULL.
    pub auxv: Vec<(u64, u64)>,
    pub exe: Option<String>,
    pub cwd: Option<String>,
    pub root: Option<String>,
    /// stat(2) through /proc/PID/exe, cwd and root.
    pub exe_stat: Option<FileStat>,
    pub cwd_stat: Option<FileStat>,
    pub root_stat: Option<FileStat>,
    pub fds: Vec<FdEntry>,
    pub namespaces: Vec<NamespaceId>,
    pub cgroups: Vec<CgroupEntry>,
    pub rlimits: Vec<Rlimit>,
    pub oom_score_adj: i32,
    pub loginuid: Option<u32>,
    pub sched: Sched,
}

pub(crate) fn procfs_err(pid: i32, file: &str, e: procfs::ProcError) -> Error {
    match e {
        procfs::ProcError::NotFound(_) => Error::new(
            ErrorCode::EsrchTarget,
            format!("pid {pid}: /proc/{pid}/{file}: no such process"),
        ),
        other => Error::new(
            ErrorCode::Procfs,
            format!("pid {pid}: /proc/{pid}/{file}: {other}"),
        ),
    }
}

pub fn io_err(pid: i32, file: &str, e: std::io::Error) -> Error {
    // A task that died after the seize is a zombie until reaped: its files still exist but
    // reading some of them (auxv, environ...) gives ESRCH instead of ENOENT.
    let code = if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
    {
        ErrorCode::EsrchTarget
    } else {
        ErrorCode::Procfs
    };
    Error::new(code, format!("pid {pid}: /proc/{pid}/{file}: {e}"))
}

/// The /proc/PID/task/TID/cgroup files of `threads` ((pid, tid) pairs), each distinct text once:
/// the texts, and for each thread the index of its own (most threads of a tree share one).
pub fn thread_cgroups(threads: &[(i32, i32)]) -> Result<(Vec<String>, Vec<u32>)> {
    let mut texts = Vec::new();
    let mut seen = std::collections::HashMap::new();
    let mut index = Vec::with_capacity(threads.len());
    for &(pid, tid) in threads {
        let text = read_text(pid, &format!("task/{tid}/cgroup"))?;
        let at = *seen.entry(text).or_insert_with_key(|text| {
            texts.push(text.clone());
            texts.len() as u32 - 1
        });
        index.push(at);
    }
    Ok((texts, index))
}

fn read_text(pid: i32, file: &str) -> Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|e| io_err(pid, file, e))
}

fn link(pid: i32, file: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/{file}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The inspection's view of one mapping from smaps (parsed once, by `mem::vma::parse_smaps`,
/// for the page drain and for this).
pub fn vma_from_smaps(v: &crate::mem::Vma) -> Vma {
    let shared = v.shared;
    let mut flags = if shared { libc::MAP_SHARED } else { libc::MAP_PRIVATE } as u32;
    let (mut path, mut deleted) = (None, false);
    let name = v.path.trim();
    let kind = match name {
        "" | "[rollup]" => "anon",
        "[heap]" | "[stack]" | "[vdso]" | "[vvar]" | "[vvar_vclock]" | "[vsyscall]" => {
            path = Some(name.to_string());
            &name[1..name.len() - 1]
        }
        x if x.starts_with("[stack:") => {
            path = Some("[stack]".into());
            "stack"
        }
        x if x.starts_with('[') && x.ends_with(']') => {
            path = Some(x.to_string());
            if x.starts_with("[anon:") {
                "anon"
            } else {
                "other"
            }
        }
        x if x.starts_with("/SYSV") && x.len() >= 13 => {
            path = Some(format!("/SYSV{}", &x[5..13]));
            deleted = true;
            "sysv_shm"
        }
        x => {
            let p = match x.strip_suffix(" (deleted)") {
                Some(p) => {
                    deleted = true;
                    p
                }
                None => x,
            };
            path = Some(p.to_string());
            if p == "/dev/zero" && shared && deleted {
                "shmem_anon"
            } else {
                "file"
            }
        }
    };
    if matches!(kind, "anon" | "heap" | "stack" | "shmem_anon") {
        flags |= libc::MAP_ANONYMOUS as u32;
    }
    if v.has_flag("gd") {
        flags |= libc::MAP_GROWSDOWN as u32;
    }
    let (dev_major, dev_minor) = v
        .dev
        .split_once(':')
        .map(|(a, b)| (u32::from_str_radix(a, 16).unwrap_or(0), u32::from_str_radix(b, 16).unwrap_or(0)))
        .unwrap_or((0, 0));
    Vma {
        start: v.start,
        end: v.end,
        prot: v.prot,
        flags,
        shared,
        pgoff: v.offset,
        dev_major,
        dev_minor,
        inode: v.inode,
        path,
        kind: kind.to_string(),
        deleted,
        vm_flags: v.vm_flags.clone(),
        file: None,
        link_mode: None,
    }
}

/// Fills the VmFlags (and MAP_GROWSDOWN) of `p`'s mappings, read from maps, from `smaps` read
/// meanwhile: the range `hide` (tsdump's scratch, mapped in between) is taken out of it first.
pub fn add_vm_flags(pid: i32, p: &mut ProcessInfo, smaps: &[crate::mem::Vma], hide: (u64, usize)) -> Result<()> {
    let (lo, hi) = (hide.0, hide.0 + hide.1 as u64);
    let smaps: Vec<crate::mem::Vma> = smaps.iter().flat_map(|v| crate::mem::subtract(v, lo, hi)).collect();
    let mut i = 0;
    for v in p.vmas.iter_mut() {
        // both in address order (a mapping armed for uffd-wp meanwhile may show split: its
        // pieces differ only in that flag)
        while i < smaps.len() && smaps[i].end <= v.start {
            i += 1;
        }
        let s = smaps.get(i).filter(|s| s.start <= v.start).ok_or_else(|| {
            Error::new(ErrorCode::Procfs, format!("pid {pid}: /proc/{pid}/smaps has no mapping {:#x}-{:#x} of its maps", v.start, v.end))
        })?;
        v.vm_flags = s.vm_flags.clone();
        if s.has_flag("gd") {
            v.flags |= libc::MAP_GROWSDOWN as u32;
        }
    }
    Ok(())
}

/// VMAs parsed from smaps (or maps) text: pure, for fixtures and cross-checks.
pub fn parse_vmas(text: &str) -> Result<Vec<Vma>> {
    Ok(crate::mem::vma::parse_smaps(text)?.iter().map(vma_from_smaps).collect())
}

/// Reads the fd table with fdinfo and a stat of each open file.
pub fn read_fds(pid: i32) -> Result<Vec<FdEntry>> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(|e| io_err(pid, "fd", e))?;
    let mut fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    let mut out = Vec::with_capacity(fds.len());
    for fd in fds {
        out.extend(read_fd(pid, fd)?);
    }
    Ok(out)
}

/// One fd of the table with its fdinfo and a stat of the open file; None if it is closed.
pub fn read_fd(pid: i32, fd: i32) -> Result<Option<FdEntry>> {
    let Some(target) = link(pid, &format!("fd/{fd}")) else {
        return Ok(None);
    };
    let info = match std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) {
        Ok(t) => fdinfo::parse_fdinfo(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(pid, &format!("fdinfo/{fd}"), e)),
    };
    let mut entry = FdEntry {
        fd,
        target,
        info,
        ..Default::default()
    };
    if let Ok(md) = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")) {
        entry.mode = md.mode();
        entry.dev = md.dev();
        entry.rdev = md.rdev();
        entry.ino = md.ino();
        entry.size = md.size();
        entry.uid = md.uid();
        entry.gid = md.gid();
    }
    Ok(Some(entry))
}

/// sched policy, rt priority and nice of one task.
pub fn read_sched(tid: i32) -> Result<Sched> {
    // SAFETY: plain syscalls on a pid; no memory is passed except `param`, a local.
    let policy = unsafe { libc::sched_getscheduler(tid) };
    if policy < 0 {
        return Err(Error::from_errno(
            nix::errno::Errno::last(),
            tid,
            "sched_getscheduler",
        ));
    }
    // SAFETY: sched_param is plain integers (musl's has more fields than glibc's).
    let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
    // SAFETY: `param` is a valid local out-parameter.
    if unsafe { libc::sched_getparam(tid, &mut param) } < 0 {
        return Err(Error::from_errno(
            nix::errno::Errno::last(),
            tid,
            "sched_getparam",
        ));
    }
    nix::errno::Errno::clear();
    // SAFETY: getpriority takes only integers; -1 is a valid result, so errno tells failure.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
    if nice == -1 && nix::errno::Errno::last_raw() != 0 {
        return Err(Error::from_errno(
            nix::errno::Errno::last(),
            tid,
            "getpriority",
        ));
    }
    Ok(Sched {
        policy,
        priority: param.sched_priority,
        nice,
    })
}

/// /proc/PID/smaps, parsed for the page drain (`mem`) and for the inspection alike.
pub fn read_smaps(pid: i32) -> Result<Vec<crate::mem::Vma>> {
    crate::mem::vma::parse_smaps(&read_text(pid, "smaps")?).map_err(|e| Error::new(e.code, format!("pid {pid}: /proc/{pid}/smaps: {}", e.message)))
}

/// Reads everything procfs shows about `pid`. Works on running and seized processes alike; for
/// a consistent picture call it while the process is seized.
pub fn inspect_process(pid: i32) -> Result<ProcessInfo> {
    inspect_process_with(pid, &read_smaps(pid)?)
}

/// `inspect_process` with the mappings already read (`read_smaps`).
pub fn inspect_process_with(pid: i32, smaps: &[crate::mem::Vma]) -> Result<ProcessInfo> {
    use procfs::FromRead;
    let p = Process::new(pid).map_err(|e| procfs_err(pid, "", e))?;
    let stat = p.stat().map_err(|e| procfs_err(pid, "stat", e))?;
    let status_text = read_text(pid, "status")?;
    let st = procfs::process::Status::from_read(status_text.as_bytes()).map_err(|e| procfs_err(pid, "status", e))?;
    let auxv_raw =
        std::fs::read(format!("/proc/{pid}/auxv")).map_err(|e| io_err(pid, "auxv", e))?;
    let limits_text = read_text(pid, "limits")?;
    let mut info = ProcessInfo {
        pid,
        comm: stat.comm.clone(),
        state: stat.state,
        ppid: stat.ppid,
        pgid: stat.pgrp,
        sid: stat.session,
        tgid: st.tgid,
        nspid: st.nspid.clone().unwrap_or_default(),
        nspgid: st.nspgid.clone().unwrap_or_default(),
        nssid: st.nssid.clone().unwrap_or_default(),
        flags: stat.flags,
        exit_code: stat.exit_code.unwrap_or(0),
        threads: {
            let mut t = crate::freezer::procinfo::threads(pid);
            t.sort_unstable();
            t
        },
        creds: parse::creds(&status_text),
        signals: SignalSets {
            blocked: st.sigblk,
            ignored: st.sigign,
            caught: st.sigcgt,
            pending: st.sigpnd,
            shared_pending: st.shdpnd,
        },
        umask: st.umask,
        thp_enabled: st.thp_enabled,
        personality: parse::personality(&read_text(pid, "personality")?).ok_or_else(|| {
            Error::new(
                ErrorCode::Procfs,
                format!("pid {pid}: /proc/{pid}/personality: not hex"),
            )
        })?,
        timerslack_ns: std::fs::read_to_string(format!("/proc/{pid}/timerslack_ns"))
            .ok()
            .and_then(|t| t.trim().parse().ok()),
        mm: MmFields {
            start_code: stat.startcode,
            end_code: stat.endcode,
            start_data: stat.start_data.unwrap_or(0),
            end_data: stat.end_data.unwrap_or(0),
            start_brk: stat.start_brk.unwrap_or(0),
            brk: 0,
            start_stack: stat.startstack,
            arg_start: stat.arg_start.unwrap_or(0),
            arg_end: stat.arg_end.unwrap_or(0),
            env_start: stat.env_start.unwrap_or(0),
            env_end: stat.env_end.unwrap_or(0),
        },
        vmas: {
            // one stat per mapped file (a library is mapped four or five times)
            let mut seen: std::collections::HashMap<(u32, u32, u64), Option<FileStat>> = std::collections::HashMap::new();
            smaps
                .iter()
                .map(|m| {
                    let mut v = vma_from_smaps(m);
                    if v.kind == "file" {
                        let link = format!("/proc/{pid}/map_files/{:x}-{:x}", v.start, v.end);
                        // each mapping's own open file: its mode, unlike the file's stat, is per VMA
                        v.link_mode = std::fs::symlink_metadata(&link).ok().map(|m| m.mode() & 0o7777);
                        v.file = *seen.entry((v.dev_major, v.dev_minor, v.inode)).or_insert_with(|| FileStat::of(&link));
                    }
                    v
                })
                .collect()
        },
        auxv: parse::auxv(&auxv_raw),
        exe: link(pid, "exe"),
        cwd: link(pid, "cwd"),
        root: link(pid, "root"),
        exe_stat: FileStat::of(&format!("/proc/{pid}/exe")),
        cwd_stat: FileStat::of(&format!("/proc/{pid}/cwd")),
        root_stat: FileStat::of(&format!("/proc/{pid}/root")),
        fds: read_fds(pid)?,
        namespaces: Vec::new(),
        cgroups: Vec::new(),
        rlimits: parse::limits(&limits_text).map_err(|m| {
            Error::new(
                ErrorCode::Procfs,
                format!("pid {pid}: /proc/{pid}/limits: {m}"),
            )
        })?,
        oom_score_adj: read_text(pid, "oom_score_adj")?.trim().parse().unwrap_or(0),
        loginuid: std::fs::read_to_string(format!("/proc/{pid}/loginuid"))
            .ok()
            .and_then(|t| t.trim().parse().ok()),
        sched: read_sched(pid)?,
    };
    // The current brk is not in procfs at all (CRIU asks the parasite for sys_brk(0)); the end of
    // [heap] is brk rounded up to a page, the best value visible from outside.
    info.mm.brk = info
        .vmas
        .iter()
        .find(|v| v.kind == "heap")
        .map(|v| v.end)
        .unwrap_or(info.mm.start_brk);
    match p.namespaces() {
        Ok(ns) => {
            let mut v: Vec<NamespaceId> =
                ns.0.values()
                    .map(|n| NamespaceId {
                        kind: n.ns_type.to_string_lossy().into_owned(),
                        inode: n.identifier,
                        dev: n.device_id,
                    })
                    .collect();
            v.sort_by(|a, b| a.kind.cmp(&b.kind));
            info.namespaces = v;
        }
        Err(e) => return Err(procfs_err(pid, "ns", e)),
    }
    match p.cgroups() {
        Ok(cg) => {
            info.cgroups =
                cg.0.into_iter()
                    .map(|c| CgroupEntry {
                        hierarchy: c.hierarchy,
                        controllers: c.controllers,
                        path: c.pathname,
                    })
                    .collect()
        }
        Err(e) => return Err(procfs_err(pid, "cgroup", e)),
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cgroups_reads_each_distinct_text_once() {
        let me = std::process::id() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            let _ = stop_rx.recv();
        });
        let other = rx.recv().unwrap();
        let (texts, index) = thread_cgroups(&[(me, me), (me, other)]).unwrap();
        stop_tx.send(()).unwrap();
        h.join().unwrap();
        assert_eq!(texts, [std::fs::read_to_string("/proc/self/cgroup").unwrap()]);
        assert_eq!(index, [0, 0]);
        let e = thread_cgroups(&[(me, me), (me, i32::MAX)]).unwrap_err();
        assert!(e.message.contains(&format!("/proc/{me}/task/{}/cgroup", i32::MAX)), "{}", e.message);
    }

    // Captured from a kernel 6.18 smaps, trimmed to the lines that matter.
    const SMAPS: &str = "\
55d4c6a00000-55d4c6a01000 r--p 00000000 fe:00 131090                     /opt/app/bin
Size:                  4 kB
VmFlags: rd mr mw me sd 
55d4c7e2b000-55d4c7e4c000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
VmFlags: rd wr mr mw me ac sd 
7f1c2a000000-7f1c2a100000 rw-s 00000000 00:01 2049                       /dev/zero (deleted)
VmFlags: rd wr sh mr mw me ms sd 
7f1c2a200000-7f1c2a201000 r--s 00001000 fe:00 4242                       /tmp/gone file (deleted)
VmFlags: rd sh mr mw me ms sd 
7f1c2a300000-7f1c2a302000 rw-p 00000000 00:00 0 
VmFlags: rd wr mr mw me ac dd sd 
7ffd1c5e0000-7ffd1c601000 rw-p 00000000 00:00 0                          [stack]
VmFlags: rd wr mr mw me gd ac sd 
7ffd1c7f0000-7ffd1c7f4000 r--p 00000000 00:00 0                          [vvar]
VmFlags: rd mr pf io de dd sd 
7ffd1c7f4000-7ffd1c7f6000 r--p 00000000 00:00 0                          [vvar_vclock]
VmFlags: rd mr pf io de dd sd 
7ffd1c7f6000-7ffd1c7f8000 r-xp 00000000 00:00 0                          [vdso]
VmFlags: rd ex mr mw me de sd 
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
VmFlags: ex 
";

    #[test]
    fn vmas_from_smaps_text() {
        let v = parse_vmas(SMAPS).unwrap();
        let kinds: Vec<&str> = v.iter().map(|x| x.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "file",
                "heap",
                "shmem_anon",
                "file",
                "anon",
                "stack",
                "vvar",
                "vvar_vclock",
                "vdso",
                "vsyscall"
            ]
        );
        assert_eq!(
            (v[0].start, v[0].end, v[0].prot),
            (0x55d4c6a00000, 0x55d4c6a01000, libc::PROT_READ as u32)
        );
        assert_eq!(
            (v[0].dev_major, v[0].dev_minor, v[0].inode),
            (0xfe, 0, 131090)
        );
        assert_eq!(v[0].path.as_deref(), Some("/opt/app/bin"));
        assert!(v[2].shared && v[2].deleted);
        assert_eq!(v[2].flags, (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u32);
        assert_eq!(v[3].path.as_deref(), Some("/tmp/gone file"));
        assert!(v[3].deleted);
        assert_eq!(v[3].pgoff, 0x1000);
        assert_eq!(v[4].flags, (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32);
        assert!(v[4].vm_flags.iter().any(|f| f == "dd"));
        assert_eq!(
            v[5].flags & libc::MAP_GROWSDOWN as u32,
            libc::MAP_GROWSDOWN as u32
        );
        assert_eq!(v[7].path.as_deref(), Some("[vvar_vclock]"));
        assert_eq!(v[9].prot, libc::PROT_EXEC as u32);
    }
}
