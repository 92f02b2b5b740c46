// Seize and release real process trees (as root): every task stops while held and comes back
// exactly as it was (running, or still stopped), with no tracer left behind.
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { native } from '../src/native.js';
import { TsdumpError } from '../src/errors.js';

const TARGET = join(import.meta.dirname, '..', 'build', 'targets', 'cap_target');
const READY = 2048;
const AUX_PID = 2048 + 5 * 8;

interface Target {
  pid: number;
  report: string;
  read(): Buffer;
  counter(i: number): bigint;
  field(off: number): bigint;
}

/** Starts cap_target in its own session (reparented to the test subreaper, not our child). */
async function start(t: ExecutionContext, mode: string, n = 1, readyAt = 1n): Promise<Target> {
  const dir = mkdtempSync(join(tmpdir(), 'tsdump-cap-'));
  const report = join(dir, 'report');
  const out = execFileSync('/bin/sh', ['-c', `setsid "$0" "$1" "$2" "$3" </dev/null >/dev/null 2>&1 & echo $!`, TARGET, report, mode, String(n)], {
    encoding: 'utf8',
  });
  const pid = Number(out.trim());
  t.teardown(() => {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
    rmSync(dir, { recursive: true, force: true });
  });
  const target: Target = {
    pid,
    report,
    read: () => readFileSync(report),
    counter: (i) => target.read().readBigUInt64LE(i * 8),
    field: (off) => target.read().readBigUInt64LE(off),
  };
  for (const deadline = Date.now() + 10_000; ; await sleep(10)) {
    if (existsSync(report) && readFileSync(report).length >= 4096 && target.field(READY) >= readyAt) break;
    if (Date.now() > deadline) throw new Error(`${mode}: target ${pid} never got ready`);
  }
  return target;
}

function session(t: ExecutionContext): InstanceType<typeof native.Session> {
  const s = new native.Session();
  t.teardown(async () => {
    await s.releaseTree({ mode: 'resume' }).catch(() => undefined);
    s.close();
  });
  return s;
}

function status(pid: number | string, tid?: number): Record<string, string> {
  const path = tid === undefined ? `/proc/${pid}/status` : `/proc/${pid}/task/${tid}/status`;
  const out: Record<string, string> = {};
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

function threadStates(pid: number): Map<number, string> {
  const m = new Map<number, string>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      m.set(Number(tid), stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3));
    } catch {
      // exited meanwhile
    }
  }
  return m;
}

function procState(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
}

async function expectCode(t: ExecutionContext, p: Promise<unknown>, code: string, re?: RegExp): Promise<void> {
  const err = await t.throwsAsync(p);
  t.true(err instanceof TsdumpError, String(err));
  t.is((err as TsdumpError).code, code as TsdumpError['code'], err?.message);
  if (re) t.regex(err!.message, re);
}

/** Counters of `idxs` do not move for 60 ms (held), then after `after()` all of them move. */
async function assertFrozenThenRunning(t: ExecutionContext, tg: Target, idxs: number[], after: () => Promise<unknown>): Promise<void> {
  const a = idxs.map((i) => tg.counter(i));
  await sleep(60);
  t.deepEqual(idxs.map((i) => tg.counter(i)), a, 'counters moved while the tree was held');
  await after();
  const b = idxs.map((i) => tg.counter(i));
  for (const deadline = Date.now() + 5000; ; await sleep(20)) {
    const c = idxs.map((i) => tg.counter(i));
    const stuck = idxs.filter((_, k) => c[k]! <= b[k]!);
    if (stuck.length === 0) break;
    if (Date.now() > deadline) {
      t.fail(`counters ${stuck.join(',')} never advanced after release`);
      break;
    }
  }
}

function assertReleased(t: ExecutionContext, pids: number[]): void {
  for (const pid of pids) {
    for (const [tid] of threadStates(pid)) {
      let tracer: string | undefined;
      try {
        tracer = status(pid, tid)['TracerPid'];
      } catch {
        continue; // the thread exited meanwhile
      }
      t.is(tracer, '0', `tid ${tid} still traced`);
    }
  }
}

test('single-thread process: seized, held, released running; mask unchanged', async (t) => {
  const tg = await start(t, 'single');
  const s = session(t);
  const before = status(tg.pid);
  const tree = await s.seizeTree(tg.pid);
  t.is(tree.root, tg.pid);
  t.is(tree.processes.length, 1);
  const p = tree.processes[0]!;
  t.deepEqual(p.threads.map((x) => x.tid), [tg.pid]);
  t.is(p.threads[0]!.stopSignal ?? null, null);
  t.false(p.stopped);
  t.is(procState(tg.pid), 't');
  t.not(status(tg.pid)['TracerPid'], '0');
  t.is(p.ppid, Number(before['PPid']));
  await assertFrozenThenRunning(t, tg, [0], () => s.releaseTree({ mode: 'resume' }));
  assertReleased(t, [tg.pid]);
  const after = status(tg.pid);
  t.is(after['SigBlk'], before['SigBlk']);
  t.is(after['SigPnd'], before['SigPnd']);
  t.is(await s.seizedTree(), null);
  t.false(await s.releaseTree({ mode: 'resume' }));
});

test('50-thread process: every thread seized and every counter resumes', async (t) => {
  const tg = await start(t, 'threads', 50);
  const s = session(t);
  const tree = await s.seizeTree(tg.pid);
  const tids = tree.processes[0]!.threads.map((x) => x.tid);
  t.is(tids.length, 50);
  t.is(tids[0], tg.pid, 'leader first');
  t.deepEqual([...tids].sort((a, b) => a - b), [...threadStates(tg.pid).keys()].sort((a, b) => a - b));
  for (const [tid, st] of threadStates(tg.pid)) t.is(st, 't', `tid ${tid}`);
  const idx = Array.from({ length: 50 }, (_, i) => i);
  await assertFrozenThenRunning(t, tg, idx, () => s.releaseTree({ mode: 'resume' }));
  assertReleased(t, [tg.pid]);
});

test('20-process fork tree: all processes, parents first, pstree facts match /proc', async (t) => {
  const tg = await start(t, 'forktree', 20, 20n);
  const s = session(t);
  const tree = await s.seizeTree(tg.pid);
  t.is(tree.processes.length, 20);
  t.is(tree.zombies.length, 0);
  const seen = new Set<number>();
  for (const p of tree.processes) {
    if (p.pid !== tg.pid) t.true(seen.has(p.ppid), `parent ${p.ppid} of ${p.pid} listed first`);
    seen.add(p.pid);
    const st = status(p.pid);
    t.is(Number(st['PPid']), p.ppid);
    t.is(p.sid, tg.pid);
    t.is(p.pgid, tg.pid);
    t.is(procState(p.pid), 't');
  }
  await assertFrozenThenRunning(t, tg, Array.from({ length: 20 }, (_, i) => i), () => s.releaseTree({ mode: 'resume' }));
  assertReleased(t, tree.processes.map((p) => p.pid));
});

test('process spawning threads in a tight loop: the thread set settles and all are held', async (t) => {
  const tg = await start(t, 'spawner');
  const s = session(t);
  for (let round = 0; round < 5; round++) {
    const tree = await s.seizeTree(tg.pid);
    const held = tree.processes[0]!.threads.map((x) => x.tid).sort((a, b) => a - b);
    const live = [...threadStates(tg.pid)];
    t.deepEqual(live.map(([tid]) => tid).sort((a, b) => a - b), held, `round ${round}: /proc/task equals the held set`);
    for (const [tid, st] of live) t.is(st, 't', `round ${round}: tid ${tid}`);
    await assertFrozenThenRunning(t, tg, [0], () => s.releaseTree({ mode: 'resume' }));
    assertReleased(t, [tg.pid]);
  }
});

test('tree with a zombie: the zombie is recorded (pid, ppid, pgid, sid, exit code), not seized', async (t) => {
  const tg = await start(t, 'zombie');
  const zpid = Number(tg.field(AUX_PID));
  t.is(procState(zpid), 'Z');
  const s = session(t);
  const tree = await s.seizeTree(tg.pid);
  t.is(tree.processes.length, 1);
  t.is(tree.zombies.length, 1);
  const z = tree.zombies[0]!;
  t.deepEqual(
    [z.pid, z.ppid, z.pgid, z.sid, z.comm, z.exitCode, z.exitStatus, z.exitSignal ?? null],
    [zpid, tg.pid, tg.pid, tg.pid, 'cap_target', 7 << 8, 7, null],
  );
  await assertFrozenThenRunning(t, tg, [0], () => s.releaseTree({ mode: 'resume' }));
  t.is(procState(zpid), 'Z', 'zombie untouched');
});

test('already SIGSTOPped process: recorded stopped, stays stopped after release', async (t) => {
  const tg = await start(t, 'threads', 3);
  process.kill(tg.pid, 'SIGSTOP');
  for (const deadline = Date.now() + 5000; [...threadStates(tg.pid).values()].some((st) => st !== 'T'); await sleep(5)) {
    if (Date.now() > deadline) throw new Error('target never stopped');
  }
  const blk = status(tg.pid)['SigBlk'];
  const s = session(t);
  const tree = await s.seizeTree(tg.pid);
  const p = tree.processes[0]!;
  t.true(p.stopped);
  t.is(p.state, 'T');
  for (const th of p.threads) t.is(th.stopSignal, 19, `tid ${th.tid} SIGSTOP`);
  t.true(await s.releaseTree({ mode: 'resume' }));
  await sleep(50);
  assertReleased(t, [tg.pid]);
  for (const [tid, st] of threadStates(tg.pid)) t.is(st, 'T', `tid ${tid} still stopped`);
  const c = tg.counter(0);
  await sleep(60);
  t.is(tg.counter(0), c, 'still not running');
  t.is(status(tg.pid)['SigBlk'], blk);
  // And it is a normal stopped task: SIGCONT wakes it.
  await assertFrozenThenRunning(t, tg, [0, 1, 2], async () => process.kill(tg.pid, 'SIGCONT'));
});

test("release mode 'stop' leaves the tree stopped; 'kill' kills it", async (t) => {
  const tg = await start(t, 'forktree', 3, 3n);
  const s = session(t);
  const tree = await s.seizeTree(tg.pid);
  const pids = tree.processes.map((p) => p.pid);
  await s.releaseTree({ mode: 'stop' });
  await sleep(50);
  for (const pid of pids) t.is(procState(pid), 'T', `pid ${pid} stopped`);
  assertReleased(t, pids);
  const tree2 = await s.seizeTree(tg.pid);
  t.true(tree2.processes.every((p) => p.stopped));
  await s.releaseTree({ mode: 'kill' });
  for (const deadline = Date.now() + 5000; ; await sleep(10)) {
    const alive = pids.filter((pid) => existsSync(`/proc/${pid}`) && procState(pid) !== 'Z');
    if (alive.length === 0) break;
    if (Date.now() > deadline) {
      t.fail(`still alive after kill: ${alive.join(',')}`);
      break;
    }
  }
  t.pass();
});

test('root exiting during the seize: TARGET_GONE, and the rest of the tree left running untraced', async (t) => {
  const tg = await start(t, 'killparent');
  const child = Number(tg.field(AUX_PID));
  const s = session(t);
  await expectCode(t, s.seizeTree(tg.pid), 'TARGET_GONE', new RegExp(`pid ${tg.pid}`));
  t.is(await s.seizedTree(), null);
  assertReleased(t, [child]);
  for (const [tid, st] of threadStates(child)) t.not(st, 't', `tid ${tid} not left in a trace stop`);
  const c = tg.counter(1);
  for (const deadline = Date.now() + 5000; tg.counter(1) <= c; await sleep(10)) {
    if (Date.now() > deadline) throw new Error('child does not run');
  }
  t.pass();
});

test('refusals name the task and the reason', async (t) => {
  const s = session(t);
  await expectCode(t, s.seizeTree(4_000_000), 'ESRCH_TARGET', /4000000/);
  await expectCode(t, s.seizeTree(1), 'REFUSED_TARGET', /pid 1/);
  await expectCode(t, s.seizeTree(process.pid), 'REFUSED_TARGET', /own process/);
  await expectCode(t, s.seizeTree(process.ppid), 'REFUSED_TARGET', /ancestor/);
  if (existsSync('/proc/2/stat') && readFileSync('/proc/2/stat', 'utf8').includes('(kthreadd)')) {
    await expectCode(t, s.seizeTree(2), 'REFUSED_TARGET', /kernel thread/);
  }
  const thr = await start(t, 'threads', 2);
  const other = [...threadStates(thr.pid).keys()].find((x) => x !== thr.pid)!;
  await expectCode(t, s.seizeTree(other), 'REFUSED_TARGET', /thread of process/);
  const traced = await start(t, 'traced');
  const tracee = Number(traced.field(AUX_PID));
  await expectCode(t, s.seizeTree(tracee), 'EPERM_PTRACE', new RegExp(`pid ${tracee}.*traced by pid ${traced.pid}`));
  // A tree containing a task someone else traces cannot be seized, and nothing stays held.
  await expectCode(t, s.seizeTree(traced.pid), 'EPERM_PTRACE', new RegExp(`${tracee}`));
  assertReleased(t, [traced.pid]);
  t.not(procState(traced.pid), 't');
});

test('one tree per session; threadState only for held threads', async (t) => {
  const a = await start(t, 'single');
  const b = await start(t, 'single');
  const s = session(t);
  await s.seizeTree(a.pid);
  await expectCode(t, s.seizeTree(b.pid), 'UNSUPPORTED', /already holds/);
  await expectCode(t, s.threadState(b.pid), 'PTRACE', /not a thread of the tree/);
  t.is((await s.seizedTree())?.root, a.pid);
  await s.releaseTree({ mode: 'resume' });
  assertReleased(t, [a.pid]);
});

interface CgroupKind {
  name: string;
  root: string;
  /** Line of /proc/PID/cgroup for this hierarchy (`6:freezer:` or `0::`). */
  prefix: RegExp;
  thawed: (dir: string) => boolean;
  thaw: (dir: string) => void;
}

const cgroupKinds: CgroupKind[] = [
  {
    name: 'v1 freezer',
    root: '/sys/fs/cgroup/freezer',
    prefix: /^\d+:freezer:(.*)$/m,
    thawed: (dir) => readFileSync(join(dir, 'freezer.state'), 'utf8').trim() === 'THAWED',
    thaw: (dir) => writeFileSync(join(dir, 'freezer.state'), 'THAWED'),
  },
  {
    name: 'v2 cgroup.freeze',
    root: existsSync('/sys/fs/cgroup/cgroup.controllers') ? '/sys/fs/cgroup' : '/sys/fs/cgroup/unified',
    prefix: /^0::(.*)$/m,
    thawed: (dir) => /frozen 0/.test(readFileSync(join(dir, 'cgroup.events'), 'utf8')),
    thaw: (dir) => writeFileSync(join(dir, 'cgroup.freeze'), '0'),
  },
];

for (const kind of cgroupKinds) {
  const usable = existsSync(join(kind.root, 'cgroup.procs'));
  (usable ? test : test.skip)(`${kind.name}: freeze, seize, thaw; timing reported, cgroup thawed after`, async (t) => {
    const tg = await start(t, 'threads', 4);
    const cg = join(kind.root, `tsdump-cap-${process.pid}-${Date.now()}`);
    mkdirSync(cg);
    const home = kind.prefix.exec(readFileSync(`/proc/${tg.pid}/cgroup`, 'utf8'))?.[1] ?? '/';
    t.teardown(() => {
      try {
        kind.thaw(cg);
        writeFileSync(join(kind.root, home, 'cgroup.procs'), String(tg.pid));
      } catch {
        // target already gone
      }
      try {
        rmdirSync(cg);
      } catch {
        // still populated by a dying target
      }
    });
    writeFileSync(join(cg, 'cgroup.procs'), String(tg.pid));
    const s = session(t);
    const tree = await s.seizeTree(tg.pid, { freezeCgroup: cg });
    t.true(tree.cgroupFreezeTimeUs > 0);
    t.is(tree.processes[0]!.threads.length, 4);
    t.true(kind.thawed(cg), 'thawed as soon as the tasks are seized');
    for (const [tid, st] of threadStates(tg.pid)) t.is(st, 't', `tid ${tid}`);
    await assertFrozenThenRunning(t, tg, [0, 1, 2, 3], () => s.releaseTree({ mode: 'resume' }));
    assertReleased(t, [tg.pid]);
  });
}
