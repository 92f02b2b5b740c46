//! What only the task can tell: signal dispositions, timers, per-thread state and credentials,
//! asked through injected syscalls. Every call writes its answer into the scratch mapping; the
//! answers come back with one process_vm_readv per command group.

use crate::arch::nr;
use crate::error::{Error, ErrorCode, Result};

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
    Ok((1..=NSIG)
        .map(|sig| {
            let o = (sig - 1) * SIGACTION_SIZE;
            SigAction {
                signo: sig as i32,
                handler: rd_u64(&buf, o),
                flags: rd_u64(&buf, o + 8),
                restorer: rd_u64(&buf, o + 16),
                mask: rd_u64(&buf, o + 24),
                fixed: sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize,
            }
        })
        .collect())
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
    let it = |o: usize| Itimer {
        interval: TimeVal { sec: rd_i64(&b, o), frac: rd_i64(&b, o + 8) },
        value: TimeVal { sec: rd_i64(&b, o + 16), frac: rd_i64(&b, o + 24) },
    };
    Ok(Itimers { real: it(0), virt: it(32), prof: it(64) })
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

pub fn posix_timers(inj: &mut Injector) -> Result<Vec<PosixTimer>> {
    let pid = inj.pid();
    let path = format!("/proc/{pid}/timers");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::new(ErrorCode::Procfs, format!("pid {pid}: reading {path}: {e}")))?;
    let listed = parse_proc_timers(&text)?;
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
            let o = i * 32;
            out.push(PosixTimer {
                id: t.id,
                clock_id: t.clock_id,
                signo: t.signo,
                sigev_value: t.sigev_value,
                notify: t.notify,
                notify_tid: t.notify_tid,
                interval: TimeVal { sec: rd_i64(&b, o), frac: rd_i64(&b, o + 8) },
                value: TimeVal { sec: rd_i64(&b, o + 16), frac: rd_i64(&b, o + 24) },
                overrun: overruns[i] as i32,
            });
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

/// Per-thread state: sigaltstack, clear-tid address, parent-death signal, name, credentials.
pub fn thread_info(inj: &mut Injector, tid: i32) -> Result<ThreadInfo> {
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
    let status = std::fs::read_to_string(format!("/proc/{}/task/{tid}/status", inj.pid())).unwrap_or_default();
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
            cap_bnd: status_hex(&status, "CapBnd:"),
            cap_amb: status_hex(&status, "CapAmb:"),
            securebits,
            no_new_privs: nnp,
        },
    })
}

fn inj_blocked(inj: &mut Injector, tid: i32) -> Result<u64> {
    inj.original_sigmask(tid)
}

/// Process-wide odds and ends: umask, dumpable, THP-disabled, child_subreaper, membarrier.
pub fn task_misc(inj: &mut Injector) -> Result<TaskMisc> {
    let pid = inj.pid();
    let mut lay = Layout::new(inj);
    let sub = lay.take(4)?;
    // umask has no getter: set a value, learn the old one, set it back.
    let umask = inj.syscall_ok(pid, nr::UMASK, [0o022, 0, 0, 0, 0, 0], "umask")? as u32;
    inj.syscall_ok(pid, nr::UMASK, [umask as u64, 0, 0, 0, 0, 0], "umask (restore)")?;
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

/// Everything above for a process and the listed threads (all ptrace-stopped by this thread).
pub fn collect(inj: &mut Injector, tids: &[i32]) -> Result<TaskInfo> {
    let sigactions = sigactions(inj)?;
    let itimers = itimers(inj)?;
    let posix_timers = posix_timers(inj)?;
    let misc = task_misc(inj)?;
    let threads = tids.iter().map(|&t| thread_info(inj, t)).collect::<Result<Vec<_>>>()?;
    Ok(TaskInfo { sigactions, itimers, posix_timers, threads, misc })
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
