//! The page-server connection, one type for both ends: a TCP socket, plain or inside TLS
//! (rustls), driven non-blocking so that every wait for the peer also watches the caller's
//! cancellation flag and the timeouts. A peer that stops answering therefore holds a frozen tree
//! no longer than a cancellation takes to arrive (one TICK), and a server never waits on one
//! client longer than its timeouts allow.
//!
//! Plain connections move page data kernel-side (splice/sendfile); TLS ones go through a buffer,
//! as CRIU's GnuTLS path does.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};

/// How often a wait looks at the cancellation flag: a cancellation arrives within about this.
pub const TICK: Duration = Duration::from_millis(50);

/// The buffer TLS page data goes through (CRIU's is 400 KiB).
const TLS_CHUNK: usize = 256 << 10;

/// Why a transfer stopped.
#[derive(Debug)]
pub enum Fail {
    /// The caller's cancellation flag was raised.
    Cancelled,
    /// The peer made no progress for this long.
    Idle(Duration),
    /// The deadline set with `set_deadline` passed.
    Deadline,
    /// The peer went away: end of stream where data was due, reset, broken pipe.
    Closed,
    Tls(rustls::Error),
    Io(io::Error),
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Cancelled => write!(f, "cancelled"),
            Fail::Idle(d) => write!(f, "no progress for {}", secs(*d)),
            Fail::Deadline => write!(f, "too slow (deadline passed)"),
            Fail::Closed => write!(f, "the peer closed the connection"),
            Fail::Tls(e) => write!(f, "TLS: {e}"),
            Fail::Io(e) => write!(f, "{e}"),
        }
    }
}

pub fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn classify(e: io::Error) -> Fail {
    match e.kind() {
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted | ErrorKind::UnexpectedEof => Fail::Closed,
        _ => Fail::Io(e),
    }
}

/// What ends a wait besides readiness: cancellation, the idle timeout, a deadline.
struct Waiter {
    cancel: Arc<AtomicBool>,
    idle: Option<Duration>,
    deadline: Option<Instant>,
    /// When the peer last moved data.
    progress: Instant,
}

impl Waiter {
    /// Waits until `fd` is ready for `events` (or in error: the next operation says which).
    fn wait(&self, fd: RawFd, events: libc::c_short) -> Result<(), Fail> {
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Fail::Cancelled);
            }
            let now = Instant::now();
            let mut slice = TICK;
            if let Some(idle) = self.idle {
                let until = self.progress + idle;
                if now >= until {
                    return Err(Fail::Idle(idle));
                }
                slice = slice.min(until - now);
            }
            if let Some(d) = self.deadline {
                if now >= d {
                    return Err(Fail::Deadline);
                }
                slice = slice.min(d - now);
            }
            let mut p = libc::pollfd { fd, events, revents: 0 };
            let ms = slice.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one pollfd on the stack for a descriptor the caller keeps open.
            let n = unsafe { libc::poll(&mut p, 1, ms) };
            if n > 0 {
                return Ok(());
            }
            if n < 0 && Errno::last() != Errno::EINTR {
                return Err(Fail::Io(io::Error::last_os_error()));
            }
        }
    }

    fn moved(&mut self) {
        self.progress = Instant::now();
    }
}

pub struct Conn {
    sock: TcpStream,
    tls: Option<rustls::Connection>,
    w: Waiter,
    /// The end of stream was read (TLS: rustls was told).
    eof: bool,
}

impl Conn {
    /// Wraps a connected socket (made non-blocking here). `cancel` ends any wait once raised;
    /// `idle` bounds every wait for the peer (None: wait as long as it takes).
    pub fn new(sock: TcpStream, tls: Option<rustls::Connection>, cancel: Arc<AtomicBool>, idle: Option<Duration>) -> io::Result<Conn> {
        sock.set_nonblocking(true)?;
        Ok(Conn { sock, tls, w: Waiter { cancel, idle, deadline: None, progress: Instant::now() }, eof: false })
    }

    /// Connects to `addr` within `timeout`, watching `cancel`.
    pub fn connect(addr: SocketAddr, timeout: Duration, cancel: &Arc<AtomicBool>) -> Result<TcpStream, Fail> {
        let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        let fd: OwnedFd = socket::socket(family, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None).map_err(|e| Fail::Io(e.into()))?;
        match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
            Ok(()) => {}
            Err(Errno::EINPROGRESS) => {
                let w = Waiter { cancel: cancel.clone(), idle: None, deadline: Some(Instant::now() + timeout), progress: Instant::now() };
                w.wait(fd.as_raw_fd(), libc::POLLOUT).map_err(|e| if matches!(e, Fail::Deadline) { Fail::Idle(timeout) } else { e })?;
                let err = socket::getsockopt(&fd, sockopt::SocketError).map_err(|e| Fail::Io(e.into()))?;
                if err != 0 {
                    return Err(Fail::Io(io::Error::from_raw_os_error(err)));
                }
            }
            Err(e) => return Err(Fail::Io(e.into())),
        }
        Ok(TcpStream::from(fd))
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Every wait from now on ends at `deadline` too (None: no deadline).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.w.deadline = deadline;
    }

    /// Completes the TLS handshake (nothing to do on a plain connection).
    pub fn handshake(&mut self) -> Result<(), Fail> {
        while self.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
            if self.tls.as_ref().is_some_and(|t| t.wants_write()) {
                self.push()?;
            } else if !self.pull()? {
                return Err(Fail::Closed);
            }
        }
        self.push()
    }

    /// Sends what TLS holds for the peer.
    fn push(&mut self) -> Result<(), Fail> {
        let Some(tls) = self.tls.as_mut() else { return Ok(()) };
        while tls.wants_write() {
            match tls.write_tls(&mut self.sock) {
                Ok(_) => self.w.moved(),
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.w.wait(self.sock.as_raw_fd(), libc::POLLOUT)?,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(classify(e)),
            }
        }
        Ok(())
    }

    /// Reads and processes TLS records from the peer, waiting for some. False at end of stream.
    fn pull(&mut self) -> Result<bool, Fail> {
        let Some(tls) = self.tls.as_mut() else { return Ok(false) };
        if self.eof {
            return Ok(false);
        }
        let got = loop {
            match tls.read_tls(&mut self.sock) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.w.wait(self.sock.as_raw_fd(), libc::POLLIN)?,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(classify(e)),
            }
        };
        if got == 0 {
            self.eof = true;
        } else {
            self.w.moved();
        }
        if let Err(e) = tls.process_new_packets() {
            // rustls queued an alert telling the peer why; a failure to send it changes nothing
            let _ = tls.write_tls(&mut self.sock);
            return Err(Fail::Tls(e));
        }
        // answers the protocol itself owes (key updates), sent right away
        self.push()?;
        Ok(got > 0)
    }

    /// Reads what is available (waiting for something); 0 at the end of the stream.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, Fail> {
        loop {
            let r = match self.tls.as_mut() {
                Some(tls) => tls.reader().read(buf),
                None => (&self.sock).read(buf),
            };
            match r {
                Ok(n) => {
                    if n > 0 && self.tls.is_none() {
                        self.w.moved();
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if self.tls.is_some() {
                        // no plaintext until more records arrive; at end of stream rustls
                        // answers Ok(0) (close_notify) or UnexpectedEof itself
                        self.pull()?;
                    } else {
                        self.w.wait(self.sock.as_raw_fd(), libc::POLLIN)?;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(classify(e)),
            }
        }
    }

    /// Fills `buf`; Closed if the stream ends first.
    pub fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), Fail> {
        let mut got = 0;
        while got < buf.len() {
            match self.read(&mut buf[got..])? {
                0 => return Err(Fail::Closed),
                n => got += n,
            }
        }
        Ok(())
    }

    pub fn write_all(&mut self, mut buf: &[u8]) -> Result<(), Fail> {
        while !buf.is_empty() {
            match self.tls.as_mut() {
                Some(tls) => {
                    let n = tls.writer().write(buf).map_err(Fail::Io)?;
                    buf = &buf[n..];
                    self.push()?;
                }
                None => match (&self.sock).write(buf) {
                    Ok(0) => return Err(Fail::Closed),
                    Ok(n) => {
                        buf = &buf[n..];
                        self.w.moved();
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => self.w.wait(self.sock.as_raw_fd(), libc::POLLOUT)?,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(classify(e)),
                },
            }
        }
        Ok(())
    }

    /// Sends `len` bytes read from `src`: a pipe (spliced) or a file from its current offset
    /// (sendfile, which advances it). `sent` counts what went out, also on failure.
    pub fn send_from(&mut self, src: RawFd, is_pipe: bool, len: usize, sent: &mut u64) -> Result<(), SendFail> {
        if self.tls.is_some() {
            return self.send_from_buffered(src, len, sent);
        }
        let sk = self.sock.as_raw_fd();
        let mut left = len;
        while left > 0 {
            let n = if is_pipe {
                // SAFETY: both descriptors are open; no offsets are passed.
                unsafe { libc::splice(src, std::ptr::null_mut(), sk, std::ptr::null_mut(), left, libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE) }
            } else {
                // SAFETY: both descriptors are open; a null offset uses and advances the file position.
                unsafe { libc::sendfile(sk, src, std::ptr::null_mut(), left) }
            };
            if n < 0 {
                match Errno::last() {
                    Errno::EINTR => {}
                    Errno::EAGAIN => self.w.wait(sk, libc::POLLOUT).map_err(SendFail::Peer)?,
                    e => return Err(SendFail::Peer(classify(io::Error::from_raw_os_error(e as i32)))),
                }
                continue;
            }
            if n == 0 {
                return Err(SendFail::SourceDry { left });
            }
            left -= n as usize;
            *sent += n as u64;
            self.w.moved();
        }
        Ok(())
    }

    fn send_from_buffered(&mut self, src: RawFd, len: usize, sent: &mut u64) -> Result<(), SendFail> {
        let mut buf = vec![0u8; len.min(TLS_CHUNK)];
        let mut left = len;
        while left > 0 {
            let want = left.min(buf.len());
            // SAFETY: reads into a live buffer of at least `want` bytes from a descriptor the caller keeps open.
            let n = unsafe { libc::read(src, buf.as_mut_ptr().cast(), want) };
            if n < 0 {
                let e = Errno::last();
                if e == Errno::EINTR {
                    continue;
                }
                return Err(SendFail::Source(e));
            }
            if n == 0 {
                return Err(SendFail::SourceDry { left });
            }
            self.write_all(&buf[..n as usize]).map_err(SendFail::Peer)?;
            left -= n as usize;
            *sent += n as u64;
        }
        Ok(())
    }

    /// Moves up to `max` bytes of the stream into the pipe `pipe_w` (plain connections only),
    /// waiting for some; 0 at the end of the stream.
    pub fn splice_into(&mut self, pipe_w: RawFd, max: usize) -> Result<usize, Fail> {
        debug_assert!(self.tls.is_none());
        let sk = self.sock.as_raw_fd();
        loop {
            // SAFETY: both descriptors are open; no offsets. NONBLOCK only concerns the pipe side.
            let n = unsafe { libc::splice(sk, std::ptr::null_mut(), pipe_w, std::ptr::null_mut(), max, libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK) };
            if n >= 0 {
                if n > 0 {
                    self.w.moved();
                }
                return Ok(n as usize);
            }
            match Errno::last() {
                Errno::EINTR => {}
                Errno::EAGAIN => self.w.wait(sk, libc::POLLIN)?,
                e => return Err(classify(io::Error::from_raw_os_error(e as i32))),
            }
        }
    }

    /// Ends the connection politely: TLS close_notify, then our half of TCP. Best effort.
    pub fn shutdown(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            let _ = self.push();
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
    }
}

/// Why `send_from` stopped.
#[derive(Debug)]
pub enum SendFail {
    Peer(Fail),
    /// Reading the source failed.
    Source(Errno),
    /// The source ended with `left` bytes still to send.
    SourceDry { left: usize },
}
