// filelocks.img: the flock, POSIX and OFD locks the tree holds (CRIU's dump_file_locks). Each lock
// is seen through the `lock:` lines of the fdinfo of the fd it was taken on; restore re-takes it
// from the task and fd recorded here. Without --file-locks a tree holding locks is refused, as
// CRIU does: dumping it silently would restore the processes without their locks.
import { readFile } from 'node:fs/promises';
import { create } from '@bufbuild/protobuf';
import { writeImage } from '../images/index.js';
import type { ImagesDir } from '../images/dir.js';
import { file_lock_entrySchema, type file_lock_entry } from '../images/gen/file-lock_pb.js';
import { native } from '../native.js';
import { TsdumpError } from '../errors.js';
import type { FdInfoEntry, ProcessInspection } from '../../native/index.js';

/** file_lock_entry.flag values (CRIU's FL_* kinds, criu/include/file-lock.h). */
export const FL_POSIX = 1;
export const FL_FLOCK = 2;
export const FL_OFD = 4;

/** fcntl lock types, which CRIU stores for every kind (flock's LOCK_SH/LOCK_EX as F_RDLCK/F_WRLCK). */
const F_RDLCK = 0;
const F_WRLCK = 1;

export interface LockedTask {
  pid: number;
  /** The task's fd table id: tasks sharing one (CLONE_FILES) are looked at once. */
  ids: { filesId: number };
  proc: Pick<ProcessInspection, 'fds'>;
}

/** One line of /proc/locks or of fdinfo's `lock:` lines, as the kernel prints it (fs/locks.c). */
export interface LockLine {
  kind: string;
  access: string;
  pid: number;
  dev: string;
  ino: bigint;
  start: bigint;
  /** Last byte, or undefined for "EOF" (to the end of the file). */
  end: bigint | undefined;
}

/** Parses "ID: KIND ADVISORY ACCESS PID MAJ:MIN:INO START END"; blocked waiters ("->") are not locks held. */
export function parseLockLine(line: string): LockLine | undefined {
  const text = line.replace(/^lock:\s*/, '');
  if (text.includes('->')) return undefined;
  const t = text.trim().split(/\s+/);
  // id, kind, mode (ADVISORY / lease state), access, pid, dev:ino, start, end
  if (t.length < 8 || !/^\d+:$/.test(t[0]!)) return undefined;
  const devIno = /^([0-9a-f]+:[0-9a-f]+):(\d+)$/i.exec(t[5]!);
  if (!devIno) return undefined;
  return {
    kind: t[1]!,
    access: t[3]!,
    pid: Number(t[4]),
    dev: devIno[1]!.toLowerCase(),
    ino: BigInt(devIno[2]!),
    start: BigInt(t[6]!),
    end: t[7] === 'EOF' ? undefined : BigInt(t[7]!),
  };
}

function lockFlag(pid: number, fd: FdInfoEntry, l: LockLine): number {
  switch (l.kind) {
    case 'POSIX':
      return FL_POSIX;
    case 'FLOCK':
      return FL_FLOCK;
    case 'OFDLCK':
      return FL_OFD;
    default:
      // LEASE/DELEG (and anything newer) need the lease-breaking dance CRIU does; not done yet
      throw new TsdumpError(
        'UNSUPPORTED',
        `pid ${pid}: fd ${fd.fd} (${fd.target}) holds a ${l.kind} file lock; tsdump cannot dump ${l.kind.toLowerCase()}s yet`,
      );
  }
}

function lockType(pid: number, fd: FdInfoEntry, l: LockLine): number {
  if (l.access === 'READ') return F_RDLCK;
  if (l.access === 'WRITE') return F_WRLCK;
  throw new TsdumpError('PROCFS', `pid ${pid}: fd ${fd.fd}: file lock with access ${l.access}`);
}

/**
 * The locks held through the tasks' fds, one entry per lock: a description shared by several fds
 * (dup, fork) shows its flock/OFD locks on each of them, and only the first fd seen keeps them.
 */
export function collectFileLocks(tasks: readonly LockedTask[]): file_lock_entry[] {
  const out: file_lock_entry[] = [];
  const tablesSeen = new Set<number>();
  const descriptions = new Map<string, { pid: number; fd: number }[]>();
  for (const task of tasks) {
    if (tablesSeen.has(task.ids.filesId)) continue;
    tablesSeen.add(task.ids.filesId);
    for (const fd of task.proc.fds) {
      const key = `${fd.dev}:${fd.ino}`;
      const seen = descriptions.get(key) ?? [];
      const shared = seen.some((d) => native.kcmp(d.pid, task.pid, 'file', d.fd, fd.fd));
      seen.push({ pid: task.pid, fd: fd.fd });
      descriptions.set(key, seen);
      if (shared) continue;
      for (const line of fd.locks) {
        const l = parseLockLine(line);
        if (!l) throw new TsdumpError('PROCFS', `pid ${task.pid}: fd ${fd.fd}: cannot parse lock line ${JSON.stringify(line)}`);
        out.push(
          create(file_lock_entrySchema, {
            flag: lockFlag(task.pid, fd, l),
            type: lockType(task.pid, fd, l),
            pid: task.pid,
            fd: fd.fd,
            start: l.start,
            len: l.end === undefined ? 0n : l.end + 1n - l.start,
          }),
        );
      }
    }
  }
  return out;
}

/**
 * POSIX locks belong to a process, not to an fd: /proc/locks names the process, and one the fds
 * did not show (CRIU's "Unresolved lock") would be lost on restore, so it stops the dump.
 */
async function checkPosixLocksResolved(tasks: readonly LockedTask[], found: readonly file_lock_entry[]): Promise<void> {
  const pids = new Set(tasks.map((t) => t.pid));
  let text: string;
  try {
    text = await readFile('/proc/locks', 'utf8');
  } catch (err) {
    throw new TsdumpError('PROCFS', `/proc/locks: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
  for (const line of text.split('\n')) {
    const l = parseLockLine(line);
    if (!l || l.kind !== 'POSIX' || !pids.has(l.pid)) continue;
    const end = l.end === undefined ? 0n : l.end + 1n - l.start;
    const known = found.some((f) => f.flag === FL_POSIX && f.pid === l.pid && f.start === l.start && f.len === end);
    if (!known) {
      throw new TsdumpError(
        'UNSUPPORTED',
        `pid ${l.pid}: POSIX lock on inode ${l.dev}:${l.ino} (bytes ${l.start}..${l.end ?? 'EOF'}) is not held through any of its fds`,
      );
    }
  }
}

/**
 * Writes filelocks.img when the tree holds locks (CRIU creates it only then too). Returns the
 * number of locks written. Refuses a tree holding locks when `fileLocks` is off.
 */
export async function dumpFileLocks(imagesDir: ImagesDir, tasks: readonly LockedTask[], opts: { fileLocks?: boolean | undefined }): Promise<number> {
  const locks = collectFileLocks(tasks);
  if (locks.length > 0 && !opts.fileLocks) {
    const first = locks[0]!;
    throw new TsdumpError(
      'UNSUPPORTED',
      `pid ${first.pid}: fd ${first.fd} holds a file lock (${locks.length} in the tree); dump with --file-locks to keep them`,
    );
  }
  if (opts.fileLocks) await checkPosixLocksResolved(tasks, locks);
  if (locks.length > 0) await writeImage(imagesDir, 'filelocks.img', file_lock_entrySchema, locks);
  return locks.length;
}
