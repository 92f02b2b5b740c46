// The library on a tree rooted at a child of the calling process (worker mode, src/dump/own-child.ts):
// the targets here are spawned by this very test process (startTarget), so libuv's waitpid would
// steal their ptrace stops if they were traced from here. dump() and preDump() trace them from a
// forked worker instead; the result, events, log lines, cancellation and errors come back over
// IPC, and this process stays the child's parent: it sees the child's 'exit' and reaps it.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { chmod, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { dump, preDump, ActionScriptError, TsdumpError, type DumpOptions } from '../src/index.js';
import type { Logger } from '../src/log.js';
import { criuRestore, makeWorkDir } from './helpers/criu.js';
import {
  childrenOf,
  isAlive,
  killTree,
  logTail,
  requestVerify,
  startDetachedTarget,
  startTarget,
  waitGone,
  type Target,
  type TargetExit,
} from './helpers/target.js';

const DIST_INDEX = fileURLToPath(new URL('../dist/index.js', import.meta.url));

function readOr(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

function statusField(pid: number, field: string): string | undefined {
  return new RegExp(`^${field}:\\s*(.*)$`, 'm').exec(readOr(`/proc/${pid}/status`))?.[1]?.trim();
}

function ppidOf(pid: number): number | undefined {
  const stat = readOr(`/proc/${pid}/stat`);
  return stat ? Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) : undefined;
}

/** The process (thread group) whose thread traces pid, or 0. */
function tracerProcess(pid: number): number {
  const tid = Number(statusField(pid, 'TracerPid') ?? 0);
  return tid === 0 ? 0 : Number(statusField(tid, 'Tgid') ?? 0);
}

/** Our children that are dump workers (node running dump/worker.*). */
function workers(): number[] {
  return childrenOf(process.pid).filter((p) => /dump\/worker\.(js|ts)/.test(readOr(`/proc/${p}/cmdline`)));
}

async function until(what: string, cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(2);
  }
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** `p`'s value, or 'pending' if it has not settled within ms. */
async function settledWithin<T>(p: Promise<T>, ms: number): Promise<T | 'pending'> {
  return Promise.race([p, sleep(ms).then(() => 'pending' as const)]);
}

/** A target spawned by this process (its parent is us), killed in teardown. */
async function ownChild(t: ExecutionContext, name: string, work: string, args: readonly string[] = []): Promise<Target> {
  const target = await startTarget(name, { dir: work, args, timeoutMs: 60_000 });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  t.is(ppidOf(target.pid), process.pid, 'the target is a child of the test process');
  return target;
}

/** Running, not stopped, not traced, still our child: what a released or cancelled dump leaves. */
function assertRunningChild(t: ExecutionContext, target: Target): void {
  for (const pid of target.pids) {
    t.notRegex(statusField(pid, 'State') ?? 'gone', /^[tTZX]|gone/, `pid ${pid} state`);
    t.is(statusField(pid, 'TracerPid'), '0', `pid ${pid} is still traced`);
  }
  t.is(ppidOf(target.pid), process.pid, 'still our child');
}

/** Memory maps and blocked signals of every thread: what a cancelled dump must not change. */
function snapshot(pids: readonly number[]): string {
  return pids
    .map((pid) => `${pid} SigBlk ${statusField(pid, 'SigBlk')}\n${readOr(`/proc/${pid}/maps`)}`)
    .join('\n');
}

/** A Logger that keeps every line it is given; `level` is what it declares it wants (debug by default). */
function collectingLogger(level = 4): Logger & { lines: string[] } {
  const lines: string[] = [];
  const add = (kind: string) => (text: string) => void lines.push(`${kind} ${text}`);
  return { level, file: undefined, lines, msg: add('msg'), error: add('error'), warn: add('warn'), info: add('info'), debug: add('debug'), close: () => {} };
}

async function verifyPass(t: ExecutionContext, target: Pick<Target, 'name' | 'pid' | 'ctl'>, what: string): Promise<void> {
  t.is(await requestVerify(target, { timeoutMs: 30_000 }), 'PASS', `${what}\n--- target log ---\n${logTail(target)}`);
}

test.serial('dump() of our own child: result and events over IPC, its exit seen and reaped here, restored to PASS', async (t) => {
  const work = await makeWorkDir(t);
  const target = await ownChild(t, 't_counter', work);
  const script = join(work, 'post-dump.sh');
  // the action script runs in the worker, with the caller's environment
  await writeFile(script, `#!/bin/sh\necho "$CRTOOLS_SCRIPT_ACTION $CRTOOLS_INIT_PID $TSDUMP_TEST_MARK" >> ${join(work, 'scripts.out')}\n`);
  await chmod(script, 0o700);
  process.env.TSDUMP_TEST_MARK = 'from-the-caller';
  t.teardown(() => delete process.env.TSDUMP_TEST_MARK);

  const stages: string[] = [];
  const pages: { n: number; task: { pid: number; written: number; total: number } }[] = [];
  const log = collectingLogger();
  const imagesDir = join(work, 'images');
  const result = await dump(
    { pid: target.pid, imagesDir, shellJob: true, actionScripts: [script], log },
    { stage: (s) => stages.push(s), pages: (n, task) => pages.push({ n, task }) },
  );
  t.is(result.released, 'killed');
  t.is(result.imagesDir, imagesDir);
  t.deepEqual(result.processes, [{ pid: target.pid, ppid: process.pid, threads: [target.pid] }]);
  t.true(result.counters.pagesWritten > 0);
  t.true(result.timings.frozenTime > 0 && result.timings.totalTime >= result.timings.frozenTime);
  // during the copy (throttled) and at its end: the last one carries the whole count
  const written = result.counters.pagesWritten;
  t.deepEqual(pages.at(-1), { n: written, task: { pid: target.pid, written, total: written } }, 'the last pages event: the task copied whole');
  t.true(pages.every((p, i) => i === 0 || p.n > pages[i - 1]!.n), 'increasing counts');
  const order = ['pre-dump scripts', 'collect pstree', `dump task ${target.pid}`, 'dump pstree', 'write inventory', 'post-dump scripts', 'finish'];
  t.deepEqual(stages.filter((s) => order.includes(s)), order);
  t.true(log.lines.includes('debug Running pre-dump scripts'), log.lines.join('\n'));
  t.true(log.lines.includes('debug Running post-dump scripts'), log.lines.join('\n'));
  t.is(readOr(join(work, 'scripts.out')), `pre-dump ${target.pid} from-the-caller\npost-dump ${target.pid} from-the-caller\n`);
  t.true(existsSync(join(imagesDir, 'inventory.img')));
  t.deepEqual(workers(), [], 'the worker has exited');

  // The dump killed it; we are its parent, so Node's 'exit' fires here and libuv reaps it.
  const exit = await settledWithin(target.exited, 10_000);
  t.deepEqual(exit, { code: null, signal: 'SIGKILL' } satisfies TargetExit);
  t.false(existsSync(`/proc/${target.pid}`), 'reaped, not left a zombie');

  await criuRestore(imagesDir);
  await verifyPass(t, target, 'restored from a dump of our own child');
});

test.serial('--leave-running on our own child: it runs on as our child, and we reap it when it exits later', async (t) => {
  const work = await makeWorkDir(t);
  const target = await ownChild(t, 't_counter', work);
  const imagesDir = join(work, 'images');
  const result = await dump({ pid: target.pid, imagesDir, shellJob: true, leaveRunning: true });
  t.is(result.released, 'running');
  t.true(existsSync(join(imagesDir, 'inventory.img')));
  assertRunningChild(t, target);
  t.is(await settledWithin(target.exited, 200), 'pending', 'no exit reported for a child that runs on');
  await verifyPass(t, target, 'live after --leave-running');

  process.kill(target.pid, 'SIGTERM');
  t.deepEqual(await settledWithin(target.exited, 10_000), { code: null, signal: 'SIGTERM' } satisfies TargetExit);
  await waitGone([target.pid]);
});

test.serial('an AbortSignal fired mid-drain cancels the worker: CANCELLED with its reason, our child running unchanged', async (t) => {
  const work = await makeWorkDir(t);
  const target = await ownChild(t, 'f_faults', work, ['256', 'child']);
  const before = snapshot(target.pids);
  const imagesDir = join(work, 'images');
  const controller = new AbortController();
  const stages: string[] = [];
  let tracer = 0;
  let tracerParent = 0;
  const err = await t.throwsAsync(
    dump(
      { pid: target.pid, imagesDir, signal: controller.signal },
      {
        stage: (s) => {
          stages.push(s);
          if (s !== `dump task ${target.pid}`) return;
          tracer = tracerProcess(target.pid);
          tracerParent = ppidOf(tracer) ?? 0;
          controller.abort(new TsdumpError('CANCELLED', 'interrupted by the test'));
        },
      },
    ),
    { instanceOf: TsdumpError },
  );
  t.is(err?.code, 'CANCELLED');
  t.is(err?.message, 'dump interrupted by the test; the tree was released untouched');
  t.true(stages.includes('collect pstree') && !stages.includes('write inventory'), stages.join(', '));
  t.not(tracer, 0, 'the tree was seized when the abort was sent');
  t.not(tracer, process.pid, 'traced from another process, not ours');
  t.is(tracerParent, process.pid, 'the tracer was our forked worker');
  t.false(existsSync(join(imagesDir, 'inventory.img')));
  t.true(fileSize(join(imagesDir, 'pages-1.img')) < 256 << 20, 'the drain stopped before the end');
  assertRunningChild(t, target);
  t.is(snapshot(target.pids), before, 'maps and blocked signals unchanged');
  t.is(await settledWithin(target.exited, 100), 'pending');
  await verifyPass(t, target, 'memory, masks and ticker intact after a cancelled dump');
});

test.serial('a dump worker killed mid-drain: DUMP_WORKER naming its pid and the signal; our child runs on', async (t) => {
  const work = await makeWorkDir(t);
  const target = await ownChild(t, 'f_faults', work, ['512']);
  const imagesDir = join(work, 'images');
  const pagesImg = join(imagesDir, 'pages-1.img');
  let worker = 0;
  const done = dump({ pid: target.pid, imagesDir }).then(
    () => undefined,
    (e: unknown) => e,
  );
  await until('the page drain to pass 32 MiB', () => fileSize(pagesImg) > 32 << 20);
  worker = tracerProcess(target.pid);
  t.not(worker, 0);
  t.deepEqual(workers(), [worker], 'the tracer is our forked worker');
  process.kill(worker, 'SIGKILL');
  const err = await done;
  t.true(err instanceof TsdumpError, String(err));
  t.is((err as TsdumpError).code, 'DUMP_WORKER');
  t.is((err as TsdumpError).message, `dump worker (pid ${worker}) for pid ${target.pid} was killed by SIGKILL before answering; the dump did not complete`);
  t.false(existsSync(join(imagesDir, 'inventory.img')));
  // The kernel detached the tree when its tracer died; the parasite goes home on its own.
  await until('the tree to be let go', () => statusField(target.pid, 'TracerPid') === '0' && !/^[tT]/.test(statusField(target.pid, 'State') ?? ''), 10_000);
  t.true(isAlive(target.pid), 'the target survived its dumper');
  assertRunningChild(t, target);
  await verifyPass(t, target, 'intact after the dump worker was killed');
});

test.serial('preDump() of our own child, then an incremental dump(): log lines forwarded, the chain restores to PASS', async (t) => {
  const work = await makeWorkDir(t);
  const target = await ownChild(t, 't_counter', work);
  const log = collectingLogger();
  const stages: string[] = [];
  const pre = await preDump({ pid: target.pid, imagesDir: join(work, 'd1'), log }, { stage: (s) => stages.push(s) });
  t.is(pre.released, 'running');
  t.true(pre.counters.pagesWritten > 0);
  t.true(stages.includes(`pre-dump task ${target.pid}`), stages.join(', '));
  t.true(log.lines.some((l) => l.startsWith(`info pid ${target.pid}: tracking writes with`)), log.lines.join('\n'));
  // (t_counter verifies itself once: that is kept for the restored chain)
  assertRunningChild(t, target);

  const imagesDir = join(work, 'd2');
  // at -v3 the worker sends the info lines, and none of the debug ones the caller's log would drop
  const infoLog = collectingLogger(3);
  const result = await dump({ pid: target.pid, imagesDir, prevImagesDir: '../d1', trackMem: true, shellJob: true, log: infoLog });
  t.true(infoLog.lines.includes(`info stage: dump task ${target.pid}`), infoLog.lines.join('\n'));
  t.false(infoLog.lines.some((l) => l.startsWith('debug ')), infoLog.lines.join('\n'));
  t.is(result.released, 'killed');
  t.true(result.counters.pagesSkippedParent > 0, 'pages left in the parent images');
  t.deepEqual(await settledWithin(target.exited, 10_000), { code: null, signal: 'SIGKILL' } satisfies TargetExit);
  await criuRestore(imagesDir);
  await verifyPass(t, target, 'restored from the pre-dump chain');
});

test.serial('worker errors come back with the same class, code and message as in-process ones', async (t) => {
  const work = await makeWorkDir(t);
  const script = join(work, 'fail.sh');
  await writeFile(script, '#!/bin/sh\nexit 3\n');
  await chmod(script, 0o700);
  const own = await ownChild(t, 't_counter', join(work, 'own'));
  const detached = await startDetachedTarget('t_counter', { dir: join(work, 'detached') });
  t.teardown(() => killTree(detached.pid, detached.ctl));

  const log = collectingLogger();
  const opts = (pid: number, dir: string): DumpOptions => ({ pid, imagesDir: join(work, dir), actionScripts: [script], log });
  const inWorker = await t.throwsAsync(dump(opts(own.pid, 'i1')), { instanceOf: ActionScriptError });
  const inProcess = await t.throwsAsync(dump(opts(detached.pid, 'i2')), { instanceOf: ActionScriptError });
  t.is(inWorker?.code, 'ACTION_SCRIPT');
  t.is(inWorker?.code, inProcess?.code);
  t.is(inWorker?.message, inProcess?.message);
  t.deepEqual(inWorker?.failures, inProcess?.failures);
  t.is(inWorker?.action, 'pre-dump');
  t.is(log.lines.filter((l) => l === `error Script ${script} exited with 3`).length, 2, 'the worker\'s error line forwarded too');

  // options that cannot cross to the worker are refused by name, before anything runs
  const bad = { pid: own.pid, imagesDir: join(work, 'i3'), bogus: 1 } as DumpOptions;
  const refused = await t.throwsAsync(dump(bad), { instanceOf: TsdumpError });
  t.is(refused?.code, 'USAGE');
  t.is(refused?.message, 'unknown dump option "bogus"');
  t.false(existsSync(join(work, 'i3')));
  const notData = { pid: own.pid, imagesDir: join(work, 'i4'), pageServer: { address: '127.0.0.1', port: 1, connect: () => 1 } } as DumpOptions;
  const notCloned = await t.throwsAsync(dump(notData), { instanceOf: TsdumpError });
  t.is(notCloned?.code, 'USAGE');
  t.regex(notCloned?.message ?? '', /^dump options cannot be passed to the dump worker \(pid \d+\) for pid \d+: .*could not be cloned/);

  // a signal aborted before the call: the caller's default reason, as in-process
  const early = await t.throwsAsync(dump({ pid: own.pid, imagesDir: join(work, 'i5'), signal: AbortSignal.abort() }), { instanceOf: TsdumpError });
  t.is(early?.code, 'CANCELLED');
  t.is(early?.message, 'dump cancelled by the caller; the tree was released untouched');
  t.false(existsSync(join(work, 'i5', 'inventory.img')));

  assertRunningChild(t, own);
  await verifyPass(t, own, 'untouched after a failing pre-dump script, refused options and an early abort');
});

// A consumer of the built package: plain node (no TS loader, no flags), importing dist/index.js.
// It spawns build/targets/NAME as its own child, prints "ready PID", dumps it and prints one JSON
// line: the result or the error, how the child ended (if the dump killed it) and whether it is
// still its child.
const CONSUMER = `import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { dump } from ${JSON.stringify(DIST_INDEX)};
const [exe, ctl, imagesDir, ...args] = process.argv.slice(2);
mkdirSync(ctl, { recursive: true });
const out = openSync(ctl + '/log', 'a');
const child = spawn(exe, [ctl, ...args], { detached: true, stdio: ['ignore', out, out] });
const exited = new Promise((res) => child.once('exit', (code, signal) => res({ code, signal })));
while (!existsSync(ctl + '/ready')) await new Promise((r) => setTimeout(r, 5));
console.log('ready ' + child.pid);
const answer = { pid: child.pid };
try {
  const result = await dump({ pid: child.pid, imagesDir, shellJob: true });
  Object.assign(answer, { released: result.released, tasks: result.processes.length, exit: await exited });
} catch (err) {
  answer.error = { code: err.code, message: err.message };
}
const stat = existsSync('/proc/' + child.pid) ? readFileSync('/proc/' + child.pid + '/stat', 'utf8') : '';
answer.ourChild = stat !== '' && Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === process.pid;
console.log(JSON.stringify(answer));
process.exit(0);
`;

interface ConsumerAnswer {
  pid: number;
  released?: string;
  tasks?: number;
  exit?: TargetExit;
  error?: { code: string; message: string };
  ourChild: boolean;
}

/** Starts the consumer on build/targets/NAME; `ready` settles with the target's pid. */
async function startConsumer(t: ExecutionContext, work: string, name: string, args: readonly string[] = []) {
  const ctl = join(work, `ctl-${name}`);
  const imagesDir = join(work, 'images');
  const program = join(work, 'consumer.mjs');
  await writeFile(program, CONSUMER);
  const exe = fileURLToPath(new URL(`../build/targets/${name}`, import.meta.url));
  const consumer = spawn(process.execPath, [program, exe, ctl, imagesDir, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let onReady: (pid: number) => void = () => {};
  const ready = new Promise<number>((res) => (onReady = res));
  consumer.stdout.on('data', (b: Buffer) => {
    stdout += b.toString();
    const m = /^ready (\d+)$/m.exec(stdout);
    if (m) onReady(Number(m[1]));
  });
  consumer.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => consumer.once('close', (code, signal) => res({ code, signal })));
  t.teardown(async () => {
    consumer.kill('SIGKILL');
    const pid = Number(/^ready (\d+)$/m.exec(stdout)?.[1] ?? 0);
    if (pid) await killTree(pid, ctl);
  });
  const answer = async (): Promise<ConsumerAnswer> => {
    const end = await closed;
    if (end.code !== 0) throw new Error(`consumer ended with ${end.code ?? end.signal}\n${stderr}`);
    return JSON.parse(stdout.split('\n').filter(Boolean).pop()!) as ConsumerAnswer;
  };
  return { consumer, ctl, imagesDir, ready, closed, answer };
}

test.serial('the built package (dist/, plain node without a TS loader) dumps its own child through dist/dump/worker.js', async (t) => {
  const work = await makeWorkDir(t);
  const c = await startConsumer(t, work, 't_counter');
  const answer = await c.answer();
  t.deepEqual(answer, { pid: answer.pid, released: 'killed', tasks: 1, exit: { code: null, signal: 'SIGKILL' }, ourChild: false });
  await criuRestore(c.imagesDir);
  await verifyPass(t, { name: 't_counter', pid: answer.pid, ctl: c.ctl }, 'restored from a dump made by the built package');
});

test.serial('SIGTERM to the calling process mid-drain cancels its worker: CANCELLED, the child runs on as its child', async (t) => {
  const work = await makeWorkDir(t);
  const c = await startConsumer(t, work, 'f_faults', ['512']);
  const pid = await c.ready;
  await until('the page drain to pass 32 MiB', () => fileSize(join(c.imagesDir, 'pages-1.img')) > 32 << 20);
  c.consumer.kill('SIGTERM');
  const answer = await c.answer();
  t.deepEqual(answer, { pid, error: { code: 'CANCELLED', message: 'dump interrupted by SIGTERM; the tree was released untouched' }, ourChild: true });
  t.false(existsSync(join(c.imagesDir, 'inventory.img')));
  t.is(statusField(pid, 'TracerPid'), '0');
  await verifyPass(t, { name: 'f_faults', pid, ctl: c.ctl }, 'intact after its caller was told to terminate');
});

test.serial('a caller killed mid-drain: its worker notices, releases the tree untouched and exits', async (t) => {
  const work = await makeWorkDir(t);
  const c = await startConsumer(t, work, 'f_faults', ['512']);
  const pid = await c.ready;
  await until('the page drain to pass 32 MiB', () => fileSize(join(c.imagesDir, 'pages-1.img')) > 32 << 20);
  const worker = tracerProcess(pid);
  t.is(ppidOf(worker), c.consumer.pid, 'traced by the consumer\'s worker');
  c.consumer.kill('SIGKILL');
  await c.closed;
  await until('the worker to exit', () => !isAlive(worker), 15_000);
  t.is(statusField(pid, 'TracerPid'), '0');
  t.notRegex(statusField(pid, 'State') ?? 'gone', /^[tTZX]|gone/);
  t.false(existsSync(join(c.imagesDir, 'inventory.img')));
  t.true(fileSize(join(c.imagesDir, 'pages-1.img')) < 512 << 20, 'the drain stopped before the end');
  await verifyPass(t, { name: 'f_faults', pid, ctl: c.ctl }, 'intact after its caller died mid-dump');
});
