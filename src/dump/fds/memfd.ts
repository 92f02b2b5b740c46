// memfd files (memfd_create). CRIU's images split a memfd in two: a MEMFD file entry per open
// description (flags, position, owner, and the inode it opens) and one memfd.img entry per inode
// (name, owner, size, seals, mode), whose contents are stored like shared anonymous memory under
// the inode number as shmid (../memfd-inodes.ts dumps them). Mappings of a memfd refer to a MEMFD
// file entry as well (vma shmid, status VMA_AREA_MEMFD), so a memfd that is only mapped still
// gets one. Restore recreates each inode once, refills it, reopens it for every entry, and seals
// it after the mappings are in place.
//
// tsdump names an inode by its inode number (CRIU counts them from 1): every reference, in any
// task and at any stage, names its inode without a dump-wide table.
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { native } from '../../native.js';
import { TsdumpError } from '../../errors.js';
import type { FdInfoEntry, ShmemDevice, VmaInfo } from '../../../native/index.js';
import { S_IFMT, S_IFREG, type FdKind, type FileTableAccess } from './kind.js';

/** How /proc shows a memfd: "/memfd:NAME (deleted)" (the name as given to memfd_create). */
const PREFIX = '/memfd:';
const DELETED = ' (deleted)';

const O_RDONLY = 0;
const O_WRONLY = 1;
const O_RDWR = 2;

let device: ShmemDevice | undefined;
/** Non-hugetlb memfds live on the kernel's internal shmem mount. */
function shmemDevice(): ShmemDevice {
  return (device ??= native.shmemDevice());
}

/** The name a memfd was created with, from its /proc link (" (deleted)" may be gone already). */
export function memfdName(link: string): string {
  const name = link.endsWith(DELETED) ? link.slice(0, -DELETED.length) : link;
  return name.startsWith(PREFIX) ? name.slice(PREFIX.length) : name;
}

/** Named like a memfd: it is one, or a hugetlb memfd (refused by `memfds`). */
function namedMemfd(fd: FdInfoEntry): boolean {
  return fd.target.startsWith(PREFIX) && fd.target.endsWith(DELETED) && (fd.mode & S_IFMT) === S_IFREG;
}

/** An fd of a memfd tsdump dumps (shmem-backed). */
export function isMemfdFd(fd: FdInfoEntry): boolean {
  return namedMemfd(fd) && fd.dev === shmemDevice().dev;
}

/** A mapping of a memfd tsdump dumps (shared or private, shmem-backed). */
export function isMemfdVma(vma: VmaInfo): boolean {
  const dev = shmemDevice();
  return vma.kind === 'file' && vma.deleted && !!vma.path?.startsWith(PREFIX) && vma.devMajor === dev.major && vma.devMinor === dev.minor;
}

/**
 * CRIU's inode_id for the inode `ino`. memfd_file_entry holds it as a uint32 and restore reads
 * it back as a C int, so larger inode numbers could not be found again.
 */
export function memfdInodeId(ino: bigint, at: string): number {
  if (ino <= 0n || ino > 0x7fffffffn) {
    throw new TsdumpError('UNSUPPORTED', `${at}: memfd inode number ${ino} does not fit CRIU's 31-bit memfd inode id`);
  }
  return Number(ino);
}

export const memfds: FdKind = {
  name: 'memfds',
  matches: namedMemfd,
  async entry(c) {
    const at = `pid ${c.pid}: fd ${c.fd.fd} (${c.fd.target})`;
    if (!isMemfdFd(c.fd)) {
      throw new TsdumpError('UNSUPPORTED_FD', `${at}: not a shmem memfd (a MFD_HUGETLB one?): tsdump cannot dump it yet`);
    }
    return {
      type: fd_types.MEMFD,
      id: c.id,
      memfd: { id: c.id, flags: c.fileFlags, pos: c.fd.pos, fown: c.fown, inodeId: memfdInodeId(c.fd.ino, at) },
    };
  },
};

/**
 * The MEMFD file entry the mappings of a memfd's inode refer to, one per inode in the dump. Like
 * CRIU's for a mapping, it carries no flags, position or owner: restore opens it with the
 * mapping's own fdflags.
 */
export function memfdMappingFile(files: FileTableAccess, pid: number, vma: VmaInfo): Promise<number> {
  const inodeId = memfdInodeId(vma.inode, `pid ${pid}: VMA ${vma.start.toString(16)}-${vma.end.toString(16)} (${vma.path ?? ''})`);
  return files.objectFile(`memfd:${vma.inode}`, (id) => ({
    type: fd_types.MEMFD,
    id,
    memfd: { id, flags: O_RDONLY, pos: 0n, fown: { uid: 0, euid: 0, signum: 0, pidType: 0, pid: 0 }, inodeId },
  }));
}

/**
 * The access mode the mapped file was opened with, as CRIU 4.x records a file mapping's fdflags:
 * /proc/PID/map_files shows it as the owner bits of the link's mode (r: read, w: write), which
 * the native visit read (VmaInfo.linkMode) while the task was held.
 */
export function mappingOpenFlags(pid: number, vma: VmaInfo): number {
  if (vma.linkMode === undefined) {
    throw new TsdumpError('PROCFS', `pid ${pid}: mapping ${vma.start.toString(16)}-${vma.end.toString(16)} (${vma.path ?? '?'}): its /proc/${pid}/map_files link could not be read`);
  }
  switch (vma.linkMode & 0o600) {
    case 0o600:
      return O_RDWR;
    case 0o200:
      return O_WRONLY;
    default:
      return O_RDONLY;
  }
}
