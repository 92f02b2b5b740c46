// `tsdump pre-dump`: copy a running tree's memory ahead of the dump, freezing it as briefly as
// the mode allows, and start tracking writes so the next (pre-)dump copies only what changed.
// Writes what CRIU's cr_pre_dump_tasks writes: pagemap-PID.img + pages-N.img per task (or sends
// them to a page server), pagemap-shmem-ID.img for shared anonymous memory, stats-dump, and the
// inventory last (with pre_dump_mode); plus tsdump-track.json (incremental.ts) and a `parent`
// link when chained with --prev-images-dir. The tree always runs on afterwards.
//
// Modes, as CRIU's --pre-dump-mode:
// - splice (default): each task's pages are drained while the tree is frozen.
// - read: while frozen only the VMAs and pagemap are scanned and the tracking armed; the pages
//   are read with process_vm_readv after the release, so the freeze no longer grows with the
//   memory. Pages written meanwhile are caught by the tracking (the next dump writes them again);
//   pages unmapped meanwhile are left out of the pagemap (mem/predump.rs).
//
// Shared anonymous memory is copied after the release in both modes, whole: writes to it cannot be
// tracked (a write through another task's mapping, e.g. a child forked after the pre-dump that
// has exited since, leaves no trace in the tracked mappings; see mem/track.rs), so the dump writes
// it whole again and never points at these copies. They make the pre-dump complete, as CRIU's is.
import { native } from '../native.js';
import { TsdumpError, typedErrors } from '../errors.js';
import type { SeizeTreeOptions, Session } from '../../native/index.js';
import { refuseUnactedOptions, type DumpOptions } from './options.js';
import type { DumpEvents, DumpResult } from './result.js';
import { refuseOwnChild, releaseAfterFailure } from './release.js';
import { commitImages, discardImages, prepareImagesDir } from './images-dir.js';
import type { ImagesDir } from '../images/dir.js';
import { openRun, seizeOptions } from './context.js';
import { KobjIds } from './kobj-ids.js';
import { treeOrder } from './tree-order.js';
import { Incremental } from './incremental.js';
import { drainTaskMemory, type MemoryContext } from './task-memory.js';
import { writePagemap, writeShmemPagemap } from './mm-image.js';
import { writeStats } from './write-stats.js';
import { writeInventory } from './write-inventory.js';
import { isOwnChild, runInWorker } from './own-child.js';
import { announceStage } from './stage.js';
import { pageBytesN } from '../arch/index.js';

/** CRIU's inventory pre_dump_mode values. */
const PRE_DUMP_SPLICE = 1;
const PRE_DUMP_READ = 2;


/** A shared anonymous object, through the first mapping seen. */
interface SharedObject {
  pid: number;
  start: bigint;
  end: bigint;
}

export async function preDump(options: DumpOptions, events: DumpEvents = {}): Promise<DumpResult> {
  return typedErrors(async () => {
    refuseUnactedOptions('pre-dump', options);
    // our own child is pre-dumped from a worker process (own-child.ts)
    if (await isOwnChild(options.pid)) return runInWorker('preDump', options, events);
    return preDumpInProcess(options, events);
  });
}

/** The pre-dump itself, traced from this process; `preDump` is the entry point. */
export async function preDumpInProcess(options: DumpOptions, events: DumpEvents = {}): Promise<DumpResult> {
  const stage = (name: string) => announceStage(events, options.log, name);
  const { stats, cancellation, session, call } = openRun(options);
  const { pageServer } = options;
  const readMode = options.preDumpMode === 'read';
  const seize = seizeOptions(options);
  let images: ImagesDir | undefined;
  let succeeded = false;
  try {
    stage('prepare images dir');
    const imagesDir = (images = prepareImagesDir(options));
    session.useImagesDir(imagesDir);
    // CRIU enforces tracking for a pre-dump whatever --track-mem says.
    const incremental = await Incremental.open({
      imagesDir,
      ...(options.prevImagesDir !== undefined ? { prevImagesDir: options.prevImagesDir } : {}),
      arm: true,
      useTracking: true,
      pageServer: !!pageServer,
      log: options.log,
    });
    incremental.linkParent();
    cancellation.throwIfCancelled();

    await refuseOwnChild(options.pid);
    if (pageServer) {
      stage('connect to page server');
      await call(() => session.connectPageServer(pageServer));
    }
    stage('collect pstree');
    const tree = await stats.time('freezingTime', () => call(() => session.seizeTree(options.pid, seize)));
    stats.markFrozen();
    const ctx: MemoryContext = { session, imagesDir, stats, call, nextPagesId: 1, incremental };
    const shared = new Map<bigint, SharedObject>();
    const toRead: { pid: number; id: number }[] = [];
    let rootIds;
    try {
      for (const m of treeOrder(tree)) {
        if (m.kind !== 'live') continue;
        cancellation.throwIfCancelled();
        const pid = m.proc.pid;
        stage(`pre-dump task ${pid}`);
        if (readMode) {
          const opts = await incremental.memoryOptions(pid);
          const p = await stats.time('memdumpTime', () => call(() => session.preparePreDumpRead(pid, opts)));
          toRead.push({ pid, id: p.id });
          await incremental.armed(pid, p.tracking);
          stats.counters.pagesScanned += p.pagesScanned;
          stats.counters.pagesZero += p.pagesZero;
          for (const s of p.shmem) if (!shared.has(s.inode)) shared.set(s.inode, { pid, start: s.start, end: s.end });
        } else {
          const { memory, pagesId } = await drainTaskMemory(ctx, pid, { pageServer });
          // with a page server the server writes the pagemap
          if (!pageServer) await writePagemap(imagesDir, pid, pagesId, memory, []);
          for (const v of memory.vmas) {
            if (v.decision === 'shmem' && v.path.startsWith('/dev/zero') && !shared.has(v.inode)) shared.set(v.inode, { pid, start: v.start, end: v.end });
          }
        }
      }
      const root = await call(() => session.inspectProcess(tree.root));
      rootIds = new KobjIds().idsOf(tree.root, root.namespaces);
    } catch (err) {
      for (const r of toRead) native.discardPreDumpRead(r.id);
      const left = await incremental.disarm(session);
      if (left.length && err instanceof Error) err.message += ` (and ending the tracking failed: ${left.join('; ')})`;
      await releaseAfterFailure(session, err);
      throw err;
    }
    stage('release');
    await call(() => session.releaseTree({ mode: 'resume' }));
    stats.markReleased();

    try {
      while (toRead.length) {
        const { pid, id } = toRead.shift()!;
        stage(`read task ${pid}`);
        const pagesId = pageServer ? 0 : ctx.nextPagesId++;
        const r = await stats.time('memdumpTime', () => call(() => session.readPreDump(id, { pagesId, pageServer })));
        stats.counters.pagesWritten += r.pagesWritten;
        stats.counters.pagesSkippedParent += r.pagesInParent;
        if (r.pagesLost) options.log?.info(`pid ${pid}: ${r.pagesLost} pages unmapped since the scan, left out`);
        if (r.gone) {
          options.log?.info(`pid ${pid}: exited during the read; nothing of it is kept`);
          incremental.forget(pid);
        } else {
          incremental.covered(pid, r.entries);
        }
        if (!pageServer) await writePagemap(imagesDir, pid, pagesId, r, []);
        events.pages?.(stats.counters.pagesWritten, { pid, written: r.pagesWritten, total: r.pagesWritten });
      }
      for (const [inode, obj] of shared) {
        stage(`pre-dump shared memory ${inode}`);
        await preDumpShared(ctx, obj, pageServer, options);
      }
      if (pageServer) {
        stage('close page server');
        // the server answers CLOSE once its images are complete on disk
        await call(() => session.closePageServer());
      }
      stats.finish();
      await writeStats(imagesDir, stats);
      await incremental.writeTrackFile();
      stage('write inventory');
      await writeInventory(imagesDir, { rootIds, preDumpMode: readMode ? PRE_DUMP_READ : PRE_DUMP_SPLICE });
      cancellation.commit();
      commitImages(imagesDir, options.log);
    } catch (err) {
      // no tracking without the pre-dump that would let a later run use (and end) it
      for (const r of toRead) native.discardPreDumpRead(r.id);
      const left = await endTrackingReleased(session, options.pid, seize, incremental);
      if (left.length && err instanceof Error) err.message += ` (and ending the tracking failed: ${left.join('; ')})`;
      throw err;
    }
    succeeded = true;
    return {
      imagesDir: imagesDir.path,
      processes: tree.processes.map((p) => ({ pid: p.pid, ppid: p.ppid, threads: p.threads.map((t) => t.tid) })),
      counters: stats.counters,
      timings: stats.timings,
      released: 'running',
    };
  } finally {
    session.close();
    cancellation.dispose();
    if (images && !succeeded) discardImages(images, options.log);
  }
}

/** A pre-dump's copy of one shared anonymous object (after the release, see the top). */
async function preDumpShared(ctx: MemoryContext, obj: SharedObject, pageServer: DumpOptions['pageServer'], options: DumpOptions): Promise<void> {
  const { session, imagesDir, stats } = ctx;
  try {
    if (pageServer) {
      const s = await ctx.call(() => session.sendShmemToPageServer(obj.pid, { start: obj.start, end: obj.end, ...pageServer }));
      stats.counters.shpagesWritten += s.pagesWritten;
    } else {
      const pagesId = ctx.nextPagesId++;
      const s = await ctx.call(() => session.preDumpShmem(obj.pid, { pagesId, start: obj.start, end: obj.end }));
      await writeShmemPagemap(imagesDir, s, pagesId);
      stats.counters.shpagesWritten += s.pagesWritten;
    }
    stats.counters.shpagesScanned += Number((obj.end - obj.start) / pageBytesN());
  } catch (err) {
    // unmapped (or its task gone) since the scan: the dump writes shared memory whole anyway
    if (!(err instanceof TsdumpError && err.code === 'ESRCH_TARGET')) throw err;
    options.log?.info(`pid ${obj.pid}: shared memory at ${obj.start.toString(16)} is gone: not pre-dumped`);
  }
}

/**
 * A read-mode pre-dump that fails after the release: the tasks keep the tracking armed in the
 * freeze. Seizes the tree again to close those userfaultfds, and releases it. Returns failures.
 */
async function endTrackingReleased(
  session: Session,
  pid: number,
  seize: SeizeTreeOptions,
  incremental: Incremental,
): Promise<string[]> {
  if (!incremental.hasArmed()) return [];
  try {
    await session.seizeTree(pid, seize);
  } catch (err) {
    return [`seizing the tree again: ${err instanceof Error ? err.message : String(err)}`];
  }
  const left = await incremental.disarm(session);
  try {
    await session.releaseTree({ mode: 'resume' });
  } catch (err) {
    left.push(`releasing the tree: ${err instanceof Error ? err.message : String(err)}`);
  }
  return left;
}
