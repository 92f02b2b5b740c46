//! Sockets: the kernel's view of every unix and inet socket (sock_diag netlink, `diag`), and what
//! can only be read through the socket itself — options (`opts`), the receive queue (`queue`),
//! the bound file of a unix socket — on a duplicate of the target's descriptor (pidfd_getfd), so
//! no code runs in the target.

pub mod diag;
pub mod inet_opts;
pub mod opts;
pub mod queue;
pub mod tcp_repair;

use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;

pub use diag::{inet_sockets, netlink_sockets, unix_sockets, InetSockDiag, NetlinkSockDiag, UnixSockDiag};
pub use opts::{socket_opts, SockOpts};
pub use queue::{peek_queue, QueuedMessage};
pub use inet_opts::{inet_options, InetOpts, TcpOpts};
pub use tcp_repair::{TcpRepair, TcpStreamState, TcpWindow};

use crate::files::steal_fd;
use crate::{Error, ErrorCode, Result};

const SIOCUNIXFILE: libc::c_ulong = 0x89E0; // SIOCPROTOPRIVATE + 0
const SOL_IP: i32 = 0;
const IP_FREEBIND: i32 = 15;
const SOL_IPV6: i32 = 41;
const IPV6_V6ONLY: i32 = 26;
const SOL_UDP: i32 = 17;
const UDP_CORK: i32 = 1;

/// The file a path-bound unix socket created (stat of it and where it is now).
#[derive(Debug, Clone)]
pub struct UnixFile {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Its path as the kernel resolves it now (" (deleted)" removed).
    pub path: String,
    pub deleted: bool,
}

/// What tsdump reads through one socket descriptor.
#[derive(Debug, Clone)]
pub struct SocketFacts {
    pub family: i32,
    pub sock_type: i32,
    pub protocol: i32,
    pub opts: SockOpts,
    /// IPV6_V6ONLY of an AF_INET6 socket.
    pub v6only: Option<bool>,
    /// IP_FREEBIND of an inet socket.
    pub freebind: bool,
    /// UDP_CORK of a UDP socket.
    pub udp_cork: bool,
    /// The socket file of a path-bound unix socket.
    pub unix_file: Option<UnixFile>,
}

/// Reads the socket behind fd `fd` of task `pid` (its queue: `peek_socket_queue`).
pub fn inspect_socket(pid: i32, fd: i32) -> Result<SocketFacts> {
    let dup = steal_fd(pid, fd)?;
    let sk = dup.as_fd();
    let ctx = format!("pid {pid}: fd {fd}");
    let get = |level: i32, name: i32, what: &str| {
        opts::int_opt(sk, level, name)
            .map_err(|e| Error::new(ErrorCode::Kernel, format!("{ctx}: getsockopt({what}): {}", e.desc())))
    };
    let family = get(libc::SOL_SOCKET, opts::SO_DOMAIN, "SO_DOMAIN")?;
    let sock_type = get(libc::SOL_SOCKET, opts::SO_TYPE, "SO_TYPE")?;
    let protocol = get(libc::SOL_SOCKET, opts::SO_PROTOCOL, "SO_PROTOCOL")?;
    let inet = family == libc::AF_INET || family == libc::AF_INET6;
    let stream = protocol == libc::IPPROTO_TCP || protocol == inet_opts::IPPROTO_MPTCP;
    let opts = socket_opts(sk, &ctx, inet && stream)?;
    let mut facts = SocketFacts {
        family,
        sock_type,
        protocol,
        opts,
        v6only: None,
        freebind: false,
        udp_cork: false,
        unix_file: None,
    };
    if family == libc::AF_INET6 {
        facts.v6only = Some(get(SOL_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY")? != 0);
    }
    if inet && sock_type != libc::SOCK_RAW {
        // IP_FREEBIND answers for both families through SOL_IP.
        facts.freebind = get(SOL_IP, IP_FREEBIND, "IP_FREEBIND")? != 0;
        if protocol == libc::IPPROTO_UDP {
            facts.udp_cork = get(SOL_UDP, UDP_CORK, "UDP_CORK")? != 0;
        }
    }
    if family == libc::AF_UNIX {
        facts.unix_file = unix_file(sk, &ctx)?;
    }
    Ok(facts)
}

/// The receive queue of the socket behind fd `fd` of task `pid`, left in place (see `queue`).
pub fn peek_socket_queue(pid: i32, fd: i32) -> Result<Vec<QueuedMessage>> {
    let dup = steal_fd(pid, fd)?;
    let ctx = format!("pid {pid}: fd {fd}");
    let sock_type = opts::int_opt(dup.as_fd(), libc::SOL_SOCKET, opts::SO_TYPE)
        .map_err(|e| Error::new(ErrorCode::Kernel, format!("{ctx}: getsockopt(SO_TYPE): {}", e.desc())))?;
    peek_queue(dup.as_fd(), &ctx, sock_type != libc::SOCK_STREAM)
}

/// The socket file of a path-bound unix socket (SIOCUNIXFILE opens it O_PATH); None if the
/// socket is not bound to a path.
fn unix_file(sk: BorrowedFd, ctx: &str) -> Result<Option<UnixFile>> {
    // SAFETY: SIOCUNIXFILE takes no argument and returns a new O_PATH fd or -1.
    let r = unsafe { libc::ioctl(sk.as_raw_fd(), SIOCUNIXFILE as _) };
    if r < 0 {
        let e = Errno::last();
        if e == Errno::ENOENT {
            return Ok(None);
        }
        return Err(Error::new(ErrorCode::Kernel, format!("{ctx}: ioctl(SIOCUNIXFILE): {}", e.desc())));
    }
    // SAFETY: a fresh fd from the kernel, owned only here.
    let file = unsafe { OwnedFd::from_raw_fd(r) };
    let link = format!("/proc/self/fd/{}", file.as_raw_fd());
    let io = |what: &str, e: std::io::Error| Error::new(ErrorCode::Kernel, format!("{ctx}: {what} of the socket file: {e}"));
    let st = fs::metadata(&link).map_err(|e| io("stat", e))?;
    let target = fs::read_link(&link).map_err(|e| io("readlink", e))?;
    let mut path = target.to_string_lossy().into_owned();
    let deleted = path.ends_with(" (deleted)");
    if deleted {
        path.truncate(path.len() - " (deleted)".len());
    }
    Ok(Some(UnixFile { mode: st.mode(), uid: st.uid(), gid: st.gid(), path, deleted }))
}

#[cfg(test)]
mod tests;
