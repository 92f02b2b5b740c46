// `tsdump pre-dump`: copy a running tree's memory ahead of the dump, freezing it only for the
// copy, and start tracking writes so the next (pre-)dump copies only what changed. Writes what
// CRIU's cr_pre_dump_tasks writes: pagemap-PID.img + pages-N.img per task, stats-dump, and the
// inventory last (with pre_dump_mode); plus tsdump-track.json (incremental.ts) and a `parent`
// link when chained with --prev-images-dir. The tree always runs on afterwards.
//
// Shared anonymous memory is not pre-dumped: the dump writes it whole.
import { native } from '../native.js';
import type { DumpOptions } from './options.js';
import type { DumpEvents, DumpResult } from './index.js';
import { refuseOwnChild, releaseAfterFailure } from './index.js';
import { prepareImagesDir } from './images-dir.js';
import { Cancellation } from './cancellation.js';
import { nativeCaller } from './context.js';
import { DumpStats } from './stats.js';
import { KobjIds } from './kobj-ids.js';
import { treeOrder } from './tree-order.js';
import { Incremental } from './incremental.js';
import { dumpTaskMemory, type MemoryContext } from './task-memory.js';
import { writeStats } from './write-stats.js';
import { writeInventory } from './write-inventory.js';

/** CRIU's inventory pre_dump_mode values. */
const PRE_DUMP_SPLICE = 1;
const PRE_DUMP_READ = 2;

export async function preDump(options: DumpOptions, events: DumpEvents = {}): Promise<DumpResult> {
  const stage = (name: string) => events.stage?.(name);
  const stats = new DumpStats();
  const cancellation = new Cancellation(options.signal);
  const session = new native.Session();
  cancellation.onCancel(() => session.interrupt());
  const call = nativeCaller(cancellation);
  try {
    stage('prepare images dir');
    const imagesDir = await prepareImagesDir(options.imagesDir);
    // CRIU enforces tracking for a pre-dump whatever --track-mem says.
    const incremental = await Incremental.open({
      imagesDir,
      ...(options.prevImagesDir !== undefined ? { prevImagesDir: options.prevImagesDir } : {}),
      arm: true,
      useTracking: true,
      log: options.log,
    });
    await incremental.linkParent();
    cancellation.throwIfCancelled();

    await refuseOwnChild(options.pid);
    stage('collect pstree');
    const tree = await stats.time('freezingTime', () =>
      call(() =>
        session.seizeTree(options.pid, {
          ...(options.timeout ? { timeoutMs: options.timeout * 1000 } : {}),
          ...(options.freezeCgroup ? { freezeCgroup: options.freezeCgroup } : {}),
        }),
      ),
    );
    stats.markFrozen();
    let rootIds;
    try {
      const ctx: MemoryContext = {
        session,
        imagesDir,
        stats,
        call,
        memoryMode: options.preDumpMode === 'read' ? 'read' : 'vmsplice',
        nextPagesId: 1,
        incremental,
      };
      for (const m of treeOrder(tree)) {
        if (m.kind !== 'live') continue;
        cancellation.throwIfCancelled();
        stage(`pre-dump task ${m.proc.pid}`);
        await dumpTaskMemory(ctx, m.proc.pid);
      }
      const root = await call(() => session.inspectProcess(tree.root));
      rootIds = new KobjIds().idsOf(tree.root, root.namespaces);
    } catch (err) {
      const left = await incremental.disarm(session);
      if (left.length && err instanceof Error) err.message += ` (and ending the tracking failed: ${left.join('; ')})`;
      await releaseAfterFailure(session, err);
      throw err;
    }
    stage('release');
    await call(() => session.releaseTree({ mode: 'resume' }));
    stats.markReleased();

    stats.finish();
    await writeStats(imagesDir, stats);
    await incremental.writeTrackFile();
    stage('write inventory');
    await writeInventory(imagesDir, { rootIds, preDumpMode: options.preDumpMode === 'read' ? PRE_DUMP_READ : PRE_DUMP_SPLICE });
    return {
      imagesDir,
      processes: tree.processes.map((p) => ({ pid: p.pid, ppid: p.ppid, threads: p.threads.map((t) => t.tid) })),
      counters: stats.counters,
      timings: stats.timings,
      released: 'running',
    };
  } finally {
    session.close();
    cancellation.dispose();
  }
}
