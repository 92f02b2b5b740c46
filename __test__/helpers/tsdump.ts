// Running tsdump as users do: the CLI (dist/cli.js, built by npm install / npm run build:ts) in
// its own process, which is also what keeps the dumped tree from being a child of the tracer.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';
import { critDecodeAll, makeWorkDir } from './criu.js';
import { killTree, startTarget, type Target } from './target.js';

export const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export function runTsdump(args: readonly string[], timeoutMs = 120_000): Promise<CliRun> {
  return new Promise((res) =>
    execFile(process.execPath, [CLI, ...args], { timeout: timeoutMs }, (err, stdout, stderr) =>
      res({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

/** A failed `tsdump dump`, with the stable error code from its --json document. */
export class TsdumpCliError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

/** `tsdump dump -t PID -D DIR --shell-job --json [args]`; throws TsdumpCliError on failure. */
export async function tsdumpDump(pid: number, imagesDir: string, extraArgs: readonly string[] = []): Promise<unknown> {
  const r = await runTsdump(['dump', '-t', String(pid), '-D', imagesDir, '--shell-job', '--json', ...extraArgs]);
  if (r.code !== 0) {
    const code = /"code":\s*"([A-Z_]+)"/.exec(r.stdout)?.[1];
    throw new TsdumpCliError(`tsdump dump exited ${r.code}: ${r.stderr.trim()}`, code);
  }
  return JSON.parse(r.stdout) as unknown;
}

export interface DumpedTarget {
  readonly target: Target;
  /** The test's work directory (the target's CTL and the images are inside). */
  readonly work: string;
  /** The images, WORK/images. */
  readonly dir: string;
  /** Every image as pycriu decodes it (critDecodeAll). */
  readonly images: Map<string, unknown>;
}

/** Starts the C target NAME, dumps it with `tsdump dump -R` (left running, killed in teardown), decodes the images. */
export async function dumpRunningTarget(t: ExecutionContext, name: string): Promise<DumpedTarget> {
  const work = await makeWorkDir(t);
  const target = await startTarget(name, { dir: work });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const dir = join(work, 'images');
  await tsdumpDump(target.pid, dir, ['-R']);
  return { target, work, dir, images: await critDecodeAll(dir) };
}
