// epoll: the instance and its registrations (CRIU's eventpoll_file_entry with its
// eventpoll_tfd_entry list, from the `tfd:` lines of fdinfo).
import { readdir, stat } from 'node:fs/promises';
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import type { EpollTargetInfo } from '../../../native/index.js';
import { native } from '../../native.js';
import { TsdumpError } from '../../errors.js';
import { isAnon } from './anon.js';
import { AFTER_TASK_FILES, type FdKind, type FdKindContext } from './kind.js';

export const eventpolls: FdKind = {
  name: 'eventpolls',
  matches: (fd) => isAnon(fd, 'eventpoll'),
  async entry(c) {
    // its targets are re-added through the fds of the task that holds it
    if (c.inFlight) throw new TsdumpError('UNSUPPORTED_FD', 'tsdump cannot dump eventpolls in flight');
    // CRIU's restore re-adds each registration by fd number, in the same task: the fd it was
    // made with if that still holds the file, else another fd of the task that does.
    const tfds: number[] = [];
    for (const [i, t] of c.fd.epollTargets.entries()) {
      // the kernel tells registrations under one fd number apart by their rank among them
      const toff = c.fd.epollTargets.slice(0, i).filter((o) => o.tfd === t.tfd).length;
      const fd = await targetFd(c, t, toff);
      if (fd === undefined) {
        throw new TsdumpError(
          'UNSUPPORTED_FD',
          `pid ${c.pid}: fd ${c.fd.fd} (${c.fd.target}): tsdump cannot dump an eventpoll watching a file that no fd of ` +
            `this process holds any more (added as fd ${t.tfd}, inode ${t.ino}); restore re-adds registrations through the task's own fds`,
        );
      }
      tfds.push(fd);
    }
    // CRIU queues an epoll with a moved target until the task's table is done; same place here
    if (tfds.some((fd, i) => fd !== c.fd.epollTargets[i]!.tfd)) c.writeAfter(AFTER_TASK_FILES, true);
    return {
      type: fd_types.EVENTPOLL,
      id: c.id,
      epfd: {
        id: c.id,
        flags: c.fileFlags,
        fown: c.fown,
        // CRIU leaves the tfd entries' id 0 when they are embedded here (it only names the
        // owning epoll in the old separate eventpoll-tfd.img); we write what CRIU writes.
        tfd: c.fd.epollTargets.map((t, i) => ({
          id: 0,
          tfd: tfds[i]!,
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

/**
 * An fd of the epoll's task holding the file registered as `t` (the `toff`-th registration
 * under its fd number): that number if it still holds the file, else the lowest fd that does
 * (kcmp KCMP_EPOLL_TFD, as CRIU finds it), else undefined.
 */
async function targetFd(c: FdKindContext, t: EpollTargetInfo, toff: number): Promise<number | undefined> {
  const holds = (fd: number) => native.kcmpEpollTarget(c.pid, fd, c.pid, c.fd.fd, t.tfd, toff);
  if (holds(t.tfd)) return t.tfd;
  const fds = (await readdir(`/proc/${c.pid}/fd`)).map(Number).sort((a, b) => a - b);
  for (const fd of fds) {
    if (fd === t.tfd) continue;
    // only files with the registered inode can be it: one stat spares most kcmp calls
    const ino = await stat(`/proc/${c.pid}/fd/${fd}`, { bigint: true }).then(
      (st) => st.ino,
      () => undefined,
    );
    if (ino === t.ino && holds(fd)) return fd;
  }
  return undefined;
}
