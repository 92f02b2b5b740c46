// A one-line progress display for long dumps: stage, pages written of total, rate. It exists
// only for a person watching a terminal: it draws nothing when the stream is not a TTY (pipes,
// log files, CI) or when --json asked for machine output, and it never goes through the log.

const PAGE_SIZE = 4096;

export interface ProgressUpdate {
  /** Name of the current stage ("freezing", "dumping memory", ...). */
  stage?: string;
  pagesWritten?: number;
  pagesTotal?: number;
}

/** The stream the display draws on; process.stderr fits. */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(chunk: string): unknown;
}

export interface ProgressOptions {
  /** Machine output requested: draw nothing. */
  json?: boolean;
  /** Minimum milliseconds between redraws. */
  intervalMs?: number;
  /** Clock (tests). */
  now?: () => number;
}

function formatRate(bytesPerSec: number): string {
  if (bytesPerSec >= 1024 ** 3) return `${(bytesPerSec / 1024 ** 3).toFixed(1)} GiB/s`;
  if (bytesPerSec >= 1024 ** 2) return `${(bytesPerSec / 1024 ** 2).toFixed(1)} MiB/s`;
  return `${(bytesPerSec / 1024).toFixed(0)} KiB/s`;
}

/** The text of one progress line (no control characters). */
export function renderProgressLine(stage: string, written: number | undefined, total: number | undefined, bytesPerSec: number | undefined): string {
  const parts = [stage];
  if (written !== undefined) {
    const pct = total ? ` (${Math.min(100, Math.floor((written / total) * 100))}%)` : '';
    parts.push(`${written}${total !== undefined ? `/${total}` : ''} pages${pct}`);
  }
  if (bytesPerSec !== undefined && bytesPerSec > 0) parts.push(formatRate(bytesPerSec));
  return parts.join('  ');
}

export class ProgressDisplay {
  private stage = '';
  private written: number | undefined;
  private total: number | undefined;
  private lastDraw = -Infinity;
  private firstPagesAt: { t: number; pages: number } | undefined;
  private drawn = false;
  private readonly now: () => number;
  private readonly interval: number;

  private constructor(
    private readonly stream: ProgressStream,
    opts: ProgressOptions,
  ) {
    this.now = opts.now ?? (() => performance.now());
    this.interval = opts.intervalMs ?? 100;
  }

  /** A display on `stream`, or undefined when nothing should be drawn there. */
  static create(stream: ProgressStream, opts: ProgressOptions = {}): ProgressDisplay | undefined {
    if (opts.json || !stream.isTTY) return undefined;
    return new ProgressDisplay(stream, opts);
  }

  update(u: ProgressUpdate): void {
    const stageChanged = u.stage !== undefined && u.stage !== this.stage;
    if (u.stage !== undefined) this.stage = u.stage;
    if (u.pagesTotal !== undefined) this.total = u.pagesTotal;
    if (u.pagesWritten !== undefined) {
      if (!this.firstPagesAt) this.firstPagesAt = { t: this.now(), pages: u.pagesWritten };
      this.written = u.pagesWritten;
    }
    const t = this.now();
    if (!stageChanged && t - this.lastDraw < this.interval) return;
    this.lastDraw = t;
    this.draw(t);
  }

  private draw(t: number): void {
    let rate: number | undefined;
    if (this.firstPagesAt && this.written !== undefined && t > this.firstPagesAt.t) {
      rate = ((this.written - this.firstPagesAt.pages) * PAGE_SIZE) / ((t - this.firstPagesAt.t) / 1000);
    }
    let line = renderProgressLine(this.stage, this.written, this.total, rate);
    const width = this.stream.columns || 80; // a pty without a size reports 0 columns
    if (line.length > width - 1) line = line.slice(0, Math.max(0, width - 1));
    // carriage return + erase line: the display overwrites itself instead of scrolling
    this.stream.write(`\r\x1b[2K${line}`);
    this.drawn = true;
  }

  /** Erases the line so what follows (errors, results) starts clean. */
  finish(): void {
    if (this.drawn) this.stream.write('\r\x1b[2K');
    this.drawn = false;
  }
}
