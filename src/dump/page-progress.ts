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
  /** Reports what is new now (a task's copy just ended). */
  poll(): void;
  stop(): void;
}

export function watchPages(session: { progress(): DrainProgress }, listener: PagesListener | undefined): PageWatch {
  if (!listener) return { poll: () => {}, stop: () => {} };
  let reported = -1;
  let reportedTask = 0;
  const poll = (): void => {
    const p = session.progress();
    // nothing drained yet, or nothing new since the last report
    if (p.pid === 0 || (p.pagesAll === reported && p.pid === reportedTask)) return;
    reported = p.pagesAll;
    reportedTask = p.pid;
    listener(p.pagesAll, { pid: p.pid, written: p.pagesDone, total: p.pagesTotal });
  };
  const timer = setInterval(poll, PAGES_EVENT_MS);
  // the dump's own work keeps the process alive, never this
  timer.unref();
  return { poll, stop: () => clearInterval(timer) };
}
