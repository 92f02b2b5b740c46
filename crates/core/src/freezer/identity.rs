//! A task found by number must still be that task when it is seized. Numbers are reused: a child
//! listed in /proc/PID/task/TID/children that exits and is reaped at once (its parent ignores
//! SIGCHLD) frees its pid for any new process, and a thread that exits frees its tid. So a child
//! is pinned with a pidfd before it is seized — while the pidfd's process is not reaped its pid
//! cannot be reused — and checked (parent, start time) before and after; a thread is checked to
//! belong to its process once stopped. ptrace has no by-pidfd attach, so an impostor that slipped
//! into the window between the check and PTRACE_SEIZE has seen one interrupt stop, and is let go
//! at once, before anything reads or changes it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::procinfo;

/// A task as the walk found it: its pid, the parent it must have, its start time.
pub struct Pinned {
    pid: i32,
    parent: Option<i32>,
    start_time: u64,
    pidfd: Option<OwnedFd>,
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a descriptor we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether the pidfd's process is still unreaped (signal 0 checks only).
fn pidfd_alive(fd: &OwnedFd) -> bool {
    // SAFETY: pidfd_send_signal with signal 0 and no siginfo sends nothing.
    unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), 0, std::ptr::null::<libc::siginfo_t>(), 0) == 0 }
}

impl Pinned {
    /// `pid` if it still is the task listed: child of `parent` (when given), started at
    /// `start_time`. None if the number now names another task (or none).
    pub fn pin(pid: i32, parent: Option<i32>, start_time: u64) -> Option<Pinned> {
        let pidfd = pidfd_open(pid);
        let p = Pinned { pid, parent, start_time, pidfd };
        p.matches().then_some(p)
    }

    fn matches(&self) -> bool {
        let Ok(now) = procinfo::brief(self.pid) else { return false };
        let same = now.start_time == self.start_time && self.parent.is_none_or(|pp| now.ppid == pp);
        // the pidfd still alive: what /proc said was about its process, not a successor's
        same && self.pidfd.as_ref().is_none_or(pidfd_alive)
    }

    /// After the seize: whether `pid` still names the pinned task (a kernel without pidfds
    /// checks parent and start time again).
    pub fn still_there(&self) -> bool {
        self.matches()
    }
}

/// Whether thread `tid` belongs to process `pid` (its Tgid).
pub fn thread_of(pid: i32, tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{tid}/status")).is_ok_and(|s| procinfo::parse_status_ids(&s).0 == Some(pid))
}
