// The parasite against a real two-thread target: what it reads matches what the target set up,
// and the cure is invisible (registers, signal masks, memory map unchanged; the target finds all
// its state intact and keeps running).
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native, callNative } from '../src/native.js';

interface CtlTarget {
  pid: number;
  ctl: string;
  ready: Map<string, string>;
  kill(): void;
}

/**
 * Starts build/targets/NAME with a control dir (see __test__/targets/common.h) and waits for
 * CTL/ready. The target is started through `setsid -f` so that it is not a child of this Node
 * process: libuv reaps its own children with waitpid(), and a waitpid from any thread of the
 * tracer's process can consume the tracee's ptrace stops meant for the tracer thread.
 */
async function startCtlTarget(name: string): Promise<CtlTarget> {
  const ctl = mkdtempSync(join(tmpdir(), `tsdump-${name}-`));
  const out = openSync(join(ctl, 'log'), 'a', 0o600);
  const child = spawn('setsid', ['-f', join('build/targets', name), ctl], { stdio: ['ignore', out, out] });
  closeSync(out);
  await new Promise((r) => child.on('exit', r));
  let pid = 0;
  const kill = (): void => {
    if (pid <= 0) return;
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  for (const deadline = Date.now() + 20_000; !existsSync(join(ctl, 'ready')); ) {
    if (existsSync(join(ctl, 'result')) || Date.now() > deadline) {
      throw new Error(`${name} not ready: ${readFileSync(join(ctl, 'log'), 'utf8')}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const ready = new Map(
    readFileSync(join(ctl, 'ready'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split('=', 2) as [string, string]),
  );
  pid = Number(ready.get('pid'));
  return { pid, ctl, ready, kill };
}

async function verify(t: CtlTarget): Promise<string> {
  writeFileSync(join(t.ctl, 'verify'), '');
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; ) {
    if (existsSync(join(t.ctl, 'result'))) return readFileSync(join(t.ctl, 'result'), 'utf8').trim();
    await new Promise((r) => setTimeout(r, 20));
  }
  return 'TIMEOUT';
}

/** JSON with BigInts, for comparing register sets. */
const dump = (v: unknown): string => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString(16) : x));

/** /proc/PID/task/TID/status fields that must survive the parasite. */
function statusOf(pid: number, tid: number): Record<string, string> {
  const text = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
  const pick = ['SigBlk', 'SigIgn', 'SigCgt', 'Umask', 'CapEff', 'NoNewPrivs'];
  return Object.fromEntries(text.split('\n').map((l) => l.split(':\t')).filter(([k]) => pick.includes(k!)));
}

test.serial('parasiteInfo reads what the task set up, and the cure leaves no trace', async (t) => {
  const target = await startCtlTarget('mem_info');
  const images = mkdtempSync(join(tmpdir(), 'tsdump-parimg-'));
  const session = new native.Session();
  t.teardown(() => {
    target.kill();
    session.close();
    rmSync(images, { recursive: true, force: true });
    rmSync(target.ctl, { recursive: true, force: true });
  });
  const pid = target.pid;
  const worker = Number(target.ready.get('worker'));
  const tree = await callNative(() => session.seizeTree(pid));
  t.deepEqual(tree.processes[0]!.threads.map((x) => x.tid).sort(), [pid, worker].sort());

  const mapsBefore = readFileSync(`/proc/${pid}/maps`, 'utf8');
  const before = await Promise.all([pid, worker].map((tid) => callNative(() => session.threadState(tid))));
  const statusBefore = [pid, worker].map((tid) => statusOf(pid, tid));
  let info: Awaited<ReturnType<typeof session.parasiteInfo>>;
  try {
    info = await callNative(() => session.parasiteInfo(pid, [pid, worker]));
    // A second infection for the vmsplice drain, to check that cures compose.
    await callNative(() => session.dumpMemory(pid, { imagesDir: images, pagesId: 1, mode: 'vmsplice' }));
    const after = await Promise.all([pid, worker].map((tid) => callNative(() => session.threadState(tid))));
    for (let i = 0; i < 2; i++) {
      t.is(dump(after[i]!.regs.gpregs), dump(before[i]!.regs.gpregs), `registers of thread ${i}`);
      t.is(dump(after[i]!.regs.fpregsRaw), dump(before[i]!.regs.fpregsRaw), `FPU state of thread ${i}`);
      t.is(after[i]!.blocked, before[i]!.blocked, `signal mask of thread ${i}`);
    }
    t.is(readFileSync(`/proc/${pid}/maps`, 'utf8'), mapsBefore, 'memory map unchanged');
    t.deepEqual([pid, worker].map((tid) => statusOf(pid, tid)), statusBefore);
  } finally {
    await callNative(() => session.releaseTree({ mode: 'resume' }));
  }

  t.is(info.sigactions.length, 64);
  const usr1 = info.sigactions[10 - 1]!; // SIGUSR1
  t.is(usr1.handler, BigInt('0x' + target.ready.get('handler')));
  t.is(usr1.flags & 0x10000004n, 0x10000004n, 'SA_SIGINFO|SA_RESTART');
  t.is(usr1.mask, 1n << 11n, 'mask {SIGUSR2}');
  t.is(info.sigactions[15 - 1]!.handler, 1n, 'SIGTERM is SIG_IGN');
  t.true(info.sigactions[9 - 1]!.fixed && info.sigactions[19 - 1]!.fixed, 'SIGKILL/SIGSTOP marked');
  t.is(info.itimers.real.interval.sec, 100);
  t.true(info.itimers.real.value.sec > 150);
  t.is(info.itimers.virt.value.sec, 0);
  t.is(info.posixTimers.length, 1);
  const pt = info.posixTimers[0]!;
  t.is(pt.id, Number(target.ready.get('timer')));
  t.is(pt.clockId, 1, 'CLOCK_MONOTONIC');
  t.is(pt.signo, 10);
  t.is(pt.interval.sec, 50);
  t.true(pt.value.sec > 0);
  t.is(info.misc.umask, 0o027);
  t.true(info.misc.childSubreaper);
  t.is(info.misc.dumpable, 1);
  t.false(info.misc.thpDisabled);

  const [main, wk] = info.threads;
  t.is(main!.tid, pid);
  t.is(main!.name, 'mem-main');
  t.is(main!.altstackSp, BigInt('0x' + target.ready.get('altstack_main')));
  t.is(main!.altstackSize, BigInt(target.ready.get('altstack_main_size')!));
  t.is(main!.blocked, 1n << 0n, 'SIGHUP blocked');
  t.is(main!.pdeathSig, 0);
  t.is(wk!.tid, worker);
  t.is(wk!.name, 'mem-worker');
  t.is(wk!.altstackSp, BigInt('0x' + target.ready.get('altstack_worker')));
  t.is(wk!.pdeathSig, 12, 'SIGUSR2');
  t.not(wk!.clearTidAddr, 0n, 'pthread threads have a clear-tid address');
  t.not(wk!.clearTidAddr, main!.clearTidAddr);
  t.is(main!.creds.uid, process.getuid!());
  t.is(main!.creds.fsgid, process.getgid!());
  t.is(main!.creds.capEff, BigInt('0x' + statusBefore[0]!['CapEff']));
  t.true(info.syscalls > 64);

  t.is(await verify(target), 'PASS');
  t.regex(readFileSync(`/proc/${pid}/status`, 'utf8'), /TracerPid:\s+0\n/);
});

test.serial('parasiteInfo refuses a task this session has not seized', async (t) => {
  const target = await startCtlTarget('mem_info');
  const session = new native.Session();
  t.teardown(() => {
    target.kill();
    session.close();
    rmSync(target.ctl, { recursive: true, force: true });
  });
  const mapsBefore = readFileSync(`/proc/${target.pid}/maps`, 'utf8');
  const err = await t.throwsAsync(() => callNative(() => session.parasiteInfo(target.pid)));
  t.regex(err!.message, /not seized by this session/);
  t.is(readFileSync(`/proc/${target.pid}/maps`, 'utf8'), mapsBefore);
  t.is(await verify(target), 'PASS');
});
