//! Socket facts for the socket fd kinds: the kernel's tables (sock_diag) and what one socket
//! descriptor of a task shows (options, queue, bound file). Like `files`, these need ptrace
//! access to the task (pidfd_getfd), not the tracer thread.

use std::os::fd::IntoRawFd;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tsdump_core::sockets;

use crate::errors::to_napi;

#[napi(object)]
pub struct UnixSocketDiag {
    pub ino: u32,
    pub sock_type: u32,
    pub state: u32,
    pub peer: u32,
    /// Bound address bytes: empty, a path, or a leading NUL for an abstract name.
    pub name: Buffer,
    pub vfs_dev: Option<u32>,
    pub vfs_ino: Option<u32>,
    pub icons: Vec<u32>,
    pub rqlen: u32,
    pub wqlen: u32,
    pub shutdown: u32,
}

/// Every unix socket of this network namespace (unix_diag).
#[napi]
pub fn unix_sockets() -> Result<Vec<UnixSocketDiag>> {
    let all = sockets::unix_sockets().map_err(to_napi)?;
    Ok(all
        .into_iter()
        .map(|s| UnixSocketDiag {
            ino: s.ino,
            sock_type: s.sock_type,
            state: s.state,
            peer: s.peer,
            name: s.name.into(),
            vfs_dev: s.vfs.map(|v| v.0),
            vfs_ino: s.vfs.map(|v| v.1),
            icons: s.icons,
            rqlen: s.rqlen,
            wqlen: s.wqlen,
            shutdown: s.shutdown as u32,
        })
        .collect())
}

#[napi(object)]
pub struct NetlinkSocketDiag {
    pub ino: u32,
    pub protocol: u32,
    /// NETLINK_UNCONNECTED (0) or NETLINK_CONNECTED (1).
    pub state: u32,
    pub portid: u32,
    pub dst_portid: u32,
    pub dst_group: u32,
    /// Multicast groups it listens to, 32-bit words of the kernel's bitmap.
    pub groups: Vec<u32>,
}

/// Every bound netlink socket of this network namespace (netlink_diag).
#[napi]
pub fn netlink_sockets() -> Result<Vec<NetlinkSocketDiag>> {
    let all = sockets::netlink_sockets().map_err(to_napi)?;
    Ok(all
        .into_iter()
        .map(|s| NetlinkSocketDiag {
            ino: s.ino,
            protocol: s.protocol as u32,
            state: s.state as u32,
            portid: s.portid,
            dst_portid: s.dst_portid,
            dst_group: s.dst_group,
            groups: s.groups,
        })
        .collect())
}

#[napi(object)]
pub struct InetSocketDiag {
    pub ino: u32,
    pub family: u32,
    pub protocol: u32,
    pub state: u32,
    pub src_port: u32,
    pub dst_port: u32,
    /// Address words as CRIU stores them (memory order); 1 for IPv4, 4 for IPv6.
    pub src_addr: Vec<u32>,
    pub dst_addr: Vec<u32>,
    pub ifindex: u32,
    pub rqlen: u32,
    pub wqlen: u32,
    pub shutdown: u32,
}

/// Every socket of `family` (2 = AF_INET, 10 = AF_INET6) and `protocol` (6 = TCP, 17 = UDP,
/// 262 = MPTCP).
#[napi]
pub fn inet_sockets(family: u32, protocol: u32) -> Result<Vec<InetSocketDiag>> {
    let all = sockets::inet_sockets(family as u8, protocol).map_err(to_napi)?;
    let words = if family == AF_INET6 { 4 } else { 1 };
    Ok(all
        .into_iter()
        .map(|s| InetSocketDiag {
            ino: s.ino,
            family: s.family as u32,
            protocol: s.protocol,
            state: s.state as u32,
            src_port: s.src_port as u32,
            dst_port: s.dst_port as u32,
            src_addr: s.src_addr[..words].to_vec(),
            dst_addr: s.dst_addr[..words].to_vec(),
            ifindex: s.ifindex,
            rqlen: s.rqlen,
            wqlen: s.wqlen,
            shutdown: s.shutdown as u32,
        })
        .collect())
}

const AF_INET6: u32 = 10;

#[napi(object)]
pub struct SocketOptions {
    pub sndbuf: u32,
    pub rcvbuf: u32,
    pub snd_tmo_sec: BigInt,
    pub snd_tmo_usec: BigInt,
    pub rcv_tmo_sec: BigInt,
    pub rcv_tmo_usec: BigInt,
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
    pub linger: Option<u32>,
    pub buf_lock: Option<u32>,
    pub bound_dev: Option<String>,
    pub filter: Vec<BigInt>,
    pub tcp_keepcnt: Option<u32>,
    pub tcp_keepidle: Option<u32>,
    pub tcp_keepintvl: Option<u32>,
    pub acceptconn: bool,
}

#[napi(object)]
pub struct UnixSocketFile {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub path: String,
    pub deleted: bool,
}

#[napi(object)]
pub struct SocketInfo {
    pub family: i32,
    pub sock_type: i32,
    pub protocol: i32,
    pub opts: SocketOptions,
    pub v6only: Option<bool>,
    pub freebind: bool,
    pub udp_cork: bool,
    pub unix_file: Option<UnixSocketFile>,
}

#[napi(object)]
pub struct QueuedMessage {
    pub data: Buffer,
    /// Descriptors the message carries (SCM_RIGHTS), installed in this process by the peek:
    /// the caller owns them and must close them.
    pub fds: Vec<i32>,
}

/// The receive queue of the socket behind fd `fd` of `pid`, oldest message (or stream chunk)
/// first, left in place.
#[napi]
pub fn peek_socket_queue(pid: i32, fd: i32) -> Result<Vec<QueuedMessage>> {
    let q = sockets::peek_socket_queue(pid, fd).map_err(to_napi)?;
    Ok(q
        .into_iter()
        .map(|m| QueuedMessage { data: m.data.into(), fds: m.fds.into_iter().map(IntoRawFd::into_raw_fd).collect() })
        .collect())
}

/// Reads the socket behind fd `fd` of `pid` through a duplicate: identity, options, bound file.
#[napi]
pub fn inspect_socket(pid: i32, fd: i32) -> Result<SocketInfo> {
    let f = sockets::inspect_socket(pid, fd).map_err(to_napi)?;
    let o = f.opts;
    Ok(SocketInfo {
        family: f.family,
        sock_type: f.sock_type,
        protocol: f.protocol,
        opts: SocketOptions {
            sndbuf: o.sndbuf,
            rcvbuf: o.rcvbuf,
            snd_tmo_sec: BigInt::from(o.snd_tmo.0),
            snd_tmo_usec: BigInt::from(o.snd_tmo.1),
            rcv_tmo_sec: BigInt::from(o.rcv_tmo.0),
            rcv_tmo_usec: BigInt::from(o.rcv_tmo.1),
            reuseaddr: o.reuseaddr,
            reuseport: o.reuseport,
            priority: o.priority,
            rcvlowat: o.rcvlowat,
            mark: o.mark,
            passcred: o.passcred,
            passsec: o.passsec,
            dontroute: o.dontroute,
            no_check: o.no_check,
            broadcast: o.broadcast,
            keepalive: o.keepalive,
            oobinline: o.oobinline,
            linger: o.linger,
            buf_lock: o.buf_lock,
            bound_dev: o.bound_dev,
            filter: o.filter.into_iter().map(BigInt::from).collect(),
            tcp_keepcnt: o.tcp_keep.map(|k| k.0),
            tcp_keepidle: o.tcp_keep.map(|k| k.1),
            tcp_keepintvl: o.tcp_keep.map(|k| k.2),
            acceptconn: o.acceptconn,
        },
        v6only: f.v6only,
        freebind: f.freebind,
        udp_cork: f.udp_cork,
        unix_file: f.unix_file.map(|u| UnixSocketFile { mode: u.mode, uid: u.uid, gid: u.gid, path: u.path, deleted: u.deleted }),
    })
}

#[napi(object)]
pub struct TcpRepairWindow {
    pub snd_wl1: u32,
    pub snd_wnd: u32,
    pub max_window: u32,
    pub rcv_wnd: u32,
    pub rcv_wup: u32,
}

/// One connection as TCP_REPAIR shows it: the fields of CRIU's tcp_stream_entry and the bytes of
/// both queues.
#[napi(object)]
pub struct TcpStreamInfo {
    /// tcpi_state: 1 = ESTABLISHED, 8 = CLOSE_WAIT, ...
    pub state: u32,
    pub inq_len: u32,
    pub inq_seq: u32,
    pub outq_len: u32,
    pub outq_seq: u32,
    pub unsq_len: u32,
    pub opt_mask: u32,
    pub snd_wscale: u32,
    pub rcv_wscale: u32,
    pub mss_clamp: u32,
    pub timestamp: Option<u32>,
    pub window: Option<TcpRepairWindow>,
    pub inq: Buffer,
    pub outq: Buffer,
}

/// A TCP connection of a stopped task held in repair mode through a duplicate of its socket.
/// `resume()` puts it back to work; `release()` closes the duplicate and leaves the socket in
/// repair mode, so that killing the task closes the connection without a word to the peer.
#[napi]
pub struct TcpRepairSocket {
    inner: Option<sockets::TcpRepair>,
    what: String,
}

#[napi]
impl TcpRepairSocket {
    /// Turns TCP_REPAIR on for the socket behind fd `fd` of `pid` (stopped, connection locked).
    #[napi(factory)]
    pub fn pause(pid: i32, fd: i32) -> Result<Self> {
        let inner = sockets::TcpRepair::pause(pid, fd).map_err(to_napi)?;
        Ok(TcpRepairSocket { inner: Some(inner), what: format!("pid {pid}: fd {fd}") })
    }

    fn held(&self) -> Result<&sockets::TcpRepair> {
        self.inner
            .as_ref()
            .ok_or_else(|| Error::from_reason(format!("KERNEL: {}: the TCP repair handle was already resumed or released", self.what)))
    }

    /// Reads the connection's state and queues (nothing is consumed).
    #[napi]
    pub fn save(&self) -> Result<TcpStreamInfo> {
        let s = self.held()?.save().map_err(to_napi)?;
        Ok(TcpStreamInfo {
            state: s.state as u32,
            inq_len: s.inq_len,
            inq_seq: s.inq_seq,
            outq_len: s.outq_len,
            outq_seq: s.outq_seq,
            unsq_len: s.unsq_len,
            opt_mask: s.opt_mask,
            snd_wscale: s.snd_wscale,
            rcv_wscale: s.rcv_wscale,
            mss_clamp: s.mss_clamp,
            timestamp: s.timestamp,
            window: s.window.map(|w| TcpRepairWindow {
                snd_wl1: w.snd_wl1,
                snd_wnd: w.snd_wnd,
                max_window: w.max_window,
                rcv_wnd: w.rcv_wnd,
                rcv_wup: w.rcv_wup,
            }),
            inq: s.inq.into(),
            outq: s.outq.into(),
        })
    }

    /// Leaves repair mode (SO_REUSEADDR restored). Once only; later calls do nothing.
    #[napi]
    pub fn resume(&mut self) -> Result<()> {
        match self.inner.take() {
            Some(r) => r.resume().map_err(to_napi),
            None => Ok(()),
        }
    }

    /// Closes our duplicate, leaving the socket in repair mode. Once only.
    #[napi]
    pub fn release(&mut self) {
        self.inner = None;
    }
}

#[napi(object)]
pub struct TcpSocketOptions {
    pub nodelay: bool,
    pub cork: bool,
    pub keepcnt: u32,
    pub keepidle: u32,
    pub keepintvl: u32,
}

#[napi(object)]
pub struct InetSocketOptions {
    /// IP_TTL / IP_TOS, for AF_INET sockets only.
    pub ttl: Option<u32>,
    pub tos: Option<u32>,
    /// For TCP sockets only.
    pub tcp: Option<TcpSocketOptions>,
}

/// IP_TTL/IP_TOS and TCP_NODELAY/TCP_CORK/TCP_KEEP* of the inet socket behind fd `fd` of `pid`.
#[napi]
pub fn inet_socket_options(pid: i32, fd: i32) -> Result<InetSocketOptions> {
    let o = sockets::inet_options(pid, fd).map_err(to_napi)?;
    Ok(InetSocketOptions {
        ttl: o.ttl,
        tos: o.tos,
        tcp: o.tcp.map(|t| TcpSocketOptions { nodelay: t.nodelay, cork: t.cork, keepcnt: t.keepcnt, keepidle: t.keepidle, keepintvl: t.keepintvl }),
    })
}
