// CRIU's page-server protocol, both directions, against the reference CRIU on loopback:
// - `criu dump --page-server` sends a real target's memory to tsdump's receiver (runPageServer);
//   the received pagemap/pages plus CRIU's local images restore with `criu restore`.
// - tsdump's client replays a real dump's pagemap/pages to `criu page-server` and to tsdump's own
//   receiver; both results restore too.
// - A peer that goes away mid-stream is a clear error on both sides, and the receiver leaves
//   nothing complete-looking behind.
import test from 'ava';
import { readdir, stat } from 'node:fs/promises';
import { connect, createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { runPageServer, sendImagesToPageServer, type PageServerResult } from '../src/page-server.js';
import { tsdumpPageServer } from './helpers/page-server.js';
import { TsdumpError } from '../src/errors.js';
import { catalogue, roundTrip, type CatalogueEntry } from './helpers/catalogue.js';
import { criuDump, makeWorkDir } from './helpers/criu.js';
import { installPageImages, isPageImage, psHeader, startCriuPageServer } from './helpers/page-server.js';
import { freePort } from './helpers/programs.js';
import { killTree, startTarget } from './helpers/target.js';

const PAGE = 4096;

function entry(name: string): CatalogueEntry {
  const e = catalogue.find((c) => c.name === name);
  if (!e) throw new Error(`no catalogue entry ${name}`);
  return e;
}

/** Task and shmem ids of the pagemaps in dir. */
async function pagemapIds(dir: string): Promise<{ pids: number[]; shmemIds: number[] }> {
  const files = await readdir(dir);
  const pids = files.flatMap((f) => /^pagemap-(\d+)\.img$/.exec(f)?.[1] ?? []).map(Number);
  const shmemIds = files.flatMap((f) => /^pagemap-shmem-(\d+)\.img$/.exec(f)?.[1] ?? []).map(Number);
  return { pids, shmemIds };
}

for (const name of ['t_memory', 't_counter']) {
  test.serial(`criu dump --page-server → tsdump page server → criu restore (${name})`, async (t) => {
    let received: PageServerResult | undefined;
    let serverDir = '';
    const rt = await roundTrip(t, entry(name), async (pid, imagesDir, extraArgs) => {
      serverDir = join(imagesDir, '..', 'page-server');
      const { port: p, done: serving } = await tsdumpPageServer(t, serverDir);
      await criuDump(pid, imagesDir, [...extraArgs, '--page-server', '--address', '127.0.0.1', '--port', String(p)]);
      received = await serving;
      // CRIU sent every page to us: nothing page-related is local.
      t.deepEqual((await readdir(imagesDir)).filter(isPageImage), []);
      const moved = await installPageImages(serverDir, imagesDir);
      t.true(moved.includes(`pagemap-${pid}.img`), moved.join(' '));
    });
    t.is(rt.result, 'PASS', rt.subject.describe());
    const r = received!;
    const main = r.images.find((i) => i.kind === 'pid' && i.id === rt.subject.pid);
    t.truthy(main, JSON.stringify(r));
    t.is(main!.pagesFile, 'pages-65537.img', 'numbered like criu page-server');
    t.true(main!.pages > 0);
    t.is(r.pageBytes, r.images.reduce((n, i) => n + i.pages, 0) * PAGE);
    const files = await readdir(serverDir);
    t.deepEqual(files.filter((f) => f.endsWith('.part')), []);
    for (const f of files) t.is((await stat(join(serverDir, f))).mode & 0o777, 0o600, f);
  });
}

test.serial('tsdump client → criu page-server → criu restore (t_memory)', async (t) => {
  let sent: Awaited<ReturnType<typeof sendImagesToPageServer>> | undefined;
  const rt = await roundTrip(t, entry('t_memory'), async (pid, imagesDir, extraArgs) => {
    // A real dump written locally, then its memory replayed through our client.
    await criuDump(pid, imagesDir, extraArgs);
    const ids = await pagemapIds(imagesDir);
    t.deepEqual(ids.pids, [pid]);
    const serverDir = join(imagesDir, '..', 'criu-page-server');
    const ps = await startCriuPageServer(serverDir);
    t.teardown(() => void ps.child.kill('SIGKILL'));
    sent = await sendImagesToPageServer({ imagesDir, address: '127.0.0.1', port: ps.port, ...ids });
    const { code, log } = await ps.done;
    if (code !== 0) throw new Error(`criu page-server exited ${code}\n${log.slice(-3000)}`);
    const moved = await installPageImages(serverDir, imagesDir);
    t.deepEqual(moved, [`pagemap-${pid}.img`, 'pages-65537.img']);
  });
  t.is(rt.result, 'PASS', rt.subject.describe());
  t.true(sent!.pages > 0 && sent!.entries > 0, JSON.stringify(sent));
});

test.serial('tsdump client → tsdump page server → criu restore (t_memory)', async (t) => {
  const rt = await roundTrip(t, entry('t_memory'), async (pid, imagesDir, extraArgs) => {
    await criuDump(pid, imagesDir, extraArgs);
    const serverDir = join(imagesDir, '..', 'tsdump-page-server');
    const server = await tsdumpPageServer(t, serverDir);
    const sent = await sendImagesToPageServer({ imagesDir, address: '127.0.0.1', port: server.port, ...(await pagemapIds(imagesDir)) });
    const got = await server.done;
    t.is(got.pageBytes, sent.pages * PAGE);
    const moved = await installPageImages(serverDir, imagesDir);
    t.deepEqual(moved, [`pagemap-${pid}.img`, 'pages-65537.img']);
  });
  t.is(rt.result, 'PASS', rt.subject.describe());
});

/** Sends OPEN2 for pid 4242 and an ADD_F of `claimed` pages, then only `given` pages, then hangs up. */
async function cutPeer(port: number, claimed: number, given: number): Promise<void> {
  const dst = (4242n << 8n) | 1n;
  const s = connect({ host: '127.0.0.1', port });
  await new Promise<void>((res, rej) => s.once('connect', res).once('error', rej));
  s.write(psHeader(4, 0, 0n, dst)); // OPEN2
  await new Promise<void>((res) => s.once('data', () => res())); // has-parent byte
  s.write(psHeader(6 | (4 << 16), claimed, 0x7f0000001000n, dst)); // ADD_F, PE_PRESENT
  s.write(Buffer.alloc(given * PAGE, 0xab));
  await new Promise<void>((res) => s.end(res));
  s.destroy();
}

test.serial('receiver: a peer that disconnects mid-stream is dropped (IMAGE_IO), no images left, the server waits on', async (t) => {
  const work = await makeWorkDir(t);
  const dir = join(work, 'srv');
  const ac = new AbortController();
  let port = 0;
  let listeningNow!: () => void;
  const up = new Promise<void>((res) => (listeningNow = res));
  let droppedNow!: (e: TsdumpError) => void;
  const dropped = new Promise<TsdumpError>((res) => (droppedNow = res));
  const serving = runPageServer({
    imagesDir: dir,
    address: '127.0.0.1',
    port: 0,
    signal: ac.signal,
    onListening: (l) => ((port = l.port), listeningNow()),
    onClientDropped: ({ error }) => droppedNow(error),
  });
  serving.catch(() => undefined);
  await up;
  await cutPeer(port, 64, 3);
  const err = await dropped;
  t.is(err.code, 'IMAGE_IO');
  t.regex(err.message, /pid 4242/);
  t.regex(err.message, /0x7f0000001000/);
  t.regex(err.message, /closed in the middle/);
  t.regex(err.message, /12288 of 262144 bytes/);
  t.deepEqual(await readdir(dir), [], 'no pagemap, pages or .part files');
  // still serving: only the caller ends it
  ac.abort();
  t.is(((await t.throwsAsync(serving, { instanceOf: TsdumpError })) as TsdumpError).code, 'CANCELLED');
});

test.serial('client: a page server that goes away mid-stream → IMAGE_IO naming the peer and pid', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startTarget('t_memory', { dir: work });
  t.teardown(() => killTree(target.pid, work));
  const imagesDir = join(work, 'images');
  await criuDump(target.pid, imagesDir, ['--leave-running']);
  // A peer that answers OPEN2, then hangs up without reading the pages.
  const server = createServer((s) => {
    s.once('data', () => {
      s.write(Buffer.from([0]));
      s.destroy();
    });
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  t.teardown(() => void server.close());
  const port = (server.address() as AddressInfo).port;
  const err = await t.throwsAsync(sendImagesToPageServer({ imagesDir, address: '127.0.0.1', port, pids: [target.pid] }), {
    instanceOf: TsdumpError,
  });
  t.is((err as TsdumpError).code, 'IMAGE_IO');
  t.true(err!.message.includes(`page server 127.0.0.1:${port} (pid ${target.pid})`), err!.message);
  t.regex(err!.message, /closed the connection/);
});

test.serial('client: nothing listening → IMAGE_IO naming the address', async (t) => {
  const port = await freePort();
  const err = await t.throwsAsync(sendImagesToPageServer({ imagesDir: '/nonexistent', address: '127.0.0.1', port, pids: [1] }), {
    instanceOf: TsdumpError,
  });
  t.regex(err!.message, new RegExp(`page server 127\\.0\\.0\\.1:${port}: cannot connect`));
});

test.serial('receiver: AbortSignal → CANCELLED', async (t) => {
  const work = await makeWorkDir(t);
  const ac = new AbortController();
  const serving = runPageServer({ imagesDir: join(work, 'srv'), address: '127.0.0.1', port: 0, signal: ac.signal, onListening: () => ac.abort() });
  const err = await t.throwsAsync(serving, { instanceOf: TsdumpError });
  t.is((err as TsdumpError).code, 'CANCELLED');
});
