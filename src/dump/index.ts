// `tsdump dump`: the flow, stage by stage, in the order of CRIU's cr_dump_tasks (criu/cr-dump.c).
// The numbers are ../shared/DESIGN.md's; each stage lives in its own module, and the CRIU stages
// tsdump has no step for are listed, each with why, in stage.ts (STAGES_NOT_TAKEN).
import type { SeizedProcessInfo } from '../../native/index.js';
import { TsdumpError, typedErrors } from '../errors.js';
import { optionsActedOnBy, refuseUnactedOptions, type DumpOptions } from './options.js';
import { commitImages, discardImages, prepareImagesDir } from './images-dir.js';
import type { ImagesDir } from '../images/dir.js';
import { ActionScripts } from '../action-scripts.js';
import { loadPlugins, type PluginHost } from '../plugins/index.js';
import { openRun, seizeOptions, type DumpContext } from './context.js';
import { FileTable } from './file-table.js';
import { LinkRemaps } from './link-remap.js';
import { NetworkLock, treeConnections } from './network-lock.js';
import { KobjIds } from './kobj-ids.js';
import { visitTask, writeTask, writeThreads, type DumpedTask, type TaskVisit, type VisitContext } from './dump-task.js';
import { dumpFileLocks } from './file-locks.js';
import { writePstree } from './write-pstree.js';
import { treeOrder, type TreeMember } from './tree-order.js';
import { writeImage } from '../images/index.js';
import { core_entrySchema } from '../images/gen/core_pb.js';
import { zombieCore } from './core-image.js';
import { writeStats } from './write-stats.js';
import { writeInventory } from './write-inventory.js';
import { dumpSeccomp } from './write-seccomp.js';
import { CgroupMembership } from './write-cgroup.js';
import { TimeNamespace } from './write-timens.js';
import { SysvIpc } from './sysv-ipc.js';
import { finishPtyDump } from './fds/pty.js';
import { Incremental } from './incremental.js';
import { isOwnChild, runInWorker } from './own-child.js';
import { refuseOwnChild, releaseAfterFailure, releaseRunning } from './release.js';
import { STAGES_NOT_TAKEN, stager, taskStage, type Stage } from './stage.js';
import type { DumpEvents, DumpResult } from './result.js';
import { logRelease, logSeizedTask } from './log-facts.js';
import { watchPages, type PageWatch } from './page-progress.js';
import { checkSnapshotOptions, copySnapshots, snapshotState } from './snapshot.js';

export type { DumpOptions } from './options.js';
export type { DumpEvents, DumpResult } from './result.js';
export type { TaskPages } from './page-progress.js';
export { preDump } from './pre-dump.js';

/** The DumpOptions this flow acts on (options.ts). The CLI refuses any other by name. */
export const SUPPORTED_DUMP_OPTIONS: readonly (keyof DumpOptions)[] = optionsActedOnBy('dump');

export async function dump(options: DumpOptions, events: DumpEvents = {}): Promise<DumpResult> {
  return typedErrors(async () => {
    refuseUnactedOptions('dump', options);
    // our own child is dumped from a worker process (own-child.ts)
    if (await isOwnChild(options.pid)) return runInWorker('dump', options, events);
    return dumpInProcess(options, events);
  });
}

/** The flow itself, traced from this process; `dump` is the entry point. */
export async function dumpInProcess(options: DumpOptions, events: DumpEvents = {}): Promise<DumpResult> {
  const log = options.log;
  const stage = stager(events, log);
  for (const s of STAGES_NOT_TAKEN) log?.debug(`stage not taken: ${s.criu}: ${s.why}`);
  // 1 init_stats, with the run's session and cancellation
  const { stats, cancellation, session, call } = openRun(options);
  let plugins: PluginHost | undefined;
  let succeeded = false;
  let images: ImagesDir | undefined;
  let committed = false;
  try {
    checkSnapshotOptions(options);
    // (CRIU opens its images dir before cr_dump_tasks: refused or made here, see images-dir.ts)
    const imagesDir = await stage('prepare images dir', () => (images = prepareImagesDir(options)));
    session.useImagesDir(imagesDir);
    const scripts = new ActionScripts(options.actionScripts ?? [], { imagesDir: imagesDir.path, initPid: options.pid, ...(log ? { log } : {}) });
    // 0 run_scripts(ACT_PRE_DUMP)
    await stage('pre-dump scripts', () => scripts.run('pre-dump'));
    // 2 cr_plugins_init
    const host = (plugins = await stage('load plugins', () =>
      loadPlugins(options.libDir, { stage: 'dump', imagesDir: imagesDir.workPath, ...(log ? { log } : {}) }),
    ));
    // (CRIU's get_parent_inventory, and the memory tracking a previous run armed)
    const incremental = await stage('open parent images', () => openIncremental(options, imagesDir));
    cancellation.throwIfCancelled();
    await refuseOwnChild(options.pid);

    // 11 connect_to_page_server: as CRIU, a server that is down fails the dump before any freeze
    const server = options.pageServer;
    if (server) await stage('connect to page server', () => call(() => session.connectPageServer(server)));
    // 13 collect_pstree, with 12 setup_alarm_handler's --timeout (seizeOptions)
    const tree = await stage('collect pstree', () =>
      stats.time('freezingTime', () => call(() => session.seizeTree(options.pid, seizeOptions(options)))),
    );
    stats.markFrozen();
    for (const p of tree.processes) logSeizedTask(log, p);
    const pids = tree.processes.map((p) => p.pid);
    let files: FileTable | undefined;
    let networkLock: NetworkLock | undefined;
    const snapshot = options.snapshot ? snapshotState() : undefined;
    // --snapshot: the tree runs again before the memory is copied
    let releasedEarly = false;
    const linkRemaps = options.linkRemap ? new LinkRemaps() : undefined;
    try {
      // 14 collect_pstree_ids: which tasks share mm, files, fs, sighand is asked task by task
      // (kcmp in kobj-ids.ts) during the task stage.
      const kobjIds = new KobjIds();
      // 15 network_lock; --tcp-close wins, as in CRIU: connections restored closed need no lock
      if (options.tcpEstablished && !options.tcpClose) {
        networkLock = await stage('network lock', async () => NetworkLock.lock(await treeConnections(pids), log));
      }
      // (CRIU pauses devices as it seizes, before any task is visited)
      for (const pid of pids) await plugins.run('pauseDevices', { pid });
      const members = treeOrder(tree);
      const live = members.flatMap((m) => (m.kind === 'live' ? [m.proc] : []));
      // The first tasks' native visits run on the tracer thread while the stages up to the task
      // stage run here; their pages images take ids 1, 2, ... at once (visitTask), the context
      // below goes on from the next.
      const visits: VisitContext = { options, session, imagesDir, stats, call, plugins: host, incremental, snapshot, nextPagesId: 1 };
      const pages = watchPages(session, events.pages);
      // handled where each is awaited (dumpTasks), or settled below if a stage fails first
      const ahead = new VisitsAhead();
      for (const proc of live.slice(0, VISITS_AHEAD)) ahead.start(visits, proc);
      const { timens, sysvIpc, cgroups, fileTable, seccomp } = await (async () => {
        // 16 collect_namespaces (the ones tsdump dumps), and 7-8 the tree's cgroups
        const timens = await stage('collect time namespace', () => TimeNamespace.collect(pids));
        const sysvIpc = await stage('collect ipc namespace', () => SysvIpc.collect(pids, log));
        if (sysvIpc.privateNamespace) kobjIds.ownNamespace('ipc');
        const cgroups = await stage('collect cgroups', () => CgroupMembership.collect(live));
        // 17 cr_glob_imgset_open: the images every task's descriptors go to
        const fileTable = (files = await stage('open file table', () =>
          FileTable.create(imagesDir, {
            netNsId: () => kobjIds.dumperNetNsId(),
            ...(options.ghostLimit !== undefined ? { ghostLimit: options.ghostLimit } : {}),
            dropNotifyEvents: !!options.dropNotifyEvents,
            ...(log ? { log } : {}),
            external: async (file) => (await host.run('dumpExtFile', file)).handled,
            shellJob: !!options.shellJob,
            sockets: {
              extUnixSk: !!options.extUnixSk,
              tcpEstablished: !!options.tcpEstablished,
              tcpClose: !!options.tcpClose,
              pids,
              ...(networkLock ? { networkLock } : {}),
              ...(log ? { log } : {}),
            },
            ...(linkRemaps ? { linkRemaps } : {}),
          }),
        ));
        // 18 collect_seccomp_filters
        const seccomp = await stage('collect seccomp filters', () => dumpSeccomp(imagesDir, session, call, tree.processes));
        return { timens, sysvIpc, cgroups, fileTable, seccomp };
      })().catch(async (err: unknown) => {
        // the visits begun end before the tree is released (releaseAfterFailure)
        pages.stop();
        await ahead.settle();
        throw err;
      });
      const seenOnce = new Set<string>();
      const ctx: DumpContext = {
        options,
        imagesDir,
        session,
        stats,
        files: fileTable,
        plugins: host,
        kobjIds,
        cancellation,
        fdTablesDone: new Set(),
        nextPagesId: visits.nextPagesId,
        incremental,
        seccomp,
        cgroups,
        firstTime: (key) => !seenOnce.has(key) && !!seenOnce.add(key),
        call,
        snapshot,
      };
      // 19 dump_one_task, each live task (27 cr_dump_shmem's objects go with their first holder)
      const tasks = await dumpTasks(ctx, live, ahead, stage, pages).finally(() => pages.stop());
      await plugins.run('dumpDevicesLate', { id: 0 });
      // 22 dump_file_locks
      await stage('dump file locks', () => dumpFileLocks(imagesDir, tasks, options));
      // 23 dump_verify_tty_sids and 29 tty_post_actions, in one pass over the tree's terminals
      await stage('tty post actions', () => finishPtyDump(fileTable, { pids, shellJob: !!options.shellJob }));
      // 24 dump_zombies
      await stage('dump zombies', () => dumpZombies(ctx, members));
      // 25 dump_pstree
      await stage('dump pstree', () => writePstree(imagesDir, tree.root, members));
      // the namespaces (CRIU's dump_namespaces, dump_time_ns), the ids being the root's
      const rootIds = tasks.find((t) => t.pid === tree.root)?.ids;
      await stage('dump ipc namespace', () => sysvIpc.write(ctx, rootIds?.ipcNsId));
      await stage('dump time namespace', () => timens.write(imagesDir, rootIds?.timeNsId));
      // every page is sent (SysV segments' last; with --snapshot the tasks' after the release):
      // the server answers CLOSE once its images are on disk
      const closePageServer = () => stage('close page server', () => call(() => session.closePageServer()));
      if (server && !snapshot) await closePageServer();
      // 26 dump_cgroups
      await stage('dump cgroups', () => cgroups.write(imagesDir));
      // 28 fix_external_unix_sockets: the entries held for peers (outside the tree, or met
      // later) are written as the file table closes
      files = undefined;
      await stage('fix external unix sockets', () => fileTable.close());
      cancellation.throwIfCancelled();
      // asked of the tree (kcmp) while it is held: with --snapshot it may be gone by the inventory
      const inventoryIds = kobjIds.dumperIds();
      if (snapshot) {
        // --snapshot: the tree runs on while its private memory is copied out of the snapshots
        await stage('release tree', async () => {
          releasedEarly = true;
          await releaseRunning(session, call, { linkRemaps, networkLock, log });
          stats.markReleased();
          for (const pid of pids) await host.run('resumeDevicesLate', { pid });
        });
        await stage('copy snapshots', () => copySnapshots(ctx, snapshot));
        if (server) await closePageServer();
        cancellation.throwIfCancelled();
      } else {
        stats.markReleased();
      }
      stats.finish();
      await writeStats(imagesDir, stats);
      await incremental?.writeTrackFile();
      // 30 write_img_inventory: the commit point; from here on the run finishes as asked,
      // whatever signal comes
      await stage('write inventory', () =>
        writeInventory(imagesDir, { rootIds: inventoryIds, rootCgSet: cgroups.dumperSetId, tcpClose: !!options.tcpClose }),
      );
      cancellation.commit();
      commitImages(imagesDir, log);
      committed = true;
      // cr_dump_finish: post-dump runs before the tree is killed, so a failing script keeps it alive
      await stage('post-dump scripts', () => scripts.run('post-dump'));
    } catch (err) {
      // The dump's error is what matters; a writer that cannot even close adds nothing to it.
      await files?.close().catch(() => undefined);
      // the links made for a restore that will not happen go again
      const unremoved = linkRemaps?.rollback() ?? [];
      if (unremoved.length > 0 && err instanceof Error) err.message += ` (and ${unremoved.join('; ')})`;
      // as CRIU: the connections work again before the tree does
      await networkLock?.unlock().catch((unlockErr: unknown) => {
        if (err instanceof Error) err.message += ` (and ${unlockErr instanceof Error ? unlockErr.message : String(unlockErr)})`;
      });
      // tracking this run started is of no use without its checkpoint: no userfaultfd stays behind
      const left = committed ? [] : ((await incremental?.disarm(session)) ?? []);
      if (left.length && err instanceof Error) err.message += ` (and ending the tracking failed: ${left.join('; ')})`;
      if (!releasedEarly) await releaseAfterFailure(session, err);
      throw err;
    }

    // cr_dump_finish: network unlock, then kill, stop or release the tree
    const released = options.leaveRunning ? 'running' : options.leaveStopped ? 'stopped' : 'killed';
    await stage('finish', async () => {
      // --snapshot: released before the copy
      if (!releasedEarly && released === 'running') {
        await releaseRunning(session, call, { linkRemaps, networkLock, log });
        for (const pid of pids) await host.run('resumeDevicesLate', { pid });
      } else if (!releasedEarly) {
        // killed or stopped: its connections end silently, locked until the restore lifts the rules
        networkLock?.keep();
        await call(() => session.releaseTree({ mode: released === 'stopped' ? 'stop' : 'kill' }));
      }
      logRelease(log, released, stats.timings, stats.counters);
    });
    succeeded = true;
    return {
      imagesDir: imagesDir.path,
      processes: tree.processes.map((p) => ({ pid: p.pid, ppid: p.ppid, threads: p.threads.map((t) => t.tid) })),
      counters: stats.counters,
      timings: stats.timings,
      released,
      ...(snapshot ? { snapshot: snapshot.report } : {}),
    };
  } finally {
    session.close();
    cancellation.dispose();
    // nothing after the commit point: a complete checkpoint stays
    if (images && !succeeded) discardImages(images, options.log);
    await plugins?.run('dumpFinish', { ok: succeeded });
    await plugins?.exit(succeeded);
  }
}

/** --prev-images-dir and --track-mem: the parent's images and memory tracking, if asked for. */
async function openIncremental(options: DumpOptions, imagesDir: ImagesDir): Promise<Incremental | undefined> {
  if (options.prevImagesDir === undefined && !options.trackMem) return undefined;
  const incremental = await Incremental.open({
    imagesDir,
    ...(options.prevImagesDir !== undefined ? { prevImagesDir: options.prevImagesDir } : {}),
    // a tree that runs on keeps being tracked, for a dump after this one
    arm: !!options.trackMem && !!options.leaveRunning,
    useTracking: !!options.trackMem,
    // the parent's pages are on the server, which checks every hole against them
    pageServer: !!options.pageServer,
    log: options.log,
  });
  incremental.linkParent();
  return incremental;
}

/**
 * How many tasks the tracer visits ahead of the one whose images are being written: enough that
 * it has work while the stages before the task stage run (~0.15 ms of the main thread a process,
 * a visit ~2 ms) and while a task's images are written. The facts of a visit done ahead wait in
 * the native session until their turn: a few tasks' worth whatever the tree. (CLI, 9 rounds,
 * median frozen ms, ahead 1 / 4 / 8: 20 processes 69 / 58 / 58, 100 processes 265 / 247 / 251.)
 */
const VISITS_AHEAD = 4;

/** The visits started before their turn, in tree order, each queued behind the one before. */
class VisitsAhead {
  private readonly queue: { pid: number; visit: TaskVisit }[] = [];
  private last: TaskVisit | undefined;

  start(ctx: VisitContext, proc: SeizedProcessInfo): void {
    this.last = visitTask(ctx, proc, this.last);
    this.queue.push({ pid: proc.pid, visit: this.last });
  }

  /** The visit of `proc`, the next in tree order. */
  take(proc: SeizedProcessInfo): TaskVisit {
    const next = this.queue[0];
    if (next?.pid !== proc.pid) throw new TsdumpError('INTERNAL', `pid ${proc.pid}: its visit was not started ahead (pid ${next?.pid ?? 'none'}'s was)`);
    return this.queue.shift()!.visit;
  }

  /** Waits for every visit still ahead to end (their outcome no longer matters). */
  async settle(): Promise<void> {
    await Promise.all(this.queue.splice(0).map((a) => a.visit.ended.catch(() => undefined)));
  }
}

/**
 * Each live task, root first: its visit was started VISITS_AHEAD tasks before (the first ones
 * during the stages before), so that the tracer never waits for images to be written, nor for
 * the promise hops that start a visit; a task's threads are written as the tracer hands them
 * over.
 */
async function dumpTasks(
  ctx: DumpContext,
  live: readonly SeizedProcessInfo[],
  ahead: VisitsAhead,
  stage: Stage,
  pages: PageWatch,
): Promise<DumpedTask[]> {
  const tasks: DumpedTask[] = [];
  let threads: Promise<void> | undefined;
  try {
    for (const [i, proc] of live.entries()) {
      ctx.cancellation.throwIfCancelled();
      tasks.push(
        await stage(taskStage(proc.pid), async () => {
          pages.follow(proc.pid);
          const visit = ahead.take(proc);
          const next = live[i + VISITS_AHEAD];
          if (next) ahead.start(ctx, next);
          // (a process of one thread has none to wait for)
          threads = proc.threads.length > 1 ? writeThreads(ctx, visit) : undefined;
          // awaited below, or settled in the end if the visit fails first
          threads?.catch(() => undefined);
          const visited = await visit.ended;
          pages.ended(visited.facts.drained);
          const dumped = await writeTask(ctx, proc, visited);
          await threads;
          return dumped;
        }),
      );
    }
  } finally {
    // visits started ahead of a failure, or threads still being written: their outcome no
    // longer matters, but they must settle
    await Promise.all([ahead.settle(), threads?.catch(() => undefined)]);
  }
  return tasks;
}

/** A zombie is a core image of its exit state: nothing of it is seized. */
async function dumpZombies(ctx: DumpContext, members: readonly TreeMember[]): Promise<void> {
  for (const m of members) {
    if (m.kind === 'zombie') await writeImage(ctx.imagesDir, `core-${m.zombie.pid}.img`, core_entrySchema, [zombieCore(m.zombie)]);
  }
}
