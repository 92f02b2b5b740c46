//! What procfs shows about one process, mirrored for TypeScript (`inspectProcess`, and the
//! `proc` of a dump's visit). Registers, addresses, masks and other 64-bit kernel values are
//! BigInt; pids, small counts and 32-bit fields are numbers; raw kernel blobs are Buffers.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use tsdump_core::inspect;

use crate::convert::{big, U64s};
use crate::session::Session;

#[napi(object)]
pub struct CredsInfo {
    /// real, effective, saved, filesystem
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    pub groups: Vec<u32>,
    pub cap_inh: BigInt,
    pub cap_prm: BigInt,
    pub cap_eff: BigInt,
    pub cap_bnd: BigInt,
    pub cap_amb: BigInt,
    pub no_new_privs: bool,
    pub seccomp_mode: u32,
    pub seccomp_filters: u32,
}

#[napi(object)]
pub struct SignalSetsInfo {
    pub blocked: BigInt,
    pub ignored: BigInt,
    pub caught: BigInt,
    pub pending: BigInt,
    pub shared_pending: BigInt,
}

#[napi(object)]
pub struct MmFieldsInfo {
    pub start_code: BigInt,
    pub end_code: BigInt,
    pub start_data: BigInt,
    pub end_data: BigInt,
    pub start_brk: BigInt,
    /// End of [heap] (brk rounded up to a page); the exact brk needs the parasite's sys_brk(0).
    pub brk: BigInt,
    pub start_stack: BigInt,
    pub arg_start: BigInt,
    pub arg_end: BigInt,
    pub env_start: BigInt,
    pub env_end: BigInt,
}

#[napi(object)]
pub struct VmaInfo {
    pub start: BigInt,
    pub end: BigInt,
    /// PROT_* bits
    pub prot: u32,
    /// MAP_SHARED | MAP_PRIVATE, MAP_ANONYMOUS, MAP_GROWSDOWN bits
    pub flags: u32,
    pub shared: bool,
    /// File offset in bytes.
    pub pgoff: BigInt,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: BigInt,
    pub path: Option<String>,
    #[napi(
        ts_type = "'file' | 'anon' | 'heap' | 'stack' | 'vdso' | 'vvar' | 'vvar_vclock' | 'vsyscall' | 'shmem_anon' | 'sysv_shm' | 'other'"
    )]
    pub kind: String,
    pub deleted: bool,
    /// smaps' VmFlags, the two-letter mnemonics space-separated as the kernel prints them (one
    /// string, not one a flag: each value handed over is converted while the tree is frozen).
    pub vm_flags: String,
    /// A file mapping's file (stat through /proc/PID/map_files/START-END), when readable.
    pub file: Option<FileStatInfo>,
    /// The permission bits of that map_files link (lstat): the owner's r/w are the access mode
    /// the mapping's file was opened with.
    pub link_mode: Option<u32>,
}

/// stat(2) of a file the task holds, through its /proc link.
#[napi(object)]
pub struct FileStatInfo {
    pub mode: u32,
    pub size: BigInt,
    pub dev: BigInt,
    pub ino: BigInt,
}

fn file_stat(f: inspect::FileStat) -> FileStatInfo {
    FileStatInfo { mode: f.mode, size: big(f.size), dev: big(f.dev), ino: big(f.ino) }
}

#[napi(object)]
pub struct EpollTargetInfo {
    pub tfd: i32,
    pub events: u32,
    pub data: BigInt,
    pub pos: BigInt,
    pub ino: BigInt,
    pub sdev: BigInt,
}

#[napi(object)]
pub struct InotifyWatchInfo {
    pub wd: i32,
    pub ino: BigInt,
    pub sdev: BigInt,
    pub mask: u32,
    pub ignored_mask: u32,
    pub fhandle_bytes: u32,
    pub fhandle_type: i32,
    /// Hex text as the kernel prints it.
    pub f_handle: String,
}

#[napi(object)]
pub struct TimerfdStateInfo {
    pub clockid: i32,
    pub ticks: BigInt,
    pub settime_flags: u32,
    pub value_sec: BigInt,
    pub value_nsec: BigInt,
    pub interval_sec: BigInt,
    pub interval_nsec: BigInt,
}

#[napi(object)]
pub struct FdInfoEntry {
    pub fd: i32,
    /// readlink of /proc/PID/fd/N ("/path", "pipe:[123]", "anon_inode:[eventfd]", ...)
    pub target: String,
    pub pos: BigInt,
    /// open flags (O_*), as fdinfo prints them
    pub flags: u32,
    pub mnt_id: i32,
    /// st_mode/dev/rdev/ino/size/uid/gid of the open file
    pub mode: u32,
    pub dev: BigInt,
    pub rdev: BigInt,
    pub ino: BigInt,
    pub size: BigInt,
    pub uid: u32,
    pub gid: u32,
    pub eventfd_count: Option<BigInt>,
    pub eventfd_id: Option<BigInt>,
    pub epoll_targets: Vec<EpollTargetInfo>,
    pub signalfd_mask: Option<BigInt>,
    pub inotify_watches: Vec<InotifyWatchInfo>,
    pub timerfd: Option<TimerfdStateInfo>,
    /// `lock:` lines of fdinfo, verbatim.
    pub locks: Vec<String>,
    /// Other fdinfo lines (key → value), e.g. tty-index, Pid, ...
    pub extra: Vec<Vec<String>>,
}

#[napi(object)]
pub struct NamespaceInfo {
    /// ipc, mnt, net, pid, pid_for_children, time, time_for_children, user, uts, cgroup
    pub kind: String,
    pub inode: BigInt,
}

#[napi(object)]
pub struct CgroupInfo {
    pub hierarchy: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

#[napi(object)]
pub struct SchedInfo {
    /// sched_getscheduler() result (SCHED_RESET_ON_FORK 0x40000000 included)
    pub policy: i32,
    pub priority: i32,
    pub nice: i32,
}

#[napi(object)]
pub struct ProcessInspection {
    pub pid: i32,
    pub comm: String,
    pub state: String,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub tgid: i32,
    pub ns_pid: Vec<i32>,
    pub ns_pgid: Vec<i32>,
    pub ns_sid: Vec<i32>,
    /// PF_* flags from stat
    pub flags: u32,
    pub exit_code: i32,
    pub threads: Vec<i32>,
    pub creds: CredsInfo,
    pub signals: SignalSetsInfo,
    pub umask: Option<u32>,
    pub thp_enabled: Option<bool>,
    pub personality: u32,
    pub timerslack_ns: Option<BigInt>,
    pub mm: MmFieldsInfo,
    pub vmas: Vec<VmaInfo>,
    /// /proc/PID/auxv's AT_* pairs in kernel order, key and value in turn, without the AT_NULL
    /// terminator (CRIU's mm_saved_auxv words).
    /// This and `rlimits` are typed arrays, not objects of BigInts: each value handed over is
    /// converted on the main thread while the tree is frozen.
    #[napi(ts_type = "BigUint64Array")]
    pub auxv: U64s,
    pub exe: Option<String>,
    pub cwd: Option<String>,
    pub root: Option<String>,
    /// stat(2) through /proc/PID/exe, cwd and root.
    pub exe_stat: Option<FileStatInfo>,
    pub cwd_stat: Option<FileStatInfo>,
    pub root_stat: Option<FileStatInfo>,
    pub fds: Vec<FdInfoEntry>,
    pub namespaces: Vec<NamespaceInfo>,
    pub cgroups: Vec<CgroupInfo>,
    /// Soft and hard limit of every RLIMIT_* resource in order (resource N's at 2N and 2N+1;
    /// 0xffffffffffffffff is RLIM_INFINITY).
    #[napi(ts_type = "BigUint64Array")]
    pub rlimits: U64s,
    pub oom_score_adj: i32,
    /// null if unreadable; 4294967295 means unset
    pub loginuid: Option<u32>,
    pub sched: SchedInfo,
}

pub(crate) fn creds_info(c: inspect::Creds) -> CredsInfo {
    CredsInfo {
        uids: c.uids.to_vec(),
        gids: c.gids.to_vec(),
        groups: c.groups,
        cap_inh: big(c.cap_inh),
        cap_prm: big(c.cap_prm),
        cap_eff: big(c.cap_eff),
        cap_bnd: big(c.cap_bnd),
        cap_amb: big(c.cap_amb),
        no_new_privs: c.no_new_privs,
        seccomp_mode: c.seccomp_mode,
        seccomp_filters: c.seccomp_filters,
    }
}

pub(crate) fn sched_info(s: &inspect::Sched) -> SchedInfo {
    SchedInfo {
        policy: s.policy,
        priority: s.priority,
        nice: s.nice,
    }
}

pub(crate) fn process_inspection(p: inspect::ProcessInfo) -> ProcessInspection {
    ProcessInspection {
        pid: p.pid,
        comm: p.comm,
        state: p.state.to_string(),
        ppid: p.ppid,
        pgid: p.pgid,
        sid: p.sid,
        tgid: p.tgid,
        ns_pid: p.nspid,
        ns_pgid: p.nspgid,
        ns_sid: p.nssid,
        flags: p.flags,
        exit_code: p.exit_code,
        threads: p.threads,
        creds: creds_info(p.creds),
        signals: SignalSetsInfo {
            blocked: big(p.signals.blocked),
            ignored: big(p.signals.ignored),
            caught: big(p.signals.caught),
            pending: big(p.signals.pending),
            shared_pending: big(p.signals.shared_pending),
        },
        umask: p.umask,
        thp_enabled: p.thp_enabled,
        personality: p.personality,
        timerslack_ns: p.timerslack_ns.map(big),
        mm: MmFieldsInfo {
            start_code: big(p.mm.start_code),
            end_code: big(p.mm.end_code),
            start_data: big(p.mm.start_data),
            end_data: big(p.mm.end_data),
            start_brk: big(p.mm.start_brk),
            brk: big(p.mm.brk),
            start_stack: big(p.mm.start_stack),
            arg_start: big(p.mm.arg_start),
            arg_end: big(p.mm.arg_end),
            env_start: big(p.mm.env_start),
            env_end: big(p.mm.env_end),
        },
        vmas: p
            .vmas
            .into_iter()
            .map(|v| VmaInfo {
                start: big(v.start),
                end: big(v.end),
                prot: v.prot,
                flags: v.flags,
                shared: v.shared,
                pgoff: big(v.pgoff),
                dev_major: v.dev_major,
                dev_minor: v.dev_minor,
                inode: big(v.inode),
                path: v.path,
                kind: v.kind,
                deleted: v.deleted,
                vm_flags: v.vm_flags.join(" "),
                file: v.file.map(file_stat),
                link_mode: v.link_mode,
            })
            .collect(),
        auxv: p.auxv.iter().flat_map(|&(k, v)| [k, v]).collect::<Vec<u64>>().into(),
        exe: p.exe,
        cwd: p.cwd,
        root: p.root,
        exe_stat: p.exe_stat.map(file_stat),
        cwd_stat: p.cwd_stat.map(file_stat),
        root_stat: p.root_stat.map(file_stat),
        fds: p.fds.into_iter().map(FdInfoEntry::from).collect(),
        namespaces: p
            .namespaces
            .into_iter()
            .map(|n| NamespaceInfo {
                kind: n.kind,
                inode: big(n.inode),
            })
            .collect(),
        cgroups: p
            .cgroups
            .into_iter()
            .map(|c| CgroupInfo {
                hierarchy: c.hierarchy,
                controllers: c.controllers,
                path: c.path,
            })
            .collect(),
        rlimits: p.rlimits.iter().flat_map(|r| [r.soft, r.hard]).collect::<Vec<u64>>().into(),
        oom_score_adj: p.oom_score_adj,
        loginuid: p.loginuid,
        sched: sched_info(&p.sched),
    }
}

#[napi]
impl Session {
    /// Everything procfs shows about one process (works seized or not; seize first for a
    /// consistent picture).
    #[napi]
    pub async fn inspect_process(&self, pid: i32) -> Result<ProcessInspection> {
        let p = self.run(move |_| inspect::inspect_process(pid)).await?;
        Ok(process_inspection(p))
    }
}

#[napi(object)]
pub struct ThreadCgroupsInfo {
    /// Each distinct /proc/PID/task/TID/cgroup text once.
    pub texts: Vec<String>,
    /// For each thread asked about, in order, the index of its text.
    #[napi(ts_type = "Uint32Array")]
    pub index: crate::convert::U32s,
}

/// The cgroup files of the threads `pids[i]`/`tids[i]`, read off the main thread (a tree of a
/// thousand threads is a thousand files, while it is frozen).
#[napi]
pub async fn thread_cgroups(pids: Vec<i32>, tids: Vec<i32>) -> Result<ThreadCgroupsInfo> {
    if pids.len() != tids.len() {
        return Err(Error::from_reason("USAGE: threadCgroups wants a pid for each tid"));
    }
    let threads: Vec<(i32, i32)> = pids.into_iter().zip(tids).collect();
    let read = tokio::task::spawn_blocking(move || tsdump_core::inspect::thread_cgroups(&threads))
        .await
        .map_err(|e| Error::from_reason(format!("INTERNAL: the cgroup reader stopped: {e}")))?;
    let (texts, index) = read.map_err(crate::to_napi)?;
    Ok(ThreadCgroupsInfo { texts, index: index.into() })
}
