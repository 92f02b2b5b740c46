//! The resident parasite: blob/parasite.c, built by build.rs, run by one thread of the task and
//! driven over a unix socket (see the C file for its safety contract).
//!
//! Start: tsdump listens on a fresh abstract unix address, writes the blob, its arguments and
//! the thread's return frame into the scratch mapping, and hands the thread to the blob with
//! every signal blocked. The blob's socket() and connect() are stepped with PTRACE_SYSCALL so a
//! failure there is caught in a stop (thread put back as it was); after that the thread runs
//! freely and tsdump talks to it. The peer's SO_PEERCRED pid must be the task's.
//! Stop: FINI (the blob closes the pipes it made), PTRACE_INTERRUPT the thread back into a
//! stop, registers and mask back, then an injected close() of the blob's socket.
//! While waiting for a reply tsdump also watches the thread's ptrace stops: stop signals are
//! kept for after the cure, a fault ends the conversation with an error.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::arch::nr;
use crate::error::{Error, ErrorCode, Result};
use crate::parasite::inject::THREAD_SLOT;
use crate::parasite::Injector;

/// The blob image (empty when build.rs had no compiler for this architecture).
pub static IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/parasite.bin"));
mod syms {
    include!(concat!(env!("OUT_DIR"), "/parasite_syms.rs"));
}

pub(crate) const MAGIC: u64 = 0x7473_6470_6230_3034;
const OP_SYSCALL: u32 = 1;
const OP_PIPES: u32 = 2;
const OP_VMSPLICE: u32 = 3;
const OP_FINI: u32 = 4;
const OP_TASK_INFO: u32 = 5;
const OP_THREAD_INFO: u32 = 6;
const OP_QUIT: u32 = 7;
const OP_SNAPSHOT: u32 = 8;
/// A snapshot holder's requests (mem::snapshot).
pub(crate) const OP_SETFD: u32 = 9;
pub(crate) const OP_PWRITE: u32 = 10;
/// Stack for the snapshot's middle child and the holder, below the blob's area (struct
/// blob_snapshot in proto.h sits at the start of the data area); the holder takes one full
/// request (16 KiB of iovecs) on it.
const SNAP_STACK: usize = 32 * 1024;
const SNAP_ARGS_LEN: usize = 128;
/// The ret of a thread entry's message (proto.h BLOB_THREAD_DONE).
const THREAD_DONE: i64 = 0x7473_6470_7468_6431;
/// A thread slot (Injector::thread_slot): the thread's arguments, its answers, its stack (below
/// SLOT_STACK_TOP) and its return frame (from SLOT_FRAME to the end of the slot).
const SLOT_OUT: usize = 64;
const SLOT_STACK_TOP: usize = 4096 - 64;
const SLOT_FRAME: usize = 4096;
/// Most iovecs one BLOB_VMSPLICE carries, and most pipes (proto.h).
pub const MAX_IOV: usize = 1024;
pub const MAX_PIPES: usize = 16;
pub(crate) const REQ_LEN: usize = 64;
pub(crate) const REP_LEN: usize = 8 + 8 * 3 * MAX_PIPES;
/// Scratch bytes the blob takes below the return frame: code, arguments, and a stack holding
/// one full request (16 KiB of iovecs) with room to spare.
const AREA: usize = 96 * 1024;
const ARGS_LEN: usize = 256;
/// Offset of the listening address in struct blob_args.
const ARGS_ADDR: usize = 32;
/// How long the blob may take to connect (it is running code we wrote: milliseconds).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running resident parasite.
pub struct Blob {
    tid: i32,
    /// Remote address of the blob's code.
    code: u64,
    sock: OwnedFd,
    /// The blob's socket's number in the task (closed by injection after the thread is parked).
    task_fd: i32,
    /// Descriptors the blob made in the task (closed by injection if FINI cannot be had).
    made: Vec<i32>,
    /// Round trips made (for stats).
    pub round_trips: u64,
}

/// Whether a blob can run here: an image was built for this architecture.
pub fn available() -> bool {
    !IMAGE.is_empty()
}

fn errno_err(pid: i32, what: &str) -> Error {
    Error::from_errno(Errno::last(), pid, what)
}

fn net_ns(pid: &str) -> Option<std::fs::Metadata> {
    std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()
}

/// A listening SOCK_SEQPACKET socket on a fresh abstract address; returns it and the address.
fn listen(pid: i32) -> Result<(OwnedFd, Vec<u8>)> {
    // SAFETY: plain socket(2); the result is checked before being owned.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(errno_err(pid, "socket for the parasite channel"));
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut nonce = [0u8; 8];
    crate::sys::getrandom(&mut nonce);
    let name = format!("tsdump-parasite-{}-{pid}-{:016x}", std::process::id(), u64::from_ne_bytes(nonce));
    // sockaddr_un: family, then a NUL and the name (abstract namespace, never a file).
    let mut addr = Vec::with_capacity(3 + name.len());
    addr.extend_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    addr.push(0);
    addr.extend_from_slice(name.as_bytes());
    // SAFETY: addr holds a valid sockaddr_un prefix of addr.len() bytes.
    if unsafe { libc::bind(fd, addr.as_ptr().cast(), addr.len() as u32) } < 0 {
        return Err(errno_err(pid, "bind for the parasite channel"));
    }
    // SAFETY: listen on a bound socket we own.
    if unsafe { libc::listen(fd, 1) } < 0 {
        return Err(errno_err(pid, "listen for the parasite channel"));
    }
    Ok((sock, addr))
}

/// One connection from process `pid` if one is waiting on `listener` (non-blocking); anybody
/// else who found the address is turned away.
fn accept_from(listener: i32, pid: i32, what: &str) -> Result<Option<OwnedFd>> {
    loop {
        // SAFETY: accept4 on our listening socket; peer address not wanted.
        let fd = unsafe { libc::accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) };
        if fd < 0 {
            let e = Errno::last();
            return if e == Errno::EAGAIN || e == Errno::EINTR { Ok(None) } else { Err(Error::from_errno(e, pid, what)) };
        }
        // SAFETY: fd was just returned by accept4 and is owned by nobody else.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: SO_PEERCRED writes a ucred of at most `len` bytes.
        let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut cred as *mut libc::ucred).cast(), &mut len) };
        if r == 0 && cred.pid == pid {
            return Ok(Some(sock));
        }
    }
}

/// One request on a blob's or a snapshot holder's channel: struct blob_req (proto.h) of
/// `op`, `n` and `a`, then `payload`, with `fds` passed along (SCM_RIGHTS).
pub(crate) fn send_request(sock: i32, op: u32, n: u32, a: [u64; 7], payload: &[u8], fds: &[i32]) -> nix::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let mut head = [0u8; REQ_LEN];
    head[0..4].copy_from_slice(&op.to_ne_bytes());
    head[4..8].copy_from_slice(&n.to_ne_bytes());
    for (i, v) in a.iter().enumerate() {
        head[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_ne_bytes());
    }
    let iov = [IoSlice::new(&head), IoSlice::new(payload)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(sock, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None).map(drop)
}

/// (address, length) pairs as the struct iovec array a request carries after its header.
pub(crate) fn iovec_bytes(iovs: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(iovs.len() * 16);
    for (base, len) in iovs {
        out.extend_from_slice(&base.to_ne_bytes());
        out.extend_from_slice(&len.to_ne_bytes());
    }
    out
}

fn rd_i64(b: &[u8], off: usize) -> i64 {
    i64::from_ne_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

pub(crate) fn poll_in(fd: i32, ms: i32) -> Result<bool> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd, valid for the call.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    if r < 0 && Errno::last() != Errno::EINTR {
        return Err(Error::from_errno(Errno::last(), 0, "poll on the parasite channel"));
    }
    Ok(r > 0)
}

impl Blob {
    /// Starts the blob in the task's main thread. Unsupported when this build has no blob, the
    /// architecture has no return frame, or the task lives in another network namespace (the
    /// abstract address would not reach it): callers fall back to injected syscalls.
    pub fn start(inj: &mut Injector) -> Result<Blob> {
        let pid = inj.pid();
        if !available() {
            return Err(Error::new(ErrorCode::Unsupported, format!("pid {pid}: no resident parasite in this build")));
        }
        static OURS: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
        let ours = *OURS.get_or_init(|| net_ns("self").map(|m| std::os::unix::fs::MetadataExt::ino(&m)));
        let theirs = net_ns(&pid.to_string()).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        if ours.is_none() || ours != theirs {
            return Err(Error::new(ErrorCode::Unsupported, format!("pid {pid}: in another network namespace")));
        }
        let base = inj.data_limit().checked_sub(AREA).filter(|&b| b >= Injector::DATA_OFFSET).ok_or_else(|| {
            Error::new(ErrorCode::Parasite, format!("pid {pid}: scratch too small for the resident parasite"))
        })?;
        let code_len = IMAGE.len().div_ceil(64) * 64;
        let args_off = base + code_len;
        let (listener, addr) = listen(pid)?;
        let frame_sp = inj.frame_sp(pid)?;
        let mut args = vec![0u8; ARGS_LEN];
        args[0..8].copy_from_slice(&MAGIC.to_ne_bytes());
        args[8..16].copy_from_slice(&frame_sp.to_ne_bytes());
        args[16..20].copy_from_slice(&(addr.len() as u32).to_ne_bytes());
        args[ARGS_ADDR..ARGS_ADDR + addr.len()].copy_from_slice(&addr);
        let mut code = IMAGE.to_vec();
        code.resize(code_len, 0);
        code.extend_from_slice(&args);
        inj.write(base, &code)?;
        // The stack tops out just below the return frame, 16-byte aligned. The blob runs freely
        // from its first instruction: a socket() or connect() that fails is told in its
        // arguments (failed, err), watched while waiting for the connection.
        let sp = inj.remote(inj.data_limit()) & !15;
        inj.start_resident(pid, inj.remote(base), sp, inj.remote(args_off), 0)?;
        let started = Self::accept(inj, listener.as_raw_fd(), args_off).and_then(|sock| {
            let mut blob = Blob { tid: pid, code: inj.remote(base), sock, task_fd: -1, made: Vec::new(), round_trips: 0 };
            let hello = blob.reply(inj)?;
            if hello.0 as u64 != MAGIC || hello.1[0] < 0 {
                return Err(Error::new(ErrorCode::Parasite, format!("pid {pid}: the resident parasite answered {:#x}", hello.0)));
            }
            blob.task_fd = hello.1[0] as i32;
            Ok(blob)
        });
        match started {
            Ok(b) => Ok(b),
            Err(e) => {
                // The blob still waits (for a connection, or a message, or lingers after a
                // failure): take the thread back; a channel the blob made closes when the task
                // sees tsdump's end go (the blob closes it and goes home on EOF) or lingers.
                let parked = inj.park_resident();
                if e.code != ErrorCode::TargetGone {
                    parked?;
                }
                Err(e)
            }
        }
    }

    /// Accepts the blob's connection, watching its thread and its arguments meanwhile (a blob
    /// that cannot connect says why there, at `args_off`).
    fn accept(inj: &mut Injector, listener: i32, args_off: usize) -> Result<OwnedFd> {
        let pid = inj.pid();
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            if let Some(sock) = accept_from(listener, pid, "accepting the resident parasite")? {
                return Ok(sock);
            }
            inj.check_running()?;
            let mut st = [0u8; 16];
            inj.read(args_off + 20, &mut st[4..])?;
            let failed = u32::from_ne_bytes(st[4..8].try_into().expect("4 bytes"));
            if failed != 0 {
                let err = i64::from_ne_bytes(st[8..16].try_into().expect("8 bytes"));
                let what = if failed == 1 { "socket" } else { "connect" };
                return Err(Error::new(
                    ErrorCode::Parasite,
                    format!("pid {pid}: the resident parasite's {what}() failed: {}", Errno::from_raw(-err as i32).desc()),
                ));
            }
            if Instant::now() > deadline {
                return Err(Error::new(ErrorCode::Parasite, format!("pid {pid}: the resident parasite did not connect in {CONNECT_TIMEOUT:?}")));
            }
            poll_in(listener, 10)?;
        }
    }

    /// Sends one request.
    fn send(&mut self, inj: &mut Injector, op: u32, n: u32, a: [u64; 7], payload: &[u8]) -> Result<()> {
        send_request(self.sock.as_raw_fd(), op, n, a, payload, &[]).map_err(|e| self.lost(inj, e.desc()))
    }

    /// Why the channel ended: the task died (its socket closed as it exited; the exit itself
    /// may not be reported yet) or the blob gave up.
    fn lost(&self, inj: &mut Injector, how: &str) -> Error {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Err(e) = inj.check_running() {
                return e;
            }
            if crate::freezer::procinfo::has_exited(inj.pid(), self.tid) {
                return Error::new(ErrorCode::TargetGone, format!("pid {} tid {}: exited during the dump", inj.pid(), self.tid));
            }
            if Instant::now() > deadline {
                return Error::new(ErrorCode::Parasite, format!("tid {}: the resident parasite's channel {how}", self.tid));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for one reply, watching the thread's ptrace stops meanwhile.
    fn reply(&mut self, inj: &mut Injector) -> Result<(i64, [i64; 3 * MAX_PIPES])> {
        let fd = self.sock.as_raw_fd();
        loop {
            if poll_in(fd, 20)? {
                let mut buf = [0u8; REP_LEN];
                // SAFETY: recv into a buffer of buf.len() bytes.
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
                if n < 0 {
                    let e = Errno::last();
                    if e == Errno::EAGAIN || e == Errno::EINTR {
                        continue;
                    }
                    return Err(self.lost(inj, e.desc()));
                }
                if n as usize != REP_LEN {
                    return Err(self.lost(inj, "closed"));
                }
                self.round_trips += 1;
                let word = |i: usize| i64::from_ne_bytes(buf[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
                let mut out = [0i64; 3 * MAX_PIPES];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = word(1 + i);
                }
                return Ok((word(0), out));
            }
            inj.check_running()?;
        }
    }

    /// The thread running the blob.
    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// BLOB_TASK_INFO: the process-wide answers (and timers `ids`; with `timers_only` nothing
    /// else) into the scratch at remote `at`; returns the `len` bytes of the answer.
    pub fn task_info(&mut self, inj: &mut Injector, at: u64, ids: &[i32], timers_only: bool, len: usize) -> Result<Vec<u8>> {
        let payload: Vec<u8> = ids.iter().flat_map(|i| i.to_ne_bytes()).collect();
        self.send(inj, OP_TASK_INFO, ids.len() as u32, [at, timers_only as u64, 0, 0, 0, 0, 0], &payload)?;
        let (r, _) = self.reply(inj)?;
        let mut b = vec![0u8; len];
        inj.read((at - inj.scratch_addr()) as usize, &mut b)?;
        // A failed call is told in the answer itself (err, failed); anything else is the blob's.
        if r < 0 && rd_i64(&b, 0) == 0 {
            return Err(Error::new(ErrorCode::Parasite, format!("pid {}: the parasite refused BLOB_TASK_INFO: {}", inj.pid(), Errno::from_raw(-r as i32).desc())));
        }
        Ok(b)
    }

    /// BLOB_THREAD_INFO: the blob's own thread's answers, into the scratch at offset `off`.
    pub fn thread_info_self(&mut self, inj: &mut Injector, off: usize) -> Result<Vec<u8>> {
        self.send(inj, OP_THREAD_INFO, 0, [inj.remote(off), 0, 0, 0, 0, 0, 0], &[])?;
        self.reply(inj)?;
        let mut b = vec![0u8; super::info::THREAD_INFO_LEN];
        inj.read(off, &mut b)?;
        Ok(b)
    }

    /// Each of `tids` (threads of the task, not the blob's) answers its own questions in one
    /// trip: it runs blob_thread_entry from a thread slot with its own return frame, says so on
    /// the channel and is parked again. The threads of a batch (one per slot) run at once.
    /// None for a thread that cannot run it (no frame, or an fd table of its own, where the
    /// channel's number means nothing): ask it with single injected syscalls.
    pub fn thread_infos(&mut self, inj: &mut Injector, tids: &[i32]) -> Result<std::collections::HashMap<i32, Option<Vec<u8>>>> {
        let mut out = std::collections::HashMap::new();
        let pid = inj.pid();
        let slots = inj.thread_slots();
        let entry = self.code + syms::THREAD_ENTRY as u64;
        if slots == 0 || syms::THREAD_ENTRY == 0 {
            out.extend(tids.iter().map(|&t| (t, None)));
            return Ok(out);
        }
        for batch in tids.chunks(slots) {
            let mut started: Vec<(i32, usize)> = Vec::with_capacity(batch.len());
            let mut status = std::collections::HashMap::new();
            let ran = (|| -> Result<()> {
                for &tid in batch {
                    let shares_table = crate::files::kcmp_same(pid, tid, crate::files::KcmpType::Files, 0, 0).unwrap_or(false);
                    let slot = inj.thread_slot(started.len());
                    let home = if shares_table { inj.prepare_thread(tid, inj.remote(slot + SLOT_FRAME), THREAD_SLOT - SLOT_FRAME)? } else { None };
                    let Some(home) = home else {
                        out.insert(tid, None);
                        continue;
                    };
                    let mut args = [0u8; 32];
                    args[0..8].copy_from_slice(&MAGIC.to_ne_bytes());
                    args[8..16].copy_from_slice(&home.to_ne_bytes());
                    args[16..24].copy_from_slice(&inj.remote(slot + SLOT_OUT).to_ne_bytes());
                    args[24..28].copy_from_slice(&self.task_fd.to_ne_bytes());
                    args[28..32].copy_from_slice(&tid.to_ne_bytes());
                    inj.write_slot(slot, &args)?;
                    inj.start_thread(tid, entry, inj.remote(slot + SLOT_STACK_TOP), inj.remote(slot))?;
                    started.push((tid, slot));
                }
                let mut left = started.len();
                while left > 0 {
                    let (ret, o) = self.reply(inj)?;
                    let tid = o[0] as i32;
                    if ret != THREAD_DONE || !started.iter().any(|(t, _)| *t == tid) {
                        return Err(Error::new(ErrorCode::Parasite, format!("pid {pid}: unexpected parasite message {ret:#x} while threads answered")));
                    }
                    inj.park(tid)?;
                    status.insert(tid, o[1]);
                    left -= 1;
                }
                Ok(())
            })();
            if let Err(e) = ran {
                for (tid, _) in &started {
                    let _ = inj.park(*tid);
                }
                return Err(e);
            }
            for (tid, slot) in started {
                let mut b = vec![0u8; super::info::THREAD_INFO_LEN];
                inj.read(slot + SLOT_OUT, &mut b)?;
                // A failed call is told in the answer itself; anything else is the entry's.
                let r = status.get(&tid).copied().unwrap_or(0);
                if r < 0 && rd_i64(&b, 0) == 0 {
                    return Err(Error::new(ErrorCode::Parasite, format!("pid {pid} tid {tid}: the parasite's thread entry failed: {}", Errno::from_raw(-r as i32).desc())));
                }
                out.insert(tid, Some(b));
            }
        }
        Ok(out)
    }

    /// Runs syscall `nr` in the blob's thread; raw result (negative errno on failure).
    pub fn syscall(&mut self, inj: &mut Injector, nr: i64, args: [u64; 6]) -> Result<i64> {
        self.send(inj, OP_SYSCALL, 0, [nr as u64, args[0], args[1], args[2], args[3], args[4], args[5]], &[])?;
        Ok(self.reply(inj)?.0)
    }

    /// Makes `n` pipes in the task, grown towards `want` bytes; returns (read fd, write fd,
    /// capacity) of each. The blob keeps both ends until FINI or until its channel closes.
    pub fn pipes(&mut self, inj: &mut Injector, n: usize, want: usize) -> Result<Vec<(i32, i32, usize)>> {
        let n = n.min(MAX_PIPES);
        self.send(inj, OP_PIPES, n as u32, [want as u64, 0, 0, 0, 0, 0, 0], &[])?;
        let (r, out) = self.reply(inj)?;
        if r < 0 {
            return Err(Error::new(ErrorCode::Parasite, format!("pid {}: pipe2 in the task: {}", self.tid, Errno::from_raw(-r as i32).desc())));
        }
        let pipes: Vec<(i32, i32, usize)> =
            (0..r as usize).map(|i| (out[3 * i] as i32, out[3 * i + 1] as i32, out[3 * i + 2].max(4096) as usize)).collect();
        self.made.extend(pipes.iter().flat_map(|p| [p.0, p.1]));
        Ok(pipes)
    }

    /// vmsplice(fd, iovs, flags) in the task, `fd` being one of the blob's pipes.
    pub fn vmsplice(&mut self, inj: &mut Injector, fd: i32, iovs: &[(u64, u64)], flags: u32) -> Result<i64> {
        if iovs.len() > MAX_IOV {
            return Err(Error::new(ErrorCode::Parasite, format!("{} iovecs in one vmsplice (at most {MAX_IOV})", iovs.len())));
        }
        self.send(inj, OP_VMSPLICE, iovs.len() as u32, [fd as u64, flags as u64, 0, 0, 0, 0, 0], &iovec_bytes(iovs))?;
        Ok(self.reply(inj)?.0)
    }

    /// BLOB_SNAPSHOT: forks a holder of the task's memory as it is now (proto.h, struct
    /// blob_snapshot) and takes charge of it once it has connected.
    pub fn snapshot(&mut self, inj: &mut Injector) -> Result<crate::mem::snapshot::Holder> {
        let pid = inj.pid();
        let base = inj.data_limit() - AREA;
        let args_off = Injector::DATA_OFFSET;
        if base < args_off + SNAP_ARGS_LEN + SNAP_STACK {
            return Err(Error::new(ErrorCode::Parasite, format!("pid {pid}: scratch too small for a snapshot")));
        }
        let (listener, addr) = listen(pid)?;
        let mut args = vec![0u8; SNAP_ARGS_LEN];
        args[8..12].copy_from_slice(&(addr.len() as u32).to_ne_bytes());
        args[16..16 + addr.len()].copy_from_slice(&addr);
        inj.write(args_off, &args)?;
        let stack = inj.remote(base) & !15;
        self.send(inj, OP_SNAPSHOT, 0, [inj.remote(args_off), stack, 0, 0, 0, 0, 0], &[])?;
        let (r, _) = self.reply(inj)?;
        if r < 0 {
            let e = Errno::from_raw(-r as i32);
            return Err(Error::new(ErrorCode::Kernel, format!("pid {pid}: forking its snapshot failed: {}", e.desc())));
        }
        let holder = r as i32;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let sock = loop {
            if let Some(sock) = accept_from(listener.as_raw_fd(), holder, "accepting the snapshot holder")? {
                break sock;
            }
            let gone = crate::freezer::procinfo::has_exited(holder, holder);
            if gone || Instant::now() > deadline {
                let why = if gone { "exited" } else { "did not connect" };
                // SAFETY: kill(2) of the holder we just forked (it never runs the task's code).
                unsafe { libc::kill(holder, libc::SIGKILL) };
                return Err(Error::new(ErrorCode::Parasite, format!("pid {pid}: its snapshot holder (pid {holder}) {why}")));
            }
            poll_in(listener.as_raw_fd(), 10)?;
        };
        let mut hello = [0u8; REP_LEN];
        // SAFETY: recv into a buffer of hello.len() bytes; the holder sends before anything else.
        let n = unsafe { libc::recv(sock.as_raw_fd(), hello.as_mut_ptr().cast(), hello.len(), 0) };
        let holder = crate::mem::snapshot::Holder::new(holder, sock)?;
        if n as usize != REP_LEN || rd_i64(&hello, 0) as u64 != MAGIC {
            return Err(Error::new(ErrorCode::Parasite, format!("pid {pid}: its snapshot holder (pid {}) did not say hello", holder.pid)));
        }
        Ok(holder)
    }

    /// The blob closes the pipes it made (BLOB_FINI) and keeps serving.
    pub fn close_pipes(&mut self, inj: &mut Injector) -> Result<()> {
        self.send(inj, OP_FINI, 0, [0; 7], &[])?;
        self.reply(inj)?;
        self.made.clear();
        Ok(())
    }

    /// Ends the blob: it closes its pipes and its channel (tsdump sees EOF) and lingers; the
    /// thread is parked and put back as it was. If the blob does not answer so, its thread is
    /// parked wherever it is and the descriptors are closed by injection.
    pub fn stop(mut self, inj: &mut Injector) -> Result<()> {
        let quit = self.send(inj, OP_QUIT, 0, [0; 7], &[]).and_then(|_| self.eof(inj));
        let parked = inj.park_resident();
        if let Err(e) = &parked {
            if e.code == ErrorCode::TargetGone {
                return parked;
            }
        }
        drop(self.sock);
        if quit.is_err() && parked.is_ok() {
            for &fd in self.made.iter().chain([&self.task_fd]) {
                let _ = inj.syscall(self.tid, nr::CLOSE, [fd as u64, 0, 0, 0, 0, 0]);
            }
        }
        parked?;
        quit
    }

    /// Waits for the blob to close its end of the channel.
    fn eof(&mut self, inj: &mut Injector) -> Result<()> {
        let fd = self.sock.as_raw_fd();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if poll_in(fd, 20)? {
                let mut buf = [0u8; REP_LEN];
                // SAFETY: recv into a buffer of buf.len() bytes.
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
                match n {
                    0 => return Ok(()),
                    n if n < 0 && matches!(Errno::last(), Errno::EAGAIN | Errno::EINTR) => {}
                    n if n < 0 => return Err(self.lost(inj, Errno::last().desc())),
                    _ => return Err(Error::new(ErrorCode::Parasite, format!("tid {}: the resident parasite spoke after QUIT", self.tid))),
                }
            }
            inj.check_running()?;
            if Instant::now() > deadline {
                return Err(Error::new(ErrorCode::Parasite, format!("tid {}: the resident parasite did not close its channel", self.tid)));
            }
        }
    }
}
