"""A small Python TCP service speaking the test targets' CTL protocol
(__test__/targets/common.h): python3 py_tcp_service.py CTL.

A key-value store on 127.0.0.1 (an ephemeral port, published as port= in CTL/ready), one thread
per connection. Lines in, lines out: "GET k" -> the value or "-", "SET k v" -> "OK",
"STATS" -> "keys=N hits=H pid=P". It starts with 20 000 keys. After CTL/verify it checks its store
against the digest it published and that a connection it makes to itself is served, then
publishes CTL/result; the test also talks to it from outside.
"""
import hashlib
import os
import socket
import socketserver
import sys
import threading
import time

import ctl_protocol

ctl = sys.argv[1]


def publish(name, text):
    ctl_protocol.publish(ctl, name, text)


store = {"key%d" % i: "v%d-%s" % (i, hashlib.sha1(str(i).encode()).hexdigest()[:8]) for i in range(20000)}
lock = threading.Lock()
hits = [0]


def digest(keys):
    h = hashlib.sha256()
    for k in keys:
        h.update(("%s=%s;" % (k, store[k])).encode())
    return h.hexdigest()


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for raw in self.rfile:
            words = raw.decode().split()
            with lock:
                hits[0] += 1
                if len(words) == 2 and words[0] == "GET":
                    reply = store.get(words[1], "-")
                elif len(words) == 3 and words[0] == "SET":
                    store[words[1]] = words[2]
                    reply = "OK"
                elif words == ["STATS"]:
                    reply = "keys=%d hits=%d pid=%d" % (len(store), hits[0], os.getpid())
                else:
                    reply = "ERR"
            self.wfile.write((reply + "\n").encode())


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


server = Server(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, name="acceptor", daemon=True).start()
original = sorted(store)
reference = digest(original)
publish("ready", "pid=%d\nport=%d\ndigest=%s\n" % (os.getpid(), server.server_address[1], reference))
while not os.path.exists(os.path.join(ctl, "verify")):
    time.sleep(0.01)

errors = []
with lock:
    if digest(original) != reference:
        errors.append("store digest changed")
try:
    with socket.create_connection(server.server_address, timeout=10) as s:
        s.sendall(b"GET key7\n")
        got = s.makefile().readline().strip()
        if got != store["key7"]:
            errors.append("self-connection got %r" % got)
except OSError as e:
    errors.append("self-connection: %s" % e)
publish("result", "PASS\n" if not errors else "FAIL: " + "; ".join(errors) + "\n")
while True:
    time.sleep(1)
