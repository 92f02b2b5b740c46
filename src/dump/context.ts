// What every stage of one dump shares.
import type { SeizeTreeOptions, Session } from '../../native/index.js';
import { native } from '../native.js';
import type { DumpOptions } from './options.js';
import { DumpStats } from './stats.js';
import type { FileTable } from './file-table.js';
import type { KobjIds } from './kobj-ids.js';
import { Cancellation } from './cancellation.js';
import type { PluginHost } from '../plugins/index.js';
import type { Incremental } from './incremental.js';
import type { SeccompTable } from './write-seccomp.js';
import type { CgroupMembership } from './write-cgroup.js';
import type { ImagesDir } from '../images/dir.js';
import type { SnapshotState } from './snapshot.js';

export interface DumpContext {
  readonly options: DumpOptions;
  readonly imagesDir: ImagesDir;
  readonly session: Session;
  readonly stats: DumpStats;
  readonly files: FileTable;
  readonly kobjIds: KobjIds;
  readonly cancellation: Cancellation;
  readonly plugins: PluginHost;
  /** fd tables (files_id) already written: tasks sharing one are dumped once. */
  readonly fdTablesDone: Set<number>;
  nextPagesId: number;
  /** --prev-images-dir / --track-mem: the parent images and memory tracking (incremental.ts). */
  readonly incremental?: Incremental | undefined;
  /** Each thread's seccomp mode and filter index, from the seccomp stage (write-seccomp.ts). */
  readonly seccomp: SeccompTable;
  /** Each thread's cgroup set and cgroup.img's contents (write-cgroup.ts). */
  readonly cgroups: CgroupMembership;
  /** --snapshot: what the snapshots did and the pagemaps waiting for their copy (snapshot.ts). */
  readonly snapshot?: SnapshotState | undefined;
  /** True the first time `key` is asked about in this dump (objects dumped once, e.g. shmem). */
  firstTime(key: string): boolean;
  /** A native call, cancellable between calls, with the core's errors typed. */
  call<T>(fn: () => Promise<T> | T): Promise<T>;
}

/**
 * What a run (dump or pre-dump) opens first: its stats, its session, a cancellation that also
 * interrupts the session's native work, and the cancellable caller of native functions.
 */
export function openRun(options: Pick<DumpOptions, 'signal' | 'log'>) {
  const stats = new DumpStats();
  const cancellation = new Cancellation(options.signal, options.log);
  const session = new native.Session();
  cancellation.onCancel(() => session.interrupt());
  return { stats, cancellation, session, call: nativeCaller(cancellation) };
}

/** How a run seizes the tree. */
export function seizeOptions(options: Pick<DumpOptions, 'timeout' | 'freezeCgroup'>): SeizeTreeOptions {
  return {
    ...(options.timeout ? { timeoutMs: options.timeout * 1000 } : {}),
    ...(options.freezeCgroup ? { freezeCgroup: options.freezeCgroup } : {}),
    // as CRIU: the parasite's syscalls (userfaultfd, ioctls...) must get past the tasks' filters
    suspendSeccomp: true,
  };
}

export function nativeCaller(cancellation: Cancellation) {
  return async <T>(fn: () => Promise<T> | T): Promise<T> => {
    cancellation.throwIfCancelled();
    try {
      return await fn();
    } catch (err) {
      // work interrupted by the cancellation reports it with the cancellation's own words
      cancellation.throwIfCancelled();
      throw err;
    }
  };
}
