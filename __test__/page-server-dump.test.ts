// `tsdump dump --page-server --address A --port P` on loopback: the task's pagemap and pages go to
// a page server (the reference `criu page-server`, and tsdump's own receiver), every other image
// is written locally. The server's images copied next to the local ones restore with the
// reference `criu restore`, and the target verifies itself.
// A server that goes away mid-stream makes the dump fail with a clear error and leaves the target
// running untouched.
// t_mappings holds shared anonymous memory between a parent and its child: it goes to the server
// as pagemap-shmem-ID (PS_IOV_OPEN2 with the shmem image type), as criu dump sends it.
// Incremental: a pre-dump to a page server, then a dump with --prev-images-dir --track-mem to a
// page server whose directory has the first one's as parent (criu page-server --prev-images-dir,
// or tsdump's); the pages left in the parent travel as holes the server checks, and the restore
// from the server's directory (the local images copied in, as a migration does) walks the chain.
import test, { type ExecutionContext } from 'ava';
import { copyFile, mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PageServerResult } from '../src/page-server.js';
import { tsdumpPageServer } from './helpers/page-server.js';
import { catalogue, liveCheck, roundTrip, type CatalogueEntry } from './helpers/catalogue.js';
import { critDecode, criuRestore, makeWorkDir } from './helpers/criu.js';
import { isPageImage, misbehavingPageServer, startCriuPageServer } from './helpers/page-server.js';
import { killTree, requestVerify, startTarget, waitGone } from './helpers/target.js';
import { runTsdump, tsdumpDump } from './helpers/tsdump.js';

const PE_PARENT = 1 << 0;
const PE_LAZY = 1 << 1;
const PE_PRESENT = 1 << 2;

function entry(name: string): CatalogueEntry {
  const e = catalogue.find((c) => c.name === name);
  if (!e) throw new Error(`no catalogue entry ${name}`);
  return e;
}

/** Copies the server's pagemap/pages images into the local images dir, as a migration would. */
async function installServerImages(serverDir: string, imagesDir: string): Promise<string[]> {
  const files = (await readdir(serverDir)).filter((f) => /^(pagemap-.*|pages-\d+)\.img$/.test(f)).sort();
  for (const f of files) await copyFile(join(serverDir, f), join(imagesDir, f));
  return files;
}

interface Flags {
  entries: number;
  pages: number;
  lazy: number;
  /** PE_PARENT pages (holes the parent images fill). */
  parent: number;
}

async function pagemapFlags(file: string): Promise<Flags> {
  const img = (await critDecode(file)) as { entries: { vaddr?: unknown; nr_pages: number; flags?: number | string }[] };
  const out: Flags = { entries: 0, pages: 0, lazy: 0, parent: 0 };
  for (const e of img.entries.slice(1)) {
    // a number, or names like 'PE_LAZY | PE_PRESENT' depending on crit's version
    const names = typeof e.flags === 'string' ? e.flags.split('|').map((s) => s.trim()) : [];
    const bits =
      typeof e.flags === 'number'
        ? e.flags
        : (names.includes('PE_LAZY') ? PE_LAZY : 0) | (names.includes('PE_PRESENT') ? PE_PRESENT : 0) | (names.includes('PE_PARENT') ? PE_PARENT : 0);
    out.entries++;
    if (bits & PE_PRESENT) out.pages += e.nr_pages;
    if (bits & PE_PARENT) out.parent += e.nr_pages;
    if (bits & PE_LAZY) out.lazy++;
  }
  return out;
}

// t_forktree: 7 tasks over one connection, an OPEN2 per task; t_mappings: shared anonymous memory
for (const name of ['t_memory', 't_forktree', 't_mappings']) {
  test.serial(`tsdump dump --page-server → criu page-server → criu restore (${name})`, async (t) => {
    let serverDir = '';
    let serverLog = '';
    let moved: string[] = [];
    const rt = await roundTrip(t, entry(name), async (pid, imagesDir, extraArgs) => {
      serverDir = join(imagesDir, '..', 'criu-page-server');
      const ps = await startCriuPageServer(serverDir);
      t.teardown(() => {
        if (ps.child.exitCode === null) ps.child.kill('SIGKILL');
      });
      const port = ps.port;
      await tsdumpDump(pid, imagesDir, [...extraArgs, '--page-server', '--address', '127.0.0.1', '--port', String(port)]);
      const code = await Promise.race([ps.done.then((d) => d.code), sleep(10_000).then(() => 'timeout' as const)]);
      serverLog = await readFile(join(serverDir, 'page-server.log'), 'utf8').catch(() => '');
      t.is(code, 0, `criu page-server exit; log tail:\n${serverLog.slice(-1500)}`);
      // the task's memory went to the server only
      t.deepEqual((await readdir(imagesDir)).filter(isPageImage), []);
      t.true((await readdir(imagesDir)).includes(`mm-${pid}.img`));
      moved = await installServerImages(serverDir, imagesDir);
      t.true(moved.includes(`pagemap-${pid}.img`), moved.join(' '));
      if (name === 't_mappings') t.true(moved.some((f) => f.startsWith('pagemap-shmem-')), `shared memory went to the server: ${moved.join(' ')}`);
    });
    t.is(rt.result, 'PASS', rt.subject.describe());
    const f = await pagemapFlags(join(rt.imagesDir, `pagemap-${rt.subject.pid}.img`));
    t.true(f.pages > 0, JSON.stringify(f));
    // heap, stack and the anonymous regions are private anonymous: marked lazy as the local pagemap marks them
    t.true(f.lazy > 0, JSON.stringify(f));
  });

  test.serial(`tsdump dump --page-server → tsdump's page server → criu restore (${name})`, async (t) => {
    let received: PageServerResult | undefined;
    let localPagemap: Flags | undefined;
    const rt = await roundTrip(t, entry(name), async (pid, imagesDir, extraArgs) => {
      const serverDir = join(imagesDir, '..', 'tsdump-page-server');
      const { port: p, done: serving } = await tsdumpPageServer(t, serverDir);
      const out = (await tsdumpDump(pid, imagesDir, [...extraArgs, '--page-server', '--address', '127.0.0.1', '--port', String(p)])) as {
        pages?: { written?: number };
      };
      received = await Promise.race([serving, sleep(10_000).then(() => Promise.reject(new Error('page server did not finish')))]);
      t.deepEqual((await readdir(imagesDir)).filter(isPageImage), []);
      t.truthy(out);
      const moved = await installServerImages(serverDir, imagesDir);
      t.true(moved.includes(`pagemap-${pid}.img`), moved.join(' '));
      if (name === 't_mappings') t.true(moved.some((f) => f.startsWith('pagemap-shmem-')), `shared memory went to the server: ${moved.join(' ')}`);
      localPagemap = await pagemapFlags(join(imagesDir, `pagemap-${pid}.img`));
    });
    t.is(rt.result, 'PASS', rt.subject.describe());
    const r = received!;
    const main = r.images.find((i) => i.kind === 'pid' && i.id === rt.subject.pid);
    t.truthy(main, JSON.stringify(r));
    t.true(main!.pages > 0);
    t.is(main!.pagesFile, 'pages-65537.img');
    // one connection for the whole tree: an image per task
    t.deepEqual(r.images.filter((i) => i.kind === 'pid').map((i) => i.id).sort(), [...rt.subject.pids].sort());
    if (name === 't_mappings') t.true(r.images.some((i) => i.kind === 'shmem' && i.pages > 0), JSON.stringify(r.images));
    t.is(r.pageBytes, r.images.reduce((n, i) => n + i.pages, 0) * 4096);
    t.is(localPagemap!.pages, main!.pages);
    t.true(localPagemap!.lazy > 0);
  });
}

test.serial('a page server that hangs up mid-stream: the dump fails clearly and the target keeps running', async (t) => {
  const result = await liveCheck(t, entry('t_memory'), async (subject, workDir) => {
    // takes the OPEN2 and a little data, then resets the connection
    const port = await misbehavingPageServer(t, (sock, received) => {
      if (received > 8 * 1024) sock.resetAndDestroy();
    });
    const imagesDir = join(workDir, 'images');
    const r = await runTsdump(['dump', '-t', String(subject.pid), '-D', imagesDir, '--shell-job', '--json', '--page-server', '--address', '127.0.0.1', '--port', String(port)], 60_000);
    t.not(r.code, 0, r.stdout);
    t.regex(r.stdout + r.stderr, /IMAGE_IO/);
    t.regex(r.stdout + r.stderr, /page server 127\.0\.0\.1:\d+/);
    // no inventory: nothing here passes for a complete dump
    t.false((await readdir(imagesDir).catch(() => [] as string[])).includes('inventory.img'));
  });
  t.is(result, 'PASS');
});

interface DumpJson {
  pages: { written: number; skippedParent: number };
}

async function tsdumpJson(t: ExecutionContext, args: readonly string[]): Promise<DumpJson> {
  const r = await runTsdump([...args, '--json']);
  t.is(r.code, 0, `tsdump ${args.join(' ')}: ${r.stderr.trim()}`);
  if (r.code !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as DumpJson;
}

interface Server {
  readonly port: number;
  /** Resolves when the server finished its one session (CLOSE acknowledged, images on disk). */
  readonly done: Promise<void>;
}

/** A page server on loopback writing into dir, with prev (relative to dir) as its parent. */
async function startServer(t: ExecutionContext, kind: 'criu' | 'tsdump', dir: string, prev?: string): Promise<Server> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (kind === 'tsdump') {
    const s = await tsdumpPageServer(t, dir, prev);
    return { port: s.port, done: s.done.then(() => undefined) };
  }
  const ps = await startCriuPageServer(dir, prev ? ['--prev-images-dir', prev] : []);
  t.teardown(() => {
    if (ps.child.exitCode === null) ps.child.kill('SIGKILL');
  });
  const done = ps.done.then(({ code, log }) => {
    if (code !== 0) throw new Error(`criu page-server exited ${code}:\n${log.slice(-2000)}`);
  });
  done.catch(() => undefined);
  return { port: ps.port, done };
}

const serverArgs = (s: Server) => ['--page-server', '--address', '127.0.0.1', '--port', String(s.port)];

/** The local images of a dump join the server's (not the local `parent` link: the server has its own). */
async function migrate(local: string, server: string): Promise<void> {
  for (const f of await readdir(local)) if (f !== 'parent') await copyFile(join(local, f), join(server, f));
}

for (const [server, mode] of [
  ['criu', 'read'],
  ['tsdump', 'splice'],
] as const) {
  test.serial(`pre-dump (${mode} mode) and an incremental dump to ${server}'s page server, restored from the server's directory`, async (t) => {
    const dir = await makeWorkDir(t);
    // a parent and a child sharing 16 MiB, the parent with 16 MiB of its own, both rewriting pages
    const target = await startTarget('p_shdirty', { dir, args: ['16', '200'], timeoutMs: 60_000 });
    t.teardown(() => killTree(target.pid, target.ctl, target.pids));
    const [l1, l2, s1, s2] = ['local1', 'local2', 'server1', 'server2'].map((d) => join(dir, d)) as [string, string, string, string];

    const first = await startServer(t, server, s1);
    const pre = await tsdumpJson(t, ['pre-dump', '-t', String(target.pid), '-D', l1, '--pre-dump-mode', mode, ...serverArgs(first)]);
    await first.done;
    t.deepEqual((await readdir(l1)).filter(isPageImage), [], 'the pre-dump memory is on the server only');
    const onServer = await readdir(s1);
    for (const pid of target.pids) t.true(onServer.includes(`pagemap-${pid}.img`), onServer.join(' '));
    t.true(onServer.some((f) => f.startsWith('pagemap-shmem-')), `shared memory pre-dumped to the server: ${onServer.join(' ')}`);

    await sleep(300);
    const second = await startServer(t, server, s2, '../server1');
    const dump = await tsdumpJson(t, ['dump', '-t', String(target.pid), '-D', l2, '--shell-job', '--prev-images-dir', '../local1', '--track-mem', ...serverArgs(second)]);
    await second.done;
    t.log(`pre-dump sent ${pre.pages.written} pages; the dump sent ${dump.pages.written} and left ${dump.pages.skippedParent} in the server's parent`);
    t.true(dump.pages.skippedParent > 2048, `pages left in the parent: ${dump.pages.skippedParent}`);
    t.true(dump.pages.written < pre.pages.written / 2, `only what changed is sent: ${dump.pages.written}`);
    const root = await pagemapFlags(join(s2, `pagemap-${target.pid}.img`));
    t.true(root.parent > 2048 && root.pages > 0, `the server's pagemap has holes and pages: ${JSON.stringify(root)}`);
    for (const f of (await readdir(s2)).filter((x) => x.startsWith('pagemap-shmem-'))) {
      t.is((await pagemapFlags(join(s2, f))).parent, 0, `${f}: shared memory is sent whole`);
    }

    await waitGone(target.pids);
    await migrate(l2, s2);
    await criuRestore(s2);
    t.is(await requestVerify(target, { timeoutMs: 60_000 }), 'PASS');
  });
}

test.serial('an incremental dump to a page server without a parent image sends every page, and restores', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await startTarget('p_dirty', { dir, args: ['16', '100'], timeoutMs: 60_000 });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const [l1, l2, s2] = ['local1', 'local2', 'server2'].map((d) => join(dir, d)) as [string, string, string];
  // a local pre-dump: the server below never saw it
  const pre = await tsdumpJson(t, ['pre-dump', '-t', String(target.pid), '-D', l1]);
  const server = await startServer(t, 'tsdump', s2);
  const dump = await tsdumpJson(t, ['dump', '-t', String(target.pid), '-D', l2, '--shell-job', '--prev-images-dir', '../local1', '--track-mem', ...serverArgs(server)]);
  await server.done;
  // OPEN2 answered "no parent": holes would point at nothing, so every page went
  t.is(dump.pages.skippedParent, 0);
  t.true(dump.pages.written >= pre.pages.written - 64, `${dump.pages.written} vs ${pre.pages.written}`);
  t.is((await pagemapFlags(join(s2, `pagemap-${target.pid}.img`))).parent, 0);
  await waitGone(target.pids);
  await migrate(l2, s2);
  await criuRestore(s2);
  t.is(await requestVerify(target, { timeoutMs: 60_000 }), 'PASS');
});
