// Which tasks share kernel objects (kobj-ids.ts): decided with kcmp against one task per id, kept
// in kcmp's order (kcmpFind). Checked against what the kernel says otherwise: the threads of a
// process share its mm, fd table, fs and signal handlers (their /proc/PID/task/TID entries are
// kcmp-able tasks), distinct processes share none, and new objects take ids in order of first
// sight whatever their place in kcmp's order.
import test from 'ava';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { KobjIds } from '../src/dump/kobj-ids.js';
import { native } from '../src/native.js';

const PROCESSES = 24;

test('KobjIds: a thread shares every id with its process, processes share none, ids in order of first sight', async (t) => {
  // each python holds a second thread asleep
  const code = 'import threading, time\nthreading.Thread(target=time.sleep, args=(600,)).start()\ntime.sleep(600)\n';
  const procs = Array.from({ length: PROCESSES }, () => spawn('python3', ['-c', code], { stdio: 'ignore' }));
  t.teardown(() => procs.forEach((p) => p.kill('SIGKILL')));
  const tids = (pid: number) => readdirSync(`/proc/${pid}/task`).map(Number).sort((a, b) => a - b);
  for (const p of procs) while (tids(p.pid!).length < 2) await sleep(10);

  const ids = new KobjIds();
  const seen = procs.map((p) => ids.idsOf(p.pid!, []));
  for (const [i, kinds] of seen.entries()) {
    // tsdump itself holds id 1 of every kind
    t.like(kinds, { vmId: i + 2, filesId: i + 2, fsId: i + 2, sighandId: i + 2 }, `process ${i}: new objects, numbered as first seen`);
  }
  // the threads after, in reverse: every lookup lands on its process's place among all of them
  for (const [i, p] of [...procs.entries()].reverse()) {
    const thread = tids(p.pid!).find((tid) => tid !== p.pid)!;
    t.like(ids.idsOf(thread, []), { vmId: i + 2, filesId: i + 2, fsId: i + 2, sighandId: i + 2 }, `thread ${thread} of process ${i}`);
  }
  t.is(native.kcmpFind(process.pid, 'vm', new Int32Array([process.pid])), 0, 'found: its index');
  t.is(native.kcmpFind(procs[0]!.pid!, 'vm', new Int32Array([])), -1, 'not found: -(place + 1)');
});
