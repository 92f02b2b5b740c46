// inotify: the instance and its watches (CRIU's inotify_file_entry with inotify_wd_entry per
// `inotify wd:` line of fdinfo, each naming its inode by file handle).
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { TsdumpError } from '../../errors.js';
import { native } from '../../native.js';
import { isAnon } from './anon.js';
import type { FdKind } from './kind.js';
import { checkUnreadEvents } from './notify-queue.js';
import type { InotifyWatchInfo } from '../../../native/index.js';

const O_ACCMODE = 0o3;
const O_NONBLOCK = 0o4000;

/** fh_entry.handle always has this many u64 words (CRIU's fh_entry_sizes.min_entries). */
const HANDLE_WORDS = 16;

export const inotifies: FdKind = {
  name: 'inotify instances',
  matches: (fd) => isAnon(fd, 'inotify'),
  async entry(c) {
    // struct inotify_event is 16 bytes, plus a NUL-padded name (at most NAME_MAX + 1, rounded
    // up to the struct's alignment) for events in a watched directory
    checkUnreadEvents(c, { what: 'inotify', min: 16, max: 16 + 256 + 16 });
    // CRIU's restore hands the recorded file flags to inotify_init1(), which takes only
    // IN_NONBLOCK (and IN_CLOEXEC, kept per fd): any other status flag (O_ASYNC) fails the restore.
    const extra = c.fileFlags & ~(O_ACCMODE | O_NONBLOCK);
    if (extra !== 0) {
      throw new TsdumpError(
        'UNSUPPORTED_FD',
        `pid ${c.pid}: fd ${c.fd.fd} (${c.fd.target}): tsdump cannot dump inotify descriptors with file flags ` +
          `0${extra.toString(8)} (O_ASYNC): CRIU recreates them with inotify_init1(), which accepts only IN_NONBLOCK`,
      );
    }
    return {
      type: fd_types.INOTIFY,
      id: c.id,
      ify: {
        id: c.id,
        flags: c.fileFlags,
        fown: c.fown,
        // As CRIU does: the watches' id stays 0 inside the file entry, and each handle carries
        // the watched path too (restore opens that; a bare handle needs the mount tree).
        wd: c.fd.inotifyWatches.map((w) => ({
          id: 0,
          iIno: w.ino,
          mask: w.mask,
          ignoredMask: w.ignoredMask,
          sDev: Number(w.sdev),
          wd: w.wd,
          fHandle: fhEntry(c.pid, c.fd.fd, w),
        })),
      },
    };
  },
};

type Watched = Pick<InotifyWatchInfo, 'ino' | 'sdev' | 'fhandleBytes' | 'fhandleType' | 'fHandle'>;

/** fh_entry of a watched inode (inotify watch or fanotify inode mark). */
export function fhEntry(pid: number, fd: number, w: Watched) {
  return { bytes: w.fhandleBytes, type: w.fhandleType, handle: handleWords(w.fHandle, pid, fd), ...watchedPath(pid, w) };
}

/** The watched inode's path, found by opening its handle on the task's mounts of its device. */
function watchedPath(pid: number, w: Watched): { path?: string } {
  const bytes = Buffer.from(w.fHandle, 'hex').subarray(0, w.fhandleBytes);
  const path = native.pathByHandle(pid, Number(w.sdev), w.ino, w.fhandleType, bytes);
  return path === null || path === undefined ? {} : { path };
}

/** The kernel's hex f_handle text as CRIU stores it: bytes packed little-endian into 16 u64s. */
function handleWords(hex: string, pid: number, fd: number): bigint[] {
  const bytes = Buffer.alloc(HANDLE_WORDS * 8);
  if (hex.length % 2 !== 0 || hex.length / 2 > bytes.length || !/^[0-9a-f]*$/i.test(hex)) {
    throw new TsdumpError('KERNEL', `pid ${pid}: fd ${fd}: unexpected inotify f_handle ${JSON.stringify(hex)}`);
  }
  Buffer.from(hex, 'hex').copy(bytes);
  return Array.from({ length: HANDLE_WORDS }, (_, i) => bytes.readBigUInt64LE(i * 8));
}
