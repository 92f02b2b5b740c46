// TCP and UDP sockets, IPv4 and IPv6 (CRIU's INETSK): inet_sk_entry from inet_diag and the socket
// itself (criu/sk-inet.c). Listening TCP and bound/connected UDP sockets are dumped; an
// established TCP connection needs --tcp-established (TCP_REPAIR), which tsdump cannot do yet.
// SO_PASSCRED/SO_PASSSEC are recorded as off: they mean nothing for inet sockets, and this kernel
// refuses to report them (the reason the reference CRIU 4.1.1 cannot dump any inet socket here).
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { sk_shutdown } from '../../images/gen/sk-opts_pb.js';
import type { SocketInfo } from '../../../native/index.js';
import { TsdumpError } from '../../errors.js';
import type { FdKindContext, FileEntryInit } from './kind.js';
import { socketSettings, socketTables } from './socket-diag.js';
import { skOpts } from './socket-opts.js';

const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const TCP_CLOSE = 7;
const TCP_LISTEN = 10;
const TCP_STATES = ['', 'ESTABLISHED', 'SYN_SENT', 'SYN_RECV', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT', 'CLOSE', 'CLOSE_WAIT', 'LAST_ACK', 'LISTEN', 'CLOSING'];

function refuse(c: FdKindContext, why: string, code: 'UNSUPPORTED_FD' | 'UNSUPPORTED' = 'UNSUPPORTED_FD'): TsdumpError {
  return new TsdumpError(code, `pid ${c.pid}: fd ${c.fd.fd} (${c.fd.target}): ${why}`);
}

/** "127.0.0.1:80" / "[::1]:80" from CRIU's address words (memory order). */
export function inetAddress(family: number, words: readonly number[], port: number): string {
  const bytes = Buffer.alloc(words.length * 4);
  words.forEach((w, i) => bytes.writeUInt32LE(w >>> 0, i * 4));
  if (family !== AF_INET6) return `${[...bytes.subarray(0, 4)].join('.')}:${port}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return `[${groups.join(':')}]:${port}`;
}

export async function inetSocketEntry(c: FdKindContext, ino: number, info: SocketInfo): Promise<FileEntryInit> {
  const { family, sockType: type, protocol: proto } = info;
  if (!((type === SOCK_STREAM && proto === IPPROTO_TCP) || (type === SOCK_DGRAM && proto === IPPROTO_UDP))) {
    throw refuse(c, `inet socket of type ${type} protocol ${proto}; only TCP and UDP are supported`);
  }
  if (info.udpCork) throw refuse(c, 'corked UDP socket (UDP_CORK)');
  const words = family === AF_INET6 ? 4 : 1;
  // A socket neither bound nor connected is not in inet_diag's tables (CRIU's gen_uncon_sk).
  const sk = (await socketTables(c)).inet.get(ino) ?? {
    state: TCP_CLOSE,
    srcPort: 0,
    dstPort: 0,
    srcAddr: new Array<number>(words).fill(0),
    dstAddr: new Array<number>(words).fill(0),
    wqlen: 0,
    shutdown: 0,
  };
  const local = inetAddress(family, sk.srcAddr, sk.srcPort);
  if (proto === IPPROTO_TCP && sk.state !== TCP_LISTEN && sk.state !== TCP_CLOSE) {
    const conn = `${TCP_STATES[sk.state] ?? sk.state} TCP connection ${local} -> ${inetAddress(family, sk.dstAddr, sk.dstPort)}`;
    if (!socketSettings().tcpEstablished) {
      throw refuse(c, `${conn}; established connections are dumped only with --tcp-established`);
    }
    throw refuse(c, `${conn}: --tcp-established (TCP_REPAIR) is not implemented in tsdump yet`, 'UNSUPPORTED');
  }
  if (proto === IPPROTO_TCP && sk.state === TCP_CLOSE && info.opts.acceptconn) {
    throw refuse(c, `TCP socket ${local} reports SO_ACCEPTCONN but inet_diag says closed`);
  }
  const shutdown = sk.shutdown as sk_shutdown;
  return {
    type: fd_types.INETSK,
    id: c.id,
    isk: {
      id: c.id,
      ino,
      family,
      type,
      proto,
      state: sk.state,
      srcPort: sk.srcPort,
      dstPort: sk.dstPort,
      flags: c.fileFlags,
      // inet_diag's write-queue figure; for a listener, its backlog (what restore listen()s with).
      backlog: sk.wqlen,
      srcAddr: sk.srcAddr.slice(0, words),
      dstAddr: sk.dstAddr.slice(0, words),
      fown: c.fown,
      opts: skOpts({ ...info.opts, passcred: false, passsec: false }),
      ...(info.v6Only != null ? { v6only: info.v6Only } : {}),
      ipOpts: info.freebind ? { freebind: true } : {},
      ...(shutdown !== sk_shutdown.NONE ? { shutdown } : {}),
    },
  };
}
