//! What only the task can tell: signal dispositions, timers, per-thread state and credentials.
//!
//! Where the resident parasite runs, the whole process answers in one round trip
//! (BLOB_TASK_INFO) and each thread answers in one trip of its own (blob_thread_entry; the
//! threads of a batch run at once); the answers land in the scratch mapping and come back with
//! process_vm_readv. Elsewhere (no blob for this architecture or network namespace) each
//! question is one injected syscall. What the kernel already tells from outside is not asked:
//! the umask (/proc/PID/status `Umask:`; umask() has no getter and would have to be changed to
//! be read), the POSIX timers' list (/proc/PID/timers), the bounding and ambient capability sets.

use crate::arch::nr;
use crate::error::{Error, ErrorCode, Result};

use super::blob::Blob;
use super::inject::Injector;

/// Signals 1..=64 (the kernel's _NSIG).
pub const NSIG: usize = 64;

const PR_GET_PDEATHSIG: u64 = 2;
const PR_GET_DUMPABLE: u64 = 3;
const PR_GET_NAME: u64 = 16;
const PR_GET_SECUREBITS: u64 = 27;
const PR_GET_CHILD_SUBREAPER: u64 = 37;
const PR_GET_NO_NEW_PRIVS: u64 = 39;
const PR_GET_TID_ADDRESS: u64 = 40;
const PR_GET_THP_DISABLE: u64 = 42;
const MEMBARRIER_CMD_GET_REGISTRATIONS: u64 = 1 << 9;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// What the kernel tells from outside about one thread, to complete its answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadKnown {
    pub tid: i32,
    /// Bounding and ambient capability sets (/proc/PID/task/TID/status CapBnd, CapAmb: the
    /// values PR_CAPBSET_READ / PR_CAP_AMBIENT_IS_SET would give, without 2x41 questions).
    pub cap_bnd: u64,
    pub cap_amb: u64,
}

/// What the kernel tells from outside about the process.
#[derive(Debug, Clone, Default)]
pub struct TaskKnown {
    /// /proc/PID/status `Umask:`.
    pub umask: u32,
    /// /proc/PID/timers.
    pub timers: Vec<ProcTimer>,
    pub threads: Vec<ThreadKnown>,
}

impl TaskKnown {
    /// Reads what `collect` needs from /proc for process `pid` and threads `tids`.
    pub fn read(pid: i32, tids: &[i32]) -> Result<TaskKnown> {
        let status = read_proc(pid, "status")?;
        let umask = u32::from_str_radix(crate::inspect::parse::status_field(&status, "Umask").unwrap_or("0022"), 8)
            .map_err(|_| Error::new(ErrorCode::Procfs, format!("pid {pid}: /proc/{pid}/status: bad Umask")))?;
        let threads = tids
            .iter()
            .map(|&tid| {
                let text = if tid == pid { status.clone() } else { read_proc(pid, &format!("task/{tid}/status"))? };
                Ok(ThreadKnown { tid, cap_bnd: status_hex(&text, "CapBnd:"), cap_amb: status_hex(&text, "CapAmb:") })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TaskKnown { umask, timers: parse_proc_timers(&read_proc(pid, "timers")?)?, threads })
    }
}

fn read_proc(pid: i32, file: &str) -> Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|e| crate::inspect::io_err(pid, file, e))
}

/// Kernel `struct sigaction` (the rt_sigaction ABI, same on x86_64 and arm64): 32 bytes.
const SIGACTION_SIZE: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigAction {
    pub signo: i32,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
    /// SIGKILL and SIGSTOP: the kernel reports them but nobody can change them; restore skips them.
    pub fixed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeVal {
    pub sec: i64,
    /// Microseconds for itimers, nanoseconds for POSIX timers.
    pub frac: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Itimer {
    pub interval: TimeVal,
    pub value: TimeVal,
}

/// ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Itimers {
    pub real: Itimer,
    pub virt: Itimer,
    pub prof: Itimer,
}

/// A POSIX timer: what /proc/PID/timers says plus timer_gettime/timer_getoverrun in the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PosixTimer {
    pub id: i32,
    pub clock_id: i32,
    pub signo: i32,
    /// sigev_value (sival_ptr) as the kernel prints it.
    pub sigev_value: u64,
    /// SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD_ID (| SIGEV_SIGNAL), as `sigev_notify`.
    pub notify: i32,
    /// Thread the signal goes to for SIGEV_THREAD_ID, else the process.
    pub notify_tid: i32,
    pub interval: TimeVal,
    pub value: TimeVal,
    pub overrun: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Creds {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub fsuid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
    pub cap_eff: u64,
    pub cap_prm: u64,
    pub cap_inh: u64,
    /// Bounding and ambient sets: from /proc/TID/status (the same values the task would read
    /// with PR_CAPBSET_READ / PR_CAP_AMBIENT_IS_SET, without 2x41 injected calls).
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub securebits: u32,
    pub no_new_privs: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ThreadInfo {
    pub tid: i32,
    pub altstack_sp: u64,
    pub altstack_flags: i32,
    pub altstack_size: u64,
    pub clear_tid_addr: u64,
    pub pdeath_sig: i32,
    pub name: String,
    /// The blocked-signal mask as it was before we touched the thread.
    pub blocked: u64,
    pub creds: Creds,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskMisc {
    pub umask: u32,
    pub dumpable: i32,
    pub thp_disabled: bool,
    pub child_subreaper: bool,
    /// MEMBARRIER_CMD_GET_REGISTRATIONS result, None where the kernel does not have it.
    pub membarrier_registrations: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub sigactions: Vec<SigAction>,
    pub itimers: Itimers,
    pub posix_timers: Vec<PosixTimer>,
    pub threads: Vec<ThreadInfo>,
    pub misc: TaskMisc,
}

fn rd_u64(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}
fn rd_i64(b: &[u8], off: usize) -> i64 {
    rd_u64(b, off) as i64
}
fn rd_u32(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

/// A kernel struct sigaction at `o` of `b`, for signal `sig`.
fn sigaction_at(b: &[u8], o: usize, sig: usize) -> SigAction {
    SigAction {
        signo: sig as i32,
        handler: rd_u64(b, o),
        flags: rd_u64(b, o + 8),
        restorer: rd_u64(b, o + 16),
        mask: rd_u64(b, o + 24),
        fixed: sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize,
    }
}

/// A struct itimerval / itimerspec (interval, then value) at `o` of `b`.
fn itimer_at(b: &[u8], o: usize) -> Itimer {
    Itimer {
        interval: TimeVal { sec: rd_i64(b, o), frac: rd_i64(b, o + 8) },
        value: TimeVal { sec: rd_i64(b, o + 16), frac: rd_i64(b, o + 24) },
    }
}

/// A listed timer with its itimerspec at `o` of `b` and its overrun count.
fn posix_timer(t: &ProcTimer, b: &[u8], o: usize, overrun: i32) -> PosixTimer {
    let it = itimer_at(b, o);
    PosixTimer {
        id: t.id,
        clock_id: t.clock_id,
        signo: t.signo,
        sigev_value: t.sigev_value,
        notify: t.notify,
        notify_tid: t.notify_tid,
        interval: it.interval,
        value: it.value,
        overrun,
    }
}

/// A bump allocator over the scratch mapping's data area.
struct Layout {
    next: usize,
    limit: usize,
}

impl Layout {
    fn new(inj: &Injector) -> Self {
        Layout { next: Injector::DATA_OFFSET, limit: inj.data_limit() }
    }
    fn take(&mut self, size: usize) -> Result<usize> {
        let off = self.next;
        let end = (off + size).div_ceil(16) * 16;
        if end > self.limit {
            return Err(Error::new(ErrorCode::Parasite, format!("scratch area too small ({} bytes)", self.limit)));
        }
        self.next = end;
        Ok(off)
    }
}

/// All 64 dispositions with one rt_sigaction(sig, NULL, &old) each, read back in one go.
pub fn sigactions(inj: &mut Injector) -> Result<Vec<SigAction>> {
    let pid = inj.pid();
    let mut lay = Layout::new(inj);
    let base = lay.take(NSIG * SIGACTION_SIZE)?;
    for sig in 1..=NSIG {
        let at = inj.remote(base + (sig - 1) * SIGACTION_SIZE);
        inj.syscall_ok(pid, nr::RT_SIGACTION, [sig as u64, 0, at, 8, 0, 0], &format!("rt_sigaction({sig})"))?;
    }
    let mut buf = vec![0u8; NSIG * SIGACTION_SIZE];
    inj.read(base, &mut buf)?;
    Ok((1..=NSIG).map(|sig| sigaction_at(&buf, (sig - 1) * SIGACTION_SIZE, sig)).collect())
}

pub fn itimers(inj: &mut Injector) -> Result<Itimers> {
    let pid = inj.pid();
    let mut lay = Layout::new(inj);
    let base = lay.take(3 * 32)?;
    for which in 0..3u64 {
        inj.syscall_ok(pid, nr::GETITIMER, [which, inj.remote(base + which as usize * 32), 0, 0, 0, 0], "getitimer")?;
    }
    let mut b = [0u8; 96];
    inj.read(base, &mut b)?;
    Ok(Itimers { real: itimer_at(&b, 0), virt: itimer_at(&b, 32), prof: itimer_at(&b, 64) })
}

/// One timer as /proc/PID/timers lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcTimer {
    pub id: i32,
    pub signo: i32,
    pub sigev_value: u64,
    pub notify: i32,
    pub notify_tid: i32,
    pub clock_id: i32,
}

/// Parses /proc/PID/timers ("ID:", "signal: N/PTR", "notify: KIND/pid.N|tid.N", "ClockID:").
pub fn parse_proc_timers(text: &str) -> Result<Vec<ProcTimer>> {
    let bad = |l: &str| Error::new(ErrorCode::Procfs, format!("unexpected /proc/PID/timers line {l:?}"));
    let mut out: Vec<ProcTimer> = Vec::new();
    for line in text.lines() {
        let Some((key, val)) = line.split_once(':') else { continue };
        let val = val.trim();
        if key == "ID" {
            out.push(ProcTimer { id: val.parse().map_err(|_| bad(line))?, signo: 0, sigev_value: 0, notify: 0, notify_tid: 0, clock_id: 0 });
            continue;
        }
        let Some(t) = out.last_mut() else { return Err(bad(line)) };
        match key {
            "signal" => {
                let (s, p) = val.split_once('/').ok_or_else(|| bad(line))?;
                t.signo = s.parse().map_err(|_| bad(line))?;
                t.sigev_value = u64::from_str_radix(p.trim_start_matches("0x"), 16).map_err(|_| bad(line))?;
            }
            "notify" => {
                let (kind, who) = val.split_once('/').ok_or_else(|| bad(line))?;
                let (scope, n) = who.split_once('.').ok_or_else(|| bad(line))?;
                let base = match kind {
                    "signal" => libc::SIGEV_SIGNAL,
                    "none" => libc::SIGEV_NONE,
                    "thread" => libc::SIGEV_THREAD,
                    _ => return Err(bad(line)),
                };
                t.notify = if scope == "tid" { base | libc::SIGEV_THREAD_ID } else { base };
                t.notify_tid = n.parse().map_err(|_| bad(line))?;
            }
            "ClockID" => t.clock_id = val.parse().map_err(|_| bad(line))?,
            _ => {}
        }
    }
    Ok(out)
}

/// timer_gettime and timer_getoverrun of each listed timer, one injected call each.
pub fn posix_timers(inj: &mut Injector, listed: &[ProcTimer]) -> Result<Vec<PosixTimer>> {
    let pid = inj.pid();
    let mut out = Vec::with_capacity(listed.len());
    for chunk in listed.chunks(1024) {
        let mut lay = Layout::new(inj);
        let base = lay.take(chunk.len() * 32)?;
        let mut overruns = Vec::with_capacity(chunk.len());
        for (i, t) in chunk.iter().enumerate() {
            let id = t.id as u64;
            inj.syscall_ok(pid, nr::TIMER_GETTIME, [id, inj.remote(base + i * 32), 0, 0, 0, 0], &format!("timer_gettime({})", t.id))?;
            overruns.push(inj.syscall_ok(pid, nr::TIMER_GETOVERRUN, [id, 0, 0, 0, 0, 0], &format!("timer_getoverrun({})", t.id))?);
        }
        let mut b = vec![0u8; chunk.len() * 32];
        inj.read(base, &mut b)?;
        for (i, t) in chunk.iter().enumerate() {
            out.push(posix_timer(t, &b, i * 32, overruns[i] as i32));
        }
    }
    Ok(out)
}

fn status_hex(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// Per-thread state: sigaltstack, clear-tid address, parent-death signal, name, credentials,
/// one injected call each.
pub fn thread_info(inj: &mut Injector, known: &ThreadKnown) -> Result<ThreadInfo> {
    let tid = known.tid;
    let mut lay = Layout::new(inj);
    let ss = lay.take(24)?;
    let tidaddr = lay.take(8)?;
    let pdeath = lay.take(4)?;
    let name = lay.take(16)?;
    let ids = lay.take(6 * 4)?;
    let caphdr = lay.take(8)?;
    let capdata = lay.take(24)?;
    inj.write(caphdr, &[LINUX_CAPABILITY_VERSION_3.to_ne_bytes(), 0u32.to_ne_bytes()].concat())?;

    let scratch = inj.scratch_addr();
    let r = |o: usize| scratch + o as u64;
    let (a_ss, a_tid, a_pd, a_name, a_ids, a_hdr, a_cap) = (r(ss), r(tidaddr), r(pdeath), r(name), r(ids), r(caphdr), r(capdata));
    inj.syscall_ok(tid, nr::SIGALTSTACK, [0, a_ss, 0, 0, 0, 0], "sigaltstack")?;
    inj.syscall_ok(tid, nr::PRCTL, [PR_GET_TID_ADDRESS, a_tid, 0, 0, 0, 0], "prctl(PR_GET_TID_ADDRESS)")?;
    inj.syscall_ok(tid, nr::PRCTL, [PR_GET_PDEATHSIG, a_pd, 0, 0, 0, 0], "prctl(PR_GET_PDEATHSIG)")?;
    inj.syscall_ok(tid, nr::PRCTL, [PR_GET_NAME, a_name, 0, 0, 0, 0], "prctl(PR_GET_NAME)")?;
    inj.syscall_ok(tid, nr::GETRESUID, [a_ids, a_ids + 4, a_ids + 8, 0, 0, 0], "getresuid")?;
    inj.syscall_ok(tid, nr::GETRESGID, [a_ids + 12, a_ids + 16, a_ids + 20, 0, 0, 0], "getresgid")?;
    inj.syscall_ok(tid, nr::CAPGET, [a_hdr, a_cap, 0, 0, 0, 0], "capget")?;
    // An invalid id changes nothing and returns the current fs id.
    let fsuid = inj.syscall_ok(tid, nr::SETFSUID, [u32::MAX as u64, 0, 0, 0, 0, 0], "setfsuid(-1)")? as u32;
    let fsgid = inj.syscall_ok(tid, nr::SETFSGID, [u32::MAX as u64, 0, 0, 0, 0, 0], "setfsgid(-1)")? as u32;
    let securebits = inj.syscall_ok(tid, nr::PRCTL, [PR_GET_SECUREBITS, 0, 0, 0, 0, 0], "prctl(PR_GET_SECUREBITS)")? as u32;
    let nnp = inj.syscall_ok(tid, nr::PRCTL, [PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0, 0], "prctl(PR_GET_NO_NEW_PRIVS)")? != 0;
    let ngroups = inj.syscall_ok(tid, nr::GETGROUPS, [0, 0, 0, 0, 0, 0], "getgroups(0)")? as usize;
    let mut groups = vec![0u32; ngroups];
    if ngroups > 0 {
        let g = lay.take(ngroups * 4)?;
        let n = inj.syscall_ok(tid, nr::GETGROUPS, [ngroups as u64, r(g), 0, 0, 0, 0], "getgroups")? as usize;
        groups.truncate(n);
        let mut b = vec![0u8; n * 4];
        inj.read(g, &mut b)?;
        for (i, v) in groups.iter_mut().enumerate() {
            *v = rd_u32(&b, i * 4);
        }
    }

    let mut b = vec![0u8; capdata + 24 - ss];
    inj.read(ss, &mut b)?;
    let at = |o: usize| o - ss;
    let name_bytes = &b[at(name)..at(name) + 16];
    let name_len = name_bytes.iter().position(|&c| c == 0).unwrap_or(16);
    let cap = at(capdata);
    let idv = |i: usize| rd_u32(&b, at(ids) + i * 4);
    let blocked = inj_blocked(inj, tid)?;
    Ok(ThreadInfo {
        tid,
        altstack_sp: rd_u64(&b, at(ss)),
        altstack_flags: rd_u32(&b, at(ss) + 8) as i32,
        altstack_size: rd_u64(&b, at(ss) + 16),
        clear_tid_addr: rd_u64(&b, at(tidaddr)),
        pdeath_sig: rd_u32(&b, at(pdeath)) as i32,
        name: String::from_utf8_lossy(&name_bytes[..name_len]).into_owned(),
        blocked,
        creds: Creds {
            uid: idv(0),
            euid: idv(1),
            suid: idv(2),
            fsuid,
            gid: idv(3),
            egid: idv(4),
            sgid: idv(5),
            fsgid,
            groups,
            // capget v3 answers two {effective, permitted, inheritable} u32 triples (low, high).
            cap_eff: rd_u32(&b, cap) as u64 | (rd_u32(&b, cap + 12) as u64) << 32,
            cap_prm: rd_u32(&b, cap + 4) as u64 | (rd_u32(&b, cap + 16) as u64) << 32,
            cap_inh: rd_u32(&b, cap + 8) as u64 | (rd_u32(&b, cap + 20) as u64) << 32,
            cap_bnd: known.cap_bnd,
            cap_amb: known.cap_amb,
            securebits,
            no_new_privs: nnp,
        },
    })
}

fn inj_blocked(inj: &mut Injector, tid: i32) -> Result<u64> {
    inj.original_sigmask(tid)
}

/// Process-wide odds and ends: dumpable, THP-disabled, child_subreaper, membarrier (one
/// injected call each; the umask is the kernel's word).
pub fn task_misc(inj: &mut Injector, umask: u32) -> Result<TaskMisc> {
    let pid = inj.pid();
    let mut lay = Layout::new(inj);
    let sub = lay.take(4)?;
    let dumpable = inj.syscall_ok(pid, nr::PRCTL, [PR_GET_DUMPABLE, 0, 0, 0, 0, 0], "prctl(PR_GET_DUMPABLE)")? as i32;
    let thp = inj.syscall_ok(pid, nr::PRCTL, [PR_GET_THP_DISABLE, 0, 0, 0, 0, 0], "prctl(PR_GET_THP_DISABLE)")? != 0;
    inj.syscall_ok(pid, nr::PRCTL, [PR_GET_CHILD_SUBREAPER, inj.remote(sub), 0, 0, 0, 0], "prctl(PR_GET_CHILD_SUBREAPER)")?;
    let mb = inj.syscall(pid, nr::MEMBARRIER, [MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0, 0, 0, 0])?;
    let mut b = [0u8; 4];
    inj.read(sub, &mut b)?;
    Ok(TaskMisc {
        umask,
        dumpable,
        thp_disabled: thp,
        child_subreaper: rd_u32(&b, 0) != 0,
        membarrier_registrations: if mb >= 0 { Some(mb as u64) } else { None },
    })
}

/// Everything above for a process and the threads `known` lists (all ptrace-stopped by this
/// thread): through `blob` when given, else by single injected syscalls.
pub fn collect(inj: &mut Injector, mut blob: Option<&mut Blob>, known: &TaskKnown) -> Result<TaskInfo> {
    let mut info = ask_process(inj, blob.as_deref_mut(), known)?;
    info.threads = ask_threads(inj, blob, &known.threads)?;
    Ok(info)
}

/// The process-wide answers (`threads` left empty: `ask_threads` asks them).
pub fn ask_process(inj: &mut Injector, blob: Option<&mut Blob>, known: &TaskKnown) -> Result<TaskInfo> {
    match blob {
        Some(blob) => process_with_blob(inj, blob, known),
        None => Ok(TaskInfo {
            sigactions: sigactions(inj)?,
            itimers: itimers(inj)?,
            posix_timers: posix_timers(inj, &known.timers)?,
            threads: Vec::new(),
            misc: task_misc(inj, known.umask)?,
        }),
    }
}

/// The answers of the threads `threads` lists, in that order.
pub fn ask_threads(inj: &mut Injector, blob: Option<&mut Blob>, threads: &[ThreadKnown]) -> Result<Vec<ThreadInfo>> {
    let Some(blob) = blob else { return threads.iter().map(|t| thread_info(inj, t)).collect() };
    let pid = inj.pid();
    // The blob's own thread answers over the channel; the others run the thread entry.
    let others: Vec<i32> = threads.iter().map(|t| t.tid).filter(|&t| t != blob.tid()).collect();
    let mut answers = blob.thread_infos(inj, &others)?;
    let mut out = Vec::with_capacity(threads.len());
    for k in threads {
        let raw = if k.tid == blob.tid() {
            Some(blob.thread_info_self(inj, LEADER_THREAD_INFO)?)
        } else {
            answers.remove(&k.tid).flatten()
        };
        let blocked = inj.original_sigmask(k.tid)?;
        let parsed = match raw {
            Some(b) => parse_thread_info(pid, &b, k, blocked)?,
            None => None,
        };
        out.push(match parsed {
            Some(t) => t,
            None => thread_info(inj, k)?,
        });
    }
    Ok(out)
}

// The answers' layouts (crates/core/blob/proto.h; parasite.c asserts the same offsets).
const TI_SIGACTION: usize = 16;
const TI_ITIMER: usize = 2064;
const TI_DUMPABLE: usize = 2160;
const TI_MEMBARRIER: usize = 2176;
const TI_TIMERS: usize = 2184;
const TIMER_LEN: usize = 40;
/// Most timers one BLOB_TASK_INFO asks about.
const MAX_TIMERS: usize = 1024;
pub(crate) const THREAD_INFO_LEN: usize = 1160;
const MAX_GROUPS: usize = 256;
/// Scratch offset of the blob thread's own answers (after the largest BLOB_TASK_INFO answer).
const LEADER_THREAD_INFO: usize = Injector::DATA_OFFSET + TI_TIMERS + MAX_TIMERS * TIMER_LEN;

/// The call a blob answer names as failed (proto.h's BLOB_CALL_*), for messages.
fn blob_call_name(call: u32, timers: &[ProcTimer]) -> String {
    match call {
        1..=64 => format!("rt_sigaction({call})"),
        100..=102 => "getitimer".into(),
        110 => "prctl(PR_GET_DUMPABLE)".into(),
        111 => "prctl(PR_GET_THP_DISABLE)".into(),
        112 => "prctl(PR_GET_CHILD_SUBREAPER)".into(),
        200..=0xffff => match timers.get((call - 200) as usize) {
            Some(t) => format!("timer_gettime({})", t.id),
            None => "timer_gettime".into(),
        },
        0x10000 => "sigaltstack".into(),
        0x10001 => "prctl(PR_GET_TID_ADDRESS)".into(),
        0x10002 => "prctl(PR_GET_PDEATHSIG)".into(),
        0x10003 => "prctl(PR_GET_NAME)".into(),
        0x10004 => "getresuid".into(),
        0x10005 => "getresgid".into(),
        0x10006 => "capget".into(),
        0x10007 => "prctl(PR_GET_SECUREBITS)".into(),
        0x10008 => "prctl(PR_GET_NO_NEW_PRIVS)".into(),
        0x10009 => "getgroups".into(),
        other => format!("call {other}"),
    }
}

fn blob_failure(pid: i32, tid: i32, b: &[u8], timers: &[ProcTimer]) -> Option<Error> {
    let err = rd_i64(b, 0);
    (err < 0).then(|| {
        Error::new(
            ErrorCode::Parasite,
            format!(
                "pid {pid} tid {tid}: {} in the task: {}",
                blob_call_name(rd_u32(b, 8), timers),
                nix::errno::Errno::from_raw(-err as i32).desc()
            ),
        )
    })
}

/// A thread's answers from a blob_thread_info, or None when it has more supplementary groups
/// than the answer holds (asked again by single injected calls).
pub(crate) fn parse_thread_info(pid: i32, b: &[u8], known: &ThreadKnown, blocked: u64) -> Result<Option<ThreadInfo>> {
    if let Some(e) = blob_failure(pid, known.tid, b, &[]) {
        return Err(e);
    }
    let ngroups = rd_u32(b, 12) as usize;
    if ngroups > MAX_GROUPS {
        return Ok(None);
    }
    let name = &b[116..132];
    let name_len = name.iter().position(|&c| c == 0).unwrap_or(16);
    let id = |i: usize| rd_u32(b, 68 + i * 4);
    let cap = |i: usize| rd_u32(b, 92 + i * 4) as u64;
    Ok(Some(ThreadInfo {
        tid: known.tid,
        altstack_sp: rd_u64(b, 16),
        altstack_flags: rd_u32(b, 24) as i32,
        altstack_size: rd_u64(b, 32),
        clear_tid_addr: rd_u64(b, 40),
        pdeath_sig: rd_u32(b, 48) as i32,
        name: String::from_utf8_lossy(&name[..name_len]).into_owned(),
        blocked,
        creds: Creds {
            uid: id(0),
            euid: id(1),
            suid: id(2),
            fsuid: rd_u32(b, 60),
            gid: id(3),
            egid: id(4),
            sgid: id(5),
            fsgid: rd_u32(b, 64),
            groups: (0..ngroups).map(|i| rd_u32(b, 132 + i * 4)).collect(),
            // capget v3 answers two {effective, permitted, inheritable} u32 triples (low, high).
            cap_eff: cap(0) | cap(3) << 32,
            cap_prm: cap(1) | cap(4) << 32,
            cap_inh: cap(2) | cap(5) << 32,
            cap_bnd: known.cap_bnd,
            cap_amb: known.cap_amb,
            securebits: rd_u32(b, 52),
            no_new_privs: rd_u32(b, 56) != 0,
        },
    }))
}

/// `ask_process` through the resident parasite.
fn process_with_blob(inj: &mut Injector, blob: &mut Blob, known: &TaskKnown) -> Result<TaskInfo> {
    let pid = inj.pid();
    let base = Injector::DATA_OFFSET;
    let ids: Vec<i32> = known.timers.iter().map(|t| t.id).collect();
    let mut posix_timers = Vec::with_capacity(ids.len());
    let mut head = Vec::new();
    for (i, chunk) in ids.chunks(MAX_TIMERS).enumerate() {
        let b = blob.task_info(inj, inj.remote(base), chunk, i > 0, TI_TIMERS + chunk.len() * TIMER_LEN)?;
        let listed = &known.timers[i * MAX_TIMERS..i * MAX_TIMERS + chunk.len()];
        if let Some(e) = blob_failure(pid, pid, &b, listed) {
            return Err(e);
        }
        for (j, t) in listed.iter().enumerate() {
            let o = TI_TIMERS + j * TIMER_LEN;
            posix_timers.push(posix_timer(t, &b, o, rd_i64(&b, o + 32) as i32));
        }
        if i == 0 {
            head = b;
        }
    }
    if ids.is_empty() {
        head = blob.task_info(inj, inj.remote(base), &[], false, TI_TIMERS)?;
        if let Some(e) = blob_failure(pid, pid, &head, &[]) {
            return Err(e);
        }
    }
    let sigactions = (1..=NSIG).map(|sig| sigaction_at(&head, TI_SIGACTION + (sig - 1) * SIGACTION_SIZE, sig)).collect();
    let it = |w: usize| itimer_at(&head, TI_ITIMER + w * 32);
    let mb = rd_i64(&head, TI_MEMBARRIER);
    let misc = TaskMisc {
        umask: known.umask,
        dumpable: rd_u32(&head, TI_DUMPABLE) as i32,
        thp_disabled: rd_u32(&head, TI_DUMPABLE + 4) != 0,
        child_subreaper: rd_u32(&head, TI_DUMPABLE + 8) != 0,
        membarrier_registrations: (mb >= 0).then_some(mb as u64),
    };

    Ok(TaskInfo { sigactions, itimers: Itimers { real: it(0), virt: it(1), prof: it(2) }, posix_timers, threads: Vec::new(), misc })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_timers() {
        let text = "ID: 0\nsignal: 14/0000000000000000\nnotify: signal/pid.100\nClockID: 1\n\
                    ID: 1\nsignal: 10/00007ffd1234abcd\nnotify: thread/tid.101\nClockID: 0\n";
        let t = parse_proc_timers(text).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0], ProcTimer { id: 0, signo: 14, sigev_value: 0, notify: libc::SIGEV_SIGNAL, notify_tid: 100, clock_id: 1 });
        assert_eq!(t[1].sigev_value, 0x7ffd1234abcd);
        assert_eq!(t[1].notify, libc::SIGEV_THREAD | libc::SIGEV_THREAD_ID);
        assert_eq!(t[1].notify_tid, 101);
    }

    #[test]
    fn rejects_garbage_timers() {
        assert!(parse_proc_timers("signal: 1/0\n").is_err());
        assert!(parse_proc_timers("ID: x\n").is_err());
    }
}
