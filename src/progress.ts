// A one-line progress display for long dumps: stage, bytes copied of the task's total, rate and
// time left (the `pages` event of the library, per task for trees). It exists
// only for a person watching a terminal: it draws nothing when the stream is not a TTY (pipes,
// log files, CI) or when --json asked for machine output, and it never goes through the log.
// `--progress json` asks for the same facts as one JSON object per line instead, TTY or not.
import { sizeText } from './size-text.js';
// types and one string function: nothing that needs the native core
import { taskStage } from './dump/stage.js';

export interface ProgressUpdate {
  /** Name of the current stage ("freezing", "dumping memory", ...). */
  stage?: string;
  /** The task being copied: a new pid starts a new count (and rate). */
  pid?: number;
  /** Its pages copied so far, of the total its page scan found. */
  pagesWritten?: number;
  pagesTotal?: number;
}

/** The stream the display draws on; process.stderr fits. */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(chunk: string): unknown;
}

/** auto: the line, on a TTY only; none: nothing; json: JSON lines, wherever the stream goes. */
export type ProgressMode = 'auto' | 'none' | 'json';

export interface ProgressOptions {
  /** Machine output requested (--json): the line is not drawn. */
  json?: boolean;
  mode?: ProgressMode;
  /** Minimum milliseconds between redraws. */
  intervalMs?: number;
  /** Clock (tests). */
  now?: () => number;
  /**
   * The kernel's page size, for bytes and rate (default 4096). Passed in rather than asked of the
   * native core here: `--help` loads this module and must work without one.
   */
  pageBytes?: number;
}

function formatDuration(secs: number): string {
  if (secs < 0.1) return '< 0.1 s';
  if (secs < 60) return `${secs.toFixed(secs < 10 ? 1 : 0)} s`;
  return `${Math.floor(secs / 60)} min ${Math.round(secs % 60)} s`;
}

/**
 * The text of one progress line (no control characters): stage, copied of total, rate, time left.
 * A copy that is not the stage's own task's (the library reports each task's copy in its stage,
 * but an update may name any task) is named on the line. Pages count `pageBytes` bytes each.
 */
export function renderProgressLine(
  stage: string,
  written: number | undefined,
  total: number | undefined,
  bytesPerSec: number | undefined,
  pid?: number,
  pageBytes = 4096,
): string {
  const parts = [stage];
  if (written !== undefined) {
    const pct = total ? ` (${Math.min(100, Math.floor((written / total) * 100))}%)` : '';
    const whose = pid !== undefined && stage !== taskStage(pid) ? `task ${pid}: ` : '';
    parts.push(`${whose}${sizeText(written * pageBytes)}${total !== undefined ? ` of ${sizeText(total * pageBytes)}` : ''}${pct}`);
  }
  if (bytesPerSec !== undefined && bytesPerSec > 0) {
    parts.push(`${sizeText(bytesPerSec)}/s`);
    if (written !== undefined && total !== undefined && total > written) parts.push(`${formatDuration(((total - written) * pageBytes) / bytesPerSec)} left`);
  }
  return parts.join('  ');
}

/** One `--progress json` line: where the dump is, and for a task's copy its bytes, rate and time left. */
export interface ProgressJsonLine {
  /** Seconds since the display was created. */
  time: number;
  stage: string;
  pid?: number;
  bytes?: number;
  totalBytes?: number;
  bytesPerSec?: number;
  secondsLeft?: number;
}

export class ProgressDisplay {
  private stage = '';
  private written: number | undefined;
  private total: number | undefined;
  private pid: number | undefined;
  private lastDraw = -Infinity;
  private firstPagesAt: { t: number; pages: number } | undefined;
  private drawn = false;
  private readonly now: () => number;
  private readonly interval: number;
  private readonly started: number;
  private readonly pageBytes: number;

  private constructor(
    private readonly stream: ProgressStream,
    private readonly lines: boolean,
    opts: ProgressOptions,
  ) {
    this.now = opts.now ?? (() => performance.now());
    this.interval = opts.intervalMs ?? 100;
    this.started = this.now();
    this.pageBytes = opts.pageBytes ?? 4096;
  }

  /** A display on `stream`, or undefined when nothing should be shown there. */
  static create(stream: ProgressStream, opts: ProgressOptions = {}): ProgressDisplay | undefined {
    const mode = opts.mode ?? 'auto';
    if (mode === 'json') return new ProgressDisplay(stream, true, opts);
    if (mode === 'none' || opts.json || !stream.isTTY) return undefined;
    return new ProgressDisplay(stream, false, opts);
  }

  update(u: ProgressUpdate): void {
    const stageChanged = u.stage !== undefined && u.stage !== this.stage;
    // what the last task copied is not the new stage's, unless the stage is that task's own
    if (stageChanged && (this.pid === undefined || u.stage !== taskStage(this.pid))) {
      this.pid = this.written = this.total = this.firstPagesAt = undefined;
    }
    if (u.stage !== undefined) this.stage = u.stage;
    // another task of the tree: its own count, total and rate, shown at once
    const taskChanged = u.pid !== undefined && u.pid !== this.pid;
    if (taskChanged) {
      this.pid = u.pid;
      this.firstPagesAt = undefined;
    }
    if (u.pagesTotal !== undefined) this.total = u.pagesTotal;
    if (u.pagesWritten !== undefined) {
      if (!this.firstPagesAt) this.firstPagesAt = { t: this.now(), pages: u.pagesWritten };
      this.written = u.pagesWritten;
    }
    const t = this.now();
    // a task's last count is always shown: JSON lines end at the total
    const copied = this.written !== undefined && this.written === this.total && u.pagesWritten !== undefined;
    if (!stageChanged && !taskChanged && !copied && t - this.lastDraw < this.interval) return;
    this.lastDraw = t;
    this.draw(t);
  }

  private draw(t: number): void {
    let rate: number | undefined;
    if (this.firstPagesAt && this.written !== undefined && t > this.firstPagesAt.t) {
      rate = ((this.written - this.firstPagesAt.pages) * this.pageBytes) / ((t - this.firstPagesAt.t) / 1000);
    }
    if (this.lines) {
      this.stream.write(`${JSON.stringify(this.jsonLine(t, rate))}\n`);
      return;
    }
    let line = renderProgressLine(this.stage, this.written, this.total, rate, this.pid, this.pageBytes);
    const width = this.stream.columns || 80; // a pty without a size reports 0 columns
    if (line.length > width - 1) line = line.slice(0, Math.max(0, width - 1));
    // carriage return + erase line: the display overwrites itself instead of scrolling
    this.stream.write(`\r\x1b[2K${line}`);
    this.drawn = true;
  }

  private jsonLine(t: number, rate: number | undefined): ProgressJsonLine {
    const line: ProgressJsonLine = { time: Math.round(t - this.started) / 1000, stage: this.stage };
    if (this.pid !== undefined) line.pid = this.pid;
    if (this.written !== undefined) line.bytes = this.written * this.pageBytes;
    if (this.total !== undefined) line.totalBytes = this.total * this.pageBytes;
    if (rate !== undefined && rate > 0) {
      line.bytesPerSec = Math.round(rate);
      // rounded up to 0.1 s: a copy with bytes left never says 0 s left
      if (line.bytes !== undefined && line.totalBytes !== undefined) line.secondsLeft = Math.ceil(((line.totalBytes - line.bytes) / rate) * 10) / 10;
    }
    return line;
  }

  /** Erases the line so what follows (errors, results) starts clean. */
  finish(): void {
    if (this.drawn) this.stream.write('\r\x1b[2K');
    this.drawn = false;
  }
}
