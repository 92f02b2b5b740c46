// Dumping one process of a seized tree: everything the kernel and the task itself know about it,
// turned into core-*, mm-, pagemap-, pages-, fdinfo-, fs- and ids- images.
import { stat } from 'node:fs/promises';
import { create } from '@bufbuild/protobuf';
import { writeImage } from '../images/index.js';
import { core_entrySchema, task_kobj_ids_entrySchema, type task_kobj_ids_entry } from '../images/gen/core_pb.js';
import { mm_entrySchema } from '../images/gen/mm_pb.js';
import { fs_entrySchema } from '../images/gen/fs_pb.js';
import { fdinfo_entrySchema } from '../images/gen/fdinfo_pb.js';
import type { ProcessInspection, SeizedProcessInfo, TaskFactsInfo } from '../../native/index.js';
import { leaderCore, threadCore, type ThreadFacts } from './core-image.js';
import { buildMm, writePagemap, writeShmemPagemap } from './mm-image.js';
import type { DumpContext } from './context.js';
import { memoryRequest, recordMemory } from './task-memory.js';
import { dumpMemfdInodes } from './memfd-inodes.js';
import { isMemfdFd, isMemfdVma } from './fds/memfd.js';
import { logFd, logMemory, logVmas } from './log-facts.js';
import { snapshotRequest } from './snapshot.js';
import { pageBytesN } from '../arch/index.js';

export interface DumpedTask {
  pid: number;
  ids: task_kobj_ids_entry;
  /** What the inspector found (later stages: file locks). */
  proc: ProcessInspection;
}

/** What one native visit of a task brought back (visitTask), waiting for its images. */
export interface TaskVisit {
  facts: TaskFactsInfo;
  /** The pages image its memory went to (0 with a page server). */
  pagesId: number;
}

/** What a visit uses of the dump's context: the first one starts before the context is complete. */
export type VisitContext = Pick<DumpContext, 'options' | 'session' | 'imagesDir' | 'stats' | 'call' | 'plugins' | 'incremental' | 'snapshot' | 'nextPagesId'>;

/**
 * The native visit of one process: procfs, thread states, the parasite's answers and the page
 * drain in one call on the tracer thread. It may run while the previous task's images are
 * written (see `nextMayStart`), the first one while the stages before the tasks run.
 */
export async function visitTask(ctx: VisitContext, task: SeizedProcessInfo): Promise<TaskVisit> {
  const { pid } = task;
  // the pages image's id is taken before anything is awaited: ids go in tree order
  const request = memoryRequest(ctx, pid, { pageServer: ctx.options.pageServer });
  const [, { pagesId, options }] = await Promise.all([ctx.plugins.run('checkpointDevices', { pid }), request]);
  const tids = task.threads.map((t) => t.tid);
  const facts = await ctx.call(() => ctx.session.dumpTask(pid, { tids, memory: { ...options, ...snapshotRequest(ctx.options) } }));
  await recordMemory(ctx, pid, facts.memory!);
  const refused = facts.memory!.snapshotRefused;
  if (refused !== undefined && ctx.snapshot) {
    ctx.snapshot.report.pagesFrozen += facts.memory!.counts.written;
    ctx.options.log?.warn(`pid ${pid}: no snapshot (${refused}); its memory was copied while frozen`);
  }
  return { facts, pagesId };
}

/**
 * Whether the next task's visit may start before this one's images are written: pages image
 * ids are handed out in tree order, and writing this task uses one up for each shared anonymous
 * object or memfd it is the first to hold, so only a task that holds none lets the next go.
 */
export function nextMayStart(ctx: DumpContext, visit: TaskVisit): boolean {
  const { proc } = visit.facts;
  const shmem = !ctx.options.pageServer && proc.vmas.some((v) => v.kind === 'shmem_anon');
  return !shmem && !proc.vmas.some(isMemfdVma) && !proc.fds.some(isMemfdFd);
}

/** Writes the images of a visited task. */
export async function writeTask(ctx: DumpContext, task: SeizedProcessInfo, visit: TaskVisit): Promise<DumpedTask> {
  const { pid } = task;
  const { facts, pagesId } = visit;
  const { proc, parasite } = facts;
  const memory = facts.memory!;
  // one thread at a time out of the native side (memory stays flat in the number of threads)
  const thread = (i: number): ThreadFacts => {
    const t = facts.threads.take(i);
    return {
      state: t.state,
      parasite: parasite.threads[i]!,
      robustList: t.robustList,
      seccomp: ctx.seccomp.get(t.state.tid),
      cgSet: ctx.cgroups.setOfThread(t.state.tid),
    };
  };
  const ids = ctx.kobjIds.idsOf(pid, proc.namespaces);

  // Memory first among the images: CRIU numbers the exe and mapped files before fds.
  const { pageServer } = ctx.options;
  const mm = await buildMm(pid, proc, parasite, ctx.files);
  logVmas(ctx.options.log, pid, proc.vmas, memory);
  if (!memory.afterRelease) logMemory(ctx.options.log, pid, memory);
  // with a snapshot holding the pages, the pagemap is written once they are scanned, after the
  // release, and so is the mm image when the snapshot is to tell its VmFlags
  if (memory.afterRelease) ctx.snapshot?.waiting.set(pid, { pagesId, mm, mmWaits: memory.vmFlagsAfterRelease });
  if (!memory.vmFlagsAfterRelease) await writeImage(ctx.imagesDir, `mm-${pid}.img`, mm_entrySchema, [mm]);
  // with a page server the pagemap went over the wire with the pages (the server writes it)
  if (!memory.afterRelease && !pageServer) await writePagemap(ctx.imagesDir, pid, pagesId, memory, mm.vmas);
  await dumpSharedAnon(ctx, pid, proc);
  await dumpMemfdInodes(ctx, pid, proc);

  if (!ctx.fdTablesDone.has(ids.filesId)) {
    ctx.fdTablesDone.add(ids.filesId);
    const fdinfo = [];
    for (const fd of proc.fds) {
      // a pre-dump's tracking userfaultfd, closed in the task by now
      if (await ctx.incremental?.hidesFd(pid, fd.fd)) {
        ctx.options.log?.debug(`  fd ${fd.fd}: skipped (the memory tracking's userfaultfd, closed in the task)`, { pid, event: 'fd', fd: fd.fd, skipped: true });
        continue;
      }
      fdinfo.push(logFd(ctx.options.log, pid, fd, await ctx.files.fd(pid, fd)));
    }
    await ctx.files.taskFilesDone();
    await writeImage(ctx.imagesDir, `fdinfo-${ids.filesId}.img`, fdinfo_entrySchema, fdinfo);
  }

  const cwd = proc.cwd ?? '/';
  const root = proc.root ?? '/';
  const cwdMode = proc.cwdStat?.mode ?? (await stat(`/proc/${pid}/cwd`)).mode;
  const rootMode = proc.rootStat?.mode ?? (await stat(`/proc/${pid}/root`)).mode;
  const fsEntry = create(fs_entrySchema, {
    cwdId: await ctx.files.newPathFile(cwd, 0, { mode: cwdMode }),
    rootId: await ctx.files.newPathFile(root, 0, { mode: rootMode }),
    umask: parasite.misc.umask,
  });
  await writeImage(ctx.imagesDir, `fs-${pid}.img`, fs_entrySchema, [fsEntry]);

  const stopSignal = task.threads[0]?.stopSignal;
  await writeImage(ctx.imagesDir, `core-${pid}.img`, core_entrySchema, [
    leaderCore(thread(0), { proc, parasite, stopped: task.stopped, ...(stopSignal ? { stopSignal } : {}) }),
  ]);
  for (let i = 1; i < facts.threads.length; i++) {
    const t = thread(i);
    await writeImage(ctx.imagesDir, `core-${t.state.tid}.img`, core_entrySchema, [threadCore(t)]);
  }
  await writeImage(ctx.imagesDir, `ids-${pid}.img`, task_kobj_ids_entrySchema, [create(task_kobj_ids_entrySchema, ids)]);
  return { pid, ids, proc };
}

/**
 * Shared anonymous objects are dumped once per object (by inode), through the first task that
 * maps them, into their own pagemap-shmem-INO.img and pages file, as CRIU does.
 */
async function dumpSharedAnon(ctx: DumpContext, pid: number, proc: ProcessInspection): Promise<void> {
  for (const vma of proc.vmas) {
    if (vma.kind !== 'shmem_anon' || !ctx.firstTime(`shmem:${vma.inode}`)) continue;
    const { pageServer } = ctx.options;
    if (pageServer) {
      // the server writes pagemap-shmem-ID.img and its pages, as with criu dump --page-server
      const sent = await ctx.call(() => ctx.session.sendShmemToPageServer(pid, { start: vma.start, end: vma.end, ...pageServer }));
      ctx.stats.counters.shpagesScanned += Number((vma.end - vma.start) / pageBytesN());
      ctx.stats.counters.shpagesWritten += sent.pagesWritten;
      continue;
    }
    const pagesId = ctx.nextPagesId++;
    const shmem = await ctx.call(() =>
      ctx.session.dumpShmem(pid, { pagesId, start: vma.start, end: vma.end }),
    );
    ctx.stats.counters.shpagesScanned += Number((vma.end - vma.start) / pageBytesN());
    ctx.stats.counters.shpagesWritten += shmem.pagesWritten;
    await writeShmemPagemap(ctx.imagesDir, shmem, pagesId);
  }
}
