// The dump log, with CRIU's verbosity levels: 0 messages only, 1 errors, 2 warnings (default),
// 3 info, 4 debug. Lines carry "(seconds.micros)" since the log was opened, as CRIU's do, so a
// tsdump log reads like a criu log. Writes are synchronous: the log must survive a crash that
// follows the line it explains. The file is created through its directory's descriptor after
// the old log's name is unlinked (src/images/dir.ts), so a link planted there is never followed.
// `--log-format json` writes the same lines as one JSON object each, for log pipelines.
import { closeSync, writeSync } from 'node:fs';
import { arch, machine, release, version } from 'node:os';
import { basename, dirname, isAbsolute, resolve } from 'node:path';
import { TsdumpError } from './errors.js';
import { openImagesDir } from './images/dir.js';

import { DEFAULT_VERBOSITY, LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_LEVEL_NAMES, LOG_MSG, LOG_WARN, type LogLevelName } from './log-levels.js';

export { DEFAULT_VERBOSITY, LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_LEVEL_NAMES, LOG_MSG, LOG_WARN, type LogLevelName };

/**
 * A line's facts in machine form (the JSON format's `fields`; the text format shows the message
 * only). `pid` becomes the JSON line's own pid. Plain values only: they cross to a worker process.
 */
export type LogFields = Readonly<Record<string, string | number | boolean | null>>;

export type LogFormat = 'text' | 'json';

export interface Logger {
  readonly level: number;
  /** The file written, or undefined when logging to stderr. */
  readonly file: string | undefined;
  msg(text: string, fields?: LogFields): void;
  error(text: string, fields?: LogFields): void;
  warn(text: string, fields?: LogFields): void;
  info(text: string, fields?: LogFields): void;
  debug(text: string, fields?: LogFields): void;
  /** The stage later lines belong to (the JSON format's `stage`). */
  setStage?(name: string): void;
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
  /** "text" (CRIU's lines, the default) or "json" (one object per line). */
  format?: LogFormat;
}

/**
 * One line of the JSON format: wall time, seconds since the log was opened (the text format's
 * stamp), level, the task it is about, the stage, the message and its facts.
 */
export function formatJsonLine(elapsedUs: bigint, wall: Date, level: number, stage: string | undefined, text: string, fields?: LogFields): string {
  const { pid, ...rest } = fields ?? {};
  const line = {
    time: wall.toISOString(),
    elapsed: Number(elapsedUs) / 1e6,
    level: LOG_LEVEL_NAMES[level] ?? String(level),
    ...(typeof pid === 'number' ? { pid } : {}),
    ...(stage !== undefined ? { stage } : {}),
    message: text.replace(/\n+$/, ''),
    ...(Object.keys(rest).length ? { fields: rest } : {}),
  };
  return `${JSON.stringify(line)}\n`;
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
  const json = opts.format === 'json';
  let closed = false;
  let stage: string | undefined;
  const write = (lvl: number, text: string, fields?: LogFields): void => {
    if (closed || lvl > level) return;
    const elapsed = (process.hrtime.bigint() - started) / 1000n;
    const line = json
      ? formatJsonLine(elapsed, new Date(), lvl, stage, text, fields)
      : stamped
        ? formatLogLine(elapsed, lvl, text)
        : `${PREFIX[lvl] ?? ''}${text.replace(/\n+$/, '')}\n`;
    try {
      writeSync(fd, line);
    } catch {
      // a log that cannot be written must not turn a good dump into a failed one
    }
  };
  return {
    level,
    file: path,
    msg: (t, f) => write(LOG_MSG, t, f),
    error: (t, f) => write(LOG_ERROR, t, f),
    warn: (t, f) => write(LOG_WARN, t, f),
    info: (t, f) => write(LOG_INFO, t, f),
    debug: (t, f) => write(LOG_DEBUG, t, f),
    setStage: (name) => {
      stage = name;
    },
    close: () => {
      if (closed) return;
      closed = true;
      if (owned) closeSync(fd);
    },
  };
}

/** What the first lines of a log say: enough for a bug report to tell which tsdump ran how, where. */
export interface LogHeader {
  version: string;
  /** The command line, as typed (after the program name). */
  argv: readonly string[];
  /** The options in force, after config files. */
  options: object;
  configFiles?: readonly string[];
}

/**
 * tsdump's version, the kernel, the command line and the options in force. A log file always
 * starts with them (it is what a bug report attaches, whatever its level); on stderr, where a
 * person reads along, they come at -v3 and up, where CRIU prints its version.
 */
export function writeLogHeader(log: Logger, h: LogHeader): void {
  const say = log.file !== undefined ? log.msg : log.info;
  say(`tsdump version ${h.version} (node ${process.version})`, { version: h.version, node: process.version });
  say(`kernel ${release()} ${version()} ${machine()}`, { release: release(), kernelVersion: version(), arch: machine(), nodeArch: arch() });
  say(`command line: tsdump ${h.argv.join(' ')}`, { argv: JSON.stringify(h.argv) });
  const options = JSON.stringify(h.options, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
  say(`options: ${options}`, { options });
  if (h.configFiles?.length) say(`config files: ${h.configFiles.join(', ')}`, { configFiles: h.configFiles.join(',') });
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
