// Sockets (`socket:[INO]`): the family decides the entry — unix (./unix-socket.ts) or inet
// (./inet-socket.ts). The socket is read through a pidfd_getfd duplicate of the task's fd.
import type { SocketInfo } from '../../../native/index.js';
import { native } from '../../native.js';
import { TsdumpError } from '../../errors.js';
import { linkInode, type FdKind } from './kind.js';
import { unixSocketEntry } from './unix-socket.js';
import { inetSocketEntry } from './inet-socket.js';
import { netlinkSocketEntry } from './netlink-socket.js';

const AF_UNIX = 1;
const AF_INET = 2;
const AF_INET6 = 10;
const AF_NETLINK = 16;
const FAMILIES: Record<number, string> = { 2: 'inet', 10: 'inet6', 16: 'netlink', 17: 'packet' };

export const sockets: FdKind = {
  name: 'sockets',
  matches: (fd) => linkInode(fd.target, 'socket') !== undefined,
  async entry(c) {
    const ino = Number(linkInode(c.fd.target, 'socket')!);
    const info: SocketInfo = await native.inspectSocket(c.pid, c.fd.fd);
    if (info.family === AF_UNIX) {
      return unixSocketEntry(c, ino, info, async () => native.peekSocketQueue(c.pid, c.fd.fd));
    }
    if (c.inFlight && info.family !== AF_UNIX) {
      throw new TsdumpError('UNSUPPORTED_FD', `tsdump cannot dump ${FAMILIES[info.family] ?? 'inet'} sockets in flight yet`);
    }
    if (info.family === AF_INET || info.family === AF_INET6) return inetSocketEntry(c, ino, info);
    if (info.family === AF_NETLINK) return netlinkSocketEntry(c, ino, info);
    const family = FAMILIES[info.family] ?? `family ${info.family}`;
    throw new TsdumpError(
      'UNSUPPORTED_FD',
      `pid ${c.pid}: fd ${c.fd.fd} (${c.fd.target}): tsdump cannot dump ${family} sockets yet; close it or leave the process out of the tree`,
    );
  },
};
