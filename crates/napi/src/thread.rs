//! One seized thread's state, mirrored for TypeScript (`threadState`, `seccompState`, and the
//! threads of a dump's visit): registers, signal mask and queues, seccomp, rseq, scheduling.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use tsdump_core::inspect::{self, thread::ThreadState};

use crate::convert::big;
use crate::inspect::{creds_info, sched_info, CredsInfo, SchedInfo};
use crate::regs::{regs_info, ThreadRegsInfo};
use crate::seize::held_process_of;
use crate::session::Session;

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

#[napi(object)]
pub struct ThreadStateInfo {
    pub tid: i32,
    pub pid: i32,
    pub comm: String,
    pub state: String,
    #[napi(ts_type = "X86ThreadRegs | Aarch64ThreadRegs")]
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

fn filters_info(v: Vec<inspect::thread::SeccompFilter>) -> Vec<SeccompFilterInfo> {
    v.into_iter().map(|f| SeccompFilterInfo { index: f.index, program: f.program.into(), flags: f.flags.map(big) }).collect()
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
        seccomp_filters: filters_info(t.seccomp_filters),
        rseq: t.rseq.map(|r| RseqInfo {
            rseq_abi_pointer: big(r.rseq_abi_pointer),
            rseq_abi_size: r.rseq_abi_size,
            signature: r.signature,
            flags: r.flags,
        }),
        sched: sched_info(&t.sched),
    }
}

#[napi]
impl Session {
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
            filters: filters_info(filters),
        })
    }
}
