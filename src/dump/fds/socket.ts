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
const FAMILIES: Record<number, [string, string]> = { 2: ['inet', 'AF_INET'], 10: ['inet6', 'AF_INET6'], 16: ['netlink', 'AF_NETLINK'], 17: ['packet', 'AF_PACKET'] };

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
      throw new TsdumpError('UNSUPPORTED_FD', `tsdump cannot dump ${FAMILIES[info.family]?.[0] ?? 'inet'} sockets in flight yet`);
    }
    if (info.family === AF_INET || info.family === AF_INET6) return inetSocketEntry(c, ino, info);
    if (info.family === AF_NETLINK) return netlinkSocketEntry(c, ino, info);
    // named as socket(2) is given them: family, then protocol
    const [name, af] = FAMILIES[info.family] ?? ['', `family ${info.family}`];
    const proto = `protocol ${info.protocol}`;
    throw new TsdumpError(
      'UNSUPPORTED_FD',
      `pid ${c.pid}: fd ${c.fd.fd} (${c.fd.target}): tsdump cannot dump ${name ? `${name} sockets` : 'sockets'} (${af}, ${proto}) yet; ` +
        'close it or leave the process out of the tree',
    );
  },
};
