//! An established TCP connection read through TCP_REPAIR (Linux 3.11+), on a duplicate of the
//! target's socket: what CRIU's libsoccr saves into tcp-stream-INO.img.
//!
//! Repair mode freezes the connection for its owner: nothing is sent, the queues can be read back
//! without being consumed, and the sequence numbers and negotiated options can be asked for. The
//! order matters and follows the kernel's model of the two queues:
//!
//! ```text
//!   send queue   snd_una ........ snd_nxt ........ write_seq     SIOCOUTQ    = write_seq - snd_una
//!                 (sent, unacked)   (never sent)                 SIOCOUTQNSD = write_seq - snd_nxt
//!   recv queue   copied_seq ..... rcv_nxt                        SIOCINQ     = rcv_nxt - copied_seq
//! ```
//!
//! TCP_QUEUE_SEQ answers the far end of each queue (rcv_nxt, write_seq); a restore sets the near
//! end (far end minus the queue length) and replays the bytes. A socket left in repair mode is
//! closed silently — no FIN, no RST — which is how the dumped task's side of the connection goes
//! away when the task is killed after a dump. The peer never notices; packets that would tell it
//! otherwise are dropped by the network lock the caller holds (see src/dump/network-lock.ts).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

use super::opts::int_opt;
use crate::files::steal_fd;
use crate::{Error, ErrorCode, Result};

// linux/tcp.h
const SOL_TCP: i32 = 6;
const TCP_MAXSEG: i32 = 2;
const TCP_INFO: i32 = 11;
const TCP_REPAIR: i32 = 19;
const TCP_REPAIR_QUEUE: i32 = 20;
const TCP_QUEUE_SEQ: i32 = 21;
const TCP_TIMESTAMP: i32 = 24;
const TCP_REPAIR_WINDOW: i32 = 29;
const TCP_REPAIR_ON: i32 = 1;
const TCP_REPAIR_OFF: i32 = 0;
const TCP_NO_QUEUE: i32 = 0;
const TCP_RECV_QUEUE: i32 = 1;
const TCP_SEND_QUEUE: i32 = 2;
/// tcp_info.tcpi_options bits.
pub const TCPI_OPT_TIMESTAMPS: u32 = 1;
pub const TCPI_OPT_SACK: u32 = 2;
pub const TCPI_OPT_WSCALE: u32 = 4;

// asm-generic/ioctls.h and linux/sockios.h
const SIOCINQ: libc::c_ulong = 0x541B;
const SIOCOUTQ: libc::c_ulong = 0x5411;
const SIOCOUTQNSD: libc::c_ulong = 0x894B;

const SO_REUSEADDR: i32 = 2;

// net/tcp_states.h
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_FIN_WAIT1: u8 = 4;
pub const TCP_FIN_WAIT2: u8 = 5;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_LAST_ACK: u8 = 9;
pub const TCP_CLOSING: u8 = 11;

/// States in which the send queue ends with our FIN, which carries no data byte but one sequence
/// number: the queue lengths the kernel reports count it, the bytes to save do not.
const FIN_IN_SEND_QUEUE: u32 = (1 << TCP_FIN_WAIT1) | (1 << TCP_FIN_WAIT2) | (1 << TCP_CLOSING) | (1 << TCP_LAST_ACK) | (1 << TCP_CLOSE);

/// TCP_REPAIR_WINDOW's struct tcp_repair_window (Linux 4.8+).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpWindow {
    pub snd_wl1: u32,
    pub snd_wnd: u32,
    pub max_window: u32,
    pub rcv_wnd: u32,
    pub rcv_wup: u32,
}

/// Everything tcp_stream_entry records about one connection, plus its queued bytes.
#[derive(Debug, Clone, Default)]
pub struct TcpStreamState {
    /// tcpi_state (TCP_ESTABLISHED, ...), what the inet entry records as the socket's state.
    pub state: u8,
    /// Bytes received and not yet read by the task.
    pub inq_len: u32,
    /// rcv_nxt: the sequence number after the last received byte.
    pub inq_seq: u32,
    /// Bytes written by the task and not yet acknowledged (sent or not).
    pub outq_len: u32,
    /// write_seq: the sequence number after the last byte written.
    pub outq_seq: u32,
    /// The part of outq_len never sent (restore queues it as ordinary writes).
    pub unsq_len: u32,
    /// tcpi_options: TCPI_OPT_* negotiated at the handshake.
    pub opt_mask: u32,
    pub snd_wscale: u32,
    pub rcv_wscale: u32,
    /// The MSS limit negotiated (TCP_MAXSEG answers it in repair mode).
    pub mss_clamp: u32,
    /// TCP_TIMESTAMP (the socket's timestamp clock) when timestamps were negotiated.
    pub timestamp: Option<u32>,
    /// None where the kernel lacks TCP_REPAIR_WINDOW.
    pub window: Option<TcpWindow>,
    pub inq: Vec<u8>,
    pub outq: Vec<u8>,
}

/// A connection held in repair mode through our own duplicate of the task's socket. Dropping it
/// closes only the duplicate: the socket stays in repair mode, the state a dump that kills the
/// task wants. `resume` is the way back to a working connection.
#[derive(Debug)]
pub struct TcpRepair {
    sk: OwnedFd,
    ctx: String,
    /// SO_REUSEADDR before repair mode, which leaving repair mode clears.
    reuseaddr: i32,
}

fn fail(ctx: &str, what: &str, e: Errno) -> Error {
    Error::new(ErrorCode::Kernel, format!("{ctx}: {what}: {}", e.desc()))
}

fn set_int(fd: BorrowedFd, level: i32, name: i32, v: i32) -> std::result::Result<(), Errno> {
    // SAFETY: setsockopt reads one int from the pointer we pass.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (&v as *const i32).cast(), 4) };
    Errno::result(r).map(|_| ())
}

fn ioctl_int(fd: BorrowedFd, req: libc::c_ulong) -> std::result::Result<u32, Errno> {
    let mut v: libc::c_int = 0;
    // SAFETY: these socket ioctls write one int through the pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, &mut v) };
    Errno::result(r).map(|_| v as u32)
}

fn get_bytes(fd: BorrowedFd, level: i32, name: i32, buf: &mut [u8]) -> std::result::Result<usize, Errno> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into buf and updates len.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, buf.as_mut_ptr().cast(), &mut len) };
    Errno::result(r).map(|_| len as usize)
}

impl TcpRepair {
    /// Puts the socket behind fd `fd` of task `pid` into repair mode. The task must be stopped
    /// and the connection's packets dropped (the network lock) before this is called.
    pub fn pause(pid: i32, fd: i32) -> Result<TcpRepair> {
        let sk = steal_fd(pid, fd)?;
        let ctx = format!("pid {pid}: fd {fd}");
        let reuseaddr = int_opt(sk.as_fd(), libc::SOL_SOCKET, SO_REUSEADDR).map_err(|e| fail(&ctx, "getsockopt(SO_REUSEADDR)", e))?;
        set_int(sk.as_fd(), SOL_TCP, TCP_REPAIR, TCP_REPAIR_ON).map_err(|e| fail(&ctx, "setsockopt(TCP_REPAIR, on)", e))?;
        Ok(TcpRepair { sk, ctx, reuseaddr })
    }

    /// Reads the connection: state, queue lengths, options, window, then both queues (each
    /// selected with TCP_REPAIR_QUEUE, its far-end sequence number from TCP_QUEUE_SEQ, its bytes
    /// peeked in one piece).
    pub fn save(&self) -> Result<TcpStreamState> {
        let sk = self.sk.as_fd();
        let ctx = self.ctx.as_str();
        let mut info = [0u8; 256];
        let n = get_bytes(sk, SOL_TCP, TCP_INFO, &mut info).map_err(|e| fail(ctx, "getsockopt(TCP_INFO)", e))?;
        if n < 7 {
            return Err(Error::new(ErrorCode::Kernel, format!("{ctx}: TCP_INFO answered {n} bytes")));
        }
        let mut st = TcpStreamState { state: info[0], opt_mask: info[5] as u32, ..Default::default() };
        let ioctl = |req, what: &str| ioctl_int(sk, req).map_err(|e| fail(ctx, what, e));
        st.outq_len = ioctl(SIOCOUTQ, "ioctl(SIOCOUTQ)")?;
        st.unsq_len = ioctl(SIOCOUTQNSD, "ioctl(SIOCOUTQNSD)")?;
        st.inq_len = ioctl(SIOCINQ, "ioctl(SIOCINQ)")?;
        if st.state == TCP_CLOSE {
            // A reset connection may keep bytes in its send queue nobody can read any more.
            st.outq_len = 0;
            st.unsq_len = 0;
        }
        if FIN_IN_SEND_QUEUE & (1 << st.state) != 0 {
            st.outq_len = st.outq_len.saturating_sub(1);
            st.unsq_len = st.unsq_len.saturating_sub(1);
        }

        st.mss_clamp = int_opt(sk, SOL_TCP, TCP_MAXSEG).map_err(|e| fail(ctx, "getsockopt(TCP_MAXSEG)", e))? as u32;
        if st.opt_mask & TCPI_OPT_WSCALE != 0 {
            // tcpi_snd_wscale:4, tcpi_rcv_wscale:4 share one byte, low nibble first.
            st.snd_wscale = (info[6] & 0x0f) as u32;
            st.rcv_wscale = (info[6] >> 4) as u32;
        }
        if st.opt_mask & TCPI_OPT_TIMESTAMPS != 0 {
            st.timestamp = Some(int_opt(sk, SOL_TCP, TCP_TIMESTAMP).map_err(|e| fail(ctx, "getsockopt(TCP_TIMESTAMP)", e))? as u32);
        }
        let mut w = [0u8; 20];
        st.window = match get_bytes(sk, SOL_TCP, TCP_REPAIR_WINDOW, &mut w) {
            Ok(20) => {
                let word = |i: usize| u32::from_ne_bytes(w[i * 4..i * 4 + 4].try_into().unwrap());
                Some(TcpWindow { snd_wl1: word(0), snd_wnd: word(1), max_window: word(2), rcv_wnd: word(3), rcv_wup: word(4) })
            }
            Ok(n) => return Err(Error::new(ErrorCode::Kernel, format!("{ctx}: TCP_REPAIR_WINDOW answered {n} bytes"))),
            Err(Errno::ENOPROTOOPT) => None,
            Err(e) => return Err(fail(ctx, "getsockopt(TCP_REPAIR_WINDOW)", e)),
        };

        let (inq_seq, inq) = self.queue(TCP_RECV_QUEUE, "receive", st.inq_len)?;
        let (outq_seq, outq) = self.queue(TCP_SEND_QUEUE, "send", st.outq_len)?;
        set_int(sk, SOL_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE).map_err(|e| fail(ctx, "setsockopt(TCP_REPAIR_QUEUE, none)", e))?;
        st.inq_seq = inq_seq;
        st.inq = inq;
        st.outq_seq = outq_seq;
        st.outq = outq;
        Ok(st)
    }

    /// One queue: its far-end sequence number and its `len` bytes, peeked (asking for one byte
    /// more proves the queue holds exactly `len`).
    fn queue(&self, id: i32, name: &str, len: u32) -> Result<(u32, Vec<u8>)> {
        let sk = self.sk.as_fd();
        let ctx = self.ctx.as_str();
        set_int(sk, SOL_TCP, TCP_REPAIR_QUEUE, id).map_err(|e| fail(ctx, &format!("setsockopt(TCP_REPAIR_QUEUE, {name})"), e))?;
        let seq = int_opt(sk, SOL_TCP, TCP_QUEUE_SEQ).map_err(|e| fail(ctx, &format!("getsockopt(TCP_QUEUE_SEQ) of the {name} queue"), e))? as u32;
        if len == 0 {
            return Ok((seq, Vec::new()));
        }
        let mut buf = vec![0u8; len as usize + 1];
        let got = loop {
            // SAFETY: recv writes at most buf.len() bytes into buf.
            let n = unsafe { libc::recv(sk.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT) };
            if n >= 0 {
                break n as usize;
            }
            let e = Errno::last();
            if e != Errno::EINTR {
                return Err(fail(ctx, &format!("peeking the {name} queue"), e));
            }
        };
        if got != len as usize {
            return Err(Error::new(
                ErrorCode::Kernel,
                format!("{ctx}: the {name} queue holds {got} bytes where its length said {len}"),
            ));
        }
        buf.truncate(got);
        Ok((seq, buf))
    }

    /// Leaves repair mode: the connection works again (the kernel sends a window probe) and
    /// SO_REUSEADDR is put back, since leaving repair mode clears it.
    pub fn resume(self) -> Result<()> {
        let sk = self.sk.as_fd();
        set_int(sk, SOL_TCP, TCP_REPAIR, TCP_REPAIR_OFF).map_err(|e| fail(&self.ctx, "setsockopt(TCP_REPAIR, off)", e))?;
        set_int(sk, libc::SOL_SOCKET, SO_REUSEADDR, self.reuseaddr).map_err(|e| fail(&self.ctx, "restoring SO_REUSEADDR", e))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    fn settle() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    #[test]
    fn repair_reads_both_queues_and_resume_keeps_the_connection() {
        let (mut a, mut b) = pair();
        b.write_all(b"to be read by a").unwrap();
        a.write_all(b"acked by b").unwrap();
        settle();
        let me = std::process::id() as i32;
        let r = TcpRepair::pause(me, a.as_raw_fd()).unwrap();
        let st = r.save().unwrap();
        assert_eq!(st.state, TCP_ESTABLISHED);
        assert_eq!(st.inq, b"to be read by a");
        assert_eq!(st.inq_len, 15);
        // b's kernel acknowledged everything a sent: nothing left in a's send queue.
        assert_eq!((st.outq_len, st.unsq_len), (0, 0));
        assert!(st.mss_clamp > 0);
        assert!(st.window.is_some());
        // Peeking consumed nothing, and the sequence numbers are the ends of each queue.
        let again = r.save().unwrap();
        assert_eq!((again.inq_seq, again.outq_seq, again.inq), (st.inq_seq, st.outq_seq, st.inq.clone()));
        r.resume().unwrap();
        let mut buf = [0u8; 15];
        a.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"to be read by a");
        a.write_all(b"after").unwrap();
        let mut got = [0u8; 15];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"acked by bafter");
    }
}
