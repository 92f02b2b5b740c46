// Pre-dumps and incremental dumps on real processes, restored by the reference CRIU from the
// chain of image directories:
// - a target that keeps rewriting known pages: pre-dump, dump --prev-images-dir --track-mem,
//   restore, the target checks every page against its generation table (PASS);
// - an idle 256 MiB target: the dump after the pre-dump writes only a few pages, the rest are
//   PE_PARENT entries, and the restore still has all 256 MiB right;
// - a 3-step chain: pre-dump, pre-dump, dump, each against the one before;
// - --pre-dump-mode read: the pages are read after the tree is released (frozen time well below
//   the read time on a 256 MiB target, the target running during the read), pages rewritten
//   during and after the read are written again by the dump, and the chain restores;
// - shared anonymous memory between a parent and its child: pre-dumped, written whole again by
//   the dump (writes to it cannot be tracked, see crates/core/src/mem/track.rs), restored.
// Tracking here is userfaultfd write-protect (async) + PAGEMAP_SCAN: this kernel has no
// soft-dirty, so the reference CRIU cannot pre-dump at all (it aborts; see the last test) and
// there is no CRIU chain to compare with; the images are checked with pycriu (crit) instead.
import test, { type ExecutionContext } from 'ava';
import { readdir, readFile, readlink } from 'node:fs/promises';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CRIU, critDecode, critDecodeAll, criuRestore, makeWorkDir, run } from './helpers/criu.js';
import { killTree, procState, requestVerify, startDetachedTarget, startTarget, type Target } from './helpers/target.js';
import { preDump as libraryPreDump, TsdumpError } from '../src/index.js';
import { existsSync } from 'node:fs';
import { runTsdump } from './helpers/tsdump.js';
import { encodePagemapEntries, pagemapEntry } from '../src/images/pagemap.js';
import { encodeEntry } from '../src/images/codec.js';
import { pagemap_entrySchema } from '../src/images/gen/pagemap_pb.js';

const PE_PARENT = 1;
const PE_PRESENT = 4;

interface JsonResult {
  command: string;
  pages: { scanned: number; written: number; zero: number; skippedParent: number };
  timings: { frozenTime: number };
  released: string;
}

async function tsdump(t: ExecutionContext, args: readonly string[]): Promise<JsonResult> {
  const r = await runTsdump([...args, '--json']);
  t.is(r.code, 0, `tsdump ${args.join(' ')}: ${r.stderr.trim()}`);
  if (r.code !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as JsonResult;
}

const preDump = (t: ExecutionContext, pid: number, dir: string, extra: readonly string[] = []) =>
  tsdump(t, ['pre-dump', '-t', String(pid), '-D', dir, ...extra]);

const finalDump = (t: ExecutionContext, pid: number, dir: string, parent: string) =>
  tsdump(t, ['dump', '-t', String(pid), '-D', dir, '--shell-job', '--prev-images-dir', parent, '--track-mem']);

function userfaultfds(pid: number): number[] {
  return readdirSync(`/proc/${pid}/fd`)
    .map(Number)
    .filter((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:[userfaultfd]';
      } catch {
        return false;
      }
    });
}

async function start(t: ExecutionContext, dir: string, mib: number, rate: number): Promise<Target> {
  const target = await startTarget('p_dirty', { dir, args: [String(mib), String(rate)], timeoutMs: 60_000 });
  t.teardown(() => killTree(target.pid, 'p_dirty'));
  return target;
}

interface PagemapEntryJson {
  vaddr?: number;
  nr_pages?: number;
  flags?: number;
}

/** pagemap entries of pid in dir (crit's decoding), without the head. */
async function pagemap(dir: string, pid: number): Promise<PagemapEntryJson[]> {
  const imgs = await critDecodeAll(dir);
  const pm = imgs.get(`pagemap-${pid}.img`) as { entries: PagemapEntryJson[] } | undefined;
  if (!pm) throw new Error(`no pagemap-${pid}.img in ${dir}`);
  return pm.entries.slice(1);
}

const pagesWith = (entries: PagemapEntryJson[], flag: number) =>
  entries.filter((e) => ((e.flags ?? 0) & flag) !== 0).reduce((n, e) => n + (e.nr_pages ?? 0), 0);

/** Files the pre-dump writes, as CRIU's pre-dump does, plus tsdump's tracking sidecar. */
async function checkPreDumpDir(t: ExecutionContext, dir: string, pid: number): Promise<void> {
  const files = (await readdir(dir)).sort();
  for (const f of ['inventory.img', `pagemap-${pid}.img`, 'pages-1.img', 'stats-dump', 'tsdump-track.json']) {
    t.true(files.includes(f), `${dir} lacks ${f}: ${files.join(' ')}`);
  }
  t.false(files.some((f) => f.startsWith('core-') || f.startsWith('mm-')), 'a pre-dump writes memory only');
  const imgs = await critDecodeAll(dir);
  const inv = imgs.get('inventory.img') as { entries: { pre_dump_mode?: number }[] };
  t.is(inv.entries[0]?.pre_dump_mode, 1, 'inventory says PRE_DUMP_SPLICE');
  const track = JSON.parse(await readFile(join(dir, 'tsdump-track.json'), 'utf8')) as { method: string; tasks: Record<string, { fd?: number }> };
  t.is(track.method, 'uffd-wp');
  const fd = track.tasks[String(pid)]?.fd;
  t.true(fd !== undefined && userfaultfds(pid).includes(fd), `the tracking userfaultfd ${fd} lives in the task: ${userfaultfds(pid).join(',')}`);
}

/** The dump left no userfaultfd in the images and restored from the chain. */
async function restoreAndVerify(t: ExecutionContext, target: Target, dir: string): Promise<void> {
  const imgs = await critDecodeAll(dir);
  t.false(JSON.stringify(imgs.get('files.img') ?? {}).includes('userfaultfd'), 'the tracking userfaultfd is not in files.img');
  await criuRestore(dir);
  t.is(await requestVerify(target, { timeoutMs: 60_000 }), 'PASS');
  t.deepEqual(userfaultfds(target.pid), [], 'the restored task has no userfaultfd');
}

test.serial('pre-dump then dump of a target that keeps rewriting pages restores from the chain', async (t) => {
  const dir = await makeWorkDir(t);
  // 200 pages/s: even a loaded machine taking 10 s between the two dumps rewrites fewer than
  // half of the 8192 pages, so "most stay in the parent" does not depend on timing.
  const target = await start(t, dir, 32, 200);
  const d1 = join(dir, 'd1');
  const pre = await preDump(t, target.pid, d1);
  t.is(pre.released, 'running');
  t.true(pre.pages.written >= 8192, `the pre-dump copies the 32 MiB region: ${pre.pages.written} pages`);
  await checkPreDumpDir(t, d1, target.pid);

  await sleep(500); // at least ~100 rewrites while running (200 pages/s)
  const d2 = join(dir, 'd2');
  const dump = await finalDump(t, target.pid, d2, '../d1');
  t.is(await readlink(join(d2, 'parent')), '../d1');
  const entries = await pagemap(d2, target.pid);
  const parentPages = pagesWith(entries, PE_PARENT);
  t.is(parentPages, dump.pages.skippedParent);
  t.true(parentPages > 4096, `most of the region stays in the parent: ${parentPages}`);
  t.true(dump.pages.written < pre.pages.written / 2, `only rewritten pages are written: ${dump.pages.written}`);
  t.true(dump.pages.written >= 100, `the rewritten pages are written: ${dump.pages.written}`);
  t.is(pagesWith(entries, PE_PRESENT), dump.pages.written);
  await restoreAndVerify(t, target, d2);
});

test.serial('after a pre-dump of an idle 256 MiB target the dump writes only the few pages that changed', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await start(t, dir, 256, 0);
  const d1 = join(dir, 'd1');
  const pre = await preDump(t, target.pid, d1);
  t.true(pre.pages.written >= 65536, `the pre-dump copies 256 MiB: ${pre.pages.written} pages`);
  await sleep(200);
  const d2 = join(dir, 'd2');
  const dump = await finalDump(t, target.pid, d2, '../d1');
  t.log(`pre-dump wrote ${pre.pages.written} pages; the dump wrote ${dump.pages.written}, left ${dump.pages.skippedParent} in the parent`);
  t.true(dump.pages.written < 64, `the dump writes a few pages, not 256 MiB: ${dump.pages.written}`);
  t.true(dump.pages.skippedParent >= 65536, `the region is left in the parent: ${dump.pages.skippedParent}`);
  const pagesBytes = (await readdir(d2)).includes('pages-1.img') ? (await readFile(join(d2, 'pages-1.img'))).length : 0;
  t.is(pagesBytes, dump.pages.written * 4096, 'pages-1.img holds just those pages');
  await restoreAndVerify(t, target, d2);
});

test.serial('a 3-step chain: pre-dump, pre-dump, dump, restored from the last', async (t) => {
  const dir = await makeWorkDir(t);
  // 60 pages/s: fewer than half the 4096 pages change even if the steps are 30 s apart on a loaded machine.
  const target = await start(t, dir, 16, 60);
  const [d1, d2, d3] = ['d1', 'd2', 'd3'].map((d) => join(dir, d)) as [string, string, string];
  const p1 = await preDump(t, target.pid, d1);
  await sleep(300);
  const p2 = await preDump(t, target.pid, d2, ['--prev-images-dir', '../d1']);
  await checkPreDumpDir(t, d2, target.pid);
  t.is(await readlink(join(d2, 'parent')), '../d1');
  t.true(p2.pages.written < p1.pages.written / 2, `the second pre-dump copies what changed: ${p2.pages.written} of ${p1.pages.written}`);
  t.true(p2.pages.skippedParent > 2048, `and leaves the rest in d1: ${p2.pages.skippedParent}`);
  t.is(userfaultfds(target.pid).length, 1, 'the second pre-dump replaced the first one\'s userfaultfd');
  await sleep(300);
  const dump = await finalDump(t, target.pid, d3, '../d2');
  t.is(await readlink(join(d3, 'parent')), '../d2');
  t.true(dump.pages.skippedParent > 2048, `the dump leaves pages in the chain: ${dump.pages.skippedParent}`);
  // PE_PARENT pages of d3 that d2 itself left in d1: restore must walk two links.
  const e2 = await pagemap(d2, target.pid);
  t.true(pagesWith(e2, PE_PARENT) > 0 && pagesWith(e2, PE_PRESENT) > 0);
  await restoreAndVerify(t, target, d3);
});

test.serial('the reference CRIU cannot pre-dump on this kernel (no soft-dirty): tsdump tracks with uffd-wp instead', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await start(t, dir, 4, 0);
  const r = await run(CRIU, ['pre-dump', '-t', String(target.pid), '-D', join(dir, 'criu'), '-o', 'pre-dump.log'], {});
  t.not(r.code, 0, 'criu pre-dump fails here');
  const check = await runTsdump(['check', '--all']);
  t.regex(check.stdout, /^memory tracking: userfaultfd async write-protect \+ PAGEMAP_SCAN/m);
  const pre = await preDump(t, target.pid, join(dir, 'd1'));
  t.true(pre.pages.written >= 1024);
  t.is(await requestVerify(target), 'PASS', 'the pre-dumped target runs on');
});

test('hand-encoded pagemap entries are byte for byte the schema encoding', (t) => {
  const cases = [
    { vaddr: 0x7ffe45c53000n, nrPages: 1, flags: PE_PARENT },
    { vaddr: 0x5644b5354000n, nrPages: 300, flags: PE_PRESENT | 2 },
    { vaddr: 0x1000n, nrPages: 0xffffffff, flags: 0 },
    { vaddr: 0xfffffffff000n, nrPages: 128, flags: PE_PRESENT },
  ];
  const want = Buffer.concat(cases.flatMap((c) => encodeEntry({ schema: pagemap_entrySchema, message: pagemapEntry(c.vaddr, c.nrPages, c.flags) })));
  t.deepEqual(Buffer.from(encodePagemapEntries(cases)), want);
  t.throws(() => encodePagemapEntries([{ vaddr: 0n, nrPages: 0, flags: 4 }]), { instanceOf: RangeError });
});

test.serial('--pre-dump-mode read, then a dump with --prev-images-dir but no --track-mem: every page written, the userfaultfd dropped', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await start(t, dir, 8, 100);
  const d1 = join(dir, 'd1');
  const pre = await preDump(t, target.pid, d1, ['--pre-dump-mode', 'read']);
  const inv = (await critDecodeAll(d1)).get('inventory.img') as { entries: { pre_dump_mode?: number }[] };
  t.is(inv.entries[0]?.pre_dump_mode, 2, 'inventory says PRE_DUMP_READ');
  t.is(userfaultfds(target.pid).length, 1);
  const d2 = join(dir, 'd2');
  const dump = await tsdump(t, ['dump', '-t', String(target.pid), '-D', d2, '--shell-job', '--prev-images-dir', '../d1']);
  t.is(await readlink(join(d2, 'parent')), '../d1', 'the parent link is made all the same, as CRIU does');
  t.is(dump.pages.skippedParent, 0, 'without --track-mem nothing is taken from the parent');
  t.true(dump.pages.written >= pre.pages.written - 64, `every page is written: ${dump.pages.written} vs ${pre.pages.written}`);
  t.is(pagesWith(await pagemap(d2, target.pid), PE_PARENT), 0);
  await restoreAndVerify(t, target, d2);
});

test.serial('a process tree (t_forktree): every task pre-dumped and tracked, the incremental dump restores', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await startTarget('t_forktree', { dir });
  t.teardown(() => killTree(target.pid, 't_forktree'));
  const d1 = join(dir, 'd1');
  const pre = await preDump(t, target.pid, d1);
  const track = JSON.parse(await readFile(join(d1, 'tsdump-track.json'), 'utf8')) as { tasks: Record<string, { fd?: number }> };
  t.deepEqual(Object.keys(track.tasks).map(Number).sort(), [...target.pids].sort(), 'one tracking userfaultfd per process');
  t.true(pre.pages.written > 0);
  await sleep(200);
  const dump = await finalDump(t, target.pid, join(dir, 'd2'), '../d1');
  t.true(dump.pages.skippedParent > 0, `pages left in the parent: ${dump.pages.skippedParent}`);
  await restoreAndVerify(t, target, join(dir, 'd2'));
});

test.serial('a task whose seccomp filter denies userfaultfd: the pre-dump suspends the filter for its parasite, the chain restores', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await startTarget('p_seccomp_uffd', { dir });
  t.teardown(() => killTree(target.pid, 'p_seccomp_uffd'));
  const d1 = join(dir, 'd1');
  const pre = await preDump(t, target.pid, d1);
  t.true(pre.pages.written >= 1024, `pre-dump wrote ${pre.pages.written} pages`);
  const dump = await finalDump(t, target.pid, join(dir, 'd2'), '../d1');
  t.true(dump.pages.skippedParent >= 1024, `pages left in the parent: ${dump.pages.skippedParent}`);
  await restoreAndVerify(t, target, join(dir, 'd2'));
});

test.serial('library: a pre-dump cancelled after arming the first task ends its tracking and leaves the tree running', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await startDetachedTarget('t_forktree', { dir });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const imagesDir = join(dir, 'd1');
  const abort = new AbortController();
  let tasks = 0;
  const err = await t.throwsAsync(
    libraryPreDump(
      { pid: target.pid, imagesDir, signal: abort.signal },
      // the first task is drained and armed by the time the second one's stage begins
      { stage: (s) => s.startsWith('pre-dump task ') && ++tasks === 2 && abort.abort() },
    ),
    { instanceOf: TsdumpError },
  );
  t.is(err?.code, 'CANCELLED');
  t.is(tasks, 2);
  t.false(existsSync(join(imagesDir, 'inventory.img')));
  for (const pid of target.pids) {
    t.deepEqual(userfaultfds(pid), [], `pid ${pid} keeps no userfaultfd`);
    t.notRegex(procState(pid) ?? 'gone', /^[tTZ]|gone/);
  }
  t.is(await requestVerify(target), 'PASS');
});

test.serial('--pre-dump-mode read: pages rewritten during and after the read are written again by the dump, which restores', async (t) => {
  const dir = await makeWorkDir(t);
  // 500 pages/s over 16384 pages: the read and the pause after it see a hundred rewrites or more,
  // and fewer than half the region is rewritten unless the two runs are 16 s apart.
  const target = await start(t, dir, 64, 500);
  const d1 = join(dir, 'd1');
  const pre = await preDump(t, target.pid, d1, ['--pre-dump-mode', 'read']);
  const inv = (await critDecodeAll(d1)).get('inventory.img') as { entries: { pre_dump_mode?: number }[] };
  t.is(inv.entries[0]?.pre_dump_mode, 2, 'inventory says PRE_DUMP_READ');
  t.true(pre.pages.written >= 16384, `the read copies the 64 MiB region: ${pre.pages.written}`);
  t.is(pagesWith(await pagemap(d1, target.pid), PE_PRESENT), pre.pages.written);
  await sleep(300);
  const d2 = join(dir, 'd2');
  const dump = await finalDump(t, target.pid, d2, '../d1');
  t.log(`read-mode pre-dump: ${pre.pages.written} pages, frozen ${pre.timings.frozenTime} us; dump: ${dump.pages.written} written, ${dump.pages.skippedParent} from the parent`);
  t.true(dump.pages.written >= 100, `the rewritten pages are written again: ${dump.pages.written}`);
  t.true(dump.pages.skippedParent > 8192, `the rest stays in the parent: ${dump.pages.skippedParent}`);
  await restoreAndVerify(t, target, d2);
});

/** State letter and voluntary context switches of pid (procfs). */
function sched(pid: number): { state: string; switches: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return { state: /^State:\s+(\S)/m.exec(status)?.[1] ?? '?', switches: Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1]) };
}

test.serial('--pre-dump-mode read releases the tree before reading: a 256 MiB target runs while its pages are read', async (t) => {
  const dir = await makeWorkDir(t);
  // wakes every 10 ms: while it runs its voluntary context switches go up, while frozen they cannot
  const target = await startDetachedTarget('p_dirty', { dir, args: ['256', '500'], timeoutMs: 60_000 });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const imagesDir = join(dir, 'd1');
  const seen = new Map<string, { state: string; switches: number; at: bigint }>();
  const r = await libraryPreDump(
    { pid: target.pid, imagesDir, preDumpMode: 'read' },
    {
      stage: (s) => {
        if (s === `read task ${target.pid}` || s === 'write inventory') seen.set(s, { ...sched(target.pid), at: process.hrtime.bigint() });
      },
    },
  );
  const before = seen.get(`read task ${target.pid}`);
  const after = seen.get('write inventory');
  if (!before || !after) return t.fail(`stages seen: ${[...seen.keys()].join(', ')}`);
  const stats = (await critDecode(join(imagesDir, 'stats-dump'))) as { entries: { dump: { frozen_time: number; memdump_time: number } }[] };
  const { frozen_time: frozen, memdump_time: memdump } = stats.entries[0]!.dump;
  const readMs = Number(after.at - before.at) / 1e6;
  t.log(`256 MiB read mode: frozen ${frozen} us, memdump ${memdump} us, total ${r.timings.totalTime} us; ` +
    `during the ${readMs.toFixed(0)} ms read the target switched ${after.switches - before.switches} times (state ${before.state})`);
  t.true(r.counters.pagesWritten >= 65536, `all 256 MiB read: ${r.counters.pagesWritten}`);
  t.notRegex(before.state, /[tT]/, 'the target is not stopped when the read begins');
  t.true(after.switches > before.switches, 'the target ran while its pages were read');
  t.true(frozen < memdump, `frozen ${frozen} us < memdump ${memdump} us: the pages are read after the release`);
  t.true(frozen < r.timings.totalTime / 2, `frozen ${frozen} us is a small part of ${r.timings.totalTime} us`);
  t.is(r.timings.frozenTime, frozen);
  t.is(await requestVerify(target), 'PASS');
});

interface ShmemPagemap {
  file: string;
  present: number;
  parent: number;
}

/** pagemap-shmem-*.img of dir: present and PE_PARENT pages of each. */
async function shmemPagemaps(dir: string): Promise<ShmemPagemap[]> {
  const out: ShmemPagemap[] = [];
  for (const [file, img] of await critDecodeAll(dir)) {
    if (!file.startsWith('pagemap-shmem-')) continue;
    const entries = (img as { entries: PagemapEntryJson[] }).entries.slice(1);
    out.push({ file, present: pagesWith(entries, PE_PRESENT), parent: pagesWith(entries, PE_PARENT) });
  }
  return out.sort((a, b) => a.file.localeCompare(b.file));
}

test.serial('shared anonymous memory of a parent and its child: pre-dumped, written whole again by the dump, restored', async (t) => {
  const dir = await makeWorkDir(t);
  // 16 MiB private + 16 MiB shared, both processes rewriting 200 pages/s
  const target = await startTarget('p_shdirty', { dir, args: ['16', '200'], timeoutMs: 60_000 });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const d1 = join(dir, 'd1');
  const pre = await preDump(t, target.pid, d1);
  const preShared = await shmemPagemaps(d1);
  t.is(preShared.length, 2, `the shared region and the shared generation table: ${JSON.stringify(preShared)}`);
  t.true(preShared.some((s) => s.present >= 4096), `the 16 MiB shared region is pre-dumped: ${JSON.stringify(preShared)}`);
  const preStats = (await critDecode(join(d1, 'stats-dump'))) as { entries: { dump: { shpages_written?: number } }[] };
  t.is(Number(preStats.entries[0]!.dump.shpages_written), preShared.reduce((n, s) => n + s.present, 0));
  await sleep(300);
  const d2 = join(dir, 'd2');
  const dump = await finalDump(t, target.pid, d2, '../d1');
  const shared = await shmemPagemaps(d2);
  t.deepEqual(shared.map((s) => s.file), preShared.map((s) => s.file), 'the same objects (shmid = inode)');
  t.true(shared.every((s) => s.parent === 0), `shared memory is written whole, never from the parent: ${JSON.stringify(shared)}`);
  t.true(shared.some((s) => s.present >= 4096));
  // private memory is incremental as usual
  t.true(dump.pages.skippedParent > 2048, `private pages left in the parent: ${dump.pages.skippedParent}`);
  t.true(dump.pages.written < pre.pages.written / 2);
  await restoreAndVerify(t, target, d2);
});

test.serial('--pre-dump-mode read failing after the release (the page server hangs up): tracking ended, the tree runs, no inventory', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await start(t, dir, 16, 100);
  // answers OPEN2, takes a little data, then resets the connection
  const server = createServer((sock) => {
    let got = 0;
    sock.on('data', (b) => {
      if (got === 0) sock.write(Buffer.from([0]));
      got += b.length;
      if (got > 64 * 1024) sock.resetAndDestroy();
    });
    sock.on('error', () => undefined);
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  t.teardown(() => void server.close());
  const port = (server.address() as AddressInfo).port;
  const d1 = join(dir, 'd1');
  const r = await runTsdump(['pre-dump', '-t', String(target.pid), '-D', d1, '--pre-dump-mode', 'read', '--page-server', '--address', '127.0.0.1', '--port', String(port), '--json']);
  t.not(r.code, 0, r.stdout);
  t.regex(r.stdout + r.stderr, /IMAGE_IO/);
  t.false(existsSync(join(d1, 'inventory.img')), 'nothing passes for a finished pre-dump');
  t.deepEqual(userfaultfds(target.pid), [], 'the tracking armed in the freeze was ended by seizing the tree again');
  t.notRegex(procState(target.pid) ?? 'gone', /^[tTZ]|gone/);
  t.is(await requestVerify(target), 'PASS');
});

test.serial('library: a read-mode pre-dump cancelled after the release ends the tracking it armed in the freeze', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await startDetachedTarget('p_dirty', { dir, args: ['64', '100'], timeoutMs: 60_000 });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const imagesDir = join(dir, 'd1');
  const abort = new AbortController();
  const err = await t.throwsAsync(
    libraryPreDump({ pid: target.pid, imagesDir, preDumpMode: 'read', signal: abort.signal }, { stage: (s) => s.startsWith('read task ') && abort.abort() }),
    { instanceOf: TsdumpError },
  );
  t.is(err?.code, 'CANCELLED');
  t.false(existsSync(join(imagesDir, 'inventory.img')));
  t.deepEqual(userfaultfds(target.pid), [], 'the tree was seized again to close the userfaultfd');
  t.notRegex(procState(target.pid) ?? 'gone', /^[tTZ]|gone/);
  t.is(await requestVerify(target), 'PASS');
});
