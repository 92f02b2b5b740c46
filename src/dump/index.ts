// `tsdump dump`: the flow, stage by stage (compare ../shared/DESIGN.md and CRIU's cr_dump_tasks).
// Each stage lives in its own module; this file is the table of contents.
import { TsdumpError, typedErrors } from '../errors.js';
import type { Session } from '../../native/index.js';
import { optionsActedOnBy, refuseUnactedOptions, type DumpOptions } from './options.js';
import { commitImages, discardImages, prepareImagesDir } from './images-dir.js';
import type { ImagesDir } from '../images/dir.js';
import { ActionScripts } from '../action-scripts.js';
import { loadPlugins, type PluginHost } from '../plugins/index.js';
import type { DumpCounters, DumpTimings } from './stats.js';
import { openRun, seizeOptions, type DumpContext } from './context.js';
import { FileTable } from './file-table.js';
import { LinkRemaps } from './link-remap.js';
import { NetworkLock, treeConnections } from './network-lock.js';
import { KobjIds } from './kobj-ids.js';
import { nextMayStart, visitTask, writeTask, type DumpedTask, type TaskVisit } from './dump-task.js';
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

export type { DumpOptions } from './options.js';
export { preDump } from './pre-dump.js';

/** The DumpOptions this flow acts on (options.ts). The CLI refuses any other by name. */
export const SUPPORTED_DUMP_OPTIONS: readonly (keyof DumpOptions)[] = optionsActedOnBy('dump');

export interface DumpEvents {
  /** A stage begins (names follow ../shared/DESIGN.md). */
  stage?(name: string): void;
  /** Pages written so far, after each task's memory is drained. */
  pages?(written: number): void;
}

export interface DumpResult {
  imagesDir: string;
  /** The dumped processes, root first: pid, parent and threads. */
  processes: { pid: number; ppid: number; threads: number[] }[];
  counters: DumpCounters;
  /** Microseconds. */
  timings: DumpTimings;
  /** What happened to the tree afterwards. */
  released: 'killed' | 'running' | 'stopped';
}

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
  const stage = (name: string) => events.stage?.(name);
  const { stats, cancellation, session, call } = openRun(options);
  let plugins: PluginHost | undefined;
  let succeeded = false;
  let images: ImagesDir | undefined;
  let committed = false;
  try {
    stage('prepare images dir');
    const imagesDir = (images = prepareImagesDir(options));
    session.useImagesDir(imagesDir);
    const log = options.log;
    const scripts = new ActionScripts(options.actionScripts ?? [], { imagesDir: imagesDir.path, initPid: options.pid, ...(log ? { log } : {}) });
    stage('load plugins');
    plugins = await loadPlugins(options.libDir, { stage: 'dump', imagesDir: imagesDir.workPath, ...(log ? { log } : {}) });
    stage('pre-dump scripts');
    await scripts.run('pre-dump');
    const incremental =
      options.prevImagesDir !== undefined || options.trackMem
        ? await Incremental.open({
            imagesDir,
            ...(options.prevImagesDir !== undefined ? { prevImagesDir: options.prevImagesDir } : {}),
            // a tree that runs on keeps being tracked, for a dump after this one
            arm: !!options.trackMem && !!options.leaveRunning,
            useTracking: !!options.trackMem,
            // the parent's pages are on the server, which checks every hole against them
            pageServer: !!options.pageServer,
            log: options.log,
          })
        : undefined;
    incremental?.linkParent();
    cancellation.throwIfCancelled();

    await refuseOwnChild(options.pid);
    const server = options.pageServer;
    if (server) {
      // as CRIU: a server that is down or refuses us fails the dump before the tree is frozen
      stage('connect to page server');
      await call(() => session.connectPageServer(server));
    }
    stage('collect pstree');
    const tree = await stats.time('freezingTime', () =>
      call(() =>
        session.seizeTree(options.pid, seizeOptions(options)),
      ),
    );
    stats.markFrozen();
    let files: FileTable | undefined;
    let networkLock: NetworkLock | undefined;
    const linkRemaps = options.linkRemap ? new LinkRemaps() : undefined;
    try {
      // --tcp-close wins, as in CRIU: connections restored closed need neither lock nor state
      if (options.tcpEstablished && !options.tcpClose) {
        stage('network lock');
        networkLock = await NetworkLock.lock(await treeConnections(tree.processes.map((p) => p.pid)), options.log);
      }
      const host = plugins;
      const kobjIds = new KobjIds();
      files = await FileTable.create(imagesDir, {
        netNsId: () => kobjIds.dumperNetNsId(),
        ...(options.ghostLimit !== undefined ? { ghostLimit: options.ghostLimit } : {}),
        dropNotifyEvents: !!options.dropNotifyEvents,
        ...(options.log ? { log: options.log } : {}),
        external: async (file) => (await host.run('dumpExtFile', file)).handled,
        shellJob: !!options.shellJob,
        sockets: {
          extUnixSk: !!options.extUnixSk,
          tcpEstablished: !!options.tcpEstablished,
          tcpClose: !!options.tcpClose,
          pids: tree.processes.map((p) => p.pid),
          ...(networkLock ? { networkLock } : {}),
          ...(options.log ? { log: options.log } : {}),
        },
        ...(linkRemaps ? { linkRemaps } : {}),
      });
      stage('collect seccomp filters');
      const seccomp = await dumpSeccomp(imagesDir, session, call, tree.processes);
      const members = treeOrder(tree);
      stage('collect time namespace');
      const timens = await TimeNamespace.collect(tree.processes.map((p) => p.pid));
      stage('collect ipc namespace');
      const sysvIpc = await SysvIpc.collect(tree.processes.map((p) => p.pid), options.log);
      if (sysvIpc.privateNamespace) kobjIds.ownNamespace('ipc');
      stage('collect cgroups');
      const cgroups = await CgroupMembership.collect(members.flatMap((m) => (m.kind === 'live' ? [m.proc] : [])));
      const seenOnce = new Set<string>();
      const ctx: DumpContext = {
        options,
        imagesDir,
        session,
        stats,
        files,
        plugins: host,
        kobjIds,
        cancellation,
        memoryMode: 'vmsplice',
        fdTablesDone: new Set(),
        nextPagesId: 1,
        incremental,
        seccomp,
        cgroups,
        firstTime: (key) => !seenOnce.has(key) && !!seenOnce.add(key),
        call,
      };
      for (const p of tree.processes) await plugins.run('pauseDevices', { pid: p.pid });
      const tasks = await dumpTree(ctx, members, stage, () => events.pages?.(stats.counters.pagesWritten));
      // before the page server closes: segments' pages go there too
      stage('dump ipc namespace');
      await sysvIpc.write(ctx, tasks.find((t) => t.pid === tree.root)?.ids.ipcNsId);
      if (options.pageServer) {
        stage('close page server');
        // the server answers CLOSE once its pagemap and pages images are complete on disk
        await call(() => session.closePageServer());
      }
      await plugins.run('dumpDevicesLate', { id: 0 });
      stage('dump file locks');
      await dumpFileLocks(imagesDir, tasks, options);
      stage('tty post actions');
      await finishPtyDump(files, { pids: tree.processes.map((p) => p.pid), shellJob: !!options.shellJob });
      const table = files;
      files = undefined;
      await table.close();
      stage('dump pstree');
      await writePstree(imagesDir, tree.root, members);
      stage('dump cgroups');
      await cgroups.write(imagesDir);
      stage('dump time namespace');
      await timens.write(imagesDir, tasks.find((t) => t.pid === tree.root)?.ids.timeNsId);
      cancellation.throwIfCancelled();
      stats.markReleased();
      stats.finish();
      await writeStats(imagesDir, stats);
      await incremental?.writeTrackFile();
      stage('write inventory');
      await writeInventory(imagesDir, { rootIds: kobjIds.dumperIds(), rootCgSet: cgroups.dumperSetId, tcpClose: !!options.tcpClose });
      // the commit point: from here on the run finishes as asked, whatever signal comes
      cancellation.commit();
      commitImages(imagesDir, log);
      committed = true;
      // CRIU runs post-dump before the tree is killed: a failing script keeps it alive.
      stage('post-dump scripts');
      await scripts.run('post-dump');
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
      await releaseAfterFailure(session, err);
      throw err;
    }

    stage('finish');
    const released = options.leaveRunning ? 'running' : options.leaveStopped ? 'stopped' : 'killed';
    if (released === 'running') {
      // the tree keeps its files; link remaps are only for a restore of a tree that is gone (CRIU)
      for (const failed of linkRemaps?.rollback() ?? []) options.log?.warn(failed);
      try {
        await networkLock?.unlock();
      } catch (err) {
        await releaseAfterFailure(session, err);
        throw err;
      }
    } else {
      // killed or stopped: its connections end silently, locked until the restore lifts the rules
      networkLock?.keep();
    }
    await call(() => session.releaseTree({ mode: released === 'running' ? 'resume' : released === 'stopped' ? 'stop' : 'kill' }));
    if (released === 'running') for (const p of tree.processes) await plugins.run('resumeDevicesLate', { pid: p.pid });
    succeeded = true;
    return {
      imagesDir: imagesDir.path,
      processes: tree.processes.map((p) => ({ pid: p.pid, ppid: p.ppid, threads: p.threads.map((t) => t.tid) })),
      counters: stats.counters,
      timings: stats.timings,
      released,
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

async function dumpTree(
  ctx: DumpContext,
  members: readonly TreeMember[],
  stage: (name: string) => void,
  taskDone: () => void,
): Promise<DumpedTask[]> {
  const tasks: DumpedTask[] = [];
  const live = members.flatMap((m) => (m.kind === 'live' ? [m.proc] : []));
  // The next task's native visit runs while this one's images are written (dump-task.ts).
  let ahead: { pid: number; visit: Promise<TaskVisit> } | undefined;
  try {
    for (const m of members) {
      ctx.cancellation.throwIfCancelled();
      if (m.kind === 'zombie') {
        await writeImage(ctx.imagesDir, `core-${m.zombie.pid}.img`, core_entrySchema, [zombieCore(m.zombie)]);
        continue;
      }
      stage(`dump task ${m.proc.pid}`);
      const visit = await (ahead?.pid === m.proc.pid ? ahead.visit : visitTask(ctx, m.proc));
      ahead = undefined;
      const next = live[live.indexOf(m.proc) + 1];
      if (next && nextMayStart(ctx, visit)) {
        ahead = { pid: next.pid, visit: visitTask(ctx, next) };
        // handled where it is awaited; until then its failure must not count as unhandled
        ahead.visit.catch(() => undefined);
      }
      tasks.push(await writeTask(ctx, m.proc, visit));
      taskDone();
    }
  } finally {
    // a visit started ahead of a failure: its outcome no longer matters, but it must settle
    await ahead?.visit.catch(() => undefined);
  }
  return tasks;
}

/** Puts the tree back as it was; the dump's own error is what the caller hears about. */
export async function releaseAfterFailure(session: Session, cause: unknown): Promise<void> {
  try {
    await session.releaseTree({ mode: 'resume' });
  } catch (releaseErr) {
    const msg = releaseErr instanceof Error ? releaseErr.message : String(releaseErr);
    if (cause instanceof Error) cause.message += ` (and releasing the tree failed: ${msg})`;
  }
}

/**
 * Node reaps its children on SIGCHLD with waitpid(), which also collects the ptrace stops meant
 * for our tracer thread: libuv then reports a false exit and never reaps the real one. `dump` and
 * `preDump` send a tree rooted at our child to a worker process; the in-process flow refuses it.
 */
export async function refuseOwnChild(pid: number): Promise<void> {
  if (await isOwnChild(pid)) {
    throw new TsdumpError(
      'REFUSED_TARGET',
      `pid ${pid} is a child of this process (${process.pid}); Node's child reaping would steal ptrace stops. ` +
        'Dump it with dump() or preDump(), which use a worker process for it',
    );
  }
}
