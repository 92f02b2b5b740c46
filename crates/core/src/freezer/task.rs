//! One task under ptrace: seize, interrupt, wait for the stop, detach.
//!
//! Seize options are deliberately empty: no PTRACE_O_EXITKILL (if tsdump dies, the kernel detaches
//! and the tree carries on instead of being killed), and no TRACECLONE/TRACEFORK (new threads and
//! children are found by re-reading procfs until the set is stable, so no extra event stops have
//! to be filtered out). PTRACE_O_SUSPEND_SECCOMP is added only for tasks that run under seccomp,
//! so that syscalls injected later are not filtered.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::error::{Error, ErrorCode, Result};

/// Event number of a ptrace stop started by PTRACE_INTERRUPT or a group stop (si_code >> 8).
const PTRACE_EVENT_STOP: i32 = 128;

/// How a task was found when it stopped for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// It was running (or sleeping); PTRACE_INTERRUPT trapped it.
    Interrupted,
    /// It was in a job-control stop already (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU): the signal.
    GroupStopped(i32),
}

/// What waiting for a seized task produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    Stopped(StopKind),
    /// The task exited (or was killed) before it stopped.
    Exited,
}

/// PTRACE_SEIZE + PTRACE_INTERRUPT. Errors keep the errno so the caller can tell "gone" (ESRCH)
/// from "not permitted" (EPERM).
pub fn seize_and_interrupt(tid: i32) -> std::result::Result<(), Errno> {
    let pid = Pid::from_raw(tid);
    ptrace::seize(pid, ptrace::Options::empty())?;
    if let Err(e) = ptrace::interrupt(pid) {
        let _ = ptrace::detach(pid, None);
        return Err(e);
    }
    Ok(())
}

/// Waits until `tid` reports its interrupt stop. Signals that arrive first are handed back to the
/// task (it handles them and then traps), so nothing the target was sent is lost.
/// `keep_zombie` leaves an exited thread-group leader unreaped: it is one of our own children
/// (tests spawn targets from this process) and the Node side reaps it.
///
/// The stop is read back with PTRACE_GETSIGINFO rather than from the wait status: when the
/// tracee is also a child of this process, Node's own SIGCHLD handling (libuv's waitpid from
/// another thread of the tracer's thread group) may consume the stop notification first.
pub fn wait_for_stop(tid: i32, keep_zombie: bool, deadline: Instant) -> Result<WaitOutcome> {
    let mut nap = Duration::from_micros(20);
    loop {
        match peek_exit(tid)? {
            Peek::Exited => {
                if !keep_zombie {
                    reap(tid);
                }
                return Ok(WaitOutcome::Exited);
            }
            Peek::Stopped => consume_stop(tid),
            Peek::Nothing => {}
        }
        match getsiginfo(tid) {
            Ok(si) => {
                let sig = si.si_signo;
                if (si.si_code >> 8) == PTRACE_EVENT_STOP {
                    return Ok(WaitOutcome::Stopped(match sig {
                        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => {
                            StopKind::GroupStopped(sig)
                        }
                        _ => StopKind::Interrupted,
                    }));
                }
                // A signal-delivery stop came before our trap: deliver it and wait again.
                let pass = Signal::try_from(sig).ok();
                match ptrace::cont(Pid::from_raw(tid), pass) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(e) => {
                        return Err(Error::from_errno(
                            e,
                            tid,
                            format!("PTRACE_CONT to deliver signal {sig}"),
                        ))
                    }
                }
                nap = Duration::from_micros(20);
                continue;
            }
            Err(Errno::ESRCH) => {} // not stopped yet (or dying; the next peek tells)
            Err(e) => return Err(Error::from_errno(e, tid, "PTRACE_GETSIGINFO")),
        }
        if Instant::now() >= deadline {
            return Err(Error::new(
                ErrorCode::Ptrace,
                format!("tid {tid}: did not stop within the seize timeout (uninterruptible sleep or vfork?)"),
            ));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(2));
    }
}

/// True while `tid` sits in a ptrace stop of ours (PTRACE_GETSIGINFO succeeds only then).
pub fn is_held(tid: i32) -> bool {
    getsiginfo(tid).is_ok()
}

fn getsiginfo(tid: i32) -> std::result::Result<libc::siginfo_t, Errno> {
    ptrace::getsiginfo(Pid::from_raw(tid))
}

enum Peek {
    Nothing,
    Stopped,
    Exited,
}

/// Looks at the next wait event of `tid` without consuming it (WNOWAIT, WNOHANG).
fn peek_exit(tid: i32) -> Result<Peek> {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it.
        let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a local siginfo_t.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                tid as libc::id_t,
                &mut si,
                libc::WEXITED | libc::WSTOPPED | libc::WNOWAIT | libc::WNOHANG | libc::__WALL,
            )
        };
        if rc < 0 {
            return match Errno::last() {
                Errno::EINTR => continue,
                // Not ours to wait for any more: it went away and someone reaped it.
                Errno::ECHILD => Ok(Peek::Exited),
                e => Err(Error::from_errno(e, tid, "waitid")),
            };
        }
        // SAFETY: waitid filled si; si_pid is valid for SIGCHLD-style infos.
        if unsafe { si.si_pid() } == 0 {
            return Ok(Peek::Nothing);
        }
        return Ok(match si.si_code {
            libc::CLD_EXITED | libc::CLD_KILLED | libc::CLD_DUMPED => Peek::Exited,
            _ => Peek::Stopped,
        });
    }
}

fn consume_stop(tid: i32) {
    let mut status = 0;
    // SAFETY: valid pointer to a local int; WNOHANG never blocks. Only a stop is pending here
    // (peek_exit saw one), so this cannot reap an exit.
    unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
}

/// Consumes the exit notification of a traced task that is not our own child.
pub fn reap(tid: i32) {
    let mut status = 0;
    // SAFETY: valid pointer to a local int; WNOHANG never blocks.
    unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
}

/// Consumes the exit of a dead tracee, so that its real parent can reap it (a traced zombie is
/// reported to the tracer first). Leaves `keep_zombie` leaders for their parent (us).
pub fn reap_if_exited(tid: i32, keep_zombie: bool) {
    if let Ok(Peek::Exited) = peek_exit(tid) {
        if !keep_zombie {
            reap(tid);
        }
    }
}

/// Waits (bounded) for a killed traced task to exit and consumes its notification.
pub fn reap_until(tid: i32, keep_zombie: bool, deadline: Instant) {
    let mut nap = Duration::from_micros(50);
    loop {
        match peek_exit(tid) {
            Ok(Peek::Exited) | Err(_) => break,
            Ok(Peek::Stopped) => consume_stop(tid),
            Ok(Peek::Nothing) => {}
        }
        if Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(2));
    }
    if !keep_zombie {
        reap(tid);
    }
}

/// Turns on PTRACE_O_SUSPEND_SECCOMP (root only) so later injected syscalls bypass filters.
pub fn suspend_seccomp(tid: i32) -> Result<()> {
    const PTRACE_O_SUSPEND_SECCOMP: usize = 1 << 21;
    // SAFETY: PTRACE_SETOPTIONS takes the options in `data`; no memory is passed.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_SETOPTIONS,
            tid,
            0usize,
            PTRACE_O_SUSPEND_SECCOMP,
        )
    };
    if rc < 0 {
        return Err(Error::from_errno(
            Errno::last(),
            tid,
            "PTRACE_SETOPTIONS(PTRACE_O_SUSPEND_SECCOMP)",
        ));
    }
    Ok(())
}

/// PTRACE_DETACH without a signal. A task that was in a group stop when seized goes back into
/// it (the kernel re-arms the stop on detach while the group stop is in effect).
pub fn detach(tid: i32) -> std::result::Result<(), Errno> {
    ptrace::detach(Pid::from_raw(tid), None)
}
