// The reference CRIU (4.1.1 under /opt/criu-ref) as the tests use it: dump, restore and crit,
// each keeping its verbose log next to the images and quoting it when it fails, plus the
// per-test work directory that is removed only when the test passed.
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';

export const CRIU = process.env.TSDUMP_CRIU ?? '/opt/criu-ref/bin/criu';
export const CRIT = process.env.TSDUMP_CRIT ?? '/opt/criu-ref/bin/crit';

export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to completion, collecting its output (never throws for a non-zero exit). */
export function run(
  cmd: string,
  args: readonly string[],
  opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, [...args], { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
  });
}

/** A failed CRIU run; the message quotes the log's errors and tail. */
export class CriuError extends Error {
  constructor(
    readonly action: string,
    readonly logPath: string,
    readonly log: string,
    readonly result: RunResult,
  ) {
    super(`criu ${action} failed (exit ${result.code ?? result.signal}); log ${logPath}\n${summarizeLog(log)}\n${result.stderr}`);
    this.name = 'CriuError';
  }
}

// Logged by every CRIU run here and harmless: without CAP_SYS_RESOURCE criu cannot raise its own
// RLIMIT_NOFILE and carries on with the current one.
const HARMLESS = /rlimit: Can't setup RLIMIT_NOFILE for self/;

/** Error/Warn lines of a CRIU log, then its last lines. */
export function summarizeLog(log: string, tailLines = 25): string {
  const lines = log.split('\n');
  const errors = lines.filter((l) => /\b(Error|Warn)\b/.test(l) && !HARMLESS.test(l)).slice(0, 20);
  return [...errors, '--- log tail ---', ...lines.slice(-tailLines)].join('\n');
}

/** The first meaningful "Error (file:line): text" of a CRIU log, for reports. */
export function firstCriuError(log: string): string | undefined {
  return log
    .split('\n')
    .find((l) => /\bError \(/.test(l) && !HARMLESS.test(l))
    ?.replace(/^\([\d.]+\)\s*/, '');
}

async function runCriu(action: string, args: readonly string[], imagesDir: string, logName: string): Promise<string> {
  const result = await run(CRIU, [...args, '-o', logName, '-v4']);
  const logPath = join(imagesDir, logName);
  const log = await readFile(logPath, 'utf8').catch(() => '');
  if (result.code !== 0) throw new CriuError(action, logPath, log, result);
  return log;
}

/**
 * `criu dump -t PID -D DIR --shell-job` (+ extraArgs). DIR is created owner-only. The log is
 * DIR/dump.log. Returns the log; throws CriuError on failure.
 */
export async function criuDump(pid: number, imagesDir: string, extraArgs: readonly string[] = []): Promise<string> {
  await mkdir(imagesDir, { recursive: true, mode: 0o700 });
  return runCriu('dump', ['dump', '-t', String(pid), '-D', imagesDir, '--shell-job', ...extraArgs], imagesDir, 'dump.log');
}

/**
 * `criu restore -D DIR --shell-job -d` (+ extraArgs): criu exits once the tree runs; the tree is
 * then an orphan, reaped by the subreaper the tests run under. Log: DIR/restore.log.
 */
export async function criuRestore(imagesDir: string, extraArgs: readonly string[] = []): Promise<string> {
  return runCriu('restore', ['restore', '-D', imagesDir, '--shell-job', '-d', ...extraArgs], imagesDir, 'restore.log');
}

/** `crit decode -i FILE` → the parsed JSON. Throws with crit's stderr on failure. */
export async function critDecode(file: string): Promise<unknown> {
  const r = await run(CRIT, ['decode', '-i', file]);
  if (r.code !== 0) throw new Error(`crit decode ${file} failed (exit ${r.code}): ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as unknown;
}

/** The pycriu package the reference crit runs on (crit is `python3 -m crit` over it). */
export const PYCRIU_PATH = process.env.TSDUMP_PYCRIU_PATH ?? '/opt/criu-ref/root/usr/lib/python3/dist-packages';

// Decodes each named image with pycriu.images.load — the function `crit decode` calls — in one
// interpreter, because a crit process per image costs ~0.4 s. Prints {name: image | {error}}.
const DECODE_MANY = `
import json, sys
from pycriu import images
out = {}
for path in sys.argv[1:]:
    name = path.rsplit('/', 1)[-1]
    try:
        with open(path, 'rb') as f:
            out[name] = images.load(f)
    except Exception as e:
        out[name] = {'__decode_error__': '%s: %s' % (type(e).__name__, e)}
json.dump(out, sys.stdout)
`;

/**
 * Decodes every *.img in dir as crit would (pages-*.img are raw page data and are skipped).
 * Throws naming every image that failed to decode.
 */
export async function critDecodeAll(dir: string): Promise<Map<string, unknown>> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.img') && !f.startsWith('pages-')).sort();
  const r = await run('/usr/bin/python3', ['-c', DECODE_MANY, ...files.map((f) => join(dir, f))], {
    env: { ...process.env, PYTHONPATH: PYCRIU_PATH },
  });
  if (r.code !== 0) throw new Error(`decoding ${dir} failed (exit ${r.code}): ${r.stderr.trim()}`);
  const decoded = JSON.parse(r.stdout) as Record<string, unknown>;
  const failures = Object.entries(decoded)
    .filter(([, v]) => typeof v === 'object' && v !== null && '__decode_error__' in v)
    .map(([k, v]) => `${k}: ${String((v as Record<string, unknown>).__decode_error__)}`);
  if (failures.length > 0) throw new Error(`images that do not decode in ${dir}:\n${failures.join('\n')}`);
  return new Map(Object.entries(decoded));
}

/** The entries of one image of a critDecodeAll() result ([] when the image is absent). */
export function imageEntries(images: Map<string, unknown>, file: string): Record<string, unknown>[] {
  return (images.get(file) as { entries?: Record<string, unknown>[] } | undefined)?.entries ?? [];
}

/**
 * A fresh owner-only temporary directory for one test. Removed in teardown if the test passed;
 * kept (and its path logged) if it failed, so the images and logs can be inspected. Teardowns
 * run last-registered-first, so register this before anything that kills processes.
 */
export async function makeWorkDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'tsdump-test-'));
  t.teardown(async () => {
    if (t.passed) await rm(dir, { recursive: true, force: true });
    else t.log(`kept for inspection: ${dir}`);
  });
  return dir;
}
