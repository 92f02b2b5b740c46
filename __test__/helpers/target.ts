// Starting, verifying and killing the C test targets (__test__/targets/t_*.c, protocol in
// __test__/targets/common.h) and anything else the end-to-end tests checkpoint.
//
// Protocol: a target runs as `build/targets/NAME CTL` in its own session, stdin /dev/null,
// stdout+stderr appended to CTL/log. It publishes CTL/ready ("pid=PID" plus key=value lines),
// waits for CTL/verify (polled with stat(), so it holds no descriptor of ours), then checks itself
// and publishes CTL/result: "PASS" or "FAIL: reason". Setup failures publish the result instead
// of ready. All files are written tmp+rename.
import { spawn } from 'node:child_process';
import { existsSync, openSync, closeSync, readFileSync, readlinkSync, readdirSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const TARGETS_DIR = join(REPO_ROOT, 'build/targets');

/** How a spawned root ended (signal name or exit code). */
export interface TargetExit {
  code: number | null;
  signal: string | null;
}

export interface Target {
  readonly name: string;
  /** PID of the tree's root; after a restore the same PID is the restored root. */
  readonly pid: number;
  /** Control directory (absolute). */
  readonly ctl: string;
  /** The key=value lines of CTL/ready (pid, ports, child pids...). */
  readonly info: Readonly<Record<string, string>>;
  /** Processes of the tree when it became ready, root first (threads not included). */
  readonly pids: readonly number[];
  /** Settles when the originally spawned root exits (it is our child until then). */
  readonly exited: Promise<TargetExit>;
  /** The target's log so far (for failure messages). */
  log(): string;
}

export interface StartOptions {
  /** Directory in which CTL is created (one per test; see makeWorkDir in criu.ts). */
  readonly dir: string;
  readonly args?: readonly string[];
  readonly timeoutMs?: number;
}

function parseKeyValues(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function tail(text: string, lines = 30): string {
  return text.split('\n').slice(-lines).join('\n');
}

/** Starts build/targets/NAME in a new session and waits until it published CTL/ready. */
export async function startTarget(name: string, opts: StartOptions): Promise<Target> {
  const exe = join(TARGETS_DIR, name);
  if (!existsSync(exe)) throw new Error(`${exe} missing: run bash scripts/build-test-programs.sh`);
  const ctl = join(opts.dir, `ctl-${name}`);
  await mkdir(ctl, { recursive: true, mode: 0o700 });
  return spawnWithProtocol(name, exe, [ctl, ...(opts.args ?? [])], ctl, opts.timeoutMs);
}

/**
 * Like startTarget, but the target is not a child of this process (`setsid -f` starts it and
 * exits). Tests that trace the target from this very process through raw napi calls need it:
 * libuv reaps its own children with waitpid(), which would also swallow their ptrace stops. (The
 * library copes with its own children by dumping them from a forked worker, see own-child.ts.)
 */
export async function startDetachedTarget(name: string, opts: StartOptions): Promise<Target> {
  const exe = join(TARGETS_DIR, name);
  if (!existsSync(exe)) throw new Error(`${exe} missing: run bash scripts/build-test-programs.sh`);
  const ctl = join(opts.dir, `ctl-${name}`);
  await mkdir(ctl, { recursive: true, mode: 0o700 });
  const logFd = openSync(join(ctl, 'log'), 'a', 0o600);
  try {
    const launcher = spawn('setsid', ['-f', exe, ctl, ...(opts.args ?? [])], { stdio: ['ignore', logFd, logFd], cwd: ctl });
    await new Promise((res) => launcher.once('exit', res));
  } finally {
    closeSync(logFd);
  }
  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  for (;;) {
    const ready = readIfExists(join(ctl, 'ready'));
    if (ready !== undefined) {
      const info = parseKeyValues(ready);
      const pid = Number(info.pid);
      return { name, pid, ctl, info, pids: treePids(pid), exited: new Promise<TargetExit>(() => {}), log: () => readIfExists(join(ctl, 'log')) ?? '' };
    }
    const result = readIfExists(join(ctl, 'result'));
    if (result !== undefined || Date.now() > deadline) {
      throw new Error(`${name}: not ready: ${result?.trim() ?? 'timeout'}\n--- log ---\n${tail(readIfExists(join(ctl, 'log')) ?? '')}`);
    }
    await sleep(5);
  }
}

/**
 * Spawns any program that speaks the CTL protocol (C targets, the Python state program) detached
 * in its own session with stdin=/dev/null and output appended to CTL/log, and waits for ready.
 */
export async function spawnWithProtocol(
  name: string,
  exe: string,
  args: readonly string[],
  ctl: string,
  timeoutMs = 15_000,
): Promise<Target> {
  const logPath = join(ctl, 'log');
  const logFd = openSync(logPath, 'a', 0o600);
  let child;
  try {
    // detached → setsid(): the target leads its own session and process group, so `--shell-job`
    // applies and signals aimed at the test runner's group never reach it.
    child = spawn(exe, [...args], { detached: true, stdio: ['ignore', logFd, logFd], cwd: ctl });
  } finally {
    closeSync(logFd);
  }
  child.unref();
  let exitedEarly: string | undefined;
  const exited = new Promise<TargetExit>((res) => {
    child.once('exit', (code, signal) => {
      exitedEarly = `exited (code ${code}, signal ${signal})`;
      res({ code, signal });
    });
    child.once('error', (err) => {
      exitedEarly = `failed to start: ${err.message}`;
      res({ code: null, signal: null });
    });
  });
  const log = (): string => readIfExists(logPath) ?? '';
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ready = readIfExists(join(ctl, 'ready'));
    if (ready !== undefined) {
      const info = parseKeyValues(ready);
      const pid = Number(info.pid);
      if (!Number.isInteger(pid) || pid !== child.pid) {
        throw new Error(`${name}: CTL/ready names pid ${info.pid}, spawned ${child.pid}`);
      }
      return { name, pid, ctl, info, pids: treePids(pid), exited, log };
    }
    const result = readIfExists(join(ctl, 'result'));
    if (result !== undefined) {
      if (child.pid) await killTree(child.pid, ctl);
      throw new Error(`${name}: setup failed: ${result.trim()}\n--- log ---\n${tail(log())}`);
    }
    if (exitedEarly !== undefined) throw new Error(`${name}: ${exitedEarly} before ready\n--- log ---\n${tail(log())}`);
    if (Date.now() > deadline) {
      if (child.pid) await killTree(child.pid, ctl);
      throw new Error(`${name}: not ready after ${timeoutMs} ms\n--- log ---\n${tail(log())}`);
    }
    await sleep(5);
  }
}

/** Children of every thread of pid (from /proc; empty if pid is gone). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    const text = readIfExists(`/proc/${pid}/task/${tid}/children`) ?? '';
    for (const tok of text.split(/\s+/)) if (tok) out.push(Number(tok));
  }
  return out;
}

/** pid and all its descendants, root first. */
export function treePids(pid: number): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift()!;
    if (out.includes(p)) continue;
    out.push(p);
    queue.push(...childrenOf(p));
  }
  return out.filter((p) => existsSync(`/proc/${p}`));
}

/** Process state letter from /proc/PID/stat, or undefined if there is no such process. */
export function procState(pid: number): string | undefined {
  const stat = readIfExists(`/proc/${pid}/stat`);
  if (stat === undefined) return undefined;
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
}

/**
 * The process state once the target is back in its polling sleep: right after a release it may
 * still be caught running ('R'), which is as much "not stopped" as 'S'.
 */
export async function settledState(pid: number): Promise<string | undefined> {
  let state = procState(pid);
  for (let i = 0; i < 100 && state === 'R'; i++) {
    await sleep(10);
    state = procState(pid);
  }
  return state;
}

/**
 * Whether pid is (still, or again after a restore) one of ours: its command line or its cwd
 * mentions `marker` (the CTL or work directory). PIDs are recycled, and a test must never kill a
 * process that merely inherited a PID from its dead target.
 */
export function belongsTo(pid: number, marker: string): boolean {
  const cmdline = readIfExists(`/proc/${pid}/cmdline`);
  if (cmdline?.includes(marker)) return true;
  try {
    return readlinkSync(`/proc/${pid}/cwd`).startsWith(marker);
  } catch {
    return false;
  }
}

/** Whether the process exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  const s = procState(pid);
  return s !== undefined && s !== 'Z' && s !== 'X';
}

/** Waits until none of pids is alive (dead zombies count as gone only when reaped). */
export async function waitGone(pids: readonly number[], timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = pids.filter((p) => existsSync(`/proc/${p}`));
    if (left.length === 0) return;
    if (Date.now() > deadline) {
      const states = left.map((p) => `${p}:${procState(p) ?? '?'}`).join(' ');
      throw new Error(`processes still present after ${timeoutMs} ms: ${states}`);
    }
    await sleep(5);
  }
}

/**
 * SIGKILLs the tree rooted at pid (descendants found now, plus `extra` PIDs such as the tree
 * recorded at ready time) — but only processes that belong to `marker` (see belongsTo), and the
 * descendants of one that does. Waits until they are gone. Never throws: it is cleanup.
 */
export async function killTree(pid: number, marker: string, extra: readonly number[] = []): Promise<void> {
  const victims = new Set<number>();
  for (const root of [pid, ...extra]) {
    if (!existsSync(`/proc/${root}`) || !belongsTo(root, marker)) continue;
    for (const p of treePids(root)) victims.add(p);
  }
  for (const p of victims) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  try {
    // Zombies of killed parents are reaped by the subreaper (or by node for our own child).
    await waitGone([...victims].filter((p) => p !== process.pid), 5000);
  } catch {
    // left for the subreaper's final sweep; cleanup must not mask the test's own failure
  }
}

/** Writes path atomically (tmp + rename), like the targets do. */
export async function publish(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, text, { mode: 0o600 });
  await rename(tmp, path);
}

export interface VerifyOptions {
  readonly timeoutMs?: number;
}

/**
 * Asks the target to verify itself: clears a stale CTL/result, creates CTL/verify and waits for
 * CTL/result. Removes CTL/verify afterwards, so a later restore of the same images waits for a
 * fresh request. Returns the result text ("PASS" or "FAIL: ..."), trimmed; on timeout returns a
 * "FAIL: ..." text naming whether the process is alive, with its log tail.
 */
export async function requestVerify(target: Pick<Target, 'name' | 'pid' | 'ctl'>, opts: VerifyOptions = {}): Promise<string> {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const resultPath = join(target.ctl, 'result');
  const verifyPath = join(target.ctl, 'verify');
  await rm(resultPath, { force: true });
  await publish(verifyPath, `${Date.now()}\n`);
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      try {
        return (await readFile(resultPath, 'utf8')).trim();
      } catch {
        // not yet
      }
      if (Date.now() > deadline) {
        const state = procState(target.pid) ?? 'gone';
        const log = readIfExists(join(target.ctl, 'log')) ?? '';
        return `FAIL: no result after ${timeoutMs} ms (pid ${target.pid} state ${state})\n--- log ---\n${tail(log)}`;
      }
      await sleep(5);
    }
  } finally {
    await rm(verifyPath, { force: true });
  }
}

/** The log tail of a target, for assertion messages. */
export function logTail(target: Pick<Target, 'ctl'>, lines = 30): string {
  return tail(readIfExists(join(target.ctl, 'log')) ?? '', lines);
}
