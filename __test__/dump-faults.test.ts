// Bad input and faults: a dump that cannot finish — the target's child vanishes, the tree holds a
// resource tsdump refuses, the images dir is read-only or fills up, tsdump is killed or told to
// stop half-way — must end with a clear error, no inventory.img, and the tree running exactly as
// before: not stopped, not traced, same signal masks, same mappings (no parasite left behind),
// and its own self-check passing. Also here: --leave-running, and owner-only modes of every file
// and directory a dump creates. Everything runs on real processes, with the real CLI as a
// separate process (the way users run it), under the subreaper.
import test, { type ExecutionContext } from 'ava';
import { existsSync, readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { mkdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { criuRestore, makeWorkDir, run } from './helpers/criu.js';
import { belongsTo, isAlive, killTree, logTail, requestVerify, startTarget, waitGone, type Target } from './helpers/target.js';
import {
  assertOwnerOnly,
  assertUnchanged,
  describe,
  fileSize,
  noImagesLeft,
  noInventory,
  snapshot,
  snapshotSettled,
  startDump,
  until,
  type CliRun,
  type Residue,
  type TreeSnapshot,
} from './helpers/tree-state.js';

interface FaultTarget extends Target {
  child?: number;
}

/** f_faults (see __test__/targets/f_faults.c), killed in teardown. */
async function startFaults(t: ExecutionContext, dir: string, args: readonly string[]): Promise<FaultTarget> {
  const target = await startTarget('f_faults', { dir, args, timeoutMs: 60_000 });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  return { ...target, ...(target.info.child ? { child: Number(target.info.child) } : {}) };
}

async function verifyLive(t: ExecutionContext, target: Target, what: string): Promise<void> {
  t.is(await requestVerify(target, { timeoutMs: 30_000 }), 'PASS', `${what}\n--- target log ---\n${logTail(target)}`);
}

/** A tmpfs mounted on dir for the test (unmounted in teardown, before the work dir goes). */
async function mountTmpfs(t: ExecutionContext, dir: string, options: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const r = await run('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir]);
  if (r.code !== 0) throw new Error(`mount tmpfs ${options} on ${dir}: ${r.stderr}`);
  t.teardown(async () => {
    await run('umount', [dir]);
  });
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// Heavy tests (hundreds of MiB drained) and mounts: one at a time.

test.serial('unsupported resource: a held flock without --file-locks is refused after the whole tree was examined, tree unchanged', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startFaults(t, work, ['16', 'lock', 'child']);
  const before = snapshot(target.pids);
  const imagesDir = join(work, 'images');
  const r = await startDump(target.pid, imagesDir).done;
  t.is(r.code, 1, describe(r));
  t.is(r.error?.code, 'UNSUPPORTED', describe(r));
  t.regex(r.error?.message ?? '', new RegExp(`pid ${target.pid}: fd \\d+ holds a file lock.*--file-locks`));
  // The refusal comes after every task's parasite and memory: the stages prove it got that far.
  t.regex(r.stderr, new RegExp(`dump task ${target.child}\\b`));
  noImagesLeft(t, imagesDir);
  assertUnchanged(t, before, target.pids);
  await verifyLive(t, target, 'flock still held, memory, masks and ticker intact');
});

test.serial('PID gone mid-dump: the child is killed while the root is drained; clear error, root unchanged', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startFaults(t, work, ['256', 'child']);
  const child = target.child!;
  const before = snapshot([target.pid]);
  const imagesDir = join(work, 'images');
  const dump = startDump(target.pid, imagesDir);
  // The root's stage begins once the whole tree is seized; its 256 MiB drain keeps the dump
  // there while the child, already seized, is killed (SIGKILL reaches a ptrace-stopped task).
  await until('the root being dumped', () => new RegExp(`dump task ${target.pid}\\b`).test(dump.stderr()));
  process.kill(child, 'SIGKILL');
  const r = await dump.done;
  t.is(r.code, 1, describe(r));
  t.log(`error: ${r.error?.code}: ${r.error?.message}`);
  t.true(['ESRCH_TARGET', 'TARGET_GONE'].includes(r.error?.code ?? ''), describe(r));
  t.regex(r.error?.message ?? '', new RegExp(`\\b${child}\\b`), 'the error names the vanished pid');
  noImagesLeft(t, imagesDir);
  assertUnchanged(t, before, [target.pid]);
  await verifyLive(t, target, 'root intact after its child vanished mid-dump');
});

test.serial('images dir not writable (read-only mount, or a file): IMAGE_IO naming it, nothing seized', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startFaults(t, work, ['4']);
  const before = snapshot(target.pids);

  const ro = join(work, 'ro');
  await mountTmpfs(t, ro, 'ro,size=1M,mode=0700');
  const r1 = await startDump(target.pid, ro).done;
  t.is(r1.code, 1, describe(r1));
  t.is(r1.error?.code, 'IMAGE_IO', describe(r1));
  t.regex(r1.error?.message ?? '', new RegExp(`${escape(ro)}.*EROFS`));
  t.deepEqual(readdirSync(ro), []);

  const file = join(work, 'not-a-dir');
  await writeFile(file, 'x', { mode: 0o600 });
  const r2 = await startDump(target.pid, file).done;
  t.is(r2.code, 1, describe(r2));
  t.is(r2.error?.code, 'IMAGE_IO', describe(r2));
  t.regex(r2.error?.message ?? '', new RegExp(escape(file)));

  const under = join(file, 'images');
  const r3 = await startDump(target.pid, under).done;
  t.is(r3.code, 1, describe(r3));
  t.is(r3.error?.code, 'IMAGE_IO', describe(r3));
  t.regex(r3.error?.message ?? '', /ENOTDIR/);

  for (const r of [r1, r2, r3]) t.notRegex(r.stderr, /collect pstree/, 'the tree must not be touched before the images dir is usable');
  assertUnchanged(t, before, target.pids);
  await verifyLive(t, target, 'untouched');
});

test.serial('images dir full (1 MiB tmpfs, 32 MiB target): IMAGE_IO naming the image, tree unchanged', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startFaults(t, work, ['32', 'child']);
  const before = snapshot(target.pids);
  const imagesDir = join(work, 'small');
  await mountTmpfs(t, imagesDir, 'size=1M,mode=0700');
  const r = await startDump(target.pid, imagesDir).done;
  t.is(r.code, 1, describe(r));
  t.log(`error: ${r.error?.code}: ${r.error?.message}`);
  t.is(r.error?.code, 'IMAGE_IO', describe(r));
  t.regex(r.error?.message ?? '', new RegExp(`${escape(imagesDir)}/[\\w.-]+\\.img`), 'the error names the image');
  t.regex(r.error?.message ?? '', /ENOSPC|No space left/);
  noInventory(t, imagesDir);
  assertOwnerOnly(t, imagesDir);
  assertUnchanged(t, before, target.pids);
  await verifyLive(t, target, 'intact after a dump that ran out of space');
});

const DRAIN_MIB = 512;

/** Starts a dump of a DRAIN_MIB target and resolves once pages-1.img has grown past 64 MiB. */
async function midDrain(t: ExecutionContext): Promise<{ target: FaultTarget; imagesDir: string; dump: CliRun; before: TreeSnapshot }> {
  const work = await makeWorkDir(t);
  const target = await startFaults(t, work, [String(DRAIN_MIB), 'child']);
  const before = snapshot(target.pids);
  const imagesDir = join(work, 'images');
  const dump = startDump(target.pid, imagesDir);
  const pages = join(imagesDir, 'pages-1.img');
  await until('the page drain to pass 64 MiB', () => fileSize(pages) > 64 << 20 || dump.child.exitCode !== null, 60_000, 1);
  if (dump.child.exitCode !== null) throw new Error(`dump ended before the drain was under way\n${describe(await dump.done)}`);
  return { target, imagesDir, dump, before };
}

// KNOWN BUG (ava's `failing`: it reports when it starts passing). The root dies by SIGKILL while
// it runs an injected vmsplice: the tracer waits for it with waitpid(leader, __WALL), but a dead
// group leader is only reported once its other traced threads are reaped, which nobody does
// (crates/core/src/parasite/inject.rs, resume_until). tsdump hangs for ever.
test.serial('PID gone mid-dump: the root is SIGKILLed during its page drain; tsdump ends with a clear error', async (t) => {
  const { target, imagesDir, dump } = await midDrain(t);
  process.kill(target.pid, 'SIGKILL');
  const r = await Promise.race([dump.done, sleep(20_000).then(() => undefined)]);
  if (!r) {
    dump.child.kill('SIGKILL');
    await dump.done;
    t.fail('tsdump still running 20 s after the root died (stuck waiting for the dead tracee)');
    return;
  }
  t.is(r.code, 1, describe(r));
  t.true(['ESRCH_TARGET', 'TARGET_GONE'].includes(r.error?.code ?? ''), describe(r));
  noInventory(t, imagesDir);
});

test.serial('tsdump SIGKILLed during the page drain: the tree carries on unchanged but for the scratch mapping; no image looks complete', async (t) => {
  const { target, imagesDir, dump, before } = await midDrain(t);
  const at = fileSize(join(imagesDir, 'pages-1.img'));
  dump.child.kill('SIGKILL');
  const r = await dump.done;
  t.is(r.signal, 'SIGKILL', describe(r));
  t.log(`killed with pages-1.img at ${(at / 2 ** 20).toFixed(0)} MiB of ${DRAIN_MIB}`);
  noInventory(t, imagesDir);
  assertOwnerOnly(t, imagesDir);
  // The kernel detached every task when the tracer died. The resident parasite that was draining
  // saw its channel close, closed its pipes and went home through its return frame: the tree
  // runs on unchanged, the scratch mapping being the only trace (issue 4's acceptance).
  if (!isAlive(target.pid)) {
    t.fail(`the task died of ${(await target.exited).signal} after tsdump was killed`);
    return;
  }
  const residue: Residue = { mappings: [] };
  await until('the parasite to go home', () => snapshotSettled(before, target.pids), 5_000);
  assertUnchanged(t, before, target.pids, residue);
  t.log(`left behind: ${residue.mappings.join('; ') || 'nothing'}`);
  await verifyLive(t, target, 'memory, masks and ticker intact after the dumper died');
});

// Issue 12 item 4: the scratch mapping's own mmap and munmap run from bytes of the task's text
// with a return frame on its stack (crates/core/src/parasite/borrow.rs). tsdump stalls at the
// named point (TSDUMP_FAULT_STALL) and is SIGKILLed there: the task finishes the syscall and
// returns home through the frame (the trap protocol's int3 killed it with SIGTRAP). The munmap
// runs when a tree that lives on is released (--leave-running).
for (const point of ['mmap-entered', 'mmap-exited', 'munmap-entered', 'munmap-exited']) {
  test.serial(`tsdump SIGKILLed inside the scratch mapping's ${point.replace('-', ' (')}): the task runs on, unchanged but for the scratch`, async (t) => {
    const work = await makeWorkDir(t);
    const target = await startFaults(t, work, ['16']);
    const before = snapshot(target.pids);
    const imagesDir = join(work, 'images');
    const dump = startDump(target.pid, imagesDir, point.startsWith('munmap') ? ['--leave-running'] : [], { env: { TSDUMP_FAULT_STALL: point } });
    await until(`tsdump at ${point}`, () => dump.stderr().includes(`fault point ${point}: stalled`) || dump.child.exitCode !== null, 60_000);
    dump.child.kill('SIGKILL');
    const r = await dump.done;
    t.is(r.signal, 'SIGKILL', describe(r));
    if (!isAlive(target.pid)) {
      t.fail(`the task died of ${(await target.exited).signal} after tsdump was killed at ${point}`);
      return;
    }
    const residue: Residue = { mappings: [] };
    // let go, and back home: the thread finishes the syscall and rt_sigreturns (its mask back)
    const home = (): boolean => {
      const now = snapshot(target.pids);
      return [...before.threads].every(([key, was]) => now.threads.get(key)?.sigBlk === was.sigBlk);
    };
    await until('the tree to be let go and home', () => snapshotSettled(before, target.pids) && home(), 10_000);
    assertUnchanged(t, before, target.pids, residue);
    t.log(`left behind: ${residue.mappings.join('; ') || 'nothing'}`);
    await verifyLive(t, target, `intact after tsdump died at ${point}`);
  });
}

for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  test.serial(`${sig} during the page drain: CANCELLED, tree released unchanged`, async (t) => {
    const { target, imagesDir, dump, before } = await midDrain(t);
    const pages = join(imagesDir, 'pages-1.img');
    const at = fileSize(pages);
    const sent = Date.now();
    dump.child.kill(sig);
    const r = await dump.done;
    const latency = Date.now() - sent;
    t.is(r.code, 1, describe(r));
    t.is(r.error?.code, 'CANCELLED', describe(r));
    t.regex(r.error?.message ?? '', new RegExp(`interrupted by ${sig}`));
    // The drain stops at its next pipe load (it checks the session's interrupt flag): no later
    // stage runs, and its partial image is removed with the rest (see noImagesLeft).
    t.notRegex(r.stderr, /write inventory/);
    t.log(`${sig} at ${(at / 2 ** 20).toFixed(0)} MiB; exit after ${latency} ms`);
    noImagesLeft(t, imagesDir);
    assertUnchanged(t, before, target.pids);
    await verifyLive(t, target, `intact after a dump cancelled by ${sig}`);
  });
}

test.serial('--leave-running: the tree runs on unchanged; the images restore once the original is gone; modes owner-only under umask 0', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startFaults(t, work, ['64', 'child']);
  const child = target.child!;
  const before = snapshot(target.pids);
  // A directory three levels down that does not exist yet: every level is tsdump's to create.
  const top = join(work, 'new');
  const imagesDir = join(top, 'deeper', 'images');
  const r = await startDump(target.pid, imagesDir, ['--leave-running'], { umask0: true }).done;
  t.is(r.code, 0, describe(r));
  t.is(r.result?.released, 'running');
  t.deepEqual(r.result?.tasks?.map((p) => p.pid).sort(), [target.pid, child].sort());
  t.true(existsSync(join(imagesDir, 'inventory.img')));
  const files = assertOwnerOnly(t, imagesDir, [top, join(top, 'deeper'), imagesDir]);
  t.true(files >= 10, `${files} files`);

  // The target's stdout/stderr is CTL/log, which the live run below appends to. Restore insists
  // that a regular file has the size it had at dump time, so that is put back before it.
  const logPath = join(target.ctl, 'log');
  const logSizeAtDump = statSync(logPath).size;

  assertUnchanged(t, before, target.pids);
  await verifyLive(t, target, 'live after --leave-running (ticker advances)');

  // Restore needs the PIDs: stop the original first.
  await killTree(target.pid, target.ctl, target.pids);
  await waitGone(target.pids);
  await truncate(logPath, logSizeAtDump);
  await criuRestore(imagesDir);
  t.true(isAlive(target.pid) && belongsTo(target.pid, target.ctl), 'restored root running under its pid');
  t.true(isAlive(child), 'restored child running under its pid');
  await verifyLive(t, target, 'restored from --leave-running images');
});
