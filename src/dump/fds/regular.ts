// Regular files, directories and character devices (/dev/null, /dev/zero, ...): CRIU's REG.
import { statfsSync } from 'node:fs';
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { buildIdField } from '../elf-build-id.js';
import { TsdumpError } from '../../errors.js';
import { S_IFCHR, S_IFIFO, S_IFMT, S_IFREG, type FdKind } from './kind.js';

/** Terminals are their own kind (TTY): restore must re-attach them, not reopen a path. */
const TERMINAL = /^\/dev\/(pts\/|tty|console$)/;

const PROC_SUPER_MAGIC = 0x9fa0;
export const MQUEUE_MAGIC = 0x19800202;
const O_ACCMODE = 3;
const O_WRONLY = 1;
const O_APPEND = 0o2000;

/**
 * A write-only O_APPEND file (a log) keeps growing while the tree runs on; its size is not
 * recorded, or restore would refuse the grown file (CRIU's rule too).
 */
const growingLog = (flags: number) => (flags & O_ACCMODE) === O_WRONLY && (flags & O_APPEND) !== 0;

const MEM_MAJOR = 1n;
const MISC_MAJOR = 10n;
const TUN_MINOR = 200n;
const AUTOFS_MINOR = 235n;

/**
 * Character devices are reopened by name on restore, which is all there is to the memory
 * devices (/dev/null, zero, full, random, urandom, kmsg...) and the autofs control device; any
 * other keeps state a fresh open would not have (a FUSE connection, a tun interface, a KVM
 * handle...), so it is refused, as CRIU refuses it.
 */
function refuseStatefulDevice(where: string, rdev: bigint): void {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  if (major === MEM_MAJOR || (major === MISC_MAJOR && minor === AUTOFS_MINOR)) return;
  const what =
    major === MISC_MAJOR && minor === TUN_MINOR
      ? 'a tun/tap device (its network interface would have to be recreated, with the network namespace)'
      : `character device ${major}:${minor}: reopening it by name would not bring back its state`;
  throw new TsdumpError('UNSUPPORTED_FD', `${where}: tsdump cannot dump ${what}`);
}

/**
 * A POSIX message queue (mq_open) looks like a regular file, but what matters is its queued
 * messages, which no CRIU image carries (nor can a host-namespace dump re-open its name): refused.
 */
export function refuseMessageQueue(where: string, target: string): never {
  const name = target.endsWith(' (deleted)') ? `${target.slice(0, -10)}, unlinked` : target;
  throw new TsdumpError(
    'UNSUPPORTED_FD',
    `${where}: a POSIX message queue (mq_open "${name}"): tsdump cannot dump message queues yet; ` +
      'close it or leave the process out of the tree',
  );
}

/** A position restore does not set (CRIU's -1). */
const NO_POSITION = (1n << 64n) - 1n;
const KMSG = (MEM_MAJOR << 8n) | 11n;

/** /dev/kmsg opened write-only cannot be seeked, not even to 0: CRIU records no position for it. */
const unseekable = (rdev: bigint, flags: number, pos: bigint) => rdev === KMSG && (flags & O_ACCMODE) === O_WRONLY && pos === 0n;

export const regularFiles: FdKind = {
  name: 'regular files',
  matches: (fd) =>
    fd.target.startsWith('/') &&
    !fd.target.endsWith(' (deleted)') &&
    (fd.mode & S_IFMT) !== S_IFIFO &&
    !TERMINAL.test(fd.target),
  async entry({ pid, id, fd, fileFlags, fown, checkPath, remapLinked }) {
    const source = `/proc/${pid}/fd/${fd.fd}`;
    if ((fd.mode & S_IFMT) === S_IFCHR) refuseStatefulDevice(`pid ${pid}: fd ${fd.fd} (${fd.target})`, fd.rdev);
    // Restore reopens the file by its name: the name must still be the file's (CRIU's
    // check_path_remap), or be linked back (--link-remap). /proc files are not checked, as in
    // CRIU: their inode numbers are made up on each lookup. (Synchronous: the tree is frozen.)
    const fsType = statfsSync(source).type;
    if (fsType === MQUEUE_MAGIC) refuseMessageQueue(`pid ${pid}: fd ${fd.fd}`, fd.target);
    if (fsType !== PROC_SUPER_MAGIC && checkPath(fd.target, source) === 'gone') {
      await remapLinked(id, source, fd.target);
    }
    // CRIU validates what it records the size of: the size, and an ELF's build-id (read through
    // the task's own descriptor, so it is the file the task has open).
    const validated = (fd.mode & S_IFMT) === S_IFREG && !growingLog(fileFlags);
    const buildId = validated ? buildIdField(source, fd.size, `pid ${pid}: fd ${fd.fd} (${fd.target})`) : {};
    return {
      type: fd_types.REG,
      id,
      reg: {
        id,
        flags: fileFlags,
        pos: unseekable(fd.rdev, fileFlags, fd.pos) ? NO_POSITION : fd.pos,
        fown,
        name: fd.target,
        mode: fd.mode,
        ...(validated ? { size: fd.size } : {}),
        ...buildId,
      },
    };
  },
};
