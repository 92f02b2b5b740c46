// The parasite against a real two-thread target: what it reads matches what the target set up,
// and the cure is invisible (registers, signal masks, memory map unchanged; the target finds all
// its state intact and keeps running).
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../src/native.js';
import { openImagesDir } from '../src/images/dir.js';
import { makeWorkDir } from './helpers/criu.js';
import { killTree, requestVerify, startDetachedTarget } from './helpers/target.js';


/** JSON with BigInts, for comparing register sets. */
const dump = (v: unknown): string => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString(16) : x));

/** /proc/PID/task/TID/status fields that must survive the parasite. */
function statusOf(pid: number, tid: number): Record<string, string> {
  const text = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
  const pick = ['SigBlk', 'SigIgn', 'SigCgt', 'Umask', 'CapEff', 'NoNewPrivs'];
  return Object.fromEntries(text.split('\n').map((l) => l.split(':\t')).filter(([k]) => pick.includes(k!)));
}

test.serial('parasiteInfo reads what the task set up, and the cure leaves no trace', async (t) => {
  const target = await startDetachedTarget('mem_info', { dir: await makeWorkDir(t) });
  const images = mkdtempSync(join(tmpdir(), 'tsdump-parimg-'));
  const session = new native.Session();
  session.useImagesDir(openImagesDir(images));
  t.teardown(async () => {
    await killTree(target.pid, target.ctl, target.pids);
    session.close();
    rmSync(images, { recursive: true, force: true });
  });
  const pid = target.pid;
  const worker = Number(target.info['worker']!);
  const tree = await session.seizeTree(pid);
  t.deepEqual(tree.processes[0]!.threads.map((x) => x.tid).sort(), [pid, worker].sort());

  const mapsBefore = readFileSync(`/proc/${pid}/maps`, 'utf8');
  const before = await Promise.all([pid, worker].map((tid) => session.threadState(tid)));
  const statusBefore = [pid, worker].map((tid) => statusOf(pid, tid));
  let info: Awaited<ReturnType<typeof session.parasiteInfo>>;
  try {
    info = await session.parasiteInfo(pid, [pid, worker]);
    // A second infection for the vmsplice drain, to check that cures compose.
    await session.dumpMemory(pid, { pagesId: 1, mode: 'vmsplice' });
    const after = await Promise.all([pid, worker].map((tid) => session.threadState(tid)));
    for (let i = 0; i < 2; i++) {
      t.is(dump(after[i]!.regs.gpregsRaw), dump(before[i]!.regs.gpregsRaw), `registers of thread ${i}`);
      t.is(dump(after[i]!.regs.fpregsRaw), dump(before[i]!.regs.fpregsRaw), `FPU state of thread ${i}`);
      t.is(after[i]!.blocked, before[i]!.blocked, `signal mask of thread ${i}`);
    }
    t.is(readFileSync(`/proc/${pid}/maps`, 'utf8'), mapsBefore, 'memory map unchanged');
    t.deepEqual([pid, worker].map((tid) => statusOf(pid, tid)), statusBefore);
  } finally {
    await session.releaseTree({ mode: 'resume' });
  }

  // four words a signal, 1..64 in order: handler, flags, restorer, mask
  t.is(info.sigactions.length, 64 * 4);
  const sa = (signo: number) => ({ handler: info.sigactions[(signo - 1) * 4]!, flags: info.sigactions[(signo - 1) * 4 + 1]!, mask: info.sigactions[(signo - 1) * 4 + 3]! });
  const usr1 = sa(10); // SIGUSR1
  t.is(usr1.handler, BigInt('0x' + target.info['handler']!));
  t.is(usr1.flags & 0x10000004n, 0x10000004n, 'SA_SIGINFO|SA_RESTART');
  t.is(usr1.mask, 1n << 11n, 'mask {SIGUSR2}');
  t.is(sa(15).handler, 1n, 'SIGTERM is SIG_IGN');
  t.is(info.itimers.real.interval.sec, 100);
  t.true(info.itimers.real.value.sec > 150);
  t.is(info.itimers.virt.value.sec, 0);
  t.is(info.posixTimers.length, 1);
  const pt = info.posixTimers[0]!;
  t.is(pt.id, Number(target.info['timer']!));
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
  t.is(main!.altstackSp, BigInt('0x' + target.info['altstack_main']!));
  t.is(main!.altstackSize, BigInt(target.info['altstack_main_size']!));
  t.is(main!.blocked, 1n << 0n, 'SIGHUP blocked');
  t.is(main!.pdeathSig, 0);
  t.is(wk!.tid, worker);
  t.is(wk!.name, 'mem-worker');
  t.is(wk!.altstackSp, BigInt('0x' + target.info['altstack_worker']!));
  t.is(wk!.pdeathSig, 12, 'SIGUSR2');
  t.not(wk!.clearTidAddr, 0n, 'pthread threads have a clear-tid address');
  t.not(wk!.clearTidAddr, main!.clearTidAddr);
  t.is(main!.creds.uid, process.getuid!());
  t.is(main!.creds.fsgid, process.getgid!());
  t.is(main!.creds.capEff, BigInt('0x' + statusBefore[0]!['CapEff']));
  // the resident parasite answers for the process and each thread in one trip (not ~80 injected syscalls)
  t.true(info.syscalls <= 4, `${info.syscalls} injected calls`);

  t.is(await requestVerify(target), 'PASS');
  t.regex(readFileSync(`/proc/${pid}/status`, 'utf8'), /TracerPid:\s+0\n/);
});

test.serial('parasiteInfo refuses a task this session has not seized', async (t) => {
  const target = await startDetachedTarget('mem_info', { dir: await makeWorkDir(t) });
  const session = new native.Session();
  t.teardown(async () => {
    await killTree(target.pid, target.ctl, target.pids);
    session.close();
  });
  const mapsBefore = readFileSync(`/proc/${target.pid}/maps`, 'utf8');
  const err = await t.throwsAsync(() => session.parasiteInfo(target.pid));
  t.regex(err!.message, /not seized by this session/);
  t.is(readFileSync(`/proc/${target.pid}/maps`, 'utf8'), mapsBefore);
  t.is(await requestVerify(target), 'PASS');
});
