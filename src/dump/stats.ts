// Timings and counters of one dump, as CRIU's stats-dump reports them (microseconds, pages).

export interface DumpCounters {
  pagesScanned: number;
  pagesSkippedParent: number;
  pagesWritten: number;
  pagesZero: number;
  pagesLazy: number;
  pagePipes: number;
  pagePipeBufs: number;
  shpagesScanned: number;
  shpagesSkippedParent: number;
  shpagesWritten: number;
}

export interface DumpTimings {
  /** From the first seize to the whole tree stopped. */
  freezingTime: number;
  /** From the tree stopped to released or killed. */
  frozenTime: number;
  /** Collecting and draining memory. */
  memdumpTime: number;
  /** Writing memory to the images. */
  memwriteTime: number;
  /** The whole dump, wall clock. */
  totalTime: number;
}

const nowUs = (): number => Number(process.hrtime.bigint() / 1000n);

export class DumpStats {
  readonly counters: DumpCounters = {
    pagesScanned: 0,
    pagesSkippedParent: 0,
    pagesWritten: 0,
    pagesZero: 0,
    pagesLazy: 0,
    pagePipes: 0,
    pagePipeBufs: 0,
    shpagesScanned: 0,
    shpagesSkippedParent: 0,
    shpagesWritten: 0,
  };
  readonly timings: DumpTimings = { freezingTime: 0, frozenTime: 0, memdumpTime: 0, memwriteTime: 0, totalTime: 0 };
  private readonly started = nowUs();
  private frozenAt = 0;

  /** Times `fn` into the timing `name` (accumulating). */
  async time<T>(name: keyof DumpTimings, fn: () => Promise<T>): Promise<T> {
    const t0 = nowUs();
    try {
      return await fn();
    } finally {
      this.timings[name] += nowUs() - t0;
    }
  }

  markFrozen(): void {
    this.frozenAt = nowUs();
  }

  markReleased(): void {
    if (this.frozenAt) this.timings.frozenTime = nowUs() - this.frozenAt;
  }

  finish(): void {
    this.timings.totalTime = nowUs() - this.started;
  }
}
