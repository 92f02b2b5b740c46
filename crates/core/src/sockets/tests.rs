use std::os::fd::AsRawFd;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use super::*;

fn ino_of(fd: i32) -> u32 {
    let st = fs::metadata(format!("/proc/self/fd/{fd}")).unwrap();
    st.ino() as u32
}

#[test]
fn diag_sees_a_socketpair_with_its_peer_and_queue() {
    let (a, b) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::empty()).unwrap();
    nix::unistd::write(&a, b"hello there").unwrap();
    let (ia, ib) = (ino_of(a.as_raw_fd()), ino_of(b.as_raw_fd()));
    let all = unix_sockets().unwrap();
    let sa = all.iter().find(|s| s.ino == ia).expect("socket a in unix_diag");
    let sb = all.iter().find(|s| s.ino == ib).expect("socket b in unix_diag");
    assert_eq!(sa.peer, ib);
    assert_eq!(sb.peer, ia);
    assert_eq!(sb.rqlen, 11);
    assert_eq!(sa.sock_type, libc::SOCK_STREAM as u32);
}

#[test]
fn peeking_keeps_the_queue_and_message_boundaries() {
    let (a, b) = socketpair(AddressFamily::Unix, SockType::Datagram, None, SockFlag::empty()).unwrap();
    nix::unistd::write(&a, b"one").unwrap();
    nix::unistd::write(&a, b"second").unwrap();
    let me = std::process::id() as i32;
    let facts = inspect_socket(me, b.as_raw_fd()).unwrap();
    assert_eq!(facts.family, libc::AF_UNIX);
    let queue = peek_socket_queue(me, b.as_raw_fd()).unwrap();
    let data: Vec<_> = queue.iter().map(|m| m.data.clone()).collect();
    assert_eq!(data, vec![b"one".to_vec(), b"second".to_vec()]);
    // Still queued, and the peek offset is back where it was.
    assert_eq!(peek_socket_queue(me, b.as_raw_fd()).unwrap().len(), 2);
    let mut buf = [0u8; 16];
    assert_eq!(nix::unistd::read(&b, &mut buf).unwrap(), 3);
}

#[test]
fn inet_listener_options_need_no_passcred() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let me = std::process::id() as i32;
    let facts = inspect_socket(me, l.as_raw_fd()).unwrap();
    assert_eq!(facts.family, libc::AF_INET);
    assert!(facts.opts.acceptconn);
    assert!(!facts.opts.passcred);
    let ino = ino_of(l.as_raw_fd());
    let all = inet_sockets(libc::AF_INET as u8, libc::IPPROTO_TCP as u32).unwrap();
    let s = all.iter().find(|s| s.ino == ino).expect("listener in inet_diag");
    assert_eq!(s.src_port, port);
    assert_eq!(s.state, 10);
    assert_eq!(s.src_addr[0].to_ne_bytes(), [127, 0, 0, 1]);
}

#[test]
fn peeking_a_stream_stops_at_the_writers_shutdown() {
    let (a, b) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::empty()).unwrap();
    nix::unistd::write(&a, b"last words").unwrap();
    nix::sys::socket::shutdown(a.as_raw_fd(), nix::sys::socket::Shutdown::Write).unwrap();
    let me = std::process::id() as i32;
    let queue = peek_socket_queue(me, b.as_raw_fd()).unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].data, b"last words");
    let sk = unix_sockets().unwrap().into_iter().find(|s| s.ino == ino_of(a.as_raw_fd())).unwrap();
    assert_eq!(sk.shutdown, 2, "SEND_SHUTDOWN on the writer");
}

#[test]
fn queued_descriptors_come_back_as_duplicates_and_stay_queued() {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::io::IoSlice;
    let (a, b) = socketpair(AddressFamily::Unix, SockType::Datagram, None, SockFlag::empty()).unwrap();
    let (r, w) = nix::unistd::pipe().unwrap();
    let fds = [a.as_raw_fd(), r.as_raw_fd()];
    sendmsg::<()>(a.as_raw_fd(), &[IoSlice::new(b"fd")], &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None).unwrap();
    nix::unistd::write(&a, b"plain").unwrap();
    let me = std::process::id() as i32;
    let queue = peek_socket_queue(me, b.as_raw_fd()).unwrap();
    assert_eq!(queue.len(), 2);
    assert_eq!(queue[0].data, b"fd");
    assert_eq!(queue[0].fds.len(), 2);
    assert!(queue[1].fds.is_empty());
    // the same open files as the ones sent
    assert!(crate::files::kcmp_same(me, me, crate::files::KcmpType::File, queue[0].fds[0].as_raw_fd() as u64, a.as_raw_fd() as u64).unwrap());
    assert!(crate::files::kcmp_same(me, me, crate::files::KcmpType::File, queue[0].fds[1].as_raw_fd() as u64, r.as_raw_fd() as u64).unwrap());
    drop(w);
    let mut buf = [0u8; 8];
    assert_eq!(nix::unistd::read(&b, &mut buf).unwrap(), 2, "the message is still queued");
}

#[test]
fn diag_lists_an_mptcp_listener_by_its_descriptor_inode() {
    // SAFETY: socket() takes plain integers; the fd is wrapped right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, inet_opts::IPPROTO_MPTCP) };
    assert!(fd >= 0, "socket(IPPROTO_MPTCP): {} (is net.mptcp.enabled 1?)", Errno::last().desc());
    // SAFETY: a fresh fd owned only here.
    let sk = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: bind reads a sockaddr_in of the size we pass; listen takes plain integers.
    let r = unsafe { libc::bind(sk.as_raw_fd(), (&addr as *const libc::sockaddr_in).cast(), size_of::<libc::sockaddr_in>() as u32) };
    assert_eq!(r, 0, "bind: {}", Errno::last().desc());
    // SAFETY: as above.
    assert_eq!(unsafe { libc::listen(sk.as_raw_fd(), 37) }, 0);
    let ino = ino_of(sk.as_raw_fd());
    let all = inet_sockets(libc::AF_INET as u8, inet_opts::IPPROTO_MPTCP as u32).unwrap();
    let s = all.iter().find(|s| s.ino == ino).expect("the MPTCP listener in the MPTCP table");
    assert_eq!((s.state, s.wqlen, s.protocol), (10, 37, 262));
    assert!(s.src_port > 0);
    // Only MPTCP sockets there: a TCP listener of ours is not.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(!all.iter().any(|s| s.ino == ino_of(tcp.as_raw_fd())));
}
