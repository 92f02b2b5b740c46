// What a dump (or pre-dump) tells its caller: events while it runs, a result when it is done.
import type { DumpCounters, DumpTimings } from './stats.js';
import type { StageEvents } from './stage.js';

export interface DumpEvents extends StageEvents {
  /** Pages written so far, after each task's memory is drained. */
  pages?(written: number): void;
}

export interface DumpResult {
  imagesDir: string;
  /** The dumped processes, root first: pid, parent and threads. */
  processes: { pid: number; ppid: number; threads: number[] }[];
  counters: DumpCounters;
  /** Microseconds. */
  timings: DumpTimings;
  /** What happened to the tree afterwards. */
  released: 'killed' | 'running' | 'stopped';
}
