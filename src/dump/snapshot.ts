// dump --snapshot: the tree is released before its memory is copied. While frozen, each process's
// visit forks a copy-on-write holder of its private memory (crates/core/src/mem/snapshot.rs);
// once the tree runs again, the holders' pages are scanned and copied into the pages images, and
// only then is each process's pagemap image written (and its mm image, when the holder tells the
// mappings' VmFlags: crates/core/src/collect.rs).
import type { MappingFlagsInfo } from '../../native/index.js';
import { pageBytes } from '../arch/index.js';
import { TsdumpError } from '../errors.js';
import { writeImage } from '../images/index.js';
import { mm_entrySchema } from '../images/gen/mm_pb.js';
import type { DumpContext } from './context.js';
import { logMemory } from './log-facts.js';
import { setVmFlags, writePagemap, type MmFields, type VmaFields } from './mm-image.js';
import { countMemory } from './task-memory.js';
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

/** --snapshot's share of a dump's context. */
export interface SnapshotState {
  readonly report: SnapshotReport;
  /**
   * By pid, what a process held by a snapshot needs for its images written after the copy: its
   * pages image's id and its mm image, itself to be written then when its VmFlags come from the
   * snapshot (`mmWaits`), and whose mappings give the pagemap its lazy flags.
   */
  readonly waiting: Map<number, { pagesId: number; mm: MmFields; mmWaits: boolean }>;
}

export function snapshotState(): SnapshotState {
  return { report: { held: 0, pagesFrozen: 0, pagesAfterRelease: 0, copyTime: 0, extraBytes: 0 }, waiting: new Map() };
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
}

/** The snapshot mode a process's memory request carries. */
export function snapshotRequest(o: DumpOptions): { snapshot?: 'fallback' | 'strict' } {
  return o.snapshot ? { snapshot: o.snapshot === 'strict' ? 'strict' : 'fallback' } : {};
}

/**
 * Scans and copies every snapshot into its pages image (the tree runs meanwhile), killing each
 * holder when done, then writes the pagemap images. A process that exited meanwhile is still
 * dumped as it was at the snapshot.
 */
export async function copySnapshots(ctx: DumpContext, state: SnapshotState): Promise<void> {
  const { report } = state;
  const drained = await ctx.call(() => ctx.session.drainSnapshots());
  for (const d of drained) {
    const waiting = state.waiting.get(d.pid);
    if (!waiting) throw new TsdumpError('INTERNAL', `pid ${d.pid}: a snapshot was copied for a process whose images were not written`);
    const { mm } = waiting;
    if (waiting.mmWaits) {
      applyToldVmFlags(d.pid, mm.vmas, d.vmFlags ?? []);
      await writeImage(ctx.imagesDir, `mm-${d.pid}.img`, mm_entrySchema, [mm]);
      ctx.options.log?.debug(`pid ${d.pid}: the VmFlags of its ${mm.vmas.length} mappings told by its snapshot after the release`, {
        pid: d.pid,
        event: 'vm-flags-after-release',
      });
    }
    // with a page server the pagemap went over the wire with the pages (the server writes it)
    if (!ctx.options.pageServer) await writePagemap(ctx.imagesDir, d.pid, waiting.pagesId, d, mm.vmas);
    if (d.held) report.held += 1;
    report.pagesFrozen += d.frozenPages;
    report.pagesAfterRelease += d.pages;
    report.copyTime += Math.round((d.drainNs - d.scanNs) / 1000);
    report.extraBytes += d.extraBytes ?? 0;
    // counted and logged as a drain while frozen is (its PE_PARENT pages were, at the visit)
    const drain = {
      counts: d.counts,
      pagesInParent: 0,
      vmspliceCalls: 0,
      bytesWritten: d.counts.written * pageBytes(),
      timings: { scanNs: d.scanNs, drainNs: d.drainNs - d.scanNs, totalNs: d.drainNs, vmspliceNs: 0, spliceNs: 0 },
    };
    countMemory(ctx.stats, drain);
    logMemory(ctx.options.log, d.pid, drain);
    if (d.taskExited) ctx.options.log?.warn(`pid ${d.pid} exited during the background copy; its images hold it as it was at the snapshot`);
  }
}

/** The VmFlags the snapshot told (sorted mappings) into the mm image's mappings (sorted). */
function applyToldVmFlags(pid: number, vmas: VmaFields[], told: readonly MappingFlagsInfo[]): void {
  let i = 0;
  for (const vma of vmas) {
    while (i < told.length && told[i]!.end <= vma.start) i++;
    const m = told[i];
    if (!m || m.start > vma.start) throw new TsdumpError('INTERNAL', `pid ${pid}: its snapshot told no VmFlags for the mapping at ${vma.start.toString(16)}`);
    setVmFlags(vma, m.vmFlags);
  }
}
