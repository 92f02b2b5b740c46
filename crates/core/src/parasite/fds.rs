//! The task's own file descriptors, in tsdump's hands: pidfd_getfd(2) duplicates descriptor N of
//! a task we may ptrace-attach to into our table, for every fd kind (sockets included, which
//! /proc/PID/fd cannot open). This stands in for the parasite sending fds back over SCM_RIGHTS:
//! same open file description, so queued data, flags, owners and tty ioctls are read from it.

use std::os::fd::{FromRawFd, OwnedFd};

use nix::errno::Errno;

use crate::error::{Error, ErrorCode, Result};

/// A pidfd for `pid`.
pub fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    // SAFETY: plain syscall; the result is a new fd we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(Error::from_errno(Errno::last(), pid, "pidfd_open"));
    }
    // SAFETY: r is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Duplicates the task's descriptor `fd` into ours (close-on-exec).
pub fn task_fd(pid: i32, fd: i32) -> Result<OwnedFd> {
    let pidfd = pidfd_open(pid)?;
    // SAFETY: plain syscall on a pidfd we own; the result is a new fd we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, std::os::fd::AsRawFd::as_raw_fd(&pidfd), fd, 0) };
    if r < 0 {
        let e = Errno::last();
        let code = match e {
            Errno::EBADF => ErrorCode::TargetGone,
            Errno::EPERM => ErrorCode::EpermPtrace,
            Errno::ESRCH => ErrorCode::EsrchTarget,
            _ => ErrorCode::Kernel,
        };
        return Err(Error::new(code, format!("pid {pid}: pidfd_getfd of fd {fd}: {}", e.desc())));
    }
    // SAFETY: r is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::parasite::tests::{release, seize, spawn};

    static mut SOCK: i32 = -1;

    fn holder() -> ! {
        // SAFETY: plain libc calls in the forked child.
        unsafe {
            let mut sv = [0i32; 2];
            libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr());
            libc::write(sv[1], b"queued".as_ptr().cast(), 6);
            std::ptr::write_volatile(&raw mut SOCK, sv[0]);
            loop {
                libc::pause();
            }
        }
    }

    #[test]
    fn a_task_socket_with_its_queue_comes_over() {
        let child = spawn(holder);
        let pid = child.0;
        std::thread::sleep(Duration::from_millis(50));
        seize(pid);
        // The child's SOCK is at the same address as ours (fork); read it through /proc/PID/mem.
        let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
        let mut b = [0u8; 4];
        std::os::unix::fs::FileExt::read_exact_at(&mem, &mut b, &raw const SOCK as u64).unwrap();
        let fd = i32::from_ne_bytes(b);
        let ours = task_fd(pid, fd).unwrap();
        let mut buf = [0u8; 16];
        // MSG_PEEK: look at the queue without taking it from the task.
        let n = nix::sys::socket::recv(std::os::fd::AsRawFd::as_raw_fd(&ours), &mut buf, nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT).unwrap();
        assert_eq!(&buf[..n], b"queued");
        assert_eq!(task_fd(pid, 999).unwrap_err().code, ErrorCode::TargetGone);
        release(pid);
    }
}
