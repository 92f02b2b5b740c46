// What a dump (or pre-dump) tells its caller: events while it runs, a result when it is done.
import type { DumpCounters, DumpTimings } from './stats.js';
import type { StageEvents } from './stage.js';
import type { TaskPages } from './page-progress.js';
import type { SnapshotReport } from './snapshot.js';

export interface DumpEvents extends StageEvents {
  /**
   * Pages written so far in this dump, during each task's copy (at most every PAGES_EVENT_MS, as
   * pipe loads land) and when it ends; `task`: the task being copied, its pages written of the
   * total its page scan found (page-progress.ts). Shared memory objects are not counted.
   */
  pages?(written: number, task: TaskPages): void;
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
  /** --snapshot: what the snapshots did. */
  snapshot?: SnapshotReport;
}
