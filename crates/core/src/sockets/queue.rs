//! A socket's receive queue, read without consuming it: MSG_PEEK with SO_PEEK_OFF advancing
//! through the queue, on a duplicate of the target's socket (the queue belongs to the socket).
//! The original peek offset is put back afterwards.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

use super::opts::int_opt;
use crate::{Error, ErrorCode, Result};

const SO_SNDBUF: i32 = 7;
const SO_PEEK_OFF: i32 = 42;
/// Largest message a message socket could hold: bounded by the sender's send buffer, which
/// SO_SNDBUFFORCE can raise past the default maximum; 4 MiB covers every sane setting.
const MAX_MESSAGE: usize = 4 << 20;

fn set_peek_off(fd: BorrowedFd, v: i32) -> std::result::Result<(), Errno> {
    // SAFETY: setsockopt reads one int from the pointer we pass.
    let r = unsafe {
        libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, SO_PEEK_OFF, (&v as *const i32).cast(), 4)
    };
    Errno::result(r).map(|_| ())
}

/// One queued message (or stream chunk) and the descriptors it carries (SCM_RIGHTS), which
/// peeking installed in this process: duplicates of the files in flight.
#[derive(Debug)]
pub struct QueuedMessage {
    pub data: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// The queued messages (datagrams, or chunks of a byte stream) of the socket behind `fd`, oldest
/// first. `messages` is true for dgram/seqpacket sockets, whose boundaries must be kept.
pub fn peek_queue(fd: BorrowedFd, ctx: &str, messages: bool) -> Result<Vec<QueuedMessage>> {
    let fail = |what: &str, e: Errno| Error::new(ErrorCode::Kernel, format!("{ctx}: {what}: {}", e.desc()));
    let orig = int_opt(fd, libc::SOL_SOCKET, SO_PEEK_OFF).map_err(|e| fail("getsockopt(SO_PEEK_OFF)", e))?;
    // CRIU reads a stream in pieces of the socket's send buffer less 32 bytes of header room;
    // the same pieces keep the images alike.
    let sndbuf = int_opt(fd, libc::SOL_SOCKET, SO_SNDBUF).map_err(|e| fail("getsockopt(SO_SNDBUF)", e))?;
    let size = if messages { MAX_MESSAGE } else { (sndbuf.max(64) - 32) as usize };
    set_peek_off(fd, 0).map_err(|e| fail("setsockopt(SO_PEEK_OFF)", e))?;
    let result = peek_all(fd, ctx, size, messages);
    let restored = set_peek_off(fd, orig).map_err(|e| fail("restoring SO_PEEK_OFF", e));
    let out = result?;
    restored?;
    Ok(out)
}

/// Room for the largest SCM_RIGHTS the kernel passes (SCM_MAX_FD, 253 fds) and then some.
const CONTROL_SIZE: usize = 4096;

/// One MSG_PEEK at the head of the queue into `data` and `control`: the byte count and the
/// filled header (pointing into both buffers). Descriptors a message carries (SCM_RIGHTS) are
/// installed in tsdump by peeking; MSG_CMSG_CLOEXEC keeps them from leaking into anything tsdump
/// starts meanwhile (action scripts, workers).
fn peek_one(fd: BorrowedFd, data: &mut [u8], control: &mut [u8], iov: &mut libc::iovec) -> std::result::Result<(usize, libc::msghdr), Errno> {
    *iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header we then fill in.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    loop {
        // SAFETY: recvmsg writes into the buffers msg points at, within their stated lengths.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            return Ok((n as usize, msg));
        }
        let e = Errno::last();
        if e != Errno::EINTR {
            return Err(e);
        }
    }
}

fn peek_all(fd: BorrowedFd, ctx: &str, size: usize, messages: bool) -> Result<Vec<QueuedMessage>> {
    let mut out = Vec::new();
    let mut data = vec![0u8; size];
    let mut control = [0u8; CONTROL_SIZE];
    let mut iov = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
    loop {
        let (n, msg) = match peek_one(fd, &mut data, &mut control, &mut iov) {
            Ok(r) => r,
            Err(Errno::EAGAIN) => return Ok(out),
            Err(e) => return Err(Error::new(ErrorCode::Kernel, format!("{ctx}: peeking the receive queue: {}", e.desc()))),
        };
        let fds = control_fds(&msg, ctx)?;
        if msg.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(Error::new(
                ErrorCode::Unsupported,
                format!("{ctx}: a queued message is larger than {} bytes", data.len()),
            ));
        }
        if n == 0 {
            if !messages {
                return Ok(out); // end of a stream whose writer shut down
            }
            return Err(Error::new(ErrorCode::Unsupported, format!("{ctx}: zero-length datagram queued")));
        }
        out.push(QueuedMessage { data: data[..n].to_vec(), fds });
    }
}

/// The descriptors a message carries (SCM_RIGHTS; the kernel merges several into one), now
/// owned here. Other control data is refused, as CRIU refuses it: sender credentials (the
/// receiver has SO_PASSCRED) could only be faked with the restorer's own.
fn control_fds(msg: &libc::msghdr, ctx: &str) -> Result<Vec<OwnedFd>> {
    let mut fds = Vec::new();
    let mut other: Option<&str> = None;
    // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !c.is_null() {
        // SAFETY: c points at a complete cmsghdr inside the control buffer.
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: the payload of SCM_RIGHTS is an array of ints ending at cmsg_len.
            let base = unsafe { libc::CMSG_DATA(c) } as *const i32;
            // SAFETY: computing the header length only.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = (h.cmsg_len as usize).saturating_sub(header) / 4;
            for i in 0..count {
                // SAFETY: i < count, inside the payload; each int is a fresh fd owned by nobody else.
                fds.push(unsafe { OwnedFd::from_raw_fd(base.add(i).read_unaligned()) });
            }
        } else if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_CREDENTIALS {
            other = Some("sender credentials (SCM_CREDENTIALS, the receiver has SO_PASSCRED)");
        } else {
            other = Some("control data");
        }
        // SAFETY: advances within the same control buffer.
        c = unsafe { libc::CMSG_NXTHDR(msg, c) };
    }
    if let Some(what) = other {
        return Err(Error::new(ErrorCode::Unsupported, format!("{ctx}: a queued message carries {what}; tsdump cannot dump that yet")));
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(Error::new(ErrorCode::Unsupported, format!("{ctx}: a queued message carries more control data than {CONTROL_SIZE} bytes")));
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn descriptors_installed_by_peeking_are_close_on_exec() {
        let (a, b) = UnixDatagram::pair().unwrap();
        let passed = std::fs::File::open("/dev/null").unwrap();
        let fds = [passed.as_raw_fd()];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        nix::sys::socket::sendmsg::<()>(a.as_raw_fd(), &[std::io::IoSlice::new(b"x")], &cmsg, nix::sys::socket::MsgFlags::empty(), None).unwrap();
        let queued = peek_queue(b.as_fd(), "test", true).unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].fds.len(), 1);
        // SAFETY: fcntl on a descriptor the peek installed here and `queued` owns.
        let flags = unsafe { libc::fcntl(queued[0].fds[0].as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC, "a peeked descriptor would leak into children");
    }
}
