"""Socket states beyond the C targets, speaking the CTL protocol: python3 sockets_misc.py CTL MODE.

MODE "unix": an abstract-named stream listener with a connection still waiting in its accept
queue (in flight); a dgram socket bound by a relative name (from CTL as cwd) with a datagram
queued; a dgram socketpair with SO_PASSCRED (sender), timeouts set and a message queued.
MODE "tcp": an established TCP connection over 127.0.0.1 (both ends ours), which tsdump refuses
without --tcp-established.
MODE "inet6": a TCP listener on [::1] (IPV6_V6ONLY, SO_KEEPALIVE with TCP_KEEPIDLE 77, SO_LINGER
5 s), a UDP socket bound on [::1], and an IPv4 UDP socket connected to another one.

After CTL/verify each socket is checked for its address, options and queued data, and used:
the in-flight connection is accepted and carries data, new connections and datagrams flow.
"""
import os
import socket
import struct
import sys
import time

ctl, mode = sys.argv[1], sys.argv[2]
os.chdir(ctl)
problems = []


def publish(name, text):
    tmp = os.path.join(ctl, ".%s.%d.tmp" % (name, os.getpid()))
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(ctl, name))


def check(cond, what):
    if not cond:
        problems.append(what)


if mode == "unix":
    abstract = b"\0tsd-misc-%d" % os.getpid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(abstract)
    listener.listen(4)
    inflight = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    inflight.connect(abstract)
    rel = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rel.bind("rel.sock")
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.sendto(b"to the relative name", "rel.sock")
    sender.close()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    # SO_PASSCRED on the sender: on the receiver the queued message would carry credentials,
    # which neither CRIU 4.1 nor tsdump dumps.
    a.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 3, 250000))
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 7, 0))
    a.send(b"with credentials on")
    # The kernel keeps timeouts in jiffies: compare with what it reports, not what was asked.
    timeouts = (b.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16), a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16))
elif mode == "tcp":
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
else:
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 5))
    listener.bind(("::1", 0))
    listener.listen(8)
    udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp6.bind(("::1", 0))
    udp_a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_a.bind(("127.0.0.1", 0))
    udp_b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_b.connect(udp_a.getsockname())
    ports = (listener.getsockname()[1], udp6.getsockname()[1], udp_a.getsockname()[1], udp_b.getsockname()[1])

publish("ready", "pid=%d\n" % os.getpid())
while not os.path.exists(os.path.join(ctl, "verify")):
    time.sleep(0.005)

try:
    if mode == "unix":
        check(listener.getsockname() == abstract, "listener name %r" % listener.getsockname())
        listener.settimeout(2)
        conn, _ = listener.accept()
        inflight.sendall(b"hello from flight")
        conn.settimeout(2)
        check(conn.recv(64) == b"hello from flight", "in-flight connection carries no data")
        check(rel.getsockname() == "rel.sock", "relative name %r" % rel.getsockname())
        check(os.path.exists(os.path.join(ctl, "rel.sock")), "rel.sock not in CTL")
        rel.settimeout(2)
        check(rel.recv(64) == b"to the relative name", "queued datagram lost")
        check(a.getsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED) == 1, "SO_PASSCRED lost")
        now = (b.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16), a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16))
        check(now == timeouts and struct.unpack("ll", now[1]) == (7, 0), "timeouts %r, were %r" % (now, timeouts))
        msg = b.recv(64)
        check(msg == b"with credentials on", "queued message %r" % msg)
        a.send(b"again")
        check(b.recv(64) == b"again", "pair carries no new data")
    elif mode == "tcp":
        client.sendall(b"still connected")
        server.settimeout(2)
        check(server.recv(64) == b"still connected", "the connection carries no data")
    else:
        now = (listener.getsockname()[1], udp6.getsockname()[1], udp_a.getsockname()[1], udp_b.getsockname()[1])
        check(now == ports, "ports %r, were %r" % (now, ports))
        check(listener.getsockname()[0] == "::1", "listener address %r" % (listener.getsockname(),))
        check(listener.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1, "IPV6_V6ONLY lost")
        check(listener.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1, "SO_KEEPALIVE lost")
        check(listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 77, "TCP_KEEPIDLE lost")
        linger = struct.unpack("ii", listener.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))
        check(linger == (1, 5), "SO_LINGER %r" % (linger,))
        c = socket.create_connection(("::1", ports[0]), timeout=2)
        listener.settimeout(2)
        s, _ = listener.accept()
        c.sendall(b"v6 ping")
        s.settimeout(2)
        check(s.recv(64) == b"v6 ping", "no data over a new v6 connection")
        u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        u.sendto(b"v6 dgram", ("::1", ports[1]))
        udp6.settimeout(2)
        check(udp6.recv(64) == b"v6 dgram", "v6 UDP socket does not receive")
        udp_b.send(b"connected dgram")
        udp_a.settimeout(2)
        data, src = udp_a.recvfrom(64)
        check(data == b"connected dgram" and src[1] == ports[3], "connected UDP: %r from %r" % (data, src))
except OSError as e:
    problems.append("socket: %s" % e)
publish("result", "PASS\n" if not problems else "FAIL: " + "; ".join(problems) + "\n")
while True:
    time.sleep(1)
