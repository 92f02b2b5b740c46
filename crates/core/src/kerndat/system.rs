//! Process-wide probes: kcmp, cgroup freezers, namespaces, TCP repair, restore prerequisites.

use std::fs;
use std::path::Path;

use nix::errno::Errno;

use super::Probe;

const KCMP_VM: libc::c_long = 1;
const TCP_REPAIR: libc::c_int = 19;
const PR_SET_MM: libc::c_int = 35;
const PR_SET_MM_MAP_SIZE: libc::c_ulong = 15;

pub(super) fn kcmp() -> Probe {
    const NAME: &str = "kcmp";
    let pid = std::process::id() as libc::c_long;
    // SAFETY: kcmp compares two kernel objects of our own process; no memory is passed.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_VM, 0, 0) };
    if r < 0 {
        Probe::from_errno(NAME, "kcmp", Errno::last())
    } else {
        Probe::yes(NAME, "kcmp(KCMP_VM) on ourselves answered equal")
    }
}

/// Returns the v1 and v2 freezer probes.
pub(super) fn cgroup_freezers() -> [Probe; 2] {
    [freezer_v1(), freezer_v2()]
}

fn freezer_v1() -> Probe {
    const NAME: &str = "cgroup_freezer_v1";
    let mountinfo = match fs::read_to_string("/proc/self/mountinfo") {
        Ok(s) => s,
        Err(e) => return Probe::no(NAME, format!("/proc/self/mountinfo: {e}")),
    };
    // fields after " - " are: fstype source super-options
    let mounted = mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut f = post.split(' ');
        let (fstype, _src, opts) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup" && opts.split(',').any(|o| o == "freezer"))
            .then(|| pre.split(' ').nth(4).unwrap_or("?").to_string())
    });
    match mounted {
        Some(at) => Probe::yes(NAME, format!("freezer hierarchy mounted at {at}")),
        None => Probe::no(NAME, "no cgroup v1 freezer hierarchy mounted"),
    }
}

fn freezer_v2() -> Probe {
    const NAME: &str = "cgroup_freezer_v2";
    let mountinfo = match fs::read_to_string("/proc/self/mountinfo") {
        Ok(s) => s,
        Err(e) => return Probe::no(NAME, format!("/proc/self/mountinfo: {e}")),
    };
    // /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid ones
    let mount = mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split(' ').next()? == "cgroup2").then(|| pre.split(' ').nth(4).map(str::to_string))?
    });
    let Some(mount) = mount else {
        return Probe::no(NAME, "no cgroup2 hierarchy mounted");
    };
    let root = Path::new(&mount);
    match nix::sys::statfs::statfs(root) {
        Ok(s) if s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => {}
        Ok(_) => return Probe::no(NAME, format!("{mount} is not a cgroup2 mount")),
        Err(e) => return Probe::from_errno(NAME, &format!("statfs {mount}"), e),
    }
    // The root cgroup never has cgroup.freeze; look at an existing child, else make one briefly.
    let existing = fs::read_dir(root)
        .ok()
        .and_then(|rd| rd.flatten().map(|e| e.path()).find(|p| p.is_dir()));
    if let Some(child) = existing {
        let has = child.join("cgroup.freeze").exists();
        let detail = format!("{}/cgroup.freeze {}", child.display(), if has { "present" } else { "absent" });
        return if has { Probe::yes(NAME, detail) } else { Probe::no(NAME, detail) };
    }
    let probe_dir = root.join(format!("tsdump-probe-{}", std::process::id()));
    if let Err(e) = fs::create_dir(&probe_dir) {
        return Probe::no(NAME, format!("{mount} has no child cgroup and mkdir failed: {e}"));
    }
    let has = probe_dir.join("cgroup.freeze").exists();
    let _ = fs::remove_dir(&probe_dir);
    let detail = format!("cgroup.freeze {} in a new child of {mount}", if has { "present" } else { "absent" });
    if has {
        Probe::yes(NAME, detail)
    } else {
        Probe::no(NAME, detail)
    }
}

pub(super) fn time_namespace() -> Probe {
    const NAME: &str = "timens";
    match fs::symlink_metadata("/proc/self/ns/time") {
        Ok(_) => Probe::yes(NAME, "/proc/self/ns/time present"),
        Err(e) => Probe::no(NAME, format!("/proc/self/ns/time: {e}")),
    }
}

pub(super) fn tcp_repair() -> Probe {
    const NAME: &str = "tcp_repair";
    // SAFETY: plain socket creation; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Probe::from_errno(NAME, "socket(AF_INET)", Errno::last());
    }
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a live c_int of the stated size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            TCP_REPAIR,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let e = Errno::last();
    // SAFETY: closing the socket we created.
    unsafe { libc::close(fd) };
    if r < 0 {
        Probe::from_errno(NAME, "setsockopt(TCP_REPAIR)", e)
    } else {
        Probe::yes(NAME, "TCP_REPAIR accepted on a fresh socket")
    }
}

pub(super) fn clone3_set_tid() -> Probe {
    const NAME: &str = "clone3_set_tid";
    // struct clone_args up to set_tid_size (CLONE_ARGS_SIZE_VER1). An oversized set_tid_size is
    // rejected with EINVAL only by kernels that know set_tid, so nothing is ever cloned.
    let tids = [0u64; 1];
    let mut args = [0u64; 10];
    args[8] = tids.as_ptr() as u64;
    args[9] = 1000;
    // SAFETY: clone3 with an argument that the kernel always rejects before creating a task.
    let r = unsafe { libc::syscall(libc::SYS_clone3, args.as_ptr(), std::mem::size_of_val(&args)) };
    if r >= 0 {
        // unreachable in practice: the arguments are invalid on every kernel
        return Probe::no(NAME, "clone3 accepted invalid arguments");
    }
    match Errno::last() {
        Errno::EINVAL => Probe::yes(NAME, "clone3 validates set_tid_size"),
        e => Probe::from_errno(NAME, "clone3", e),
    }
}

pub(super) fn prctl_mm_map() -> Probe {
    const NAME: &str = "prctl_mm_map";
    let mut size: libc::c_uint = 0;
    // SAFETY: PR_SET_MM_MAP_SIZE only writes the struct size into `size`.
    let r = unsafe { libc::prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE, &mut size as *mut libc::c_uint, 0, 0) };
    if r < 0 {
        Probe::from_errno(NAME, "prctl(PR_SET_MM_MAP_SIZE)", Errno::last())
    } else {
        Probe::yes(NAME, format!("struct prctl_mm_map is {size} bytes"))
    }
}

pub(super) fn loginuid() -> Probe {
    const NAME: &str = "loginuid";
    match fs::read_to_string("/proc/self/loginuid") {
        Ok(s) => Probe::yes(NAME, format!("/proc/self/loginuid = {}", s.trim())),
        Err(e) => Probe::no(NAME, format!("/proc/self/loginuid: {e}")),
    }
}
