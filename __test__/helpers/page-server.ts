// Page-server test plumbing shared by the page-server*.test.ts files: the reference `criu
// page-server` on loopback, tsdump's CLI page server, and moving received images into place.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { copyFile, mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ExecutionContext } from 'ava';
import { CRIU } from './criu.js';
import { freePort } from './programs.js';
import { CLI } from './tsdump.js';
import { runPageServer, type PageServerResult } from '../../src/page-server.js';

export const isPageImage = (f: string): boolean => /^(pagemap-.*|pages-\d+)\.img$/.test(f);

/** One page-server command header (24 bytes, little-endian here): cmd, nr_pages, vaddr, dst_id. */
export function psHeader(cmd: number, nr: number, vaddr: bigint, dst: bigint): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(cmd, 0);
  b.writeUInt32LE(nr, 4);
  b.writeBigUInt64LE(vaddr, 8);
  b.writeBigUInt64LE(dst, 16);
  return b;
}

/** Whether something listens on TCP `port`, read from /proc/net/tcp: `criu page-server` serves
 *  exactly one connection, so probing it by connecting would use it up. */
export async function listening(port: number): Promise<boolean> {
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

async function waitListening(port: number, child: ChildProcess, what: string, log: () => Promise<string>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await listening(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${what} did not start listening on ${port}\n${(await log()).slice(-2000)}`);
    }
    await sleep(20);
  }
}

export interface ServerProcess {
  readonly port: number;
  readonly child: ChildProcess;
  /** Settles when the server exits: its exit code and its log (criu) or stdout+stderr (tsdump). */
  readonly done: Promise<{ code: number | null; log: string }>;
}

/** Starts the reference `criu page-server -D dir` (+ extraArgs) on a free loopback port and waits until it listens. */
export async function startCriuPageServer(dir: string, extraArgs: readonly string[] = []): Promise<ServerProcess> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const port = await freePort();
  const args = ['page-server', '-D', dir, '--address', '127.0.0.1', '--port', String(port), '-o', 'page-server.log', '-v4', ...extraArgs];
  const child = spawn(CRIU, args, { stdio: 'ignore' });
  const log = () => readFile(join(dir, 'page-server.log'), 'utf8').catch(() => '');
  const done = new Promise<{ code: number | null; log: string }>((res) => child.once('exit', (code) => void log().then((l) => res({ code, log: l }))));
  await waitListening(port, child, 'criu page-server', log);
  return { port, child, done };
}

/** Starts `tsdump page-server -D dir` (+ extraArgs) on a free loopback port and waits until it listens. */
export async function startTsdumpPageServer(dir: string, extraArgs: readonly string[] = []): Promise<ServerProcess & { stderr(): string }> {
  const port = await freePort();
  const args = [CLI, 'page-server', '-D', dir, '--address', '127.0.0.1', '--port', String(port), '--json', ...extraArgs];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const done = new Promise<{ code: number | null; log: string }>((res) => child.once('close', (code) => res({ code, log: out + err })));
  await waitListening(port, child, 'tsdump page-server', async () => out + err);
  return { port, child, done, stderr: () => err };
}

/** Moves the page images of `from` into `to` (replacing any there), as a migration would. */
export async function installPageImages(from: string, to: string): Promise<string[]> {
  for (const f of (await readdir(to)).filter(isPageImage)) await rm(join(to, f));
  const moved = (await readdir(from)).filter(isPageImage).sort();
  for (const f of moved) await copyFile(join(from, f), join(to, f));
  return moved;
}

/**
 * A page server that speaks just enough of the protocol for a client to start sending: it
 * answers PARENT (no) and OPEN2 (no parent) and skips page data; `onProgress` sees every chunk
 * with the bytes received so far and may misbehave (pause, reset). Closed in teardown.
 */
export async function misbehavingPageServer(t: ExecutionContext, onProgress: (sock: Socket, received: number) => void): Promise<number> {
  const server = createServer((sock) => {
    sock.on('error', () => undefined);
    let received = 0;
    let pending = Buffer.alloc(0);
    let skip = 0;
    sock.on('data', (b: Buffer) => {
      received += b.length;
      pending = Buffer.concat([pending, b]);
      while (pending.length > 0) {
        if (skip > 0) {
          const n = Math.min(skip, pending.length);
          skip -= n;
          pending = pending.subarray(n);
          continue;
        }
        if (pending.length < 24) break;
        const cmd = pending.readUInt32LE(0);
        const nr = pending.readUInt32LE(4);
        pending = pending.subarray(24);
        if ((cmd & 0xffff) === 5) sock.write(Buffer.alloc(4)); // PARENT: none
        else if ((cmd & 0xffff) === 4) sock.write(Buffer.alloc(1)); // OPEN2: no parent
        else if ((cmd & 0xffff) === 6 && (cmd >>> 16) & 4) skip = nr * 4096; // ADD_F with PE_PRESENT pages
      }
      onProgress(sock, received);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => void server.close());
  return (server.address() as AddressInfo).port;
}

/**
 * tsdump's page server on a free loopback port, writing into `dir` (`prev`, relative to it: the
 * parent images), stopped in teardown. `done` settles once its one session has ended.
 */
export async function tsdumpPageServer(t: ExecutionContext, dir: string, prev?: string): Promise<{ port: number; done: Promise<PageServerResult> }> {
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  let bound!: (port: number) => void;
  const port = new Promise<number>((res) => (bound = res));
  const done = runPageServer({ imagesDir: dir, address: '127.0.0.1', port: 0, signal: ac.signal, onListening: (l) => bound(l.port), ...(prev ? { prevImagesDir: prev } : {}) });
  done.catch(() => undefined); // awaited by the caller; a failed dump aborts it in teardown
  const p = await Promise.race([port, done.then(() => Promise.reject(new Error('page server ended before listening')))]);
  return { port: p, done };
}
