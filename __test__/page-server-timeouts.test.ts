// Nobody holds a page-server transfer hostage:
// - tsdump's page server drops a client that connects and stays silent (--idle-timeout) and
//   serves the real dump queued behind it, which restores to PASS.
// - A dump blocked on a page server that stopped reading (its tree frozen) is cancelled at once
//   by SIGTERM (CLI) or an AbortSignal (library), not after the 60 s I/O timeout, and the tree
//   is released untouched and verifies itself.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { dump } from '../src/index.js';
import { TsdumpError } from '../src/errors.js';
import { catalogue, roundTrip, type CatalogueEntry } from './helpers/catalogue.js';
import { criuDump, makeWorkDir } from './helpers/criu.js';
import { installPageImages, misbehavingPageServer, startTsdumpPageServer } from './helpers/page-server.js';
import { killTree, procState, requestVerify, startDetachedTarget, type Target } from './helpers/target.js';
import { CLI } from './helpers/tsdump.js';

function entry(name: string): CatalogueEntry {
  const e = catalogue.find((c) => c.name === name);
  if (!e) throw new Error(`no catalogue entry ${name}`);
  return e;
}

const psArgs = (port: number): string[] => ['--page-server', '--address', '127.0.0.1', '--port', String(port)];

test.serial('tsdump page-server drops a silent client after --idle-timeout and serves the criu dump queued behind it (t_memory)', async (t) => {
  let stderr = '';
  let idlePeer = '';
  const rt = await roundTrip(t, entry('t_memory'), async (pid, imagesDir, extraArgs) => {
    const serverDir = join(imagesDir, '..', 'srv');
    const ps = await startTsdumpPageServer(serverDir, ['--idle-timeout', '1']);
    t.teardown(() => {
      if (ps.child.exitCode === null) ps.child.kill('SIGKILL');
    });
    // connects first and says nothing: before, it held the only session for good
    const idle = tcpConnect({ host: '127.0.0.1', port: ps.port });
    idle.on('error', () => undefined);
    t.teardown(() => void idle.destroy());
    await once(idle, 'connect');
    idlePeer = `127.0.0.1:${idle.localPort}`;
    await criuDump(pid, imagesDir, [...extraArgs, ...psArgs(ps.port)]);
    const { code, log } = await ps.done;
    stderr = ps.stderr();
    t.is(code, 0, log);
    const moved = await installPageImages(serverDir, imagesDir);
    t.true(moved.includes(`pagemap-${pid}.img`), moved.join(' '));
  });
  t.is(rt.result, 'PASS', rt.subject.describe());
  t.regex(stderr, new RegExp(`dropped client ${idlePeer.replace(/\./g, '\\.')}: .*sent nothing for 1 s \\(idle timeout\\)`));
  // listening on 127.0.0.1 only: no warning about exposure
  t.notRegex(stderr, /every address/);
});

test.serial('tsdump page-server warns when it listens on every address without TLS', async (t) => {
  const work = await makeWorkDir(t);
  const child = spawn(process.execPath, [CLI, 'page-server', '-D', join(work, 'srv'), '--port', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  t.teardown(() => void child.kill('SIGKILL'));
  let err = '';
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  while (!err.includes('\n')) await once(child.stderr, 'data');
  child.kill('SIGTERM');
  await once(child, 'exit');
  t.regex(err, /warning: listening on every address \(0\.0\.0\.0\) without TLS.*--tls/);
});

/** A page server that takes `takeBytes` of the stream, then stops reading; `stalled` settles then. */
async function stalledServer(t: ExecutionContext, takeBytes: number): Promise<{ port: number; stalled: Promise<void> }> {
  let stall!: () => void;
  const stalled = new Promise<void>((res) => (stall = res));
  const port = await misbehavingPageServer(t, (sock, received) => {
    if (received < takeBytes) return;
    sock.pause();
    stall();
  });
  return { port, stalled };
}

function tracerOf(pid: number): number {
  return Number(/^TracerPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? -1);
}

/** The tree after a cancelled dump: running, traced by nobody, intact (it verifies itself). */
async function releasedUntouched(t: ExecutionContext, target: Target, imagesDir: string): Promise<void> {
  t.false(existsSync(join(imagesDir, 'inventory.img')), 'nothing passes for a complete dump');
  t.notRegex(procState(target.pid) ?? 'gone', /^[tTZ]|gone/);
  t.is(tracerOf(target.pid), 0);
  t.is(await requestVerify(target, { timeoutMs: 60_000 }), 'PASS');
}

test.serial('SIGTERM reaches a dump blocked on a page server that stopped reading: tsdump ends at once, the tree runs on untouched', async (t) => {
  const work = await makeWorkDir(t);
  // 64 MiB: far more than the socket buffers take
  const target = await startDetachedTarget('p_dirty', { dir: work, args: ['64', '0'], timeoutMs: 60_000 });
  t.teardown(() => killTree(target.pid, target.ctl));
  const server = await stalledServer(t, 1 << 20);
  const imagesDir = join(work, 'images');
  const child = spawn(process.execPath, [CLI, 'dump', '-t', String(target.pid), '-D', imagesDir, '--shell-job', '--json', ...psArgs(server.port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => void child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
  await server.stalled;
  // let the sender fill the socket buffers and block
  await new Promise((r) => setTimeout(r, 500));
  t.not(tracerOf(target.pid), 0, 'the tree is seized while its memory is stuck on the way');
  const sent = Date.now();
  child.kill('SIGTERM');
  const [code] = await exited;
  const ms = Date.now() - sent;
  t.log(`SIGTERM to exit: ${ms} ms`);
  t.not(code, 0, out);
  t.regex(out, /CANCELLED/);
  t.regex(out, /interrupted/);
  // the I/O timeout is 60 s: a cancellation that waited for it would show here
  t.true(ms < 10_000, `${ms} ms`);
  await releasedUntouched(t, target, imagesDir);
});

test.serial('an AbortSignal reaches a library dump blocked on a page server that stopped reading', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startDetachedTarget('p_dirty', { dir: work, args: ['64', '0'], timeoutMs: 60_000 });
  t.teardown(() => killTree(target.pid, target.ctl));
  const server = await stalledServer(t, 1 << 20);
  const imagesDir = join(work, 'images');
  const ac = new AbortController();
  const dumping = dump({ pid: target.pid, imagesDir, shellJob: true, pageServer: { address: '127.0.0.1', port: server.port }, signal: ac.signal });
  dumping.catch(() => undefined);
  await server.stalled;
  await new Promise((r) => setTimeout(r, 500));
  const sent = Date.now();
  ac.abort();
  const err = await t.throwsAsync(dumping, { instanceOf: TsdumpError });
  const ms = Date.now() - sent;
  t.log(`abort to rejection: ${ms} ms`);
  t.is(err?.code, 'CANCELLED');
  t.true(ms < 10_000, `${ms} ms`);
  await releasedUntouched(t, target, imagesDir);
});
