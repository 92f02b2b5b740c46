//! Seize, inspect and release a process tree from TypeScript.
//!
//! Conventions: registers, addresses, masks and other 64-bit kernel values are BigInt; pids,
//! small counts and 32-bit fields are numbers; raw kernel blobs (siginfo, xsave, BPF programs,
//! auxv) are Buffers. Core results are produced on the tracer thread and turned into JS objects
//! after the await, so nothing JS-owned crosses threads.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use tsdump_core::arch::regs as aregs;
use tsdump_core::error::{Error as CoreError, ErrorCode};
use tsdump_core::freezer::{self, ReleaseMode, SeizeOptions, SeizedTree};
use tsdump_core::inspect::{self, thread::ThreadState};

use crate::session::Session;

pub(crate) fn big(v: u64) -> BigInt {
    BigInt::from(v)
}

fn bigs(v: &[u64]) -> Vec<BigInt> {
    v.iter().map(|&x| BigInt::from(x)).collect()
}

// ---------------------------------------------------------------- seize / release

#[napi(object)]
pub struct SeizeTreeOptions {
    /// Give up (releasing everything) if a task does not stop within this many ms. Default 10000.
    pub timeout_ms: Option<u32>,
    /// Freeze this cgroup (v2 dir with cgroup.freeze, or a v1 freezer dir) before seizing.
    pub freeze_cgroup: Option<String>,
    /// Set PTRACE_O_SUSPEND_SECCOMP on tasks under seccomp (needed before injecting syscalls).
    pub suspend_seccomp: Option<bool>,
}

#[napi(object)]
pub struct SeizedThreadInfo {
    pub tid: i32,
    /// The job-control stop signal (SIGSTOP, SIGTSTP, ...) if the thread was already stopped.
    pub stop_signal: Option<i32>,
    /// 0 disabled, 1 strict, 2 filter (/proc/PID/task/TID/status when seized).
    pub seccomp_mode: u32,
}

#[napi(object)]
pub struct SeizedProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub comm: String,
    /// The /proc/PID/stat state letter just before the seize (R, S, D, T, ...).
    pub state: String,
    /// Was in a job-control stop; stays stopped after `releaseTree({ mode: 'resume' })`.
    pub stopped: bool,
    pub seccomp_mode: u32,
    /// Leader first.
    pub threads: Vec<SeizedThreadInfo>,
}

#[napi(object)]
pub struct ZombieInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub comm: String,
    /// Raw wait status (/proc/PID/stat exit_code): what CRIU stores as task_core.exit_code.
    pub exit_code: i32,
    /// exit(2) status if it exited normally, else null.
    pub exit_status: Option<i32>,
    /// Terminating signal if it was killed, else null.
    pub exit_signal: Option<i32>,
}

#[napi(object)]
pub struct SeizedTreeInfo {
    pub root: i32,
    /// Root first, parents before children.
    pub processes: Vec<SeizedProcessInfo>,
    pub zombies: Vec<ZombieInfo>,
    /// From the first PTRACE_SEIZE to the last stop (after the cgroup freeze, if any).
    pub seize_time_us: f64,
    /// How long the cgroup freezer took to report frozen (0 without `freezeCgroup`).
    pub cgroup_freeze_time_us: f64,
}

#[napi(object)]
pub struct ReleaseTreeOptions {
    /// resume: detach (tasks found stopped stay stopped); stop: detach leaving every process
    /// stopped; kill: SIGKILL the tree.
    #[napi(ts_type = "'resume' | 'kill' | 'stop'")]
    pub mode: String,
}

fn tree_info(t: &SeizedTree) -> SeizedTreeInfo {
    SeizedTreeInfo {
        root: t.root,
        processes: t
            .processes
            .iter()
            .map(|p| SeizedProcessInfo {
                pid: p.pid,
                ppid: p.ppid,
                pgid: p.pgid,
                sid: p.sid,
                comm: p.comm.clone(),
                state: p.state_before.to_string(),
                stopped: p.stopped,
                seccomp_mode: p.seccomp_mode,
                threads: p
                    .threads
                    .iter()
                    .map(|t| SeizedThreadInfo {
                        tid: t.tid,
                        stop_signal: t.stop_signal,
                        seccomp_mode: t.seccomp_mode,
                    })
                    .collect(),
            })
            .collect(),
        zombies: t
            .zombies
            .iter()
            .map(|z| {
                let sig = z.exit_code & 0x7f;
                ZombieInfo {
                    pid: z.pid,
                    ppid: z.ppid,
                    pgid: z.pgid,
                    sid: z.sid,
                    comm: z.comm.clone(),
                    exit_code: z.exit_code,
                    exit_status: (sig == 0).then_some((z.exit_code >> 8) & 0xff),
                    exit_signal: (sig != 0).then_some(sig),
                }
            })
            .collect(),
        seize_time_us: t.seize_time_us as f64,
        cgroup_freeze_time_us: t.cgroup_freeze_time_us as f64,
    }
}

fn release_mode(s: &str) -> Result<ReleaseMode> {
    match s {
        "resume" => Ok(ReleaseMode::Resume),
        "stop" => Ok(ReleaseMode::Stop),
        "kill" => Ok(ReleaseMode::Kill),
        other => Err(Error::from_reason(format!(
            "UNSUPPORTED: release mode {other:?} (resume, stop or kill)"
        ))),
    }
}

// ---------------------------------------------------------------- process inspection

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
    pub vm_flags: Vec<String>,
    /// A file mapping's file (stat through /proc/PID/map_files/START-END), when readable.
    pub file: Option<FileStatInfo>,
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
pub struct RlimitInfo {
    /// RLIMIT_* number
    pub resource: u32,
    pub name: String,
    /// 0xffffffffffffffff is RLIM_INFINITY
    pub soft: BigInt,
    pub hard: BigInt,
}

#[napi(object)]
pub struct SchedInfo {
    /// sched_getscheduler() result (SCHED_RESET_ON_FORK 0x40000000 included)
    pub policy: i32,
    pub priority: i32,
    pub nice: i32,
}

#[napi(object)]
pub struct AuxvEntry {
    pub key: BigInt,
    pub value: BigInt,
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
    /// AT_* pairs in kernel order, without the AT_NULL terminator.
    pub auxv: Vec<AuxvEntry>,
    /// /proc/PID/auxv as read (what CRIU stores as mm_saved_auxv words).
    pub auxv_raw: Buffer,
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
    pub rlimits: Vec<RlimitInfo>,
    pub oom_score_adj: i32,
    /// null if unreadable; 4294967295 means unset
    pub loginuid: Option<u32>,
    pub sched: SchedInfo,
}

fn creds_info(c: inspect::Creds) -> CredsInfo {
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

fn sched_info(s: &inspect::Sched) -> SchedInfo {
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
                vm_flags: v.vm_flags,
                file: v.file.map(file_stat),
            })
            .collect(),
        auxv: p
            .auxv
            .iter()
            .map(|&(k, v)| AuxvEntry {
                key: big(k),
                value: big(v),
            })
            .collect(),
        auxv_raw: p.auxv_raw.into(),
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
        rlimits: p
            .rlimits
            .into_iter()
            .map(|r| RlimitInfo {
                resource: r.resource,
                name: r.name,
                soft: big(r.soft),
                hard: big(r.hard),
            })
            .collect(),
        oom_score_adj: p.oom_score_adj,
        loginuid: p.loginuid,
        sched: sched_info(&p.sched),
    }
}

// ---------------------------------------------------------------- thread state

#[napi(object)]
pub struct PendingSignalInfo {
    pub signo: i32,
    pub code: i32,
    /// The 128-byte siginfo_t as the kernel queued it (what CRIU's siginfo image holds).
    pub siginfo: Buffer,
}

#[napi(object)]
pub struct SeccompFilterInfo {
    /// Install order: 0 is the oldest filter (PTRACE_SECCOMP_GET_FILTER counts from the first).
    pub index: u32,
    /// struct sock_filter[] (8 bytes per instruction).
    pub program: Buffer,
    /// SECCOMP_FILTER_FLAG_* from PTRACE_SECCOMP_GET_METADATA, if available.
    pub flags: Option<BigInt>,
}

#[napi(object)]
pub struct RseqInfo {
    pub rseq_abi_pointer: BigInt,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
}

#[napi(object)]
pub struct SyscallRestartInfo {
    /// Stopped on the way out of a system call.
    pub in_syscall: bool,
    pub syscall_nr: i64,
    /// The return register as the kernel left it (signed).
    pub result: BigInt,
    /// none; restart (-ERESTARTSYS/-ERESTARTNOINTR/-ERESTARTNOHAND: the image re-runs the call);
    /// eintr (-ERESTART_RESTARTBLOCK: the call fails with EINTR after restore).
    #[napi(ts_type = "'none' | 'restart' | 'eintr'")]
    pub action: String,
    /// Instruction pointer and return register the image should hold.
    pub ip: BigInt,
    pub ax: BigInt,
}

/// x86_64 `user_x86_regs_entry` fields (NT_PRSTATUS), BigInt each.
#[cfg(target_arch = "x86_64")]
#[napi(object)]
pub struct GpRegsInfo {
    pub r15: BigInt,
    pub r14: BigInt,
    pub r13: BigInt,
    pub r12: BigInt,
    pub bp: BigInt,
    pub bx: BigInt,
    pub r11: BigInt,
    pub r10: BigInt,
    pub r9: BigInt,
    pub r8: BigInt,
    pub ax: BigInt,
    pub cx: BigInt,
    pub dx: BigInt,
    pub si: BigInt,
    pub di: BigInt,
    pub orig_ax: BigInt,
    pub ip: BigInt,
    pub cs: BigInt,
    pub flags: BigInt,
    pub sp: BigInt,
    pub ss: BigInt,
    pub fs_base: BigInt,
    pub gs_base: BigInt,
    pub ds: BigInt,
    pub es: BigInt,
    pub fs: BigInt,
    pub gs: BigInt,
    /// user_x86_regs_mode: NATIVE (64-bit) or COMPAT (cs == 0x23)
    #[napi(ts_type = "'native' | 'compat'")]
    pub mode: String,
}

/// `user_x86_xsave_entry`: arrays are empty for components the kernel does not expose.
#[cfg(target_arch = "x86_64")]
#[napi(object)]
pub struct XsaveInfo {
    pub xstate_bv: BigInt,
    pub xcomp_bv: BigInt,
    /// Components the kernel exposes to user space (fx_sw_bytes.xfeatures).
    pub xfeatures: BigInt,
    pub xstate_size: u32,
    pub ymmh_space: Vec<u32>,
    pub bndreg_state: Vec<BigInt>,
    pub bndcsr_state: Vec<BigInt>,
    pub opmask_reg: Vec<BigInt>,
    pub zmm_upper: Vec<BigInt>,
    pub hi16_zmm: Vec<BigInt>,
    pub pkru: Vec<u32>,
    /// The NT_X86_XSTATE buffer as read.
    pub raw: Buffer,
}

/// `user_x86_fpregs_entry` (the FXSAVE area) plus the xsave extension.
#[cfg(target_arch = "x86_64")]
#[napi(object)]
pub struct FpRegsInfo {
    pub cwd: u32,
    pub swd: u32,
    pub twd: u32,
    pub fop: u32,
    pub rip: BigInt,
    pub rdp: BigInt,
    pub mxcsr: u32,
    pub mxcsr_mask: u32,
    pub st_space: Vec<u32>,
    pub xmm_space: Vec<u32>,
    pub padding: Vec<u32>,
    pub xsave: Option<XsaveInfo>,
}

/// `user_desc_t`: one GDT TLS slot.
#[cfg(target_arch = "x86_64")]
#[napi(object)]
pub struct UserDescInfo {
    pub entry_number: u32,
    pub base_addr: u32,
    pub limit: u32,
    pub seg_32bit: bool,
    pub contents: u32,
    pub read_exec_only: bool,
    pub limit_in_pages: bool,
    pub seg_not_present: bool,
    pub usable: bool,
}

#[cfg(target_arch = "x86_64")]
#[napi(object)]
pub struct ThreadRegsInfo {
    #[napi(ts_type = "'x86_64'")]
    pub arch: String,
    pub gpregs: GpRegsInfo,
    pub fpregs: FpRegsInfo,
    pub tls: Vec<UserDescInfo>,
    /// NT_PRSTATUS and NT_PRFPREG as read.
    pub gpregs_raw: Buffer,
    pub fpregs_raw: Buffer,
}

#[cfg(target_arch = "x86_64")]
fn regs_info(r: aregs::ThreadRegs) -> ThreadRegsInfo {
    let g = &r.gp;
    ThreadRegsInfo {
        arch: "x86_64".into(),
        gpregs: GpRegsInfo {
            r15: big(g.r15),
            r14: big(g.r14),
            r13: big(g.r13),
            r12: big(g.r12),
            bp: big(g.bp),
            bx: big(g.bx),
            r11: big(g.r11),
            r10: big(g.r10),
            r9: big(g.r9),
            r8: big(g.r8),
            ax: big(g.ax),
            cx: big(g.cx),
            dx: big(g.dx),
            si: big(g.si),
            di: big(g.di),
            orig_ax: big(g.orig_ax),
            ip: big(g.ip),
            cs: big(g.cs),
            flags: big(g.flags),
            sp: big(g.sp),
            ss: big(g.ss),
            fs_base: big(g.fs_base),
            gs_base: big(g.gs_base),
            ds: big(g.ds),
            es: big(g.es),
            fs: big(g.fs),
            gs: big(g.gs),
            mode: if g.is_compat() { "compat" } else { "native" }.into(),
        },
        fpregs: FpRegsInfo {
            cwd: r.fp.cwd as u32,
            swd: r.fp.swd as u32,
            twd: r.fp.twd as u32,
            fop: r.fp.fop as u32,
            rip: big(r.fp.rip),
            rdp: big(r.fp.rdp),
            mxcsr: r.fp.mxcsr,
            mxcsr_mask: r.fp.mxcsr_mask,
            st_space: r.fp.st_space.clone(),
            xmm_space: r.fp.xmm_space.clone(),
            padding: r.fp.padding.clone(),
            xsave: r.xsave.map(|x| XsaveInfo {
                xstate_bv: big(x.xstate_bv),
                xcomp_bv: big(x.xcomp_bv),
                xfeatures: big(x.xfeatures),
                xstate_size: x.xstate_size,
                ymmh_space: x.ymmh_space,
                bndreg_state: bigs(&x.bndreg_state),
                bndcsr_state: bigs(&x.bndcsr_state),
                opmask_reg: bigs(&x.opmask_reg),
                zmm_upper: bigs(&x.zmm_upper),
                hi16_zmm: bigs(&x.hi16_zmm),
                pkru: x.pkru,
                raw: x.raw.into(),
            }),
        },
        tls: r
            .tls
            .iter()
            .map(|d| UserDescInfo {
                entry_number: d.entry_number,
                base_addr: d.base_addr,
                limit: d.limit,
                seg_32bit: d.seg_32bit,
                contents: d.contents,
                read_exec_only: d.read_exec_only,
                limit_in_pages: d.limit_in_pages,
                seg_not_present: d.seg_not_present,
                usable: d.usable,
            })
            .collect(),
        gpregs_raw: r.gp_raw.into(),
        fpregs_raw: r.fp_raw.into(),
    }
}

/// aarch64 registers: x0-x30, sp, pc, pstate; V0-V31 as 64 words; TPIDR_EL0.
#[cfg(target_arch = "aarch64")]
#[napi(object)]
pub struct ThreadRegsInfo {
    #[napi(ts_type = "'aarch64'")]
    pub arch: String,
    pub regs: Vec<BigInt>,
    pub sp: BigInt,
    pub pc: BigInt,
    pub pstate: BigInt,
    pub vregs: Vec<BigInt>,
    pub fpsr: u32,
    pub fpcr: u32,
    pub tls: BigInt,
    pub gpregs_raw: Buffer,
    pub fpregs_raw: Buffer,
}

#[cfg(target_arch = "aarch64")]
fn regs_info(r: aregs::ThreadRegs) -> ThreadRegsInfo {
    ThreadRegsInfo {
        arch: "aarch64".into(),
        regs: bigs(&r.gp.regs),
        sp: big(r.gp.sp),
        pc: big(r.gp.pc),
        pstate: big(r.gp.pstate),
        vregs: bigs(&r.fp.vregs),
        fpsr: r.fp.fpsr,
        fpcr: r.fp.fpcr,
        tls: big(r.tls),
        gpregs_raw: r.gp_raw.into(),
        fpregs_raw: r.fp_raw.into(),
    }
}

#[napi(object)]
pub struct ThreadStateInfo {
    pub tid: i32,
    pub pid: i32,
    pub comm: String,
    pub state: String,
    pub regs: ThreadRegsInfo,
    /// Whether the stop interrupted a system call, and the IP/return register the image needs.
    pub syscall_restart: SyscallRestartInfo,
    /// PTRACE_GETSIGMASK
    pub blocked: BigInt,
    /// Thread-private queued signals, oldest first (PTRACE_PEEKSIGINFO).
    pub pending: Vec<PendingSignalInfo>,
    /// Process-wide queued signals (the same list for every thread of the process).
    pub shared_pending: Vec<PendingSignalInfo>,
    /// This thread's credentials (/proc/PID/task/TID/status).
    pub creds: CredsInfo,
    pub seccomp_mode: u32,
    pub seccomp_filters: Vec<SeccompFilterInfo>,
    /// null when no rseq area is registered
    pub rseq: Option<RseqInfo>,
    pub sched: SchedInfo,
}

fn pending_info(v: Vec<inspect::thread::PendingSignal>) -> Vec<PendingSignalInfo> {
    v.into_iter()
        .map(|p| PendingSignalInfo {
            signo: p.signo,
            code: p.code,
            siginfo: p.raw.into(),
        })
        .collect()
}

pub(crate) fn thread_info(t: ThreadState) -> ThreadStateInfo {
    let r = t.regs.restart;
    ThreadStateInfo {
        tid: t.tid,
        pid: t.pid,
        comm: t.comm,
        state: t.state.to_string(),
        syscall_restart: SyscallRestartInfo {
            in_syscall: r.in_syscall,
            syscall_nr: r.syscall_nr,
            result: BigInt::from(r.result),
            action: r.action.into(),
            ip: big(r.ip),
            ax: big(r.ax),
        },
        regs: regs_info(t.regs),
        blocked: big(t.blocked),
        pending: pending_info(t.pending),
        shared_pending: pending_info(t.shared_pending),
        creds: creds_info(t.creds),
        seccomp_mode: t.seccomp_mode,
        seccomp_filters: t
            .seccomp_filters
            .into_iter()
            .map(|f| SeccompFilterInfo {
                index: f.index,
                program: f.program.into(),
                flags: f.flags.map(big),
            })
            .collect(),
        rseq: t.rseq.map(|r| RseqInfo {
            rseq_abi_pointer: big(r.rseq_abi_pointer),
            rseq_abi_size: r.rseq_abi_size,
            signature: r.signature,
            flags: r.flags,
        }),
        sched: sched_info(&t.sched),
    }
}

// ---------------------------------------------------------------- Session methods

#[napi]
impl Session {
    /// Seizes every thread of every process below `pid` (PTRACE_SEIZE + PTRACE_INTERRUPT) and
    /// keeps them stopped in this session until `releaseTree`. One tree per session.
    #[napi]
    pub async fn seize_tree(
        &self,
        pid: i32,
        opts: Option<SeizeTreeOptions>,
    ) -> Result<SeizedTreeInfo> {
        let opts = opts.unwrap_or(SeizeTreeOptions {
            timeout_ms: None,
            freeze_cgroup: None,
            suspend_seccomp: None,
        });
        let core_opts = SeizeOptions {
            timeout: opts
                .timeout_ms
                .map(|ms| std::time::Duration::from_millis(ms as u64)),
            freeze_cgroup: opts.freeze_cgroup.map(Into::into),
            suspend_seccomp: opts.suspend_seccomp.unwrap_or(false),
        };
        let tree = self
            .run(move |state| {
                if let Some(t) = &state.tree {
                    return Err(CoreError::new(
                        ErrorCode::Unsupported,
                        format!(
                            "pid {pid}: this session already holds the tree of pid {}",
                            t.root
                        ),
                    ));
                }
                let tree = freezer::seize_tree(pid, &core_opts)?;
                state.tree = Some(tree.clone());
                Ok(tree)
            })
            .await?;
        Ok(tree_info(&tree))
    }

    /// The tree this session holds, or null.
    #[napi]
    pub async fn seized_tree(&self) -> Result<Option<SeizedTreeInfo>> {
        let t = self.run(|state| Ok(state.tree.clone())).await?;
        Ok(t.as_ref().map(tree_info))
    }

    /// Lets the held tree go. Returns false if the session held none.
    #[napi]
    pub async fn release_tree(&self, opts: Option<ReleaseTreeOptions>) -> Result<bool> {
        let mode = release_mode(opts.as_ref().map(|o| o.mode.as_str()).unwrap_or("resume"))?;
        self.run(move |state| {
            let left = std::mem::take(&mut state.leftovers);
            match state.tree.take() {
                Some(t) => {
                    // a tree that lives on loses the scratch mappings first; a killed one dies with them
                    let unmapped = if mode == ReleaseMode::Kill { Ok(()) } else { unmap_leftovers(left) };
                    let released = freezer::release(&t, mode);
                    unmapped.and(released).map(|_| true)
                }
                None => Ok(false),
            }
        })
        .await
    }

    /// Everything procfs shows about one process (works seized or not; seize first for a
    /// consistent picture).
    #[napi]
    pub async fn inspect_process(&self, pid: i32) -> Result<ProcessInspection> {
        let p = self.run(move |_| inspect::inspect_process(pid)).await?;
        Ok(process_inspection(p))
    }

    /// Registers, signal state, seccomp and rseq of a thread of the held tree.
    #[napi]
    pub async fn thread_state(&self, tid: i32) -> Result<ThreadStateInfo> {
        let t = self
            .run(move |state| {
                let pid = held_process_of(state, tid)?;
                inspect::thread::thread_state(pid, tid)
            })
            .await?;
        Ok(thread_info(t))
    }
}

/// Unmaps the scratch mappings the dump's visits left, all of them whatever fails.
fn unmap_leftovers(left: Vec<tsdump_core::parasite::inject::Leftover>) -> tsdump_core::Result<()> {
    let mut first = None;
    for l in left {
        if let Err(e) = tsdump_core::parasite::Injector::adopt(l).and_then(|mut inj| inj.cure()) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// The pid of the held tree's process that thread `tid` belongs to.
fn held_process_of(state: &crate::session::TracerState, tid: i32) -> tsdump_core::Result<i32> {
    state.tree.as_ref().and_then(|t| t.owner_of(tid)).map(|p| p.pid).ok_or_else(|| {
        CoreError::new(ErrorCode::Ptrace, format!("tid {tid}: not a thread of the tree this session holds"))
    })
}

// ---------------------------------------------------------------- seccomp

#[napi(object)]
pub struct SeccompStateInfo {
    pub tid: i32,
    /// 0 disabled, 1 strict, 2 filter (/proc/PID/task/TID/status).
    pub mode: u32,
    /// Filter mode only: the thread's filters, oldest (first installed) first.
    pub filters: Vec<SeccompFilterInfo>,
}

#[napi]
impl Session {
    /// One thread's seccomp mode and filters, for the seccomp stage that runs before any task is
    /// dumped (filter indexes in the core images depend on every thread of the tree).
    #[napi]
    pub async fn seccomp_state(&self, tid: i32) -> Result<SeccompStateInfo> {
        let (mode, filters) = self
            .run(move |state| inspect::thread::seccomp_state(held_process_of(state, tid)?, tid))
            .await?;
        Ok(SeccompStateInfo {
            tid,
            mode,
            filters: filters
                .into_iter()
                .map(|f| SeccompFilterInfo {
                    index: f.index,
                    program: f.program.into(),
                    flags: f.flags.map(big),
                })
                .collect(),
        })
    }
}
