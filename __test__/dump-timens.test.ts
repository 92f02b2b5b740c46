// timens-N.img: the tree's CLOCK_MONOTONIC and CLOCK_BOOTTIME at dump time. With it, `criu
// restore` puts the restored tree into a new time namespace whose offsets make both clocks carry
// on from the dumped values (without it CRIU only warns, and the restored program's clocks jump
// by however long the images waited). Three layouts, as CRIU has them: the tree in tsdump's own
// time namespace (timens-0.img), the root in a time namespace of its own (timens-ID.img, ID the
// root's time_ns_id), and nested time namespaces, which CRIU and tsdump refuse.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CriuError, critDecode, criuDump, criuRestore, makeWorkDir } from './helpers/criu.js';
import { childrenOf, isAlive, killTree, procState, waitGone } from './helpers/target.js';
import { TsdumpCliError, tsdumpDump } from './helpers/tsdump.js';
import { assertUnchanged, snapshot } from './helpers/tree-state.js';

const NS = 1_000_000_000n;
/** The root's own time namespace starts this far ahead of ours (seconds). */
const MONO_AHEAD = 1_000_000n;
const BOOT_AHEAD = 2_000_000n;

interface Clocks {
  monotonic: bigint;
  boottime: bigint;
}

async function decodedEntries(path: string): Promise<Record<string, unknown>[]> {
  return ((await critDecode(path)) as { entries: Record<string, unknown>[] }).entries;
}

async function timensImage(path: string): Promise<Clocks> {
  const [e] = await decodedEntries(path);
  const ns = (ts: unknown) => {
    const t = ts as { tv_sec: number; tv_nsec: number };
    return BigInt(t.tv_sec) * NS + BigInt(t.tv_nsec);
  };
  return { monotonic: ns(e!.monotonic), boottime: ns(e!.boottime) };
}

/** /proc/PID/timens_offsets in nanoseconds. */
async function offsets(pid: number): Promise<Clocks> {
  const out: Clocks = { monotonic: 0n, boottime: 0n };
  for (const m of (await readFile(`/proc/${pid}/timens_offsets`, 'utf8')).matchAll(/^\s*(monotonic|boottime)\s+(-?\d+)\s+(\d+)/gm)) {
    out[m[1] as keyof Clocks] = BigInt(m[2]!) * NS + BigInt(m[3]!);
  }
  return out;
}

/** CLOCK_BOOTTIME from /proc/uptime (10 ms resolution), in nanoseconds. */
async function uptime(): Promise<bigint> {
  const [whole, frac] = (await readFile('/proc/uptime', 'utf8')).split(' ')[0]!.split('.');
  return BigInt(whole!) * NS + BigInt(frac!.padEnd(9, '0'));
}

/** Spawns `argv` detached in the work dir (the marker killTree checks) and waits for `ready`. */
async function start(t: ExecutionContext, work: string, argv: string[], ready: (pid: number) => Promise<number | undefined>): Promise<{ pid: number; target: number }> {
  const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: 'ignore', cwd: work });
  child.unref();
  const pid = child.pid!;
  t.teardown(() => killTree(pid, work));
  for (let i = 0; i < 400; i++) {
    const target = await ready(pid);
    if (target !== undefined) {
      // after a restore the target is no child of `pid` any more
      if (target !== pid) t.teardown(() => killTree(target, work));
      return { pid, target };
    }
    await sleep(5);
  }
  throw new Error(`${argv.join(' ')} did not get ready`);
}

const sleeping = async (pid: number) => ((await readlink(`/proc/${pid}/exe`).catch(() => '')) === '/usr/bin/sleep' ? pid : undefined);

/** The sleep below `unshare --fork`, once it runs in the new time namespace. */
const unsharedChild = async (pid: number) => {
  const [child] = childrenOf(pid);
  return child !== undefined ? sleeping(child) : undefined;
};

const UNSHARE = ['unshare', '--time', '--fork', '--monotonic', String(MONO_AHEAD), '--boottime', String(BOOT_AHEAD), 'sleep', '1000'];

test.serial('a tree in our time namespace: timens-0.img holds the clocks, restore carries them on in a new namespace', async (t) => {
  const work = await makeWorkDir(t);
  const { target } = await start(t, work, ['sleep', '1000'], sleeping);
  const images = join(work, 'images');
  const [before, upBefore] = [process.hrtime.bigint(), await uptime()];
  await tsdumpDump(target, images);
  const [after, upAfter] = [process.hrtime.bigint(), await uptime()];
  await waitGone([target]);

  t.true(existsSync(join(images, 'timens-0.img')));
  const dumped = await timensImage(join(images, 'timens-0.img'));
  t.true(dumped.monotonic > before && dumped.monotonic < after, `monotonic ${dumped.monotonic} not in [${before}, ${after}]`);
  const tick = 10_000_000n;
  t.true(dumped.boottime >= upBefore && dumped.boottime < upAfter + tick, `boottime ${dumped.boottime} not in [${upBefore}, ${upAfter}]`);
  const ids = (await decodedEntries(join(images, `ids-${target}.img`)))[0]!;
  const inventory = (await decodedEntries(join(images, 'inventory.img')))[0]!;
  t.is(ids.time_ns_id, (inventory.root_ids as Record<string, unknown>).time_ns_id, 'the root shares our time namespace');

  await sleep(300); // the images wait a little: the restored clocks must not show it
  const restoreBefore = process.hrtime.bigint();
  await criuRestore(images);
  const restoreAfter = process.hrtime.bigint();
  t.not(await readlink(`/proc/${target}/ns/time`), await readlink('/proc/self/ns/time'));
  const off = await offsets(target);
  // offset = dumped clock - our clock at the moment restore set it
  t.true(off.monotonic <= dumped.monotonic - restoreBefore && off.monotonic >= dumped.monotonic - restoreAfter, `monotonic offset ${off.monotonic}`);
  t.true(off.monotonic < -300_000_000n);
  // boottime moves with monotonic unless the machine suspends in between
  const drift = off.boottime - off.monotonic;
  t.true(drift > -NS && drift < NS, `boottime offset ${off.boottime} vs monotonic offset ${off.monotonic}`);
});

test.serial('a root in a time namespace of its own: timens-ID.img holds that namespace\'s clocks, restored with its offsets', async (t) => {
  const work = await makeWorkDir(t);
  const { target } = await start(t, work, UNSHARE, unsharedChild);
  t.deepEqual(await offsets(target), { monotonic: MONO_AHEAD * NS, boottime: BOOT_AHEAD * NS });
  const images = join(work, 'images');
  const before = process.hrtime.bigint();
  await tsdumpDump(target, images);
  const after = process.hrtime.bigint();
  await waitGone([target]);

  const ids = (await decodedEntries(join(images, `ids-${target}.img`)))[0]!;
  const inventory = (await decodedEntries(join(images, 'inventory.img')))[0]!;
  t.not(ids.time_ns_id, (inventory.root_ids as Record<string, unknown>).time_ns_id);
  t.false(existsSync(join(images, 'timens-0.img')));
  const dumped = await timensImage(join(images, `timens-${String(ids.time_ns_id)}.img`));
  const ahead = MONO_AHEAD * NS;
  t.true(dumped.monotonic > before + ahead && dumped.monotonic < after + ahead, `monotonic ${dumped.monotonic}`);
  // boottime is the namespace's own: its larger offset shows, plus the time the host was suspended
  const suspended = (await uptime()) - process.hrtime.bigint();
  const gap = dumped.boottime - dumped.monotonic - (BOOT_AHEAD - MONO_AHEAD) * NS - suspended;
  t.true(gap > -NS && gap < NS, `boottime ${dumped.boottime}, monotonic ${dumped.monotonic}`);

  const restoreBefore = process.hrtime.bigint();
  await criuRestore(images);
  const restoreAfter = process.hrtime.bigint();
  const off = await offsets(target);
  t.true(off.monotonic <= dumped.monotonic - restoreBefore && off.monotonic >= dumped.monotonic - restoreAfter, `monotonic offset ${off.monotonic}`);
  t.true(off.boottime - off.monotonic > (BOOT_AHEAD - MONO_AHEAD - 1n) * NS, `boottime offset ${off.boottime}`);
});

test.serial('nested time namespaces are refused, by CRIU too, and the tree runs on untouched', async (t) => {
  const work = await makeWorkDir(t);
  // `unshare` itself stays in our namespace and has unshared one for its child
  const { pid, target: child } = await start(t, work, UNSHARE, unsharedChild);
  t.not(await readlink(`/proc/${pid}/ns/time_for_children`), await readlink(`/proc/${pid}/ns/time`));
  const images = join(work, 'images');
  // refused by the time namespace stage, while the first task's visit (its parasite, its
  // scratch mapping) runs beside it: both processes are left exactly as they were
  const before = snapshot([pid, child]);
  const err = await t.throwsAsync(tsdumpDump(pid, images), { instanceOf: TsdumpCliError });
  t.is(err?.code, 'UNSUPPORTED', err?.message);
  t.regex(err?.message ?? '', new RegExp(`pid ${pid}: has unshared a time namespace for its future children`));
  t.false(existsSync(join(images, 'inventory.img')));
  assertUnchanged(t, before, [pid, child]);
  for (const p of [pid, child]) {
    t.true(isAlive(p), `pid ${p} alive`);
    t.is(procState(p), 'S', `pid ${p} sleeping, not stopped`);
    t.false(/^TracerPid:\s*[1-9]/m.test(await readFile(`/proc/${p}/status`, 'utf8')), `pid ${p} not traced`);
  }
  const criuErr = await t.throwsAsync(criuDump(pid, join(work, 'criu')), { instanceOf: CriuError });
  t.regex(criuErr?.log ?? '', /Can't dump nested time namespace/);
});
