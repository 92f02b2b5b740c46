// Runs a parsed invocation: calls the library and prints its answer. Presentation only (text or
// JSON, progress, the one-line error); every decision about the dump lives in the library.
import { closeSync, writeFileSync, writeSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { stat } from 'node:fs/promises';
import type { DumpOptions } from '../dump/options.js';
import { TsdumpError } from '../errors.js';
import { ProgressDisplay } from '../progress.js';
import type { Logger } from '../log.js';
import { formatDumpStats, formatSnapshotStats } from './stats.js';
import type { DumpResult, TaskPages } from '../dump/index.js';
import type { Invocation } from './args.js';

export interface Io {
  /** tsdump's version, for what records it (the report's footer). */
  version?: string;
  /** The command line after the program name, for the log's header. */
  argv?: readonly string[];
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown; isTTY?: boolean; columns?: number };
}


/**
 * The dump's log: -o FILE relative to the work dir (default the images dir, created owner-only
 * like -D, and refused like it when others could write there), else warnings and errors on stderr.
 */
async function openCommandLog(o: DumpOptions): Promise<{ log: Logger; made: string | undefined }> {
  // loaded here, not with this module: the log opens its directory through the native core
  const [{ openLog }, { openImagesDir }] = await Promise.all([import('../log.js'), import('../images/dir.js')]);
  const workDir = resolve(o.workDir ?? o.imagesDir);
  const made = o.logFile !== undefined && !isAbsolute(o.logFile) ? openImagesDir(workDir, { create: true }).madeDirs().at(-1) : undefined;
  const log = openLog({
    ...(o.logFile !== undefined ? { file: o.logFile } : {}),
    workDir,
    ...(o.verbosity !== undefined ? { verbosity: o.verbosity } : {}),
    ...(o.logFormat !== undefined ? { format: o.logFormat } : {}),
  });
  return { log, made };
}

function jsonReplacer(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}

/** The --json document of a dump: images dir, tasks, pages, timings (microseconds). */
export function dumpJson(command: 'dump' | 'pre-dump', r: DumpResult): Record<string, unknown> {
  return {
    command,
    imagesDir: r.imagesDir,
    tasks: r.processes,
    pages: {
      scanned: r.counters.pagesScanned,
      written: r.counters.pagesWritten,
      zero: r.counters.pagesZero,
      skippedParent: r.counters.pagesSkippedParent,
      lazy: r.counters.pagesLazy,
    },
    timings: r.timings,
    released: r.released,
    ...(r.snapshot ? { snapshot: r.snapshot } : {}),
  };
}

/** The one-byte "ready" message of criu's --status-fd, then the descriptor is closed. */
function signalReady(fd: number | undefined): void {
  if (fd === undefined) return;
  try {
    writeSync(fd, Buffer.from([0]));
    closeSync(fd);
  } catch (err) {
    throw new TsdumpError('USAGE', `--status-fd ${fd}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
}

export async function run(inv: Invocation, io: Io): Promise<number> {
  switch (inv.command) {
    case 'help':
      io.stdout.write(inv.text);
      return 0;

    case 'complete': {
      const { completions } = await import('./args.js');
      for (const c of await completions(inv.words)) io.stdout.write(`${c}\n`);
      return 0;
    }

    case 'check': {
      // loaded on demand, with the native core: --help and the other commands do not need them
      const { check, formatCheckReport } = await import('../check.js');
      const report = await check({
        all: inv.all,
        ...(inv.feature !== undefined ? { feature: inv.feature } : {}),
        refresh: inv.refresh,
      });
      const text = formatCheckReport(report);
      io.stdout.write(inv.json ? JSON.stringify(report) + '\n' : text);
      if (inv.logFile !== undefined) {
        // -o keeps the report in the log too, as criu check's log does
        const { openLog } = await import('../log.js');
        const log = openLog({ file: inv.logFile, workDir: resolve(inv.workDir ?? '.'), verbosity: inv.verbosity });
        for (const line of text.trimEnd().split('\n')) log.msg(line);
        log.close();
      }
      return report.ok ? 0 : 1;
    }

    case 'show': {
      // loaded on demand: the image schemas are heavy and only show and the dumps need them
      const show = await import('../show.js');
      let isDir: boolean;
      try {
        isDir = (await stat(inv.path)).isDirectory();
      } catch (err) {
        throw new TsdumpError('IMAGE_IO', `${inv.path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
      }
      if (!isDir && inv.view) throw new TsdumpError('USAGE', `show --${inv.view} needs an images directory, not a file`);
      if (isDir && inv.pretty) throw new TsdumpError('USAGE', 'show --pretty applies to an image file, not a directory');
      if (!isDir) {
        const text = await show.showImage(inv.path, { pretty: inv.pretty });
        io.stdout.write(text.endsWith('\n') ? text : text + '\n');
        return 0;
      }
      const shown = await show.showDir(inv.path, { ...(inv.view ? { view: inv.view } : {}), json: inv.json });
      io.stdout.write(shown.output);
      // an unfinished or damaged dump must not pass for a checkpoint: say so, and fail
      if (shown.verdict === 'complete') return 0;
      io.stderr.write(`tsdump: ${inv.path} is ${shown.verdict.toUpperCase()}:\n`);
      for (const p of shown.problems) io.stderr.write(`tsdump:   ${p}\n`);
      return 1;
    }

    case 'report': {
      // loaded on demand, like show
      const { writeReport } = await import('../report/index.js');
      const r = await writeReport(inv.dir, { ...(inv.output !== undefined ? { output: inv.output } : {}), version: io.version ?? 'unknown' });
      if (inv.json) {
        const { html: _html, ...rest } = r;
        io.stdout.write(JSON.stringify({ command: 'report', ...rest }) + '\n');
      } else if (inv.output === undefined) io.stdout.write(r.html);
      if (r.verdict === 'complete') return 0;
      io.stderr.write(`tsdump: ${inv.dir} is ${r.verdict.toUpperCase()} (the report says so too):\n`);
      for (const p of r.problems) io.stderr.write(`tsdump:   ${p}\n`);
      return 1;
    }

    case 'page-server': {
      if (inv.daemon) throw new TsdumpError('UNSUPPORTED', 'option --daemon is not supported by tsdump yet');
      const { runPageServer, exposureWarning, DEFAULT_LISTEN_ADDRESS } = await import('../page-server.js');
      const exposed = exposureWarning(inv.address ?? DEFAULT_LISTEN_ADDRESS, inv.tls);
      if (exposed) io.stderr.write(`tsdump page-server: warning: ${exposed}\n`);
      if (inv.pidfile !== undefined) writeFileSync(inv.pidfile, `${process.pid}\n`, { mode: 0o600 });
      const abort = new AbortController();
      const onSignal = (sig: NodeJS.Signals): void => abort.abort(new TsdumpError('CANCELLED', `interrupted by ${sig}`));
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        const result = await runPageServer({
          imagesDir: inv.imagesDir,
          port: inv.port,
          ...(inv.address !== undefined ? { address: inv.address } : {}),
          ...(inv.prevImagesDir !== undefined ? { prevImagesDir: inv.prevImagesDir } : {}),
          ...(inv.tls ? { tls: inv.tls } : {}),
          ...(inv.idleTimeout !== undefined ? { idleTimeout: inv.idleTimeout } : {}),
          signal: abort.signal,
          onListening: () => signalReady(inv.statusFd),
          onClientDropped: ({ peer, error }) => io.stderr.write(`tsdump page-server: dropped client ${peer}: ${error.message}; waiting for the next one\n`),
        });
        if (inv.json) io.stdout.write(JSON.stringify({ command: inv.command, ...result }, jsonReplacer) + '\n');
        return 0;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    }

    case 'stop-tracking': {
      const { stopTracking } = await import('../dump/stop-tracking.js');
      const { openLog } = await import('../log.js');
      const log = openLog({ ...(inv.logFile !== undefined ? { file: inv.logFile } : {}), workDir: resolve(inv.workDir ?? '.'), verbosity: inv.verbosity });
      try {
        const r = await stopTracking({ pid: inv.pid, imagesDir: inv.imagesDir, log });
        if (inv.json) io.stdout.write(JSON.stringify({ command: inv.command, ...r }) + '\n');
        else io.stdout.write(r.closed.length ? `ended the tracking in ${r.closed.map((c) => `pid ${c.pid} (fd ${c.fd})`).join(', ')}\n` : 'no tracking of that pre-dump is left in any task\n');
        return 0;
      } finally {
        log.close();
      }
    }

    case 'dump':
    case 'pre-dump': {
      // loaded on demand, like show: `check` and `--help` should not pay for the whole flow
      const mod = await import('../dump/index.js');
      const fn = inv.command === 'dump' ? mod.dump : mod.preDump;
      const { log, made } = await openCommandLog(inv.options);
      const { writeLogHeader } = await import('../log.js');
      writeLogHeader(log, { version: io.version ?? 'unknown', argv: io.argv ?? [], options: inv.options, configFiles: inv.configFiles });
      // Ctrl-C, a hang-up or a termination request cancels the dump (the library listens: see
      // dump/cancellation.ts), which releases the tree; after the commit point it finishes.
      const { pageBytes } = await import('../arch/index.js');
      const display = ProgressDisplay.create(io.stderr, { json: inv.json, mode: inv.progress, pageBytes: pageBytes() });
      try {
        log.info(`tsdump ${inv.command} of pid ${inv.options.pid} into ${inv.options.imagesDir}`);
        if (made !== undefined) log.info(`created ${made === resolve(inv.options.imagesDir) ? 'images' : 'work'} dir ${made} (owner-only)`);
        const result = await fn(
          { ...inv.options, log },
          {
            // the library logs each stage itself (dump/stage.ts)
            stage: (name) => display?.update({ stage: name }),
            // without a display nothing listens, and the drain's counter is not polled at all
            ...(display ? { pages: (_written: number, task: TaskPages) => display.update({ pid: task.pid, pagesWritten: task.written, pagesTotal: task.total }) } : {}),
          },
        );
        display?.finish();
        log.info(`Dumping finished successfully`);
        if (inv.json) io.stdout.write(JSON.stringify(dumpJson(inv.command, result), jsonReplacer) + '\n');
        else if (inv.options.displayStats) io.stdout.write(formatDumpStats(result) + (result.snapshot ? formatSnapshotStats(result.snapshot) : ''));
        return 0;
      } catch (err) {
        // the log file keeps the reason too; on stderr the CLI prints it once, so not here
        if (log.file !== undefined) log.error(err instanceof Error ? err.message : String(err));
        throw err;
      } finally {
        log.close();
        display?.finish();
      }
    }
  }
}
