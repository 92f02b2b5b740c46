// Process file descriptors (pidfd_open, clone(CLONE_PIDFD)): CRIU's PIDFD. Restore opens a new
// pidfd on the same pid, so the process must be in the tree (restore recreates it under that
// pid); a pidfd whose process is gone is recreated on a helper that restore starts and kills.
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { TsdumpError } from '../../errors.js';
import { fdinfoExtra, isAnon } from './anon.js';
import type { FdKind } from './kind.js';
import { treePids } from './socket-diag.js';

/** A pidfd is O_RDWR; the flags restore hands to pidfd_open are the rest (CRIU masks O_RDWR). */
const O_RDWR = 0o2;
/** PIDFD_THREAD: a pidfd on a thread rather than a process (Linux 6.9). */
const PIDFD_THREAD = 0o200;

export const pidfds: FdKind = {
  name: 'pidfds',
  matches: (fd) => isAnon(fd, 'pidfd') || /^pidfd:/.test(fd.target),
  async entry(c) {
    const where = `pid ${c.pid}: fd ${c.fd.fd} (${c.fd.target})`;
    if (c.fileFlags & PIDFD_THREAD) throw new TsdumpError('UNSUPPORTED_FD', `${where}: tsdump cannot dump a pidfd of a thread (PIDFD_THREAD), as CRIU cannot`);
    const pid = Number(fdinfoExtra(c.fd, 'Pid') ?? NaN);
    // NSpid lists the pid in each pid namespace down to the process's own: restore uses the last
    const nspid = Number(fdinfoExtra(c.fd, 'NSpid')?.split(/\s+/).at(-1) ?? NaN);
    if (!Number.isInteger(pid) || !Number.isInteger(nspid)) throw new TsdumpError('KERNEL', `${where}: fdinfo has no Pid/NSpid lines`);
    if (pid !== -1 && !treePids(c).includes(pid)) {
      throw new TsdumpError(
        'UNSUPPORTED_FD',
        `${where}: a pidfd of pid ${pid}, which is not in the dumped tree; restore could only open it on whatever process has that pid then`,
      );
    }
    return {
      type: fd_types.PIDFD,
      id: c.id,
      pidfd: { id: c.id, ino: Number(c.fd.ino & 0xffffffffn), flags: c.fileFlags & ~O_RDWR, nspid, fown: c.fown },
    };
  },
};
