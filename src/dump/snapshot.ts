// dump --snapshot: the tree is released before its memory is copied. While frozen, each process's
// visit forks a copy-on-write holder of its private memory (crates/core/src/mem/snapshot.rs);
// once the tree runs again, the pages are copied out of the holders into the pages images.
import { TsdumpError } from '../errors.js';
import type { DumpContext } from './context.js';
import type { DumpOptions } from './options.js';

/** What the background copy did (DumpResult.snapshot). */
export interface SnapshotReport {
  /** Processes whose memory was held by a snapshot (the others were copied while frozen). */
  held: number;
  /** Pages copied while the tree was frozen (MADV_DONTFORK/WIPEONFORK ranges, refused snapshots). */
  pagesFrozen: number;
  /** Pages copied after the release. */
  pagesAfterRelease: number;
  /** Microseconds spent copying after the release. */
  copyTime: number;
  /** Memory the snapshots held apart from the tree at the end of the copy (their peak), bytes. */
  extraBytes: number;
}

/** Refuses what --snapshot does not combine with (yet), before anything is touched. */
export function checkSnapshotOptions(o: DumpOptions): void {
  if (!o.snapshot) return;
  if (!o.leaveRunning) {
    throw new TsdumpError(
      'USAGE',
      '--snapshot releases the tree before its memory is copied, so it needs --leave-running (-R): a tree killed or left stopped gains nothing, and what it did after the snapshot would be lost',
    );
  }
  const unsupported = [
    o.pageServer && '--page-server',
    o.prevImagesDir !== undefined && '--prev-images-dir',
    o.trackMem && '--track-mem',
  ].filter((f): f is string => typeof f === 'string');
  if (unsupported.length > 0) throw new TsdumpError('UNSUPPORTED', `--snapshot with ${unsupported.join(', ')} is not supported yet`);
}

/** The snapshot mode a process's memory request carries. */
export function snapshotRequest(o: DumpOptions): { snapshot?: 'fallback' | 'strict' } {
  return o.snapshot ? { snapshot: o.snapshot === 'strict' ? 'strict' : 'fallback' } : {};
}

/**
 * Copies every snapshot into its pages image (the tree runs meanwhile), killing each holder
 * when done. A process that exited meanwhile is still dumped as it was at the snapshot.
 */
export async function copySnapshots(ctx: DumpContext, report: SnapshotReport): Promise<void> {
  const drained = await ctx.call(() => ctx.session.drainSnapshots());
  for (const d of drained) {
    if (d.held) report.held += 1;
    report.pagesFrozen += d.frozenPages;
    report.pagesAfterRelease += d.pages;
    report.copyTime += Math.round(d.drainNs / 1000);
    report.extraBytes += d.extraBytes ?? 0;
    ctx.stats.timings.memwriteTime += Math.round(d.drainNs / 1000);
    if (d.taskExited) ctx.options.log?.warn(`pid ${d.pid} exited during the background copy; its images hold it as it was at the snapshot`);
  }
}
