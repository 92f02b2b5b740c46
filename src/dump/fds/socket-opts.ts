// sk_opts_entry from a socket's options, with the fields CRIU 4.1 writes and when it writes them
// (criu/sockets.c dump_socket_opts): so_mark only when non-zero, so_linger only when lingering,
// so_bound_dev only when bound, so_buf_lock when the kernel has SO_BUF_LOCK.
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { sk_opts_entrySchema } from '../../images/gen/sk-opts_pb.js';
import type { SocketOptions } from '../../../native/index.js';

export type SkOptsInit = MessageInitShape<typeof sk_opts_entrySchema>;

export function skOpts(o: SocketOptions): SkOptsInit {
  return {
    soSndbuf: o.sndbuf,
    soRcvbuf: o.rcvbuf,
    soSndTmoSec: o.sndTmoSec,
    soSndTmoUsec: o.sndTmoUsec,
    soRcvTmoSec: o.rcvTmoSec,
    soRcvTmoUsec: o.rcvTmoUsec,
    reuseaddr: o.reuseaddr,
    soPriority: o.priority,
    soRcvlowat: o.rcvlowat,
    ...(o.mark !== 0 ? { soMark: o.mark } : {}),
    soPasscred: o.passcred,
    soPasssec: o.passsec,
    soDontroute: o.dontroute,
    soNoCheck: o.noCheck,
    ...(o.boundDev !== undefined && o.boundDev !== null ? { soBoundDev: o.boundDev } : {}),
    soFilter: o.filter,
    soReuseport: o.reuseport,
    soBroadcast: o.broadcast,
    soKeepalive: o.keepalive,
    ...(o.tcpKeepcnt != null ? { tcpKeepcnt: o.tcpKeepcnt } : {}),
    ...(o.tcpKeepidle != null ? { tcpKeepidle: o.tcpKeepidle } : {}),
    ...(o.tcpKeepintvl != null ? { tcpKeepintvl: o.tcpKeepintvl } : {}),
    soOobinline: o.oobinline ? 1 : 0,
    ...(o.linger != null ? { soLinger: o.linger } : {}),
    ...(o.bufLock != null ? { soBufLock: o.bufLock } : {}),
  };
}
