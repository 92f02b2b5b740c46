// Which namespace a task lives in: the inode of /proc/PID/ns/KIND.
//
// Asked for every task of the tree while it is frozen (time, IPC and cgroup namespaces), so it is
// a synchronous stat: procfs answers from memory, where a thread-pool round trip per task and
// kind (~0.1 ms each on a busy machine) added up to milliseconds of frozen time.
import { existsSync, statSync } from 'node:fs';
import { TsdumpError } from '../errors.js';

export type NsKind = 'ipc' | 'time' | 'time_for_children' | 'cgroup';

/**
 * The inode of `pid`'s namespace of `kind`, or undefined where this kernel has no such
 * namespace. A task that is gone is an ESRCH_TARGET error, any other failure a PROCFS one.
 */
export function nsInode(pid: number | 'self', kind: NsKind): bigint | undefined {
  const path = `/proc/${pid}/ns/${kind}`;
  let ino: bigint | undefined;
  try {
    ino = statSync(path, { bigint: true, throwIfNoEntry: false })?.ino;
  } catch (err) {
    throw new TsdumpError('PROCFS', `pid ${pid}: cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (ino === undefined && pid !== 'self' && !existsSync(`/proc/${pid}`)) {
    throw new TsdumpError('ESRCH_TARGET', `pid ${pid}: no such process any more (${path})`);
  }
  return ino;
}
