//! `session.parasiteInfo(pid, tids)`: what only the task can tell (sigactions, timers, per-thread
//! state, credentials), asked by injected syscalls. The task and threads must already be seized
//! by this session (its tracer thread); the parasite is cured before the promise settles.

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tsdump_core::parasite::{info, inject, Injector};

use crate::convert::{big, U64s};
use crate::session::Session;

#[napi(object)]
pub struct TimeValue {
    pub sec: i64,
    /// Microseconds (itimers) or nanoseconds (POSIX timers).
    pub frac: i64,
}

#[napi(object)]
pub struct ItimerInfo {
    pub interval: TimeValue,
    pub value: TimeValue,
}

#[napi(object)]
pub struct ItimersInfo {
    pub real: ItimerInfo,
    pub virt: ItimerInfo,
    pub prof: ItimerInfo,
}

#[napi(object)]
pub struct PosixTimerInfo {
    pub id: i32,
    pub clock_id: i32,
    pub signo: i32,
    pub sigev_value: BigInt,
    /// sigev_notify (SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD_ID|SIGEV_SIGNAL ...).
    pub notify: i32,
    pub notify_tid: i32,
    pub interval: TimeValue,
    pub value: TimeValue,
    pub overrun: i32,
}

#[napi(object)]
pub struct CredsInfo {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub fsuid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
    pub cap_eff: BigInt,
    pub cap_prm: BigInt,
    pub cap_inh: BigInt,
    pub cap_bnd: BigInt,
    pub cap_amb: BigInt,
    pub securebits: u32,
    pub no_new_privs: bool,
}

#[napi(object)]
pub struct ThreadParasiteInfo {
    pub tid: i32,
    pub altstack_sp: BigInt,
    pub altstack_flags: i32,
    pub altstack_size: BigInt,
    pub clear_tid_addr: BigInt,
    pub pdeath_sig: i32,
    pub name: String,
    /// Blocked-signal mask before tsdump touched the thread.
    pub blocked: BigInt,
    pub creds: CredsInfo,
}

#[napi(object)]
pub struct TaskMiscInfo {
    pub umask: u32,
    pub dumpable: i32,
    pub thp_disabled: bool,
    pub child_subreaper: bool,
    /// MEMBARRIER_CMD_GET_REGISTRATIONS; absent where the kernel lacks it.
    pub membarrier_registrations: Option<BigInt>,
}

#[napi(object)]
pub struct ParasiteInfo {
    /// Signals 1..64 in order, four words each: handler, flags, restorer, mask (signal N's at
    /// (N-1)*4). One typed array, not 64 objects of four BigInts: the visit's facts are turned
    /// into JavaScript values on the main thread while the tree is frozen.
    #[napi(ts_type = "BigUint64Array")]
    pub sigactions: U64s,
    pub itimers: ItimersInfo,
    pub posix_timers: Vec<PosixTimerInfo>,
    pub threads: Vec<ThreadParasiteInfo>,
    pub misc: TaskMiscInfo,
    /// Injected syscalls it took.
    pub syscalls: u32,
}


fn tv(t: info::TimeVal) -> TimeValue {
    TimeValue { sec: t.sec, frac: t.frac }
}

fn itimer(t: info::Itimer) -> ItimerInfo {
    ItimerInfo { interval: tv(t.interval), value: tv(t.value) }
}

/// One thread's own answers.
pub(crate) fn thread_answers(t: info::ThreadInfo) -> ThreadParasiteInfo {
    ThreadParasiteInfo {
        tid: t.tid,
        altstack_sp: big(t.altstack_sp),
        altstack_flags: t.altstack_flags,
        altstack_size: big(t.altstack_size),
        clear_tid_addr: big(t.clear_tid_addr),
        pdeath_sig: t.pdeath_sig,
        name: t.name,
        blocked: big(t.blocked),
        creds: CredsInfo {
            uid: t.creds.uid,
            euid: t.creds.euid,
            suid: t.creds.suid,
            fsuid: t.creds.fsuid,
            gid: t.creds.gid,
            egid: t.creds.egid,
            sgid: t.creds.sgid,
            fsgid: t.creds.fsgid,
            groups: t.creds.groups,
            cap_eff: big(t.creds.cap_eff),
            cap_prm: big(t.creds.cap_prm),
            cap_inh: big(t.creds.cap_inh),
            cap_bnd: big(t.creds.cap_bnd),
            cap_amb: big(t.creds.cap_amb),
            securebits: t.creds.securebits,
            no_new_privs: t.creds.no_new_privs,
        },
    }
}

pub(crate) fn to_js(ti: info::TaskInfo, calls: u64) -> ParasiteInfo {
    ParasiteInfo {
        sigactions: ti.sigactions.iter().flat_map(|s| [s.handler, s.flags, s.restorer, s.mask]).collect::<Vec<u64>>().into(),
        itimers: ItimersInfo { real: itimer(ti.itimers.real), virt: itimer(ti.itimers.virt), prof: itimer(ti.itimers.prof) },
        posix_timers: ti
            .posix_timers
            .into_iter()
            .map(|t| PosixTimerInfo {
                id: t.id,
                clock_id: t.clock_id,
                signo: t.signo,
                sigev_value: big(t.sigev_value),
                notify: t.notify,
                notify_tid: t.notify_tid,
                interval: tv(t.interval),
                value: tv(t.value),
                overrun: t.overrun,
            })
            .collect(),
        threads: ti.threads.into_iter().map(thread_answers).collect(),
        misc: TaskMiscInfo {
            umask: ti.misc.umask,
            dumpable: ti.misc.dumpable,
            thp_disabled: ti.misc.thp_disabled,
            child_subreaper: ti.misc.child_subreaper,
            membarrier_registrations: ti.misc.membarrier_registrations.map(big),
        },
        syscalls: calls as u32,
    }
}

pub(crate) use tsdump_core::freezer::check_held as check_traced_by_us;

/// Infects `pid`, runs `f`, and cures whatever `f` returned.
pub(crate) fn with_parasite<T>(pid: i32, f: impl FnOnce(&mut Injector) -> tsdump_core::Result<T>) -> tsdump_core::Result<T> {
    check_traced_by_us(pid, pid)?;
    let mut inj = Injector::infect(pid, inject::DEFAULT_SCRATCH)?;
    let r = f(&mut inj);
    let cured = inj.cure();
    let v = r?;
    cured?;
    Ok(v)
}

#[napi]
impl Session {
    /// Sigactions, itimers, POSIX timers, misc for process `pid` and per-thread state for
    /// `tids` (default: just `pid`). All must be seized by this session.
    #[napi]
    pub async fn parasite_info(&self, pid: i32, tids: Option<Vec<i32>>) -> Result<ParasiteInfo> {
        let tids = tids.unwrap_or_else(|| vec![pid]);
        self.run(move |_| {
            for &t in &tids {
                check_traced_by_us(pid, t)?;
            }
            let (ti, calls) = tsdump_core::collect::ask_task(pid, &tids)?;
            Ok(to_js(ti, calls))
        })
        .await
    }
}
