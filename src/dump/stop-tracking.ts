// `tsdump stop-tracking -t PID -D DIR`: ends the memory tracking a (pre-)dump into DIR left in the
// tree (the userfaultfds of uffd-wp tracking, see incremental.ts) without dumping anything: the
// tree is seized only if one of them is still in place, each is closed from inside its task, and
// the tree is released as it was. DIR is only read.
import { resolve } from 'node:path';
import type { Logger } from '../log.js';
import { TsdumpError, typedErrors } from '../errors.js';
import { openRun, seizeOptions } from './context.js';
import { refuseOwnChild, releaseAfterFailure } from './release.js';
import { trackingLeftIn } from './incremental.js';

export interface StopTrackingOptions {
  /** Root of the tracked tree. */
  pid: number;
  /** The (pre-)dump that armed the tracking (its tsdump-track.json says where). */
  imagesDir: string;
  signal?: AbortSignal;
  log?: Logger;
}

export interface StopTrackingResult {
  /** The userfaultfds closed, by task. */
  closed: { pid: number; fd: number }[];
}

export function stopTracking(options: StopTrackingOptions): Promise<StopTrackingResult> {
  return typedErrors(() => stopTrackingInProcess(options));
}

async function stopTrackingInProcess(options: StopTrackingOptions): Promise<StopTrackingResult> {
  const dir = resolve(options.imagesDir);
  const left = await trackingLeftIn(dir);
  if (left.length === 0) {
    options.log?.info(`no tracking of ${dir} is left in any task`);
    return { closed: [] };
  }
  await refuseOwnChild(options.pid);
  const { cancellation, session, call } = openRun(options);
  try {
    const tree = await call(() => session.seizeTree(options.pid, seizeOptions({})));
    const closed: { pid: number; fd: number }[] = [];
    try {
      for (const t of left) {
        if (!tree.processes.some((p) => p.pid === t.pid)) {
          throw new TsdumpError('REFUSED_TARGET', `pid ${t.pid}, tracked by ${dir}, is not in the tree of pid ${options.pid}; give the root the (pre-)dump was taken of`);
        }
        if (await call(() => session.dropTracking(t.pid, t.fd))) closed.push(t);
        options.log?.info(`pid ${t.pid}: closed the tracking userfaultfd ${t.fd}`);
      }
    } catch (err) {
      await releaseAfterFailure(session, err);
      throw err;
    }
    await call(() => session.releaseTree({ mode: 'resume' }));
    return { closed };
  } finally {
    session.close();
    cancellation.dispose();
  }
}
