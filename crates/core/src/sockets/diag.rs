//! sock_diag netlink (NETLINK_SOCK_DIAG): what the kernel knows about every unix and inet socket
//! of our network namespace — peers, bound names, in-flight connections, queue lengths, shutdown
//! state, addresses and ports. One dump request per family/protocol, answered in several batches.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

use crate::{Error, ErrorCode, Result};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;

// linux/unix_diag.h
const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_VFS: u32 = 0x02;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_ICONS: u32 = 0x08;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_ICONS: u16 = 3;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;
const UNIX_DIAG_MSG_LEN: usize = 16;

// linux/inet_diag.h
const INET_DIAG_SHUTDOWN: u16 = 8;
const INET_DIAG_MSG_LEN: usize = 72;
const INET_DIAG_REQ_V2_LEN: usize = 56;
/// The request attribute naming a protocol beyond u8 (IPPROTO_MPTCP, 262), Linux 5.7+.
const INET_DIAG_REQ_PROTOCOL: u16 = 3;

/// One unix socket as unix_diag reports it.
#[derive(Debug, Clone, Default)]
pub struct UnixSockDiag {
    pub ino: u32,
    /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
    pub sock_type: u32,
    /// TCP_ESTABLISHED (1), TCP_CLOSE (7) or TCP_LISTEN (10).
    pub state: u32,
    /// Inode of the connected peer, 0 if none (or if the peer is an embryo of a listener).
    pub peer: u32,
    /// The bound address: empty (unbound), a path, or "\0name" (abstract).
    pub name: Vec<u8>,
    /// (device, inode) of the socket file of a path-bound socket.
    pub vfs: Option<(u32, u32)>,
    /// For a listener: the inodes of the clients whose connections wait in accept().
    pub icons: Vec<u32>,
    /// Bytes (stream) or messages (listen: pending connections) in the receive queue.
    pub rqlen: u32,
    /// Send-queue memory; for a listener, its backlog.
    pub wqlen: u32,
    /// RCV_SHUTDOWN (1) | SEND_SHUTDOWN (2).
    pub shutdown: u8,
}

/// One TCP, UDP or MPTCP socket as inet_diag reports it.
#[derive(Debug, Clone, Default)]
pub struct InetSockDiag {
    pub ino: u32,
    pub family: u8,
    pub protocol: u32,
    pub state: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// Address words as they lie in memory (network byte order), 1 used for IPv4, 4 for IPv6.
    pub src_addr: [u32; 4],
    pub dst_addr: [u32; 4],
    pub ifindex: u32,
    pub rqlen: u32,
    /// For a listener: its backlog.
    pub wqlen: u32,
    pub shutdown: u8,
}

// linux/netlink_diag.h
const NDIAG_PROTO_ALL: u8 = 255;
const NDIAG_SHOW_GROUPS: u32 = 0x2;
const NETLINK_DIAG_GROUPS: u16 = 1;
const NETLINK_DIAG_MSG_LEN: usize = 28;

/// One bound netlink socket as netlink_diag reports it (unbound ones are not listed).
#[derive(Debug, Clone, Default)]
pub struct NetlinkSockDiag {
    pub ino: u32,
    pub protocol: u8,
    /// NETLINK_UNCONNECTED (0) or NETLINK_CONNECTED (1).
    pub state: u8,
    pub portid: u32,
    pub dst_portid: u32,
    pub dst_group: u32,
    /// The multicast groups it listens to, as 32-bit words of the kernel's bitmap.
    pub groups: Vec<u32>,
}

fn netlink_socket() -> Result<OwnedFd> {
    // SAFETY: socket() takes plain integers and returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(Error::new(ErrorCode::Kernel, format!("socket(NETLINK_SOCK_DIAG): {}", Errno::last().desc())));
    }
    // SAFETY: a fresh fd owned only here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one dump request (`body` after the netlink header) and hands every answer message's
/// payload to `each`, until NLMSG_DONE.
fn dump_request(what: &str, body: &[u8], mut each: impl FnMut(&[u8])) -> Result<()> {
    let sock = netlink_socket()?;
    let mut req = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    req.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    req.extend_from_slice(body);
    // SAFETY: sends our own buffer on our own socket; the kernel is the default destination.
    let sent = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(Error::new(ErrorCode::Kernel, format!("sock_diag {what}: send: {}", Errno::last().desc())));
    }
    let mut buf = vec![0u8; 32768];
    loop {
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = Errno::last();
            if e == Errno::EINTR {
                continue;
            }
            return Err(Error::new(ErrorCode::Kernel, format!("sock_diag {what}: recv: {}", e.desc())));
        }
        let mut off = 0usize;
        let n = n as usize;
        while off + NLMSG_HDRLEN <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            if len < NLMSG_HDRLEN || off + len > n {
                return Err(Error::new(ErrorCode::Kernel, format!("sock_diag {what}: truncated netlink message")));
            }
            let payload = &buf[off + NLMSG_HDRLEN..off + len];
            match ty {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let errno = i32::from_ne_bytes(payload[0..4].try_into().unwrap());
                    if errno == 0 {
                        return Ok(());
                    }
                    return Err(Error::new(
                        ErrorCode::Kernel,
                        format!("sock_diag {what}: {}", Errno::from_raw(-errno).desc()),
                    ));
                }
                _ => each(payload),
            }
            off += (len + 3) & !3;
        }
    }
}

/// Netlink attributes after a fixed header of `skip` bytes: (type, payload).
fn attributes(payload: &[u8], skip: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = (skip + 3) & !3;
    while off + 4 <= payload.len() {
        let len = u16::from_ne_bytes(payload[off..off + 2].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(payload[off + 2..off + 4].try_into().unwrap()) & 0x3fff;
        if len < 4 || off + len > payload.len() {
            break;
        }
        out.push((ty, &payload[off + 4..off + len]));
        off += (len + 3) & !3;
    }
    out
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4).map(|s| u32::from_ne_bytes(s.try_into().unwrap())).unwrap_or(0)
}

/// Every unix socket of this network namespace.
pub fn unix_sockets() -> Result<Vec<UnixSockDiag>> {
    // struct unix_diag_req: family, protocol, pad16, states, ino, show, cookie[2]
    let mut body = vec![0u8; 24];
    body[0] = libc::AF_UNIX as u8;
    body[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    let show = UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN;
    body[12..16].copy_from_slice(&show.to_ne_bytes());
    let mut out = Vec::new();
    dump_request("unix", &body, |p| {
        if p.len() < UNIX_DIAG_MSG_LEN {
            return;
        }
        let mut s = UnixSockDiag { sock_type: p[1] as u32, state: p[2] as u32, ino: u32_at(p, 4), ..Default::default() };
        for (ty, data) in attributes(p, UNIX_DIAG_MSG_LEN) {
            match ty {
                UNIX_DIAG_NAME => s.name = data.to_vec(),
                // struct unix_diag_vfs: ino, dev
                UNIX_DIAG_VFS => s.vfs = Some((u32_at(data, 4), u32_at(data, 0))),
                UNIX_DIAG_PEER => s.peer = u32_at(data, 0),
                UNIX_DIAG_ICONS => s.icons = data.chunks_exact(4).map(|c| u32::from_ne_bytes(c.try_into().unwrap())).collect(),
                UNIX_DIAG_RQLEN => {
                    s.rqlen = u32_at(data, 0);
                    s.wqlen = u32_at(data, 4);
                }
                UNIX_DIAG_SHUTDOWN => s.shutdown = data.first().copied().unwrap_or(0),
                _ => {}
            }
        }
        out.push(s);
    })?;
    Ok(out)
}

/// Every socket of `family` (AF_INET/AF_INET6) and `protocol` (IPPROTO_TCP/UDP/MPTCP) in any
/// state. An MPTCP socket is listed once, by the inode of its descriptor; its TCP subflows also
/// appear under IPPROTO_TCP with that same inode.
pub fn inet_sockets(family: u8, protocol: u32) -> Result<Vec<InetSockDiag>> {
    // struct inet_diag_req_v2: family, protocol, ext, pad, states, inet_diag_sockid (48 bytes)
    let mut body = vec![0u8; INET_DIAG_REQ_V2_LEN];
    body[0] = family;
    body[1] = protocol as u8;
    body[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    if protocol > u8::MAX as u32 {
        // nlattr { len, type } + u32: the kernel reads the protocol from here, not from the u8
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&INET_DIAG_REQ_PROTOCOL.to_ne_bytes());
        body.extend_from_slice(&protocol.to_ne_bytes());
    }
    let mut out = Vec::new();
    let what = format!("inet family {family} protocol {protocol}");
    dump_request(&what, &body, |p| {
        if p.len() < INET_DIAG_MSG_LEN {
            return;
        }
        let word = |off: usize| u32::from_ne_bytes(p[off..off + 4].try_into().unwrap());
        // inet_diag_msg: family, state, timer, retrans, id{sport, dport, src[4], dst[4], if, cookie[2]},
        // expires, rqueue, wqueue, uid, inode
        let mut s = InetSockDiag {
            family: p[0],
            protocol,
            state: p[1],
            src_port: u16::from_be_bytes([p[4], p[5]]),
            dst_port: u16::from_be_bytes([p[6], p[7]]),
            src_addr: [word(8), word(12), word(16), word(20)],
            dst_addr: [word(24), word(28), word(32), word(36)],
            ifindex: word(40),
            rqlen: word(56),
            wqlen: word(60),
            ino: word(68),
            shutdown: 0,
        };
        for (ty, data) in attributes(p, INET_DIAG_MSG_LEN) {
            if ty == INET_DIAG_SHUTDOWN {
                s.shutdown = data.first().copied().unwrap_or(0);
            }
        }
        out.push(s);
    })?;
    Ok(out)
}

/// Every bound netlink socket of this network namespace, of every protocol.
pub fn netlink_sockets() -> Result<Vec<NetlinkSockDiag>> {
    // struct netlink_diag_req: family, protocol, pad16, ino, show, cookie[2]
    let mut body = vec![0u8; 20];
    body[0] = libc::AF_NETLINK as u8;
    body[1] = NDIAG_PROTO_ALL;
    body[8..12].copy_from_slice(&NDIAG_SHOW_GROUPS.to_ne_bytes());
    let mut out = Vec::new();
    dump_request("netlink", &body, |p| {
        if p.len() < NETLINK_DIAG_MSG_LEN {
            return;
        }
        // netlink_diag_msg: family, type, protocol, state, portid, dst_portid, dst_group, ino, cookie[2]
        let mut s = NetlinkSockDiag {
            protocol: p[2],
            state: p[3],
            portid: u32_at(p, 4),
            dst_portid: u32_at(p, 8),
            dst_group: u32_at(p, 12),
            ino: u32_at(p, 16),
            groups: Vec::new(),
        };
        for (ty, data) in attributes(p, NETLINK_DIAG_MSG_LEN) {
            if ty == NETLINK_DIAG_GROUPS {
                s.groups = data.chunks_exact(4).map(|c| u32::from_ne_bytes(c.try_into().unwrap())).collect();
            }
        }
        out.push(s);
    })?;
    Ok(out)
}
