// --file-locks across a tree (build/targets/f_locks): a flock shared by dup and fork, POSIX locks
// in two processes (one to EOF), an OFD lock. tsdump's filelocks.img is compared entry by entry
// with the reference CRIU's dump of the same program, then restored by CRIU and checked by the
// target itself. (t_file_locks, the single-process case, is in the end-to-end catalogue.)
import test from 'ava';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { critDecode, criuDump, criuRestore, makeWorkDir } from './helpers/criu.js';
import { belongsTo, isAlive, killTree, logTail, requestVerify, startTarget, waitGone, type Target } from './helpers/target.js';
import { parseLockLine } from '../src/dump/file-locks.js';

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

interface LockEntry {
  flag: number;
  type: number;
  pid: number;
  fd: number;
  start: number | string;
  len: number | string;
}

function tsdumpDump(pid: number, imagesDir: string, args: readonly string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, 'dump', '-t', String(pid), '-D', imagesDir, '--shell-job', '--json', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.once('close', (code) => resolve({ code, out }));
  });
}

/** The entries with pids replaced by the process's role, so two runs of the program compare. */
function byRole(target: Target, entries: LockEntry[]): (Omit<LockEntry, 'pid'> & { who: string })[] {
  const roles = new Map([
    [target.pid, 'root'],
    [Number(target.info.child), 'child'],
  ]);
  return entries.map(({ pid, ...rest }) => ({ ...rest, start: Number(rest.start), len: Number(rest.len), who: roles.get(pid) ?? `pid ${pid}` }));
}

async function locksOf(imagesDir: string): Promise<LockEntry[]> {
  return ((await critDecode(join(imagesDir, 'filelocks.img'))) as { entries: LockEntry[] }).entries;
}

test('f_locks: filelocks.img as the reference CRIU writes it; criu restore --file-locks brings every lock back', async (t) => {
  const work = await makeWorkDir(t);

  const ref = await startTarget('f_locks', { dir: join(work, 'ref') });
  t.teardown(() => killTree(ref.pid, ref.ctl, ref.pids));
  const refImages = join(work, 'ref', 'images');
  await criuDump(ref.pid, refImages, ['--file-locks']);
  const expected = byRole(ref, await locksOf(refImages));

  const target = await startTarget('f_locks', { dir: join(work, 'ours') });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const images = join(work, 'ours', 'images');
  const r = await tsdumpDump(target.pid, images, ['--file-locks']);
  t.is(r.code, 0, r.out);
  // Same entries in the same order: the flock once (first fd of the shared description, in the
  // root), the root's POSIX lock to EOF (len 0), the child's whole-file read lock, its OFD lock.
  t.deepEqual(byRole(target, await locksOf(images)), expected);
  t.is(expected.length, 4);

  await waitGone(target.pids);
  await criuRestore(images, ['--file-locks']);
  t.true(isAlive(target.pid) && belongsTo(target.pid, target.ctl), 'restored root running');
  t.is(await requestVerify(target), 'PASS', logTail(target));
});

test('f_locks without --file-locks: refused with the reason, tree left holding its locks', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startTarget('f_locks', { dir: work });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const r = await tsdumpDump(target.pid, join(work, 'images'), []);
  t.is(r.code, 1, r.out);
  t.regex(r.out, /"code":"UNSUPPORTED"/);
  t.regex(r.out, new RegExp(`pid ${target.pid}: fd 3 holds a file lock \\(4 in the tree\\); dump with --file-locks`));
  t.is(await requestVerify(target), 'PASS', logTail(target));
});

test('f_locks holding a lease: refused by kind (tsdump does not dump leases yet), tree left as it was', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startTarget('f_locks', { dir: work, args: ['lease'] });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const r = await tsdumpDump(target.pid, join(work, 'images'), ['--file-locks']);
  t.is(r.code, 1, r.out);
  t.regex(r.out, /"code":"UNSUPPORTED"/);
  t.regex(r.out, new RegExp(`pid ${target.pid}: fd \\d+ \\(${work}/ctl-f_locks/e\\.lck\\) holds a LEASE file lock; tsdump cannot dump leases yet`));
  t.is(await requestVerify(target), 'PASS', logTail(target));
});

test('lock lines as the kernel prints them (fs/locks.c lock_get_status)', (t) => {
  t.deepEqual(parseLockLine('1: POSIX  ADVISORY  WRITE 4242 fe:00:131090 10 19'), {
    kind: 'POSIX',
    access: 'WRITE',
    pid: 4242,
    dev: 'fe:00',
    ino: 131090n,
    start: 10n,
    end: 19n,
  });
  t.like(parseLockLine('lock:\t2: FLOCK  ADVISORY  READ 7 00:1f:5 0 EOF'), { kind: 'FLOCK', access: 'READ', end: undefined });
  t.like(parseLockLine('3: OFDLCK ADVISORY  WRITE -1 08:02:77 5 9'), { kind: 'OFDLCK', pid: -1, start: 5n, end: 9n });
  t.like(parseLockLine('4: LEASE  ACTIVE    READ 99 fe:00:12 0 EOF'), { kind: 'LEASE' });
  // a waiter blocked on lock 1, as /proc/locks lists it: not a lock anyone holds
  t.is(parseLockLine('1: -> POSIX  ADVISORY  WRITE 4243 fe:00:131090 10 19'), undefined);
});
