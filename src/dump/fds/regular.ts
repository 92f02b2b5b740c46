// Regular files, directories and character devices (/dev/null, /dev/zero, ...): CRIU's REG.
import { statfs } from 'node:fs/promises';
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { buildIdField } from '../elf-build-id.js';
import { S_IFIFO, S_IFMT, S_IFREG, type FdKind } from './kind.js';

/** Terminals are their own kind (TTY): restore must re-attach them, not reopen a path. */
const TERMINAL = /^\/dev\/(pts\/|tty|console$)/;

const PROC_SUPER_MAGIC = 0x9fa0;
const O_ACCMODE = 3;
const O_WRONLY = 1;
const O_APPEND = 0o2000;

/**
 * A write-only O_APPEND file (a log) keeps growing while the tree runs on; its size is not
 * recorded, or restore would refuse the grown file (CRIU's rule too).
 */
const growingLog = (flags: number) => (flags & O_ACCMODE) === O_WRONLY && (flags & O_APPEND) !== 0;

export const regularFiles: FdKind = {
  name: 'regular files',
  matches: (fd) =>
    fd.target.startsWith('/') &&
    !fd.target.endsWith(' (deleted)') &&
    (fd.mode & S_IFMT) !== S_IFIFO &&
    !TERMINAL.test(fd.target),
  async entry({ pid, id, fd, fileFlags, fown, checkPath, remapLinked }) {
    const source = `/proc/${pid}/fd/${fd.fd}`;
    // Restore reopens the file by its name: the name must still be the file's (CRIU's
    // check_path_remap), or be linked back (--link-remap). /proc files are not checked, as in
    // CRIU: their inode numbers are made up on each lookup.
    if ((await statfs(source)).type !== PROC_SUPER_MAGIC && (await checkPath(fd.target, source)) === 'gone') {
      await remapLinked(id, source, fd.target);
    }
    // CRIU validates what it records the size of: the size, and an ELF's build-id (read through
    // the task's own descriptor, so it is the file the task has open).
    const validated = (fd.mode & S_IFMT) === S_IFREG && !growingLog(fileFlags);
    const buildId = validated ? await buildIdField(source, fd.size, `pid ${pid}: fd ${fd.fd} (${fd.target})`) : {};
    return {
      type: fd_types.REG,
      id,
      reg: {
        id,
        flags: fileFlags,
        pos: fd.pos,
        fown,
        name: fd.target,
        mode: fd.mode,
        ...(validated ? { size: fd.size } : {}),
        ...buildId,
      },
    };
  },
};
