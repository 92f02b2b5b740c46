// The dump log, with CRIU's verbosity levels: 0 messages only, 1 errors, 2 warnings (default),
// 3 info, 4 debug. Lines carry "(seconds.micros)" since the log was opened, as CRIU's do, so a
// tsdump log reads like a criu log. Writes are synchronous: the log must survive a crash that
// follows the line it explains. The file is created through its directory's descriptor after
// the old log's name is unlinked (src/images/dir.ts), so a link planted there is never followed.
import { closeSync, writeSync } from 'node:fs';
import { basename, dirname, isAbsolute, resolve } from 'node:path';
import { TsdumpError } from './errors.js';
import { openImagesDir } from './images/dir.js';

import { DEFAULT_VERBOSITY, LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_MSG, LOG_WARN } from './log-levels.js';

export { DEFAULT_VERBOSITY, LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_MSG, LOG_WARN };

export interface Logger {
  readonly level: number;
  /** The file written, or undefined when logging to stderr. */
  readonly file: string | undefined;
  msg(text: string): void;
  error(text: string): void;
  warn(text: string): void;
  info(text: string): void;
  debug(text: string): void;
  close(): void;
}

export interface LogOptions {
  /** Log file (-o); relative paths are taken from workDir. Without it, stderr. */
  file?: string;
  /** Directory relative log files live in (-W, else the images dir, else cwd). */
  workDir?: string;
  /** 0..4 (-v); values above 4 act as 4. */
  verbosity?: number;
  /** Where stderr-logging goes (tests). */
  stderrFd?: number;
}

const PREFIX: Record<number, string> = { 0: '', 1: 'Error: ', 2: 'Warn: ', 3: '', 4: '' };

/** Formats one line the CRIU way: "(SS.UUUUUU) Error: text". */
export function formatLogLine(elapsedUs: bigint, level: number, text: string): string {
  const secs = elapsedUs / 1_000_000n;
  const micros = elapsedUs % 1_000_000n;
  const stamp = `(${secs.toString().padStart(2, '0')}.${micros.toString().padStart(6, '0')}) `;
  return `${stamp}${PREFIX[level] ?? ''}${text.replace(/\n+$/, '')}\n`;
}

export function openLog(opts: LogOptions = {}): Logger {
  const level = Math.max(0, Math.min(LOG_DEBUG, Math.trunc(opts.verbosity ?? DEFAULT_VERBOSITY)));
  const started = process.hrtime.bigint();
  let fd: number;
  let path: string | undefined;
  let owned = false;
  if (opts.file !== undefined && opts.file !== '-') {
    path = isAbsolute(opts.file) ? opts.file : resolve(opts.workDir ?? '.', opts.file);
    // No directories are created (criu creates none either): the caller prepares the work dir.
    try {
      fd = openImagesDir(dirname(path), { shared: true }).createFileReplacing(basename(path));
    } catch (err) {
      throw new TsdumpError('IMAGE_IO', `log file ${path}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    owned = true;
  } else {
    fd = opts.stderrFd ?? 2;
  }
  // On a terminal CRIU leaves timestamps to the verbose levels; files always get them.
  const stamped = owned || level >= LOG_INFO;
  let closed = false;
  const write = (lvl: number, text: string): void => {
    if (closed || lvl > level) return;
    const elapsed = (process.hrtime.bigint() - started) / 1000n;
    const line = stamped ? formatLogLine(elapsed, lvl, text) : `${PREFIX[lvl] ?? ''}${text.replace(/\n+$/, '')}\n`;
    try {
      writeSync(fd, line);
    } catch {
      // a log that cannot be written must not turn a good dump into a failed one
    }
  };
  return {
    level,
    file: path,
    msg: (t) => write(LOG_MSG, t),
    error: (t) => write(LOG_ERROR, t),
    warn: (t) => write(LOG_WARN, t),
    info: (t) => write(LOG_INFO, t),
    debug: (t) => write(LOG_DEBUG, t),
    close: () => {
      if (closed) return;
      closed = true;
      if (owned) closeSync(fd);
    },
  };
}

/** A logger that drops everything (library calls without a log). */
export const nullLogger: Logger = {
  level: -1,
  file: undefined,
  msg: () => {},
  error: () => {},
  warn: () => {},
  info: () => {},
  debug: () => {},
  close: () => {},
};
