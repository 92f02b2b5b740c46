"""A process whose unix socket's peer lives outside its process tree, speaking the CTL protocol:
python3 unix_ext_peer.py CTL MODE.

MODE "stream": a socketpair; "dgram": a dgram socket connected to a dgram socket bound at
CTL/outer.sock. The other end goes to a helper that double-forks out of the tree (reparented to
the subreaper), so dumping this process alone finds an external peer. ready names the helper
(outside=), the peer's inode (peer_ino=) and ours (own_ino=).

After CTL/verify: stream sends "ping" and expects the helper's "pong"; dgram sends "after PID" and
waits until the helper recorded it in CTL/received. Then publishes CTL/result.
"""
import os
import socket
import sys
import time

ctl, mode = sys.argv[1], sys.argv[2]


def publish(name, text):
    tmp = os.path.join(ctl, ".%s.%d.tmp" % (name, os.getpid()))
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(ctl, name))


def serve(sk):
    if mode == "stream":
        while True:
            data = sk.recv(64)
            if not data:
                os._exit(0)
            if data == b"ping":
                sk.sendall(b"pong")
    got = []
    while True:
        got.append(sk.recv(64).decode())
        publish("received", "\n".join(got) + "\n")


if mode == "stream":
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
else:
    theirs = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    theirs.bind(os.path.join(ctl, "outer.sock"))
    mine = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    mine.connect(os.path.join(ctl, "outer.sock"))
peer_ino = os.fstat(theirs.fileno()).st_ino
own_ino = os.fstat(mine.fileno()).st_ino

r, w = os.pipe()
helper = os.fork()
if helper == 0:
    # Our session and group ids must not outlive us in the helper: restore needs our pid free.
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    mine.close()
    os.close(r)
    os.write(w, b"%d\n" % os.getpid())
    os.close(w)
    serve(theirs)
os.waitpid(helper, 0)
os.close(w)
outside = int(os.read(r, 64))
os.close(r)
theirs.close()

publish("ready", "pid=%d\noutside=%d\npeer_ino=%d\nown_ino=%d\n" % (os.getpid(), outside, peer_ino, own_ino))
while not os.path.exists(os.path.join(ctl, "verify")):
    time.sleep(0.005)

problems = []
try:
    if mode == "stream":
        mine.settimeout(3)
        mine.sendall(b"ping")
        reply = mine.recv(64)
        if reply != b"pong":
            problems.append("stream reply %r" % reply)
    else:
        note = "after %d" % os.getpid()
        mine.send(note.encode())
        deadline = time.time() + 3
        received = ""
        while note not in received and time.time() < deadline:
            try:
                with open(os.path.join(ctl, "received")) as f:
                    received = f.read()
            except FileNotFoundError:
                pass
            time.sleep(0.005)
        if note not in received:
            problems.append("the outside peer did not receive %r (got %r)" % (note, received))
except OSError as e:
    problems.append("socket: %s" % e)
publish("result", "PASS\n" if not problems else "FAIL: " + "; ".join(problems) + "\n")
while True:
    time.sleep(1)
