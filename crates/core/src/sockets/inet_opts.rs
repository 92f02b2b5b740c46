//! The IP- and TCP-level options CRIU 4.1 records beside an inet socket (ip_opts_entry's TTL and
//! TOS, tcp_opts_entry), read with getsockopt on a duplicate of the target's socket. An MPTCP
//! socket answers the TCP-level ones for its subflows but has no IP_TTL (EOPNOTSUPP): its TTL is
//! left out, as if never set.

use std::os::fd::AsFd;

use nix::errno::Errno;

use super::opts::{int_opt, SO_DOMAIN, SO_PROTOCOL};
use crate::files::steal_fd;
use crate::{Error, ErrorCode, Result};

const SOL_IP: i32 = 0;
const IP_TOS: i32 = 1;
const IP_TTL: i32 = 2;
const SOL_TCP: i32 = 6;
const TCP_NODELAY: i32 = 1;
const TCP_CORK: i32 = 3;
const TCP_KEEPIDLE: i32 = 4;
const TCP_KEEPINTVL: i32 = 5;
const TCP_KEEPCNT: i32 = 6;
pub const IPPROTO_MPTCP: i32 = 262;

/// Socket options CRIU 4.1 records beside an inet socket (ip_opts_entry, tcp_opts_entry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InetOpts {
    /// IP_TTL and IP_TOS of an AF_INET socket (not asked of AF_INET6 ones; no TTL for MPTCP).
    pub ttl: Option<u32>,
    pub tos: Option<u32>,
    /// TCP_NODELAY, TCP_CORK and the keepalive tuning of a TCP or MPTCP socket.
    pub tcp: Option<TcpOpts>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpOpts {
    pub nodelay: bool,
    pub cork: bool,
    pub keepcnt: u32,
    pub keepidle: u32,
    pub keepintvl: u32,
}

/// IP_TTL/IP_TOS and TCP_NODELAY/TCP_CORK/TCP_KEEP* of the socket behind fd `fd` of task `pid`.
pub fn inet_options(pid: i32, fd: i32) -> Result<InetOpts> {
    let dup = steal_fd(pid, fd)?;
    let sk = dup.as_fd();
    let ctx = format!("pid {pid}: fd {fd}");
    let fail = |what: &str, e: Errno| Error::new(ErrorCode::Kernel, format!("{ctx}: getsockopt({what}): {}", e.desc()));
    let get = |level: i32, name: i32, what: &str| int_opt(sk, level, name).map_err(|e| fail(what, e));
    let family = get(libc::SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN")?;
    let protocol = get(libc::SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL")?;
    let mut o = InetOpts::default();
    let mptcp = protocol == IPPROTO_MPTCP;
    if family == libc::AF_INET {
        if !mptcp {
            o.ttl = Some(get(SOL_IP, IP_TTL, "IP_TTL")? as u32);
        }
        o.tos = Some(get(SOL_IP, IP_TOS, "IP_TOS")? as u32);
    }
    if protocol == libc::IPPROTO_TCP || mptcp {
        o.tcp = Some(TcpOpts {
            nodelay: get(SOL_TCP, TCP_NODELAY, "TCP_NODELAY")? != 0,
            cork: get(SOL_TCP, TCP_CORK, "TCP_CORK")? != 0,
            keepcnt: get(SOL_TCP, TCP_KEEPCNT, "TCP_KEEPCNT")? as u32,
            keepidle: get(SOL_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE")? as u32,
            keepintvl: get(SOL_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL")? as u32,
        });
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, FromRawFd};

    use super::*;

    #[test]
    fn inet_options_of_a_tcp_socket() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        a.set_nodelay(true).unwrap();
        let o = inet_options(std::process::id() as i32, a.as_raw_fd()).unwrap();
        assert_eq!(o.ttl, Some(64));
        assert_eq!(o.tos, Some(0));
        let tcp = o.tcp.unwrap();
        assert!(tcp.nodelay);
        assert!(!tcp.cork);
        assert!(tcp.keepidle > 0);
    }

    #[test]
    fn mptcp_sockets_have_tcp_options_and_no_ttl() {
        // SAFETY: socket() takes plain integers; the fd is wrapped right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, IPPROTO_MPTCP) };
        assert!(fd >= 0, "socket(IPPROTO_MPTCP): {} (is net.mptcp.enabled 1?)", Errno::last().desc());
        // SAFETY: a fresh fd owned only here.
        let sk = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let o = inet_options(std::process::id() as i32, sk.as_raw_fd()).unwrap();
        assert_eq!((o.ttl, o.tos), (None, Some(0)));
        assert!(o.tcp.unwrap().keepidle > 0);
    }

    #[test]
    fn udp_sockets_have_no_tcp_options() {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let o = inet_options(std::process::id() as i32, u.as_raw_fd()).unwrap();
        assert!(o.ttl.is_some());
        assert!(o.tcp.is_none());
    }
}
