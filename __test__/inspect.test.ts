// Inspect a seized process and cross-check every value against an independent source: what the
// target reports about itself (addresses, fs_base, masks, fcntl flags, offsets) and the raw
// /proc text read here in the test.
import test, { type ExecutionContext } from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, lstatSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { native } from '../src/native.js';
import { x86GpRegs } from '../src/arch/x86_64.js';
import { TsdumpError } from '../src/errors.js';

const TARGET = join(import.meta.dirname, '..', 'build', 'targets', 'cap_target');
// Report layout (see __test__/targets/cap_target.c).
const READY = 2048;
const SPIN_ADDR = 2056;
const STACK_ADDR = 2064;
const FS_BASE = 2072;
const BLOCKED = 2080;
const FDS = 2112;

interface Target {
  pid: number;
  report: string;
  buf(): Buffer;
  u64(off: number): bigint;
}

async function start(t: ExecutionContext, mode: string): Promise<Target> {
  const dir = mkdtempSync(join(tmpdir(), 'tsdump-capi-'));
  const report = join(dir, 'report');
  const out = execFileSync('/bin/sh', ['-c', `setsid "$0" "$1" "$2" </dev/null >/dev/null 2>&1 & echo $!`, TARGET, report, mode], {
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
  const tg: Target = { pid, report, buf: () => readFileSync(report), u64: (off) => tg.buf().readBigUInt64LE(off) };
  for (const deadline = Date.now() + 10_000; ; await sleep(10)) {
    if (existsSync(report) && readFileSync(report).length >= 4096 && tg.u64(READY) >= 1n) break;
    if (Date.now() > deadline) throw new Error(`${mode}: target ${pid} never got ready`);
  }
  return tg;
}

function session(t: ExecutionContext): InstanceType<typeof native.Session> {
  const s = new native.Session();
  t.teardown(async () => {
    await s.releaseTree({ mode: 'resume' }).catch(() => undefined);
    s.close();
  });
  return s;
}

function statusField(pid: number, name: string): string {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${name}:`));
  return line!.slice(name.length + 1).trim();
}

const O_LARGEFILE = 0o100000;
const O_CLOEXEC = 0o2000000;

test('selfreport target: registers, signals and rseq match what the target says about itself', async (t) => {
  const tg = await start(t, 'selfreport');
  process.kill(tg.pid, 'SIGUSR2'); // blocked: stays queued process-wide
  for (const deadline = Date.now() + 5000; (BigInt('0x' + statusField(tg.pid, 'ShdPnd')) & (1n << 11n)) === 0n; await sleep(5)) {
    if (Date.now() > deadline) throw new Error('SIGUSR2 never queued');
  }
  const s = session(t);
  await s.seizeTree(tg.pid);
  const th = await s.threadState(tg.pid);
  t.is(th.tid, tg.pid);
  t.is(th.comm, 'cap-self');
  t.is(th.state, 't');
  if (th.regs.arch !== 'x86_64') return t.pass('register cross-checks are written for x86_64');
  const g = x86GpRegs(th.regs.gpregs);
  const spin = tg.u64(SPIN_ADDR);
  t.true(g.ip >= spin && g.ip < spin + 256n, `ip ${g.ip.toString(16)} inside spin_here at ${spin.toString(16)}`);
  const local = tg.u64(STACK_ADDR);
  // A leaf function may keep its local in the red zone below SP, so allow either side.
  const dist = g.sp > local ? g.sp - local : local - g.sp;
  t.true(dist < 256n, `sp ${g.sp.toString(16)} next to the local at ${local.toString(16)}`);
  t.is(g.fsBase, tg.u64(FS_BASE), 'fs_base is pthread_self()');
  t.is(g.mode, 'native');
  t.is(g.cs, 0x33n);
  t.is(g.origAx, 0xffffffffffffffffn, 'stopped in user code, not in a syscall');
  t.false(th.syscallRestart.inSyscall);
  t.is(th.syscallRestart.action, 'none');
  t.is(th.syscallRestart.ip, g.ip);
  t.is(th.regs.gpregsRaw.length, 27 * 8);
  t.is(th.regs.gpregsRaw.readBigUInt64LE(16 * 8), g.ip);

  // FPU: default control words of a fresh process, and the FXSAVE area inside the xsave buffer.
  const fp = th.regs.fpregs;
  t.is(fp.cwd, 0x37f);
  t.is(fp.mxcsr & 0xffc0, 0x1f80);
  t.is(fp.stSpace.length, 32);
  t.is(fp.xmmSpace.length, 64);
  t.is(fp.padding.length, 24);
  t.is(th.regs.fpregsRaw.length, 512);
  if (fp.xsave) {
    const x = fp.xsave;
    t.true(x.raw.length >= 576);
    t.is(x.xstateSize, x.raw.length);
    t.deepEqual(x.raw.subarray(0, 160), th.regs.fpregsRaw.subarray(0, 160), 'legacy area equals NT_PRFPREG');
    t.is(x.xstateBv, x.raw.readBigUInt64LE(512));
    t.true((x.xfeatures & 3n) === 3n, 'x87 and SSE enabled');
    const cpuAvx = /\bavx\b/.test(readFileSync('/proc/cpuinfo', 'utf8'));
    t.is(x.ymmhSpace.length, cpuAvx ? 64 : 0);
    if ((x.xfeatures & (1n << 9n)) !== 0n) t.is(x.pkru.length, 2);
  }
  t.true(th.regs.tls.length === 0 || th.regs.tls.length === 3);

  // Signals: the mask the target set, its thread-directed SIGUSR1 (sigqueue'd value 1234) and the
  // process-wide SIGUSR2 the test sent.
  t.is(th.blocked, tg.u64(BLOCKED));
  t.is(th.blocked, BigInt('0x' + statusField(tg.pid, 'SigBlk')));
  t.deepEqual(th.pending.map((p) => p.signo), [10]);
  t.is(th.pending[0]!.siginfo.length, 128);
  t.is(th.pending[0]!.siginfo.readInt32LE(24), 1234, 'si_value survives in the raw siginfo');
  t.is(th.pending[0]!.code, -1, 'SI_QUEUE (pthread_sigqueue)');
  t.deepEqual(th.sharedPending.map((p) => p.signo), [12]);
  t.is(th.sharedPending[0]!.siginfo.readInt32LE(16), process.pid, 'si_pid is the sender');
  t.is(th.seccompMode, 0);
  t.deepEqual(th.seccompFilters, []);
  t.deepEqual(th.creds.uids, statusField(tg.pid, 'Uid').split(/\s+/).map(Number));
  t.is(th.creds.capEff, BigInt('0x' + statusField(tg.pid, 'CapEff')));
  if (th.rseq) {
    t.true(th.rseq.rseqAbiPointer > 0n);
    t.true(th.rseq.rseqAbiSize >= 32);
  }
  t.is(th.sched.policy, 0);

  // Release leaves the mask and the queued signals as they were.
  const blk = statusField(tg.pid, 'SigBlk');
  await s.releaseTree({ mode: 'resume' });
  t.is(statusField(tg.pid, 'SigBlk'), blk);
  t.is(statusField(tg.pid, 'TracerPid'), '0');
  t.not(BigInt('0x' + statusField(tg.pid, 'SigPnd')) & (1n << 9n), 0n, 'SIGUSR1 still pending on the thread');
  t.not(BigInt('0x' + statusField(tg.pid, 'ShdPnd')) & (1n << 11n), 0n, 'SIGUSR2 still pending process-wide');
  const c = tg.u64(0);
  for (const deadline = Date.now() + 5000; tg.u64(0) === c; await sleep(5)) {
    if (Date.now() > deadline) throw new Error('target did not resume');
  }
  // Seized again, the same thread stops in the same function with the same TLS base.
  await s.seizeTree(tg.pid);
  const again = await s.threadState(tg.pid);
  if (again.regs.arch === 'x86_64') {
    const a = x86GpRegs(again.regs.gpregs);
    t.is(a.fsBase, g.fsBase);
    t.true(a.ip >= spin && a.ip < spin + 256n);
  }
  await s.releaseTree({ mode: 'resume' });
});

test('inspectProcess: VMAs equal /proc/PID/maps, fds equal the target fcntl view, procfs facts match', async (t) => {
  const tg = await start(t, 'selfreport');
  const s = session(t);
  await s.seizeTree(tg.pid);
  const info = await s.inspectProcess(tg.pid);
  const pid = tg.pid;
  t.is(info.pid, pid);
  t.is(info.comm, 'cap-self');
  t.is(info.state, 't');
  t.is(info.tgid, pid);
  t.deepEqual(info.nsPid, [pid]);
  t.deepEqual(info.threads, [pid]);

  // VMAs against the maps text, line by line.
  const lines = readFileSync(`/proc/${pid}/maps`, 'utf8').trim().split('\n');
  t.is(info.vmas.length, lines.length);
  lines.forEach((line, i) => {
    const m = /^([0-9a-f]+)-([0-9a-f]+) ([r-])([w-])([x-])([ps]) ([0-9a-f]+) ([0-9a-f]+):([0-9a-f]+) (\d+)\s*(.*)$/.exec(line)!;
    const v = info.vmas[i]!;
    t.is(v.start, BigInt('0x' + m[1]), line);
    t.is(v.end, BigInt('0x' + m[2]), line);
    t.is(v.prot, (m[3] === 'r' ? 1 : 0) | (m[4] === 'w' ? 2 : 0) | (m[5] === 'x' ? 4 : 0), line);
    t.is(v.shared, m[6] === 's', line);
    t.is(v.flags & 3, m[6] === 's' ? 1 : 2, line);
    t.is(v.pgoff, BigInt('0x' + m[7]), line);
    t.is(v.devMajor, parseInt(m[8]!, 16), line);
    t.is(v.devMinor, parseInt(m[9]!, 16), line);
    t.is(v.inode, BigInt(m[10]!), line);
    const path = m[11]!;
    t.is((v.path ?? '') + (v.deleted ? ' (deleted)' : ''), path, line);
    if (path === '') t.is(v.kind, 'anon');
    else if (path.startsWith('/')) t.is(v.kind, 'file');
    else t.is(v.kind as string, path.slice(1, -1), line);
    // a file mapping's own open mode: the mode bits of its map_files link, read in the visit
    const link = `/proc/${pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`;
    t.is(v.linkMode, v.kind === 'file' ? lstatSync(link).mode & 0o7777 : undefined, line);
    t.true(v.vmFlags.split(' ').includes('rd') === (m[3] === 'r'), `${line}: VmFlags rd`);
  });
  const kinds = new Set(info.vmas.map((v) => v.kind));
  for (const k of ['stack', 'vdso']) t.true(kinds.has(k as never), `has [${k}]`);
  const stackVma = info.vmas.find((v) => v.kind === 'stack')!;
  t.not(stackVma.flags & 0x100, 0, '[stack] carries MAP_GROWSDOWN');

  // mm fields against stat fields 26-28 and 45-51.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const field = (n: number): bigint => BigInt(f[n - 3]!);
  t.is(info.mm.startCode, field(26));
  t.is(info.mm.endCode, field(27));
  t.is(info.mm.startStack, field(28));
  t.is(info.mm.startData, field(45));
  t.is(info.mm.endData, field(46));
  t.is(info.mm.startBrk, field(47));
  t.is(info.mm.argStart, field(48));
  t.is(info.mm.argEnd, field(49));
  t.is(info.mm.envStart, field(50));
  t.is(info.mm.envEnd, field(51));
  const heap = info.vmas.find((v) => v.kind === 'heap');
  t.is(info.mm.brk, heap ? heap.end : info.mm.startBrk);

  // auxv: the file's words, in order, up to its AT_NULL pair
  const auxv = readFileSync(`/proc/${pid}/auxv`);
  const words = Array.from({ length: auxv.length / 8 }, (_, i) => auxv.readBigUInt64LE(i * 8));
  const atNull = words.findIndex((w, i) => i % 2 === 0 && w === 0n);
  t.deepEqual(Array.from(info.auxv), words.slice(0, atNull));
  t.true(Array.from({ length: info.auxv.length / 2 }, (_, i) => i * 2).some((i) => info.auxv[i] === 6n && info.auxv[i + 1] === 4096n), 'AT_PAGESZ');

  // fds against what the target saw with fcntl(F_GETFL) and lseek.
  const rep = tg.buf();
  const byFd = new Map(info.fds.map((e) => [e.fd, e]));
  const kinds9 = ['file-append', 'file-ro', 'pipe-r', 'pipe-w', 'eventfd', 'epoll', 'signalfd', 'timerfd', 'inotify'];
  const fdOf: Record<string, number> = {};
  kinds9.forEach((k, i) => {
    const off = FDS + i * 16;
    const fd = rep.readInt32LE(off);
    const flags = rep.readInt32LE(off + 4);
    const pos = rep.readBigInt64LE(off + 8);
    fdOf[k] = fd;
    const e = byFd.get(fd);
    t.truthy(e, `fd ${fd} (${k}) listed`);
    if (!e) return;
    t.is(e.flags & ~(O_LARGEFILE | O_CLOEXEC), flags & ~O_LARGEFILE, `${k}: flags`);
    if (pos >= 0n) t.is(e.pos, pos, `${k}: pos`);
    t.is(e.target, readlinkSync(`/proc/${pid}/fd/${fd}`), `${k}: link`);
  });
  const dataFile = `${tg.report}.data`;
  t.is(byFd.get(fdOf['file-append']!)!.target, dataFile);
  t.is(byFd.get(fdOf['file-append']!)!.ino, BigInt(statSync(dataFile).ino));
  t.is(byFd.get(fdOf['file-append']!)!.size, 5n);
  t.is(byFd.get(fdOf['file-ro']!)!.pos, 3n);
  t.regex(byFd.get(fdOf['pipe-r']!)!.target, /^pipe:\[\d+\]$/);
  t.is(byFd.get(fdOf['eventfd']!)!.eventfdCount, 42n);
  const ep = byFd.get(fdOf['epoll']!)!;
  t.not(ep.flags & O_CLOEXEC, 0, 'EPOLL_CLOEXEC shows in fdinfo flags');
  t.is(ep.epollTargets.length, 1);
  t.is(ep.epollTargets[0]!.tfd, fdOf['eventfd']!);
  t.is(ep.epollTargets[0]!.events & ~0x18, 1, 'EPOLLIN (the kernel adds EPOLLERR|EPOLLHUP)');
  t.is(ep.epollTargets[0]!.data, 0x1122334455n);
  t.is(byFd.get(fdOf['signalfd']!)!.signalfdMask, (1n << 9n) | 1n);
  const tfd = byFd.get(fdOf['timerfd']!)!.timerfd!;
  t.is(tfd.clockid, 1);
  t.is(tfd.intervalSec, 5n);
  t.is(tfd.intervalNsec, 250n);
  t.true(tfd.valueSec <= 100n && tfd.valueSec >= 90n);
  const ino = byFd.get(fdOf['inotify']!)!.inotifyWatches;
  t.is(ino.length, 1);
  t.is(ino[0]!.mask & 0x300, 0x300);
  t.is(ino[0]!.ino, BigInt(statSync('/tmp').ino));
  for (const e of info.fds) t.is(e.mntId > 0, true, `fd ${e.fd} mnt_id`);

  // links, ids, limits, creds, misc.
  t.is(info.exe, readlinkSync(`/proc/${pid}/exe`));
  t.is(info.cwd, readlinkSync(`/proc/${pid}/cwd`));
  t.is(info.root, '/');
  for (const ns of info.namespaces) t.is(ns.inode, BigInt(statSync(`/proc/${pid}/ns/${ns.kind}`).ino), ns.kind);
  t.true(info.namespaces.some((n) => n.kind === 'net'));
  const nofile = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))!;
  // soft and hard of each RLIMIT_*, in order: RLIMIT_NOFILE is 7
  t.is(info.rlimits[7 * 2], nofile[1] === 'unlimited' ? 2n ** 64n - 1n : BigInt(nofile[1]!));
  t.is(info.rlimits[7 * 2 + 1], nofile[2] === 'unlimited' ? 2n ** 64n - 1n : BigInt(nofile[2]!));
  t.is(info.rlimits.length, 16 * 2);
  t.deepEqual(info.creds.uids, statusField(pid, 'Uid').split(/\s+/).map(Number));
  t.is(info.creds.capEff, BigInt('0x' + statusField(pid, 'CapEff')));
  t.is(info.creds.capBnd, BigInt('0x' + statusField(pid, 'CapBnd')));
  t.is(info.creds.noNewPrivs, statusField(pid, 'NoNewPrivs') === '1');
  t.is(info.signals.blocked, tg.u64(BLOCKED));
  t.is(info.umask, parseInt(statusField(pid, 'Umask'), 8));
  t.is(info.personality, parseInt(readFileSync(`/proc/${pid}/personality`, 'utf8'), 16));
  t.is(info.oomScoreAdj, Number(readFileSync(`/proc/${pid}/oom_score_adj`, 'utf8')));
  t.is(info.cgroups.length, readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n').length);
  t.is(info.sched.nice, 0);
  t.deepEqual([info.ppid, info.pgid, info.sid], [Number(statusField(pid, 'PPid')), pid, pid]);
  await s.releaseTree({ mode: 'resume' });
});

test('inspect errors name the pid; threadState needs a held thread', async (t) => {
  const s = session(t);
  const err = await t.throwsAsync(s.inspectProcess(4_000_001));
  t.true(err instanceof TsdumpError);
  t.is((err as TsdumpError).code, 'ESRCH_TARGET');
  t.regex(err!.message, /4000001/);
  const e2 = await t.throwsAsync(s.threadState(process.pid));
  t.is((e2 as TsdumpError).code, 'PTRACE');
});

/** A bench_shape process of `n` threads (the leader included), killed at the test's end. */
async function manyThreads(t: ExecutionContext, n: number): Promise<number> {
  const ctl = mkdtempSync(join(tmpdir(), 'tsdump-visit-'));
  execFileSync('setsid', ['-f', join(import.meta.dirname, '..', 'build', 'targets', 'bench_shape'), ctl, 'threads', String(n)], { stdio: 'ignore' });
  for (const deadline = Date.now() + 10_000; !existsSync(join(ctl, 'ready')); await sleep(10)) {
    if (Date.now() > deadline) throw new Error('bench_shape never got ready');
  }
  const pid = Number(/pid=(\d+)/.exec(readFileSync(join(ctl, 'ready'), 'utf8'))![1]);
  t.teardown(() => {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
    rmSync(ctl, { recursive: true, force: true });
  });
  return pid;
}

test('startVisit hands out every thread after the leader once, in order and in batches, and the rest once', async (t) => {
  // 71 threads besides the leader: batches of 16 (collect.rs THREAD_BATCH), then 7
  const pid = await manyThreads(t, 72);
  const s = session(t);
  const tree = await s.seizeTree(pid);
  const tids = tree.processes[0]!.threads.map((th) => th.tid);
  t.is(tids.length, 72);
  t.is(tids[0], pid);
  const job = s.startVisit(pid, { tids });
  const batches: number[][] = [];
  for (let b; (b = await job.threads()); ) {
    for (const th of b) t.is(th.answers.tid, th.state.tid, 'a thread comes with its own answers');
    batches.push(b.map((th) => th.state.tid));
  }
  t.deepEqual(batches.flat(), tids.slice(1));
  t.deepEqual(batches.map((b) => b.length), [16, 16, 16, 16, 7]);
  t.is(await job.threads(), null, 'the end stays the end');
  const facts = await job.facts();
  t.is(facts.leader.state.tid, pid);
  t.is(facts.leader.answers.tid, pid);
  t.deepEqual(facts.parasite.threads, [], 'each thread comes with its own answers');
  const err = await t.throwsAsync(job.facts());
  t.true(err instanceof TsdumpError);
  t.is((err as TsdumpError).code, 'USAGE');
  await s.releaseTree({ mode: 'resume' });
});

test('a visit that fails hands out the threads it got to, then tells why, and leaves the process as it was', async (t) => {
  // 39 threads besides the leader and one that does not exist, last: two batches answer, the
  // third fails on it
  const pid = await manyThreads(t, 40);
  const s = session(t);
  const tree = await s.seizeTree(pid);
  const tids = tree.processes[0]!.threads.map((th) => th.tid);
  const maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
  const gone = 4_000_001;
  const job = s.startVisit(pid, { tids: [...tids, gone] });
  const got: number[] = [];
  for (let b; (b = await job.threads()); ) got.push(...b.map((th) => th.state.tid));
  t.deepEqual(got, tids.slice(1, 33));
  const err = await t.throwsAsync(job.facts());
  t.true(err instanceof TsdumpError);
  t.is((err as TsdumpError).code, 'ESRCH_TARGET');
  t.regex(err!.message, new RegExp(`task/${gone}/`));
  t.is(readFileSync(`/proc/${pid}/maps`, 'utf8'), maps, 'the cure took the parasite out');
  // the leader first, or nothing is touched
  const refused = s.startVisit(pid, { tids: [pid + 1, pid] });
  t.is(await refused.threads(), null);
  const e2 = await t.throwsAsync(refused.facts());
  t.is((e2 as TsdumpError).code, 'PARASITE');
  t.regex(e2!.message, /leader first/);
  await s.releaseTree({ mode: 'resume' });
  t.is(Number(/^TracerPid:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]), 0, 'released');
});

test('threads stopped inside system calls: restart decisions follow the kernel return codes', async (t) => {
  const tg = await start(t, 'sleepers');
  // Let every thread reach its blocking call.
  for (const deadline = Date.now() + 5000; ; await sleep(10)) {
    const names = new Map<string, string>();
    for (const tid of readdirSync(`/proc/${tg.pid}/task`)) {
      const st = readFileSync(`/proc/${tg.pid}/task/${tid}/stat`, 'utf8');
      names.set(st.slice(st.indexOf('(') + 1, st.lastIndexOf(')')), st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3));
    }
    if (['in-pause', 'in-nanosleep', 'in-read'].every((n) => names.get(n) === 'S')) break;
    if (Date.now() > deadline) throw new Error('sleepers never blocked');
  }
  const s = session(t);
  const tree = await s.seizeTree(tg.pid);
  const byName = new Map<string, Awaited<ReturnType<typeof s.threadState>>>();
  for (const th of tree.processes[0]!.threads) {
    const st = await s.threadState(th.tid);
    byName.set(st.comm, st);
  }
  const pause = byName.get('in-pause')!;
  const nap = byName.get('in-nanosleep')!;
  const rd = byName.get('in-read')!;
  if (pause.regs.arch !== 'x86_64') return t.pass('syscall numbers below are x86_64');
  const gp = (th: typeof pause) => {
    if (th.regs.arch !== 'x86_64') throw new Error('x86_64 registers expected');
    return x86GpRegs(th.regs.gpregs);
  };
  // pause -> -ERESTARTNOHAND, read -> -ERESTARTSYS: re-run the call (IP back over `syscall`,
  // AX = the syscall number). nanosleep -> -ERESTART_RESTARTBLOCK: fails with EINTR.
  t.like(pause.syscallRestart, { inSyscall: true, syscallNr: 34, result: -514n, action: 'restart' });
  t.like(rd.syscallRestart, { inSyscall: true, syscallNr: 0, result: -512n, action: 'restart' });
  t.like(nap.syscallRestart, { inSyscall: true, syscallNr: 230, result: -516n, action: 'eintr' });
  t.is(nap.syscallRestart.ax, 2n ** 64n - 4n, '-EINTR');
  t.is(nap.syscallRestart.ip, gp(nap).ip);
  for (const th of [pause, rd]) {
    t.is(th.syscallRestart.ip, gp(th).ip - 2n);
    t.is(th.syscallRestart.ax, gp(th).origAx);
    // The restart IP really points at a `syscall` instruction (0f 05) in the target.
    const fd = openSync(`/proc/${tg.pid}/mem`, 'r');
    const insn = Buffer.alloc(2);
    readSync(fd, insn, 0, 2, th.syscallRestart.ip);
    closeSync(fd);
    t.deepEqual([...insn], [0x0f, 0x05], `${th.comm}: syscall instruction at the restart IP`);
  }
  // The thread in user space is not in a syscall.
  const leader = [...byName.values()].find((x) => x.tid === tg.pid)!;
  t.true(leader.syscallRestart.action === 'none' || leader.syscallRestart.inSyscall);
  await s.releaseTree({ mode: 'resume' });
  t.is(statusField(tg.pid, 'TracerPid'), '0');
});

test('seccomp filters: programs and flags read back in install order; suspendSeccomp seize works', async (t) => {
  const tg = await start(t, 'seccomp');
  t.is(statusField(tg.pid, 'Seccomp'), '2');
  const s = session(t);
  const tree = await s.seizeTree(tg.pid, { suspendSeccomp: true });
  t.is(tree.processes[0]!.seccompMode, 2);
  const th = await s.threadState(tg.pid);
  t.is(th.seccompMode, 2);
  t.is(th.seccompFilters.length, 2);
  const [oldest, newest] = th.seccompFilters;
  // struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }
  const insn = (code: number, k: number): Buffer => {
    const b = Buffer.alloc(8);
    b.writeUInt16LE(code, 0);
    b.writeUInt32LE(k, 4);
    return b;
  };
  const RET_K = 0x06;
  const LD_W_ABS = 0x20;
  const ALLOW = 0x7fff0000;
  t.deepEqual(Buffer.from(newest!.program), Buffer.concat([insn(LD_W_ABS, 0), insn(RET_K, ALLOW)]));
  t.deepEqual(Buffer.from(oldest!.program), insn(RET_K, ALLOW));
  t.deepEqual([oldest!.index, newest!.index], [0, 1]);
  // PTRACE_SECCOMP_GET_METADATA (Linux 4.16+) reports the install flags.
  t.is(newest!.flags, 2n, 'SECCOMP_FILTER_FLAG_LOG');
  t.is(oldest!.flags, 0n);
  const info = await s.inspectProcess(tg.pid);
  t.true(info.creds.noNewPrivs);
  t.is(info.creds.seccompMode, 2);
  t.is(info.creds.seccompFilters, 2);
  await s.releaseTree({ mode: 'resume' });
  t.is(statusField(tg.pid, 'TracerPid'), '0');
});

test('tsdump dying while it holds a tree: the kernel lets every task go as it was', async (t) => {
  const running = await start(t, 'single');
  const stopped = await start(t, 'single');
  process.kill(stopped.pid, 'SIGSTOP');
  for (const deadline = Date.now() + 5000; !/^State:\s+T/m.test(readFileSync(`/proc/${stopped.pid}/status`, 'utf8')); await sleep(5)) {
    if (Date.now() > deadline) throw new Error('never stopped');
  }
  const binding = join(import.meta.dirname, '..', 'native', 'index.cjs');
  const script = `
    const { Session } = require(${JSON.stringify(binding)});
    const a = new Session(), b = new Session();
    Promise.all([a.seizeTree(${running.pid}), b.seizeTree(${stopped.pid})])
      .then(() => { process.stdout.write('held\\n'); setInterval(() => {}, 1000); })
      .catch((e) => { process.stdout.write('error ' + e.message + '\\n'); process.exit(1); });`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => child.kill('SIGKILL'));
  const line = await new Promise<string>((resolve) => child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim())));
  t.is(line, 'held');
  t.not(statusField(running.pid, 'TracerPid'), '0');
  const c = running.u64(0);
  await sleep(50);
  t.is(running.u64(0), c, 'held while the tracer lives');
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  for (const deadline = Date.now() + 5000; running.u64(0) === c; await sleep(5)) {
    if (Date.now() > deadline) throw new Error('running target not resumed after the tracer died');
  }
  t.is(statusField(running.pid, 'TracerPid'), '0');
  t.is(statusField(stopped.pid, 'TracerPid'), '0');
  // Its tracer's death wakes a group-stopped tracee so that it stops again on its own: 'R' for
  // as long as a loaded machine takes to run it. It must settle in 'T' and count no further.
  for (const deadline = Date.now() + 5000; !/^T/.test(statusField(stopped.pid, 'State')); await sleep(5)) {
    if (Date.now() > deadline) break;
  }
  t.regex(statusField(stopped.pid, 'State'), /^T/, 'the stopped target stays stopped');
  const frozen = stopped.u64(0);
  await sleep(100);
  t.is(stopped.u64(0), frozen, 'the stopped target runs no further');
});
