// `tsdump dump --page-server --address A --port P` on loopback: the task's pagemap and pages go to
// a page server (the reference `criu page-server`, and tsdump's own receiver), every other image
// is written locally. The server's images copied next to the local ones restore with the
// reference `criu restore`, and the target verifies itself.
// A server that goes away mid-stream makes the dump fail with a clear error and leaves the target
// running untouched.
import test from 'ava';
import { spawn } from 'node:child_process';
import { copyFile, mkdir, readdir, readFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runPageServer, type PageServerResult } from '../src/page-server.js';
import { catalogue, liveCheck, roundTrip, type CatalogueEntry } from './helpers/catalogue.js';
import { CRIU, critDecode } from './helpers/criu.js';
import { freePort } from './helpers/programs.js';
import { runTsdump, tsdumpDump } from './helpers/tsdump.js';

const PE_LAZY = 1 << 1;
const PE_PRESENT = 1 << 2;

function entry(name: string): CatalogueEntry {
  const e = catalogue.find((c) => c.name === name);
  if (!e) throw new Error(`no catalogue entry ${name}`);
  return e;
}

const isTaskPageImage = (f: string): boolean => /^(pagemap-\d+|pages-\d+)\.img$/.test(f);

/** Whether something listens on TCP `port`, read from /proc/net/tcp: `criu page-server` serves
 *  exactly one connection, so probing it by connecting would use it up. */
async function listening(port: number): Promise<boolean> {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(table, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[1]?.endsWith(hex) && cols[3] === '0A') return true;
    }
  }
  return false;
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
}

async function pagemapFlags(file: string): Promise<Flags> {
  const img = (await critDecode(file)) as { entries: { vaddr?: unknown; nr_pages: number; flags?: number | string }[] };
  const out: Flags = { entries: 0, pages: 0, lazy: 0 };
  for (const e of img.entries.slice(1)) {
    // a number, or names like 'PE_LAZY | PE_PRESENT' depending on crit's version
    const names = typeof e.flags === 'string' ? e.flags.split('|').map((s) => s.trim()) : [];
    const bits =
      typeof e.flags === 'number' ? e.flags : (names.includes('PE_LAZY') ? PE_LAZY : 0) | (names.includes('PE_PRESENT') ? PE_PRESENT : 0);
    out.entries++;
    if (bits & PE_PRESENT) out.pages += e.nr_pages;
    if (bits & PE_LAZY) out.lazy++;
  }
  return out;
}

// t_forktree: 7 tasks over one connection, an OPEN2 per task
for (const name of ['t_memory', 't_forktree']) {
  test.serial(`tsdump dump --page-server → criu page-server → criu restore (${name})`, async (t) => {
    let serverDir = '';
    let serverLog = '';
    let moved: string[] = [];
    const rt = await roundTrip(t, entry(name), async (pid, imagesDir, extraArgs) => {
      serverDir = join(imagesDir, '..', 'criu-page-server');
      await mkdir(serverDir, { mode: 0o700 });
      const port = await freePort();
      const child = spawn(CRIU, ['page-server', '-D', serverDir, '--address', '127.0.0.1', '--port', String(port), '-o', 'page-server.log', '-v4'], {
        stdio: 'ignore',
      });
      const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
      t.teardown(() => {
        if (child.exitCode === null) child.kill('SIGKILL');
      });
      const deadline = Date.now() + 10_000;
      while (!(await listening(port))) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`criu page-server did not listen on ${port}`);
        await sleep(20);
      }
      await tsdumpDump(pid, imagesDir, [...extraArgs, '--page-server', '--address', '127.0.0.1', '--port', String(port)]);
      const code = await Promise.race([exited, sleep(10_000).then(() => 'timeout' as const)]);
      serverLog = await readFile(join(serverDir, 'page-server.log'), 'utf8').catch(() => '');
      t.is(code, 0, `criu page-server exit; log tail:\n${serverLog.slice(-1500)}`);
      // the task's memory went to the server only
      t.deepEqual((await readdir(imagesDir)).filter(isTaskPageImage), []);
      t.true((await readdir(imagesDir)).includes(`mm-${pid}.img`));
      moved = await installServerImages(serverDir, imagesDir);
      t.true(moved.includes(`pagemap-${pid}.img`), moved.join(' '));
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
      const ac = new AbortController();
      t.teardown(() => ac.abort());
      let bound!: (port: number) => void;
      const port = new Promise<number>((res) => (bound = res));
      const serving = runPageServer({ imagesDir: serverDir, address: '127.0.0.1', port: 0, signal: ac.signal, onListening: (l) => bound(l.port) });
      serving.catch(() => undefined); // awaited below; a failed dump aborts it in teardown
      const p = await Promise.race([port, serving.then(() => Promise.reject(new Error('page server ended before listening')))]);
      const out = (await tsdumpDump(pid, imagesDir, [...extraArgs, '--page-server', '--address', '127.0.0.1', '--port', String(p)])) as {
        pages?: { written?: number };
      };
      received = await Promise.race([serving, sleep(10_000).then(() => Promise.reject(new Error('page server did not finish')))]);
      t.deepEqual((await readdir(imagesDir)).filter(isTaskPageImage), []);
      t.truthy(out);
      const moved = await installServerImages(serverDir, imagesDir);
      t.true(moved.includes(`pagemap-${pid}.img`), moved.join(' '));
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
    t.is(r.pageBytes, r.images.reduce((n, i) => n + i.pages, 0) * 4096);
    t.is(localPagemap!.pages, main!.pages);
    t.true(localPagemap!.lazy > 0);
  });
}

test.serial('a page server that hangs up mid-stream: the dump fails clearly and the target keeps running', async (t) => {
  const result = await liveCheck(t, entry('t_memory'), async (subject, workDir) => {
    // takes the OPEN2 and a little data, then resets the connection
    const server = createServer((sock) => {
      let got = 0;
      sock.on('data', (b) => {
        if (got === 0) sock.write(Buffer.from([0])); // OPEN2 answer: no parent
        got += b.length;
        if (got > 8 * 1024) sock.resetAndDestroy();
      });
      sock.on('error', () => undefined);
    });
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    t.teardown(() => server.close());
    const port = (server.address() as AddressInfo).port;
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

test('--page-server with --prev-images-dir is refused before the tree is touched', async (t) => {
  const r = await runTsdump(['dump', '-t', '1', '-D', '/tmp/tsdump-never', '--json', '--page-server', '--address', '127.0.0.1', '--port', '1', '--prev-images-dir', '../x']);
  t.not(r.code, 0);
  t.regex(r.stdout + r.stderr, /UNSUPPORTED/);
  t.regex(r.stdout + r.stderr, /--page-server with --prev-images-dir/);
});
