// Running the CLI as users do (a separate process) and checking, from /proc, that a tree was left
// exactly as it was: shared by the fault and safety tests.
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

// ---------------------------------------------------------------------------------------------
// The CLI as a separate process

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The error document --json prints on failure. */
  error?: { code: string; message: string };
  /** The success document. */
  result?: { released?: string; tasks?: { pid: number }[] };
}

export interface CliRun {
  child: ChildProcess;
  /** stderr so far (the -v3 log: one line per stage). */
  stderr(): string;
  done: Promise<CliResult>;
}

/** `tsdump dump -t PID -D DIR --shell-job --json -v3 [args]`; with umask0 under `umask 0`. */
export function startDump(pid: number, imagesDir: string, args: readonly string[] = [], opts: { umask0?: boolean; env?: Record<string, string> } = {}): CliRun {
  const dumpArgs = [CLI, 'dump', '-t', String(pid), '-D', imagesDir, '--shell-job', '--json', '-v3', ...args];
  const env = { ...process.env, ...opts.env };
  const child = opts.umask0
    ? spawn('/bin/sh', ['-c', 'umask 0; exec "$@"', 'sh', process.execPath, ...dumpArgs], { stdio: ['ignore', 'pipe', 'pipe'], env })
    : spawn(process.execPath, dumpArgs, { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  let err = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const done = new Promise<CliResult>((resolve) => {
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const r: CliResult = { code, signal, stdout: out, stderr: err };
      const last = out.trim().split('\n').pop();
      if (last?.startsWith('{')) {
        const doc = JSON.parse(last) as { error?: CliResult['error'] };
        if (doc.error) r.error = doc.error;
        else r.result = doc as CliResult['result'];
      }
      resolve(r);
    });
  });
  return { child, stderr: () => err, done };
}

export function describe(r: CliResult): string {
  return `exit ${r.code ?? r.signal}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
}

export async function until(what: string, cond: () => boolean, timeoutMs = 30_000, everyMs = 2): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

// ---------------------------------------------------------------------------------------------
// What "left as it was" means, read from /proc

export interface ThreadState {
  state: string;
  tracerPid: number;
  sigBlk: string;
}

export interface TreeSnapshot {
  /** "pid/tid" → state of that thread. */
  threads: Map<string, ThreadState>;
  /** pid → /proc/PID/maps. */
  maps: Map<number, string>;
  /** pid → "fd → link target, flags" lines. */
  fds: Map<number, string[]>;
}

function statusField(text: string, field: string): string {
  const m = new RegExp(`^${field}:\\s*(.*)$`, 'm').exec(text);
  if (!m) throw new Error(`no ${field} in status`);
  return m[1]!.trim();
}

function fdTable(pid: number): string[] {
  return readdirSync(`/proc/${pid}/fd`)
    .map(Number)
    .sort((a, b) => a - b)
    .map((fd) => {
      const flags = statusField(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'), 'flags');
      return `${fd} -> ${readlinkSync(`/proc/${pid}/fd/${fd}`)} flags ${flags}`;
    });
}

export function snapshot(pids: readonly number[]): TreeSnapshot {
  const threads = new Map<string, ThreadState>();
  const maps = new Map<number, string>();
  const fds = new Map<number, string[]>();
  for (const pid of pids) {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      threads.set(`${pid}/${tid}`, {
        state: statusField(status, 'State'),
        tracerPid: Number(statusField(status, 'TracerPid')),
        sigBlk: statusField(status, 'SigBlk'),
      });
    }
    maps.set(pid, readFileSync(`/proc/${pid}/maps`, 'utf8'));
    fds.set(pid, fdTable(pid));
  }
  return { threads, maps, fds };
}

/**
 * What a dumper killed by SIGKILL in the middle of a page drain cannot take back (see
 * crates/core/blob/parasite.c): the anonymous rwx scratch mapping holding the parasite, which
 * cannot unmap the code it runs from.
 */
export interface Residue {
  mappings: string[];
}

/**
 * The tree runs as before: same threads, none stopped or traced, same masks, same mappings and
 * fd tables. With `residue`, the drain's leftovers described above are tolerated (and returned,
 * for the log) — nothing else.
 */
export function assertUnchanged(t: ExecutionContext, before: TreeSnapshot, pids: readonly number[], residue?: Residue): void {
  const after = snapshot(pids);
  t.deepEqual([...after.threads.keys()].sort(), [...before.threads.keys()].sort(), 'the same threads');
  for (const [key, was] of before.threads) {
    const now = after.threads.get(key);
    if (!now) continue;
    t.false(/^[Tt]/.test(now.state), `${key} is left ${now.state}`);
    t.is(now.tracerPid, 0, `${key} is still traced by ${now.tracerPid}`);
    t.is(now.sigBlk, was.sigBlk, `${key}: blocked signals changed`);
  }
  for (const [pid, maps] of before.maps) {
    let now = after.maps.get(pid) ?? '';
    const fds = after.fds.get(pid) ?? [];
    if (residue) {
      const was = new Set(maps.split('\n'));
      const extra = now.split('\n').filter((l) => !was.has(l));
      // one anonymous private rwx mapping: the scratch area
      if (extra.length === 1 && /^[0-9a-f]+-[0-9a-f]+ rwxp 00000000 00:00 0\s*$/.test(extra[0]!)) {
        residue.mappings.push(`pid ${pid}: ${extra[0]!.trim()}`);
        now = now.split('\n').filter((l) => l !== extra[0]).join('\n');
      }
    }
    t.is(now, maps, `pid ${pid}: mappings changed (a parasite left behind?)`);
    t.deepEqual(fds, before.fds.get(pid), `pid ${pid}: fd table changed`);
  }
}

/** True once no thread of the tree is stopped or traced and no fd beyond the snapshot's is open. */
export function snapshotSettled(before: TreeSnapshot, pids: readonly number[]): boolean {
  const now = snapshot(pids);
  for (const th of now.threads.values()) if (/^[Tt]/.test(th.state) || th.tracerPid !== 0) return false;
  return pids.every((pid) => (now.fds.get(pid) ?? []).length <= (before.fds.get(pid) ?? []).length);
}

/** Every file the dump wrote is 0600 and every directory 0700, whatever the umask. */
export function assertOwnerOnly(t: ExecutionContext, dir: string, dirs: readonly string[] = [dir]): number {
  for (const d of dirs) t.is(statSync(d).mode & 0o777, 0o700, `${d} mode ${(statSync(d).mode & 0o777).toString(8)}`);
  let files = 0;
  for (const name of readdirSync(dir)) {
    const st = statSync(join(dir, name));
    if (st.isDirectory()) {
      files += assertOwnerOnly(t, join(dir, name));
      continue;
    }
    t.is(st.mode & 0o777, 0o600, `${name} mode ${(st.mode & 0o777).toString(8)}`);
    files++;
  }
  return files;
}

/** A run that failed before its commit removed the images dir it made, partial images and all. */
export function noImagesLeft(t: ExecutionContext, imagesDir: string): void {
  t.false(existsSync(imagesDir), `${imagesDir}: what a failed dump made must be gone`);
}

export function noInventory(t: ExecutionContext, imagesDir: string): void {
  t.false(existsSync(join(imagesDir, 'inventory.img')), 'an unfinished dump must not look complete');
}

