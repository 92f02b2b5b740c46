"""A Python process with in-memory state, speaking the test targets' CTL protocol
(__test__/targets/common.h): python3 py_state.py CTL.

State: a 100 000-entry dict, a list, a generator stopped half way, a worker thread counting.
After CTL/verify it checks the dict/list digest, that the generator resumes where it stopped and
that the worker thread still runs, then publishes CTL/result.
"""
import hashlib
import os
import sys
import threading
import time

import ctl_protocol

ctl = sys.argv[1]


def publish(name, text):
    ctl_protocol.publish(ctl, name, text)


table = {"key%d" % i: i * i for i in range(100000)}
items = [str(i) * 3 for i in range(10000)]


def multiples():
    for i in range(1000):
        yield i * 7


gen = multiples()
consumed = [next(gen) for _ in range(500)]
ticks = [0]


def worker():
    while True:
        ticks[0] += 1
        time.sleep(0.002)


threading.Thread(target=worker, name="ticker", daemon=True).start()


def digest():
    h = hashlib.sha256()
    for k in sorted(table):
        h.update(("%s=%d;" % (k, table[k])).encode())
    h.update("|".join(items).encode())
    return h.hexdigest()


reference = digest()
publish("ready", "pid=%d\ndigest=%s\n" % (os.getpid(), reference))
while not os.path.exists(os.path.join(ctl, "verify")):
    time.sleep(0.01)

errors = []
if digest() != reference:
    errors.append("dict/list digest changed")
if len(table) != 100000:
    errors.append("dict has %d entries" % len(table))
nxt = next(gen, None)
if nxt != 500 * 7:
    errors.append("generator resumed at %r, want %d" % (nxt, 500 * 7))
before = ticks[0]
time.sleep(0.1)
if ticks[0] <= before + 5:
    errors.append("worker thread stalled (%d -> %d)" % (before, ticks[0]))
publish("result", "PASS\n" if not errors else "FAIL: " + "; ".join(errors) + "\n")
while True:
    time.sleep(1)
