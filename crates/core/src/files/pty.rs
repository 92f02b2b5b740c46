//! Unix98 pseudo-terminal masters (/dev/ptmx) read from outside the task through a duplicate of
//! its fd: the pair's index and master-side modes, and the bytes queued at either end.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;

use super::steal_fd;
use crate::{Error, ErrorCode, Result};

// The generic ioctl numbers (x86_64 and aarch64 share them).
const TIOCGPGRP: libc::c_ulong = 0x540f;
const TIOCGSID: libc::c_ulong = 0x5429;
const TIOCGPTN: libc::c_ulong = 0x8004_5430;
const TIOCGPKT: libc::c_ulong = 0x8004_5438;
const TIOCGPTLCK: libc::c_ulong = 0x8004_5439;

/// What a pty master knows about its pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtyMaster {
    /// N of the slave /dev/pts/N.
    pub index: u32,
    /// TIOCSPTLCK: the slave cannot be opened.
    pub locked: bool,
    /// TIOCPKT packet mode.
    pub packet_mode: bool,
    /// Session whose controlling terminal the pair is (0: none).
    pub sid: i32,
    /// Its foreground process group (0: none).
    pub pgrp: i32,
}

fn get_int(fd: &OwnedFd, req: libc::c_ulong) -> std::result::Result<libc::c_int, Errno> {
    let mut v: libc::c_int = 0;
    // SAFETY: every request used here writes one int to the pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, &mut v as *mut libc::c_int) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(v)
    }
}

/// Index, lock, packet mode and session of the pty master behind fd `fd` of `pid`.
pub fn pty_master(pid: i32, fd: i32) -> Result<PtyMaster> {
    let dup = steal_fd(pid, fd)?;
    let fail = |e: Errno, what: &str| {
        if e == Errno::EIO {
            Error::new(
                ErrorCode::UnsupportedFd,
                format!("pid {pid}: fd {fd}: the pty is hung up ({what}: EIO); tsdump cannot dump a hung-up terminal"),
            )
        } else {
            Error::from_errno(e, pid, format!("{what} on fd {fd}"))
        }
    };
    let ioctl = |req, what: &str| get_int(&dup, req).map_err(|e| fail(e, what));
    // On a master these answer for the slave's session whoever asks; ENOTTY means it has none.
    let session = |req, what: &str| match get_int(&dup, req) {
        Err(Errno::ENOTTY) => Ok(0),
        r => r.map_err(|e| fail(e, what)),
    };
    let index = ioctl(TIOCGPTN, "TIOCGPTN")?;
    let locked = ioctl(TIOCGPTLCK, "TIOCGPTLCK")? != 0;
    let packet_mode = ioctl(TIOCGPKT, "TIOCGPKT")? != 0;
    let sid = session(TIOCGSID, "TIOCGSID")?;
    let pgrp = session(TIOCGPGRP, "TIOCGPGRP")?;
    Ok(PtyMaster {
        index: index as u32,
        locked,
        packet_mode,
        sid,
        pgrp,
    })
}

/// Takes the bytes waiting to be read at fd `fd` of `pid` (a pty end) and queues them again
/// through the other end (`peer_fd` of `peer_pid`), which puts them back where they were: what
/// one end writes is what the other end reads. The tree must be frozen. Only whole lines are
/// waiting in canonical mode; a partial line stays where it is.
pub fn tty_take_queued(pid: i32, fd: i32, peer_pid: i32, peer_fd: i32) -> Result<Vec<u8>> {
    let dup = steal_fd(pid, fd)?;
    let raw = dup.as_raw_fd();
    // poll() first: it pushes bytes still in the kernel's flip buffer into the line discipline.
    let mut p = libc::pollfd {
        fd: raw,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, zero timeout.
    if unsafe { libc::poll(&mut p, 1, 0) } < 0 {
        return Err(Error::from_errno(Errno::last(), pid, format!("poll on fd {fd}")));
    }
    let waiting = get_int(&dup, libc::FIONREAD as _)
        .map_err(|e| Error::from_errno(e, pid, format!("FIONREAD on fd {fd}")))?;
    let mut data = vec![0u8; waiting.max(0) as usize];
    let mut got = 0;
    // Reading no more than FIONREAD reported never blocks, whatever O_NONBLOCK and VMIN say.
    while got < data.len() {
        // SAFETY: reads into the unfilled tail of `data`.
        let n = unsafe { libc::read(raw, data[got..].as_mut_ptr().cast(), data.len() - got) };
        if n < 0 {
            let e = Errno::last();
            if e == Errno::EINTR {
                continue;
            }
            return Err(Error::from_errno(e, pid, format!("read of queued bytes on fd {fd}")));
        }
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    data.truncate(got);
    if !data.is_empty() {
        let peer = steal_fd(peer_pid, peer_fd)?;
        let mut off = 0;
        while off < data.len() {
            // SAFETY: writes from the unwritten tail of `data`.
            let n = unsafe { libc::write(peer.as_raw_fd(), data[off..].as_ptr().cast(), data.len() - off) };
            if n < 0 {
                let e = Errno::last();
                if e == Errno::EINTR {
                    continue;
                }
                return Err(Error::from_errno(
                    e,
                    peer_pid,
                    format!("writing {} queued bytes back through fd {peer_fd}", data.len() - off),
                ));
            }
            off += n as usize;
        }
    }
    Ok(data)
}
