// Netlink sockets (CRIU's NETLINKSK): what netlink_diag says of a bound one (port id, multicast
// groups, the peer it is connected to), the protocol of an unbound one, and the socket options.
// Restore makes a new socket of that protocol, binds it to the same port id (or any, if taken)
// and groups, and connects it again. Unread messages cannot be carried (CRIU refuses them too):
// they are answers or notifications the kernel queued for the old socket.
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import type { SocketInfo } from '../../../native/index.js';
import { native } from '../../native.js';
import { TsdumpError } from '../../errors.js';
import type { FdKindContext, FileEntryInit } from './kind.js';
import { skOpts } from './socket-opts.js';
import { socketTables } from './socket-diag.js';

export async function netlinkSocketEntry(c: FdKindContext, ino: number, info: SocketInfo): Promise<FileEntryInit> {
  const refuse = (why: string) => new TsdumpError('UNSUPPORTED_FD', `pid ${c.pid}: fd ${c.fd.fd} (${c.fd.target}): ${why}`);
  if (native.fdReadable(c.pid, c.fd.fd)) {
    throw refuse('a netlink socket with unread messages; tsdump cannot dump those (neither can CRIU): read them first');
  }
  const sk = (await socketTables(c)).netlink.get(ino);
  // only bound sockets are listed; an unbound one has nothing but its protocol
  let groups = sk?.groups ?? [];
  // the kernel's bitmap is of longs: a trailing empty word is padding
  if (groups.length > 0 && groups.at(-1) === 0) groups = groups.slice(0, -1);
  if (groups.length > 1) throw refuse('a netlink socket listening to groups above 32; restore binds only the first 32 (as CRIU)');
  if (sk && groups.length > 0 && sk.portid === 0) throw refuse('a netlink socket in multicast groups without a port id');
  return {
    type: fd_types.NETLINKSK,
    id: c.id,
    nlsk: {
      id: c.id,
      ino,
      // as CRIU: the namespace of a socket netlink_diag listed (an unbound one has none here)
      ...(sk && c.netNsId ? { nsId: c.netNsId() } : {}),
      protocol: sk?.protocol ?? info.protocol,
      state: sk?.state ?? 0,
      flags: c.fileFlags,
      portid: sk?.portid ?? 0,
      groups,
      dstPortid: sk?.dstPortid ?? 0,
      dstGroup: sk?.dstGroup ?? 0,
      fown: c.fown,
      opts: skOpts(info.opts),
    },
  };
}
