// Dumping one process of a seized tree: everything the kernel and the task itself know about it,
// turned into core-*, mm-, pagemap-, pages-, fdinfo-, fs- and ids- images.
import { stat } from 'node:fs/promises';
import { create } from '@bufbuild/protobuf';
import { ImageBatch, writeImage } from '../images/index.js';
import { core_entrySchema, task_kobj_ids_entrySchema, type task_kobj_ids_entry } from '../images/gen/core_pb.js';
import { mm_entrySchema } from '../images/gen/mm_pb.js';
import { fs_entrySchema } from '../images/gen/fs_pb.js';
import { fdinfo_entrySchema } from '../images/gen/fdinfo_pb.js';
import type { ProcessInspection, SeizedProcessInfo, TaskFactsInfo, TaskVisitJob, VisitedThreadInfo } from '../../native/index.js';
import { leaderCore, threadCore, type ThreadFacts } from './core-image.js';
import { buildMm, writePagemap, writeShmemPagemap } from './mm-image.js';
import type { DumpContext } from './context.js';
import { memoryRequest, recordMemory } from './task-memory.js';
import { dumpMemfdInodes } from './memfd-inodes.js';
import { logFd, logMemory, logVmas } from './log-facts.js';
import { snapshotRequest } from './snapshot.js';
import { pageBytesN } from '../arch/index.js';

export interface DumpedTask {
  pid: number;
  ids: task_kobj_ids_entry;
  /** What the inspector found (later stages: file locks). */
  proc: ProcessInspection;
}

/** What one native visit of a task brought back, waiting for its images. */
export interface VisitedTask {
  facts: TaskFactsInfo;
  /** The pages image its memory went to (0 with a page server). */
  pagesId: number;
}

/** One process's native visit, started: its threads come out as the tracer gets to them. */
export interface TaskVisit {
  /** The native job, once it is queued. */
  job: Promise<TaskVisitJob>;
  /** The rest, once the visit is over. */
  ended: Promise<VisitedTask>;
}

/** What a visit uses of the dump's context: the first one starts before the context is complete. */
export type VisitContext = Pick<DumpContext, 'options' | 'session' | 'imagesDir' | 'stats' | 'call' | 'plugins' | 'incremental' | 'snapshot' | 'nextPagesId'>;

/**
 * The native visit of one process: procfs, thread states, the parasite's answers and the page
 * drain in one job on the tracer thread, queued behind the visit `after` (the tracer visits in
 * tree order, a few tasks ahead of the images being written: see dumpTasks). Both promises are
 * settled by whoever awaits them (a failure is handled there).
 */
export function visitTask(ctx: VisitContext, task: SeizedProcessInfo, after?: TaskVisit): TaskVisit {
  const { pid } = task;
  // the pages image's id is taken before anything is awaited: ids go in tree order
  const request = memoryRequest(ctx, pid, { pageServer: ctx.options.pageServer });
  let pagesId = 0;
  const job = (async () => {
    // (a visit before that failed to start is told by its own `ended`)
    await after?.job.catch(() => undefined);
    const [, memory] = await Promise.all([ctx.plugins.run('checkpointDevices', { pid }), request]);
    pagesId = memory.pagesId;
    const tids = task.threads.map((t) => t.tid);
    return ctx.call(() => ctx.session.startVisit(pid, { tids, memory: { ...memory.options, ...snapshotRequest(ctx.options) } }));
  })();
  const ended = job.then(async (j) => {
    const facts = await ctx.call(() => j.facts());
    await recordMemory(ctx, pid, facts.memory!);
    const refused = facts.memory!.snapshotRefused;
    if (refused !== undefined && ctx.snapshot) {
      ctx.snapshot.report.pagesFrozen += facts.memory!.counts.written;
      ctx.options.log?.warn(`pid ${pid}: no snapshot (${refused}); its memory was copied while frozen`);
    }
    return { facts, pagesId };
  });
  job.catch(() => undefined);
  ended.catch(() => undefined);
  return { job, ended };
}

/**
 * The core images of a visit's threads after the leader, each batch as the tracer hands it over
 * (while it visits the next): resolves when all are written, or when the visit failed (its
 * `ended` tells why).
 */
export async function writeThreads(ctx: DumpContext, visit: TaskVisit): Promise<void> {
  const job = await visit.job;
  for (let batch: VisitedThreadInfo[] | null; (batch = await ctx.call(() => job.threads())); ) {
    const images = new ImageBatch(ctx.imagesDir);
    for (const t of batch) {
      await writeImage(images, `core-${t.state.tid}.img`, core_entrySchema, [threadCore(threadFacts(ctx, t))]);
    }
    await images.flush();
  }
}

function threadFacts(ctx: DumpContext, t: VisitedThreadInfo): ThreadFacts {
  return {
    state: t.state,
    parasite: t.answers,
    robustList: t.robustList,
    seccomp: ctx.seccomp.get(t.state.tid),
    cgSet: ctx.cgroups.setOfThread(t.state.tid),
  };
}

/** Writes the images of a visited task but its other threads' (writeThreads). */
export async function writeTask(ctx: DumpContext, task: SeizedProcessInfo, visit: VisitedTask): Promise<DumpedTask> {
  const { pid } = task;
  const { facts, pagesId } = visit;
  const { proc, parasite } = facts;
  const memory = facts.memory!;
  const ids = ctx.kobjIds.idsOf(pid, proc.namespaces);
  // the task's own images, written together at its end
  const images = new ImageBatch(ctx.imagesDir);

  // Memory first among the images: CRIU numbers the exe and mapped files before fds.
  const { pageServer } = ctx.options;
  const mm = await buildMm(pid, proc, parasite, ctx.files);
  logVmas(ctx.options.log, pid, proc.vmas, memory);
  if (!memory.afterRelease) logMemory(ctx.options.log, pid, memory);
  // with a snapshot holding the pages, the pagemap is written once they are scanned, after the
  // release, and so is the mm image when the snapshot is to tell its VmFlags
  if (memory.afterRelease) ctx.snapshot?.waiting.set(pid, { pagesId, mm, mmWaits: memory.vmFlagsAfterRelease });
  if (!memory.vmFlagsAfterRelease) await writeImage(images, `mm-${pid}.img`, mm_entrySchema, [mm]);
  // with a page server the pagemap went over the wire with the pages (the server writes it)
  if (!memory.afterRelease && !pageServer) await writePagemap(images, pid, pagesId, memory, mm.vmas);
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
    await writeImage(images, `fdinfo-${ids.filesId}.img`, fdinfo_entrySchema, fdinfo);
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
  await writeImage(images, `fs-${pid}.img`, fs_entrySchema, [fsEntry]);

  const stopSignal = task.threads[0]?.stopSignal;
  await writeImage(images, `core-${pid}.img`, core_entrySchema, [
    leaderCore(threadFacts(ctx, facts.leader), { proc, parasite, stopped: task.stopped, ...(stopSignal ? { stopSignal } : {}) }),
  ]);
  await writeImage(images, `ids-${pid}.img`, task_kobj_ids_entrySchema, [create(task_kobj_ids_entrySchema, ids)]);
  await images.flush();
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
