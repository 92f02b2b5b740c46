// The `pages` event during the copy. The native drain counts the bytes of each pipe load into a
// counter the session shares with JavaScript (Session.progress, read without waiting for the
// tracer thread); this polls it while the tasks are dumped. A poll rather than a callback from
// the drain: the hot loop (and its splicer thread) never calls into JavaScript, a slow listener
// cannot hold up a frozen tree, and the throttle is the poll's period. Only counts cross over.
import type { DrainProgress } from '../../native/index.js';

/** The fastest the `pages` event fires during a copy (a display throttles its own redraws further). */
export const PAGES_EVENT_MS = 20;

/** The task whose pages are being copied: its pages written so far, of the total its page scan found. */
export interface TaskPages {
  pid: number;
  written: number;
  total: number;
}

/** `written`: pages written so far in the whole run; `task`: the task being copied. */
export type PagesListener = (written: number, task: TaskPages) => void;

export interface PageWatch {
  /** The task whose copy is reported from now on (its stage began): others' readings wait their turn. */
  follow(pid: number): void;
  /**
   * A task's copy is over: its last count, from the reading its visit took as it ended (the next
   * task's drain may have begun by now).
   */
  ended(reading: DrainProgress): void;
  stop(): void;
}

export function watchPages(session: { progress(): DrainProgress }, listener: PagesListener | undefined): PageWatch {
  if (!listener) return { follow: () => {}, ended: () => {}, stop: () => {} };
  let followed = 0;
  let reported = -1;
  let reportedTask = 0;
  // One task at a time, so that `written` never goes back: the next task's drain, begun while
  // this one's images are written, is reported once its own stage follows it.
  const report = (p: DrainProgress): void => {
    // nothing drained yet, another task's reading, or nothing new since the last report
    if (p.pid === 0 || p.pid !== followed || (p.pagesAll === reported && p.pid === reportedTask)) return;
    reported = p.pagesAll;
    reportedTask = p.pid;
    listener(p.pagesAll, { pid: p.pid, written: p.pagesDone, total: p.pagesTotal });
  };
  const timer = setInterval(() => report(session.progress()), PAGES_EVENT_MS);
  // the dump's own work keeps the process alive, never this
  timer.unref();
  return { follow: (pid) => (followed = pid), ended: report, stop: () => clearInterval(timer) };
}
