// dump --snapshot (issue 14): the tree is released before its memory is copied, from a
// copy-on-write snapshot taken while it was frozen. The target (s_writer.c) rewrites its memory
// without pause, stamping generations, and checks after the restore that every page holds the
// generation its restored progress counter says (see the C file):
// - with --snapshot the restored tree (two processes) PASSes, and no snapshot holder is left;
//   so does t_mappings (PROT_NONE pages, memory shared with a child, file mappings), and
//   t_vma_flags, its VmFlags told by the snapshot after the release or read while frozen;
// - the same check FAILs on a torn copy (TSDUMP_TEST_TORN_SNAPSHOT: release, then read the live
//   task, no snapshot), so the PASS above is not one a broken snapshot would also get;
// - tsdump SIGKILLed or SIGTERMed during the background copy: the tree runs on untouched, the
//   holder is gone, nothing looks dumped (no inventory.img);
// - the target killed during the copy: the dump still completes from the snapshot and restores;
// - no resident parasite (TSDUMP_PARASITE=inject), or a task under seccomp (t_seccomp): the
//   memory is copied while frozen with a warning, or --snapshot=strict fails with the tree left
//   running;
// - with --page-server the pages go to CRIU's page server after the release, and restore;
// - an incremental chain (pre-dump, then --snapshot dumps with --prev-images-dir) restores, also
//   with a page server (the pages left in its parent image sent as holes) and without a parent
//   on the server (every page sent);
// - what --snapshot does not combine with is refused before anything is touched.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { criuRestore, makeWorkDir, run } from './helpers/criu.js';
import { installPageImages, isPageImage, startCriuPageServer } from './helpers/page-server.js';
import { isAlive, killTree, requestVerify, startTarget, waitGone, type Target } from './helpers/target.js';
import { CLI } from './helpers/tsdump.js';
import { dump } from '../src/index.js';

interface SnapshotJson {
  pages: { written: number; skippedParent: number };
  timings: { frozenTime: number };
  released: string;
  snapshot?: { held: number; pagesFrozen: number; pagesAfterRelease: number; copyTime: number; extraBytes: number };
}

async function start(t: ExecutionContext, dir: string, mib: number, procs = 1): Promise<Target> {
  const target = await startTarget('s_writer', { dir, args: [String(mib), String(procs)], timeoutMs: 60_000 });
  t.teardown(() => killTree(target.pid, 's_writer'));
  return target;
}

const tsdump = (args: readonly string[], env: NodeJS.ProcessEnv = {}) =>
  run(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, timeoutMs: 120_000 });

/** Snapshot holders of the tree in process group `pgid` (they keep the tree's group). */
function holders(pgid: number): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const [comm, rest] = [stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), stat.slice(stat.lastIndexOf(')') + 2).split(' ')];
        return comm === 'tsdump-snap' && Number(rest[2]) === pgid && rest[0] !== 'Z';
      } catch {
        return false;
      }
    });
}

const tracerOf = (pid: number) => Number(/^TracerPid:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? -1);

/** The dumped tree is gone and comes back from `images` under criu restore; its verdict. */
async function restoreAndVerify(target: Target, images: string): Promise<string> {
  await killTree(target.pid, 's_writer');
  await criuRestore(images);
  return requestVerify(target, { timeoutMs: 60_000 });
}

test.serial('a --snapshot dump of two processes rewriting their memory restores to one instant', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await start(t, dir, 64, 2);
  const images = join(dir, 'img');
  const r = await tsdump(['dump', '-t', String(target.pid), '-D', images, '-R', '--snapshot', '--json', '--display-stats']);
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as SnapshotJson;
  t.is(out.released, 'running');
  const s = out.snapshot!;
  t.is(s.held, 2, 'both processes were snapshotted');
  // the MADV_DONTFORK and MADV_WIPEONFORK page of each process, copied while frozen
  t.is(s.pagesFrozen, 4);
  t.is(s.pagesFrozen + s.pagesAfterRelease, out.pages.written);
  t.true(s.pagesAfterRelease >= 2 * 16384, `both 64 MiB regions were copied after the release: ${s.pagesAfterRelease}`);
  t.true(s.extraBytes > 0, 'the writer made the snapshot copy pages: its cost is reported');
  t.deepEqual(holders(target.pid), [], 'no snapshot holder is left');
  t.is(tracerOf(target.pid), 0, 'the tree runs on untraced');
  t.is(await restoreAndVerify(target, images), 'PASS');
});

test.serial('every kind of mapping (PROT_NONE, shared with a child, file-backed, COW) restores from a --snapshot dump', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await startTarget('t_mappings', { dir, timeoutMs: 60_000 });
  t.teardown(() => killTree(target.pid, 't_mappings'));
  const images = join(dir, 'img');
  const r = await tsdump(['dump', '-t', String(target.pid), '-D', images, '-R', '--snapshot', '--json']);
  t.is(r.code, 0, r.stderr);
  t.is((JSON.parse(r.stdout) as SnapshotJson).snapshot?.held, 2, 'the parent and its child');
  await killTree(target.pid, 't_mappings');
  await criuRestore(images);
  t.is(await requestVerify(target, { timeoutMs: 60_000 }), 'PASS');
});

test.serial('--snapshot --page-server: the pages go to the server after the release, and restore to one instant', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await start(t, dir, 64, 2);
  const serverDir = join(dir, 'criu-page-server');
  const ps = await startCriuPageServer(serverDir);
  t.teardown(() => {
    if (ps.child.exitCode === null) ps.child.kill('SIGKILL');
  });
  const images = join(dir, 'img');
  const args = ['dump', '-t', String(target.pid), '-D', images, '-R', '--snapshot', '--json', '--page-server', '--address', '127.0.0.1', '--port', String(ps.port)];
  const r = await tsdump(args);
  t.is(r.code, 0, r.stderr);
  const s = (JSON.parse(r.stdout) as SnapshotJson).snapshot!;
  t.is(s.held, 2);
  t.is(s.pagesFrozen, 4, 'the MADV_DONTFORK and MADV_WIPEONFORK page of each process');
  t.true(s.pagesAfterRelease >= 2 * 16384, `both 64 MiB regions were sent after the release: ${s.pagesAfterRelease}`);
  const { code, log } = await ps.done;
  t.is(code, 0, `criu page-server: ${log.slice(-1500)}`);
  t.deepEqual(readdirSync(images).filter(isPageImage), [], 'no page went to the local images');
  t.deepEqual(holders(target.pid), []);
  const moved = await installPageImages(serverDir, images);
  t.true(moved.includes(`pagemap-${target.pid}.img`), moved.join(' '));
  t.is(await restoreAndVerify(target, images), 'PASS');
});

// An incremental chain: the pages written since the parent come from the task's tracking, read
// while frozen, and the next run's tracking is armed in the same freeze as the snapshot's fork:
// a write between the two would otherwise be missed by d3 and FAIL the check.
test.serial('incremental --snapshot dumps: pre-dump, dump --track-mem, dump, restored from the chain to one instant', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await start(t, dir, 64, 2);
  const run = async (args: string[]) => {
    const r = await tsdump([...args, '--json']);
    t.is(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as SnapshotJson;
  };
  const pid = String(target.pid);
  await run(['pre-dump', '-t', pid, '-D', join(dir, 'd1')]);
  const d2 = await run(['dump', '-t', pid, '-D', join(dir, 'd2'), '-R', '--snapshot', '--prev-images-dir', '../d1', '--track-mem']);
  t.is(d2.snapshot?.held, 2);
  t.true(d2.pages.skippedParent > 0, `pages unchanged since the pre-dump are left in it: ${d2.pages.skippedParent}`);
  t.is(d2.snapshot!.pagesFrozen + d2.snapshot!.pagesAfterRelease, d2.pages.written);
  const images = join(dir, 'd3');
  const d3 = await run(['dump', '-t', pid, '-D', images, '-R', '--snapshot', '--prev-images-dir', '../d2', '--track-mem']);
  t.is(d3.snapshot?.held, 2);
  t.true(d3.pages.skippedParent > 0, `pages unchanged since d2 are left in it: ${d3.pages.skippedParent}`);
  t.deepEqual(holders(target.pid), []);
  t.is(await restoreAndVerify(target, images), 'PASS');
});

// The same over the wire: a pre-dump to one page server, then a --snapshot dump with
// --prev-images-dir --track-mem to another whose directory has the first as parent. The pages left
// in the parent go as holes among the pages sent after the release; restored from the second
// server's directory (the local images copied in, as a migration does), the chain holds one
// instant. Without a parent on the server every page is sent.
for (const withParent of [true, false]) {
  test.serial(`an incremental --snapshot dump to a page server ${withParent ? 'with' : 'without'} the parent image, restored from its directory`, async (t) => {
    const dir = await makeWorkDir(t);
    const target = await start(t, dir, 64, 2);
    const pid = String(target.pid);
    const [l1, l2, s1, s2] = ['local1', 'local2', 'server1', 'server2'].map((d) => join(dir, d)) as [string, string, string, string];
    const server = async (at: string, parent?: string) => {
      const ps = await startCriuPageServer(at, parent ? ['--prev-images-dir', parent] : []);
      t.teardown(() => {
        if (ps.child.exitCode === null) ps.child.kill('SIGKILL');
      });
      return ps;
    };
    const to = (ps: { port: number }) => ['--page-server', '--address', '127.0.0.1', '--port', String(ps.port)];
    let pre;
    if (withParent) {
      const first = await server(s1);
      pre = await tsdump(['pre-dump', '-t', pid, '-D', l1, '--json', ...to(first)]);
      t.is((await first.done).code, 0);
    } else {
      pre = await tsdump(['pre-dump', '-t', pid, '-D', l1, '--json']);
    }
    t.is(pre.code, 0, pre.stderr);
    const second = await server(s2, withParent ? '../server1' : undefined);
    const r = await tsdump(['dump', '-t', pid, '-D', l2, '-R', '--snapshot', '--json', '--prev-images-dir', '../local1', '--track-mem', ...to(second)]);
    t.is(r.code, 0, r.stderr);
    const { code, log } = await second.done;
    t.is(code, 0, `criu page-server: ${log.slice(-1500)}`);
    const d = JSON.parse(r.stdout) as SnapshotJson;
    t.is(d.snapshot?.held, 2);
    if (withParent) t.true(d.pages.skippedParent > 0, `pages unchanged since the pre-dump stay in the server's parent: ${d.pages.skippedParent}`);
    else t.is(d.pages.skippedParent, 0, 'no parent on the server: every page is sent');
    t.deepEqual(readdirSync(l2).filter(isPageImage), [], 'no page went to the local images');
    t.deepEqual(holders(target.pid), []);
    for (const f of readdirSync(l2)) if (f !== 'parent') copyFileSync(join(l2, f), join(s2, f));
    t.is(await restoreAndVerify(target, s2), 'PASS');
  });
}

// The mm image's VmFlags: with a snapshot they are read from the holder after the release, unless
// it cannot tell them (mlock is not inherited, MADV_DONTFORK mappings are absent from it): then
// from the frozen task as without --snapshot. t_vma_flags checks every flag after the restore;
// its MADV_WIPEONFORK (and MADV_DONTFORK) pages, which fork does not carry, are copied while frozen.
for (const [mode, args, frozenPages, later] of [
  ['no lock or MADV_DONTFORK: told by the snapshot after the release', ['unlocked-forkable'], 4, true],
  ['with mlock and MADV_DONTFORK: read while frozen', [], 8, false],
] as const) {
  test.serial(`every VmFlags restores from a --snapshot dump (${mode})`, async (t) => {
    const dir = await makeWorkDir(t);
    const target = await startTarget('t_vma_flags', { dir, args: [...args], timeoutMs: 60_000 });
    t.teardown(() => killTree(target.pid, 't_vma_flags'));
    const images = join(dir, 'img');
    const r = await tsdump(['dump', '-t', String(target.pid), '-D', images, '-R', '--snapshot', '--json', '-v4', '-o', 'dump.log']);
    t.is(r.code, 0, r.stderr);
    const s = (JSON.parse(r.stdout) as SnapshotJson).snapshot!;
    t.is(s.held, 1);
    t.is(s.pagesFrozen, frozenPages, 'the pages of the mappings fork does not carry were copied while frozen');
    const log = readFileSync(join(images, 'dump.log'), 'utf8');
    t.is(log.includes(`pid ${target.pid}: the VmFlags of its`), later, 'where the VmFlags came from');
    await killTree(target.pid, 't_vma_flags');
    await criuRestore(images);
    t.is(await requestVerify(target, { timeoutMs: 60_000 }), 'PASS');
  });
}

test.serial('the same check fails on a torn copy: the live memory read after the release, without a snapshot', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await start(t, dir, 64, 2);
  const images = join(dir, 'img');
  const r = await tsdump(['dump', '-t', String(target.pid), '-D', images, '-R', '--snapshot', '--json'], { TSDUMP_TEST_TORN_SNAPSHOT: '1' });
  t.is(r.code, 0, r.stderr);
  t.is((JSON.parse(r.stdout) as SnapshotJson).snapshot?.held, 0, 'no holder in the torn test mode');
  const verdict = await restoreAndVerify(target, images);
  t.regex(verdict, /^FAIL: \d+ pages held the wrong generation/, verdict);
});

/** Starts a --snapshot dump and waits for its background copy: holders alive, tree released. */
async function duringCopy(t: ExecutionContext, target: Target, images: string) {
  const child = spawn(process.execPath, [CLI, 'dump', '-t', String(target.pid), '-D', images, '-R', '--snapshot', '--json'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.once('close', (code, signal) => res({ code, signal })));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const deadline = Date.now() + 60_000;
  let held: number[] = [];
  while (Date.now() < deadline && child.exitCode === null) {
    held = holders(target.pid);
    if (held.length > 0 && tracerOf(target.pid) === 0) break;
    await sleep(2);
  }
  t.true(held.length > 0 && tracerOf(target.pid) === 0, `caught the background copy (holders ${held.join(',')}; ${stderr})`);
  return { child, held, exited, output: () => ({ stdout, stderr }) };
}

for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
  test.serial(`tsdump ${signal}ed during the background copy: the tree runs on, no holder is left, nothing looks dumped`, async (t) => {
    const dir = await makeWorkDir(t);
    const target = await start(t, dir, 256);
    const images = join(dir, 'img');
    const copy = await duringCopy(t, target, images);
    copy.child.kill(signal);
    const end = await copy.exited;
    t.not(end.code, 0, `tsdump did not succeed: ${JSON.stringify(end)} ${copy.output().stderr}`);
    await waitGone(copy.held, 5000);
    t.deepEqual(holders(target.pid), [], 'the holder went with its channel');
    t.false(existsSync(join(images, 'inventory.img')), 'no inventory.img: the images never look complete');
    t.true(isAlive(target.pid));
    t.is(tracerOf(target.pid), 0);
    t.is(await requestVerify(target, { timeoutMs: 60_000 }), 'PASS', 'the tree ran on untouched');
  });
}

test.serial('the target killed during the background copy: the dump completes from the snapshot and restores', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await start(t, dir, 256);
  const images = join(dir, 'img');
  const copy = await duringCopy(t, target, images);
  process.kill(target.pid, 'SIGKILL');
  const end = await copy.exited;
  const { stdout, stderr } = copy.output();
  t.is(end.code, 0, stderr);
  t.regex(stderr, new RegExp(`pid ${target.pid} exited during the background copy`));
  t.is((JSON.parse(stdout) as SnapshotJson).snapshot?.held, 1);
  t.deepEqual(holders(target.pid), []);
  t.is(await restoreAndVerify(target, images), 'PASS');
});

test.serial('without a resident parasite the memory is copied while frozen, said in one line; --snapshot=strict refuses', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await start(t, dir, 8);
  const env = { TSDUMP_PARASITE: 'inject' };
  const r = await tsdump(['dump', '-t', String(target.pid), '-D', join(dir, 'img'), '-R', '--snapshot', '--json'], env);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, new RegExp(`pid ${target.pid}: no snapshot \\(.*no resident parasite.*\\); its memory was copied while frozen`));
  const s = (JSON.parse(r.stdout) as SnapshotJson).snapshot!;
  t.is(s.held, 0);
  t.is(s.pagesAfterRelease, 0);
  t.true(s.pagesFrozen >= 2048);

  const strict = await tsdump(['dump', '-t', String(target.pid), '-D', join(dir, 'strict'), '-R', '--snapshot=strict', '--json'], env);
  t.not(strict.code, 0);
  t.regex(strict.stdout, /no resident parasite to fork a snapshot from/);
  t.false(existsSync(join(dir, 'strict', 'inventory.img')));
  t.is(tracerOf(target.pid), 0);
  t.is(await requestVerify(target, { timeoutMs: 60_000 }), 'PASS');
});

test.serial('a tree under seccomp is copied while frozen, said per process, and restores; --snapshot=strict refuses', async (t) => {
  // its filters would apply to the holder: none is forked (crates/core/src/collect.rs)
  const dir = await makeWorkDir(t);
  const target = await startTarget('t_seccomp', { dir, timeoutMs: 60_000 });
  t.teardown(() => killTree(target.pid, 't_seccomp'));
  const strict = await tsdump(['dump', '-t', String(target.pid), '-D', join(dir, 'strict'), '-R', '--snapshot=strict', '--json']);
  t.not(strict.code, 0);
  t.regex(strict.stdout, new RegExp(`pid ${target.pid} tid \\d+: runs under seccomp; no snapshot is forked`));
  t.false(existsSync(join(dir, 'strict', 'inventory.img')));
  t.is(tracerOf(target.pid), 0);

  const images = join(dir, 'img');
  const r = await tsdump(['dump', '-t', String(target.pid), '-D', images, '-R', '--snapshot', '--json']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, new RegExp(`pid ${target.pid}: no snapshot \\(.*runs under seccomp.*\\); its memory was copied while frozen`));
  const s = (JSON.parse(r.stdout) as SnapshotJson).snapshot!;
  t.is(s.held, 0, 'no holder forked under seccomp');
  t.is(s.pagesAfterRelease, 0);
  t.true(s.pagesFrozen > 0);
  await killTree(target.pid, 't_seccomp');
  await criuRestore(images);
  t.is(await requestVerify(target, { timeoutMs: 60_000 }), 'PASS');
});

test.serial('what --snapshot does not combine with is refused before the tree is touched', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await start(t, dir, 4);
  const pid = String(target.pid);
  const cases: [string[], RegExp][] = [
    [['dump', '-t', pid, '-D', join(dir, 'a'), '--snapshot'], /--snapshot .* needs --leave-running/],
    [['dump', '-t', pid, '-D', join(dir, 'c'), '-R', '--snapshot=later'], /option --snapshot: later is not "strict"/],
    [['pre-dump', '-t', pid, '-D', join(dir, 'd'), '--snapshot'], /option --snapshot is not supported by tsdump pre-dump: not needed: --pre-dump-mode read already/],
  ];
  for (const [args, want] of cases) {
    const r = await tsdump([...args, '--json']);
    t.not(r.code, 0, args.join(' '));
    t.regex(r.stdout + r.stderr, want);
  }
  t.true(isAlive(target.pid));
  t.is(tracerOf(target.pid), 0);
});

test.serial('the library: dump({ snapshot: true, leaveRunning: true })', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await start(t, dir, 16);
  const images = join(dir, 'img');
  const r = await dump({ pid: target.pid, imagesDir: images, leaveRunning: true, snapshot: true });
  t.is(r.released, 'running');
  t.is(r.snapshot?.held, 1);
  t.true(r.timings.frozenTime > 0);
  t.is(await restoreAndVerify(target, images), 'PASS');
});
