//! Socket options CRIU's sk_opts_entry records, read with getsockopt on a duplicate of the
//! target's socket (options belong to the socket, so a duplicate sees the same values).

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

use crate::{Error, ErrorCode, Result};

// asm-generic/socket.h (x86_64 and aarch64 alike)
pub(crate) const SO_TYPE: i32 = 3;
const SO_DONTROUTE: i32 = 5;
const SO_BROADCAST: i32 = 6;
const SO_SNDBUF: i32 = 7;
const SO_RCVBUF: i32 = 8;
const SO_KEEPALIVE: i32 = 9;
const SO_OOBINLINE: i32 = 10;
const SO_NO_CHECK: i32 = 11;
const SO_PRIORITY: i32 = 12;
const SO_LINGER: i32 = 13;
const SO_REUSEPORT: i32 = 15;
const SO_PASSCRED: i32 = 16;
const SO_RCVLOWAT: i32 = 18;
const SO_RCVTIMEO_OLD: i32 = 20;
const SO_SNDTIMEO_OLD: i32 = 21;
const SO_BINDTODEVICE: i32 = 25;
const SO_GET_FILTER: i32 = 26;
const SO_ACCEPTCONN: i32 = 30;
const SO_PASSSEC: i32 = 34;
const SO_MARK: i32 = 36;
pub(crate) const SO_PROTOCOL: i32 = 38;
pub(crate) const SO_DOMAIN: i32 = 39;
const SO_BUF_LOCK: i32 = 72;
const SO_REUSEADDR: i32 = 2;

const SOL_TCP: i32 = 6;
const TCP_KEEPIDLE: i32 = 4;
const TCP_KEEPINTVL: i32 = 5;
const TCP_KEEPCNT: i32 = 6;

/// sk_opts_entry's facts. `Option` fields are the ones CRIU writes only when set.
#[derive(Debug, Clone, Default)]
pub struct SockOpts {
    pub sndbuf: u32,
    pub rcvbuf: u32,
    pub snd_tmo: (u64, u64),
    pub rcv_tmo: (u64, u64),
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub priority: u32,
    pub rcvlowat: u32,
    pub mark: u32,
    pub passcred: bool,
    pub passsec: bool,
    pub dontroute: bool,
    pub no_check: bool,
    pub broadcast: bool,
    pub keepalive: bool,
    pub oobinline: bool,
    /// l_linger, when SO_LINGER is on.
    pub linger: Option<u32>,
    /// SO_BUF_LOCK (Linux 5.14+), None where the kernel lacks it.
    pub buf_lock: Option<u32>,
    pub bound_dev: Option<String>,
    /// Classic BPF filter, each instruction packed as CRIU does (code<<48 | jt<<40 | jf<<32 | k).
    pub filter: Vec<u64>,
    /// TCP keepalive tuning, read for TCP sockets with SO_KEEPALIVE on.
    pub tcp_keep: Option<(u32, u32, u32)>,
    pub acceptconn: bool,
}

fn raw_opt(fd: BorrowedFd, level: i32, name: i32, buf: &mut [u8]) -> std::result::Result<usize, Errno> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into buf and updates len.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, buf.as_mut_ptr().cast(), &mut len) };
    Errno::result(r).map(|_| len as usize)
}

pub(crate) fn int_opt(fd: BorrowedFd, level: i32, name: i32) -> std::result::Result<i32, Errno> {
    let mut b = [0u8; 4];
    raw_opt(fd, level, name, &mut b)?;
    Ok(i32::from_ne_bytes(b))
}

fn timeval_opt(fd: BorrowedFd, name: i32) -> std::result::Result<(u64, u64), Errno> {
    let mut b = [0u8; 16];
    raw_opt(fd, libc::SOL_SOCKET, name, &mut b)?;
    let sec = i64::from_ne_bytes(b[0..8].try_into().unwrap());
    let usec = i64::from_ne_bytes(b[8..16].try_into().unwrap());
    Ok((sec as u64, usec as u64))
}

/// Reads the options of the socket behind `fd`; `ctx` names it in errors (e.g. "pid 5 fd 3").
///
/// SO_PASSCRED and SO_PASSSEC only mean something for unix (and netlink) sockets; kernels since
/// 6.x refuse them on inet sockets with EOPNOTSUPP, which is recorded as "off".
pub fn socket_opts(fd: BorrowedFd, ctx: &str, tcp: bool) -> Result<SockOpts> {
    let fail = |what: &str, e: Errno| Error::new(ErrorCode::Kernel, format!("{ctx}: getsockopt({what}): {}", e.desc()));
    let int = |name: i32, what: &str| int_opt(fd, libc::SOL_SOCKET, name).map_err(|e| fail(what, e));
    let flag = |name: i32, what: &str| int(name, what).map(|v| v != 0);
    let optional_flag = |name: i32, what: &str| match int_opt(fd, libc::SOL_SOCKET, name) {
        Ok(v) => Ok(v != 0),
        Err(Errno::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(fail(what, e)),
    };
    let mut o = SockOpts {
        sndbuf: int(SO_SNDBUF, "SO_SNDBUF")? as u32,
        rcvbuf: int(SO_RCVBUF, "SO_RCVBUF")? as u32,
        priority: int(SO_PRIORITY, "SO_PRIORITY")? as u32,
        rcvlowat: int(SO_RCVLOWAT, "SO_RCVLOWAT")? as u32,
        mark: int(SO_MARK, "SO_MARK")? as u32,
        snd_tmo: timeval_opt(fd, SO_SNDTIMEO_OLD).map_err(|e| fail("SO_SNDTIMEO", e))?,
        rcv_tmo: timeval_opt(fd, SO_RCVTIMEO_OLD).map_err(|e| fail("SO_RCVTIMEO", e))?,
        reuseaddr: flag(SO_REUSEADDR, "SO_REUSEADDR")?,
        reuseport: flag(SO_REUSEPORT, "SO_REUSEPORT")?,
        passcred: optional_flag(SO_PASSCRED, "SO_PASSCRED")?,
        passsec: optional_flag(SO_PASSSEC, "SO_PASSSEC")?,
        dontroute: flag(SO_DONTROUTE, "SO_DONTROUTE")?,
        no_check: flag(SO_NO_CHECK, "SO_NO_CHECK")?,
        broadcast: flag(SO_BROADCAST, "SO_BROADCAST")?,
        keepalive: flag(SO_KEEPALIVE, "SO_KEEPALIVE")?,
        oobinline: flag(SO_OOBINLINE, "SO_OOBINLINE")?,
        acceptconn: flag(SO_ACCEPTCONN, "SO_ACCEPTCONN")?,
        ..Default::default()
    };
    o.buf_lock = match int_opt(fd, libc::SOL_SOCKET, SO_BUF_LOCK) {
        Ok(v) => Some(v as u32),
        Err(Errno::ENOPROTOOPT) => None,
        Err(e) => return Err(fail("SO_BUF_LOCK", e)),
    };
    let mut linger = [0u8; 8];
    raw_opt(fd, libc::SOL_SOCKET, SO_LINGER, &mut linger).map_err(|e| fail("SO_LINGER", e))?;
    if i32::from_ne_bytes(linger[0..4].try_into().unwrap()) != 0 {
        o.linger = Some(i32::from_ne_bytes(linger[4..8].try_into().unwrap()) as u32);
    }
    let mut dev = [0u8; 16];
    let n = raw_opt(fd, libc::SOL_SOCKET, SO_BINDTODEVICE, &mut dev).map_err(|e| fail("SO_BINDTODEVICE", e))?;
    if n > 0 {
        let end = dev[..n].iter().position(|&b| b == 0).unwrap_or(n);
        if end > 0 {
            o.bound_dev = Some(String::from_utf8_lossy(&dev[..end]).into_owned());
        }
    }
    o.filter = socket_filter(fd).map_err(|e| fail("SO_GET_FILTER", e))?;
    if tcp && o.keepalive {
        let t = |name: i32, what: &str| int_opt(fd, SOL_TCP, name).map(|v| v as u32).map_err(|e| fail(what, e));
        o.tcp_keep = Some((t(TCP_KEEPCNT, "TCP_KEEPCNT")?, t(TCP_KEEPIDLE, "TCP_KEEPIDLE")?, t(TCP_KEEPINTVL, "TCP_KEEPINTVL")?));
    }
    Ok(o)
}

/// The attached classic BPF filter: getsockopt with length 0 answers the instruction count.
fn socket_filter(fd: BorrowedFd) -> std::result::Result<Vec<u64>, Errno> {
    let mut count: libc::socklen_t = 0;
    // SAFETY: with a zero length the kernel writes only the instruction count into `count`.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, SO_GET_FILTER, std::ptr::null_mut(), &mut count) };
    Errno::result(r)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut insns = vec![0u8; count as usize * 8];
    let mut len = count;
    // SAFETY: SO_GET_FILTER's length is in instructions (8 bytes each); the buffer holds `count`.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, SO_GET_FILTER, insns.as_mut_ptr().cast(), &mut len) };
    Errno::result(r)?;
    Ok(insns
        .chunks_exact(8)
        .take(len as usize)
        .map(|i| {
            // struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }
            let code = u16::from_ne_bytes([i[0], i[1]]) as u64;
            let k = u32::from_ne_bytes(i[4..8].try_into().unwrap()) as u64;
            (code << 48) | ((i[2] as u64) << 40) | ((i[3] as u64) << 32) | k
        })
        .collect())
}
