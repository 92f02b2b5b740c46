// epoll: the instance and its registrations (CRIU's eventpoll_file_entry with its
// eventpoll_tfd_entry list, from the `tfd:` lines of fdinfo).
import { stat } from 'node:fs/promises';
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { TsdumpError } from '../../errors.js';
import { isAnon } from './anon.js';
import type { FdKind } from './kind.js';

export const eventpolls: FdKind = {
  name: 'eventpolls',
  matches: (fd) => isAnon(fd, 'eventpoll'),
  async entry(c) {
    // CRIU's restore re-adds each registration by the fd number it was made with, in the same
    // task; a registration whose fd was closed (or now names another file) cannot be rebuilt.
    for (const t of c.fd.epollTargets) {
      const ino = await stat(`/proc/${c.pid}/fd/${t.tfd}`).then(
        (st) => BigInt(st.ino),
        () => undefined,
      );
      if (ino !== t.ino) {
        throw new TsdumpError(
          'UNSUPPORTED_FD',
          `pid ${c.pid}: fd ${c.fd.fd} (${c.fd.target}): tsdump cannot dump eventpolls watching a file no longer open ` +
            `as fd ${t.tfd} (inode ${t.ino}${ino === undefined ? ', fd closed' : `, fd ${t.tfd} is now inode ${ino}`})`,
        );
      }
    }
    return {
      type: fd_types.EVENTPOLL,
      id: c.id,
      epfd: {
        id: c.id,
        flags: c.fileFlags,
        fown: c.fown,
        // CRIU leaves the tfd entries' id 0 when they are embedded here (it only names the
        // owning epoll in the old separate eventpoll-tfd.img); we write what CRIU writes.
        tfd: c.fd.epollTargets.map((t) => ({
          id: 0,
          tfd: t.tfd,
          events: t.events,
          data: t.data,
          dev: Number(t.sdev),
          inode: t.ino,
          pos: t.pos,
        })),
      },
    };
  },
};
