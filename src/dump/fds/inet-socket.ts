// TCP, MPTCP and UDP sockets, IPv4 and IPv6 (CRIU's INETSK): inet_sk_entry from inet_diag and the
// socket itself (criu/sk-inet.c). Listening TCP and bound/connected UDP sockets are dumped as they
// are; an established TCP connection needs --tcp-established: the dump holds it locked
// (../network-lock.ts) and reads it in TCP_REPAIR mode into tcp-stream-INO.img (criu/sk-tcp.c
// dump_tcp_conn_state). With --tcp-close instead, connections are recorded without their state
// and `criu restore --tcp-close` brings them back shut down: the program reads EOF and lets go.
// SO_PASSCRED/SO_PASSSEC are recorded as off: they mean nothing for inet sockets, and this kernel
// refuses to report them (the reason the reference CRIU 4.1.1 cannot dump any inet socket here).
//
// MPTCP (IPPROTO_MPTCP, what Go >= 1.24 listens with): `criu restore` 4.1.1 creates an inet
// socket with the image's protocol, so an unconnected or bound MPTCP socket comes back as one;
// but it listen()s only on IPPROTO_TCP entries ("Wrong socket in listen state") and rebuilds
// connections only through TCP_REPAIR, which MPTCP lacks. So an MPTCP listener is recorded as a
// TCP listener on the same address, with the same options — the restored program accepts plain
// TCP (MPTCP clients fall back to TCP) — and an MPTCP connection needs --tcp-close.
import { create } from '@bufbuild/protobuf';
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { sk_shutdown } from '../../images/gen/sk-opts_pb.js';
import { tcp_stream_entrySchema } from '../../images/gen/tcp-stream_pb.js';
import type { InetSocketOptions, SocketInfo } from '../../../native/index.js';
import { native } from '../../native.js';
import { TsdumpError } from '../../errors.js';
import type { FdKindContext, FileEntryInit } from './kind.js';
import { mptcpSocket, socketTables } from './socket-diag.js';
import { skOpts } from './socket-opts.js';

const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const IPPROTO_MPTCP = 262;
const TCP_ESTABLISHED = 1;
const TCP_SYN_SENT = 2;
const TCP_FIN_WAIT1 = 4;
const TCP_FIN_WAIT2 = 5;
const TCP_CLOSE = 7;
const TCP_CLOSE_WAIT = 8;
const TCP_LAST_ACK = 9;
const TCP_LISTEN = 10;
const TCP_CLOSING = 11;
/** tcp_info.tcpi_options bits (linux/tcp.h). */
const TCPI_OPT_TIMESTAMPS = 1;
const TCPI_OPT_WSCALE = 4;
/**
 * Connection states tsdump dumps, those CRIU dumps (criu/sk-inet.c can_dump_inet_sk):
 * established; every state of a shutdown in progress — our FIN queued (FIN_WAIT1) or
 * acknowledged (FIN_WAIT2), the peer's received (CLOSE_WAIT), or both (LAST_ACK, CLOSING), where
 * the queue lengths leave the FINs out and CRIU's restore rebuilds them from the state
 * (soccr/soccr.c libsoccr_restore); and a connect() still waiting for its SYN-ACK (SYN_SENT),
 * which the restore sends again. TIME_WAIT belongs to no descriptor; SYN_RECV (a Fast Open
 * connection accepted before its handshake ended) is refused, as CRIU refuses it.
 */
const DUMPABLE_STATES: ReadonlySet<number> = new Set([
  TCP_ESTABLISHED,
  TCP_SYN_SENT,
  TCP_FIN_WAIT1,
  TCP_FIN_WAIT2,
  TCP_CLOSE_WAIT,
  TCP_LAST_ACK,
  TCP_CLOSING,
]);
/** The kernel's TCP states by number (a unix socket's state counts in them too). */
export const TCP_STATES: readonly string[] = ['', 'ESTABLISHED', 'SYN_SENT', 'SYN_RECV', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT', 'CLOSE', 'CLOSE_WAIT', 'LAST_ACK', 'LISTEN', 'CLOSING'];

function refuse(c: FdKindContext, why: string, code: 'UNSUPPORTED_FD' | 'UNSUPPORTED' = 'UNSUPPORTED_FD'): TsdumpError {
  return new TsdumpError(code, `pid ${c.pid}: fd ${c.fd.fd} (${c.fd.target}): ${why}`);
}

export const SOCK_TYPES: Readonly<Record<number, string>> = { 1: 'SOCK_STREAM', 2: 'SOCK_DGRAM', 3: 'SOCK_RAW', 5: 'SOCK_SEQPACKET' };
const IP_PROTOCOLS: Readonly<Record<number, string>> = {
  0: 'IPPROTO_IP',
  1: 'IPPROTO_ICMP',
  6: 'IPPROTO_TCP',
  17: 'IPPROTO_UDP',
  33: 'IPPROTO_DCCP',
  58: 'IPPROTO_ICMPV6',
  132: 'IPPROTO_SCTP',
  136: 'IPPROTO_UDPLITE',
  255: 'IPPROTO_RAW',
  262: 'IPPROTO_MPTCP',
};

/** "AF_INET6 SOCK_DGRAM socket of protocol IPPROTO_ICMPV6 (58)": the socket() arguments. */
function socketKind(family: number, type: number, proto: number): string {
  const name = (names: Readonly<Record<number, string>>, v: number) => names[v] ?? String(v);
  return `${family === AF_INET6 ? 'AF_INET6' : 'AF_INET'} ${name(SOCK_TYPES, type)} socket of protocol ${name(IP_PROTOCOLS, proto)} (${proto})`;
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
  const mptcp = type === SOCK_STREAM && proto === IPPROTO_MPTCP;
  const stream = mptcp || (type === SOCK_STREAM && proto === IPPROTO_TCP);
  if (!stream && !(type === SOCK_DGRAM && proto === IPPROTO_UDP)) {
    throw refuse(c, `${socketKind(family, type, proto)}: tsdump dumps TCP, MPTCP and UDP sockets only; close it or leave the process out of the tree`);
  }
  if (info.udpCork) throw refuse(c, 'corked UDP socket (UDP_CORK)');
  const words = family === AF_INET6 ? 4 : 1;
  // A socket neither bound nor connected is not in inet_diag's tables (CRIU's gen_uncon_sk).
  const sk = (mptcp ? await mptcpSocket(c, ino) : undefined) ?? (await socketTables(c)).inet.get(ino) ?? {
    state: TCP_CLOSE,
    srcPort: 0,
    dstPort: 0,
    srcAddr: new Array<number>(words).fill(0),
    dstAddr: new Array<number>(words).fill(0),
    wqlen: 0,
    shutdown: 0,
  };
  const local = inetAddress(family, sk.srcAddr, sk.srcPort);
  let state = sk.state;
  // what `criu restore` will socket() (see the head of this file)
  let restoredProto = proto;
  if (stream && sk.state !== TCP_LISTEN && sk.state !== TCP_CLOSE) {
    const conn = `${TCP_STATES[sk.state] ?? sk.state} ${mptcp ? 'MPTCP' : 'TCP'} connection ${local} -> ${inetAddress(family, sk.dstAddr, sk.dstPort)}`;
    const settings = c.dump.sockets;
    if (mptcp && !settings.tcpClose) {
      throw refuse(
        c,
        `${conn}: MPTCP (IPPROTO_MPTCP) has no repair mode (TCP_REPAIR), so neither tsdump nor CRIU can carry the connection over; ` +
          'dump with --tcp-close to have criu restore --tcp-close bring it back closed (the program sees its peer hang up), ' +
          'or run the program without MPTCP (Go: GODEBUG=multipathtcp=0)',
      );
    }
    if (!settings.tcpEstablished && !settings.tcpClose) {
      throw refuse(c, `${conn}; established connections are dumped only with --tcp-established (carried over) or --tcp-close (restored closed)`);
    }
    if (!DUMPABLE_STATES.has(sk.state)) {
      throw refuse(c, `${conn}: tsdump dumps connections in ${[...DUMPABLE_STATES].map((st) => TCP_STATES[st]).join(', ')} states only`, 'UNSUPPORTED');
    }
    if (settings.tcpClose) {
      // criu restore --tcp-close recreates it as a TCP socket and shuts it down; no state needed
      restoredProto = IPPROTO_TCP;
    } else {
      if (!settings.networkLock) throw refuse(c, `${conn}: the network is not locked`, 'UNSUPPORTED');
      state = await dumpTcpStream(c, ino, conn);
    }
  }
  if (stream && sk.state === TCP_CLOSE && info.opts.acceptconn) {
    throw refuse(c, `${mptcp ? 'MPTCP' : 'TCP'} socket ${local} reports SO_ACCEPTCONN but inet_diag says closed`);
  }
  if (mptcp && sk.state === TCP_LISTEN) {
    restoredProto = IPPROTO_TCP;
    c.dump.sockets.log?.warn(
      `pid ${c.pid}: fd ${c.fd.fd}: MPTCP listener ${local} is dumped as a TCP listener (criu restore listens on IPPROTO_TCP sockets only); ` +
        'after the restore it accepts TCP, and MPTCP clients fall back to TCP',
    );
  }
  const shutdown = sk.shutdown as sk_shutdown;
  const ipTcp = await native.inetSocketOptions(c.pid, c.fd.fd);
  return {
    type: fd_types.INETSK,
    id: c.id,
    isk: {
      id: c.id,
      ino,
      family,
      type,
      proto: restoredProto,
      state,
      srcPort: sk.srcPort,
      dstPort: sk.dstPort,
      flags: c.fileFlags,
      // inet_diag's write-queue figure: for a listener its backlog (what restore listen()s with),
      // for a connection the bytes not yet acknowledged (restore ignores it then).
      backlog: sk.wqlen,
      srcAddr: sk.srcAddr.slice(0, words),
      dstAddr: sk.dstAddr.slice(0, words),
      fown: c.fown,
      opts: skOpts(socketOptions(info, restoredProto)),
      ...(info.v6Only != null ? { v6only: info.v6Only } : {}),
      ipOpts: ipOpts(info, ipTcp),
      ...(shutdown !== sk_shutdown.NONE ? { shutdown } : {}),
      tcpOpts: restoredProto === IPPROTO_TCP ? tcpOpts(ipTcp) : {},
    },
  };
}

/**
 * The socket-level options, as restore will set them on a socket of `restoredProto`. An MPTCP
 * socket refuses SO_BUF_LOCK (EOPNOTSUPP, which fails the restore), so it is left out: the
 * buffer sizes restore sets lock them anyway.
 */
function socketOptions(info: SocketInfo, restoredProto: number): SocketInfo['opts'] {
  const { bufLock, ...opts } = info.opts;
  return { ...opts, passcred: false, passsec: false, ...(restoredProto !== IPPROTO_MPTCP && bufLock != null ? { bufLock } : {}) };
}

/**
 * ip_opts_entry as CRIU 4.1 fills it: freebind and TOS only when set; the TTL of every AF_INET
 * socket (its effective value, 64 by default, which restore then sets explicitly).
 */
function ipOpts(info: SocketInfo, o: InetSocketOptions) {
  return {
    ...(info.freebind ? { freebind: true } : {}),
    ...(o.tos ? { tos: o.tos } : {}),
    ...(o.ttl != null ? { ttl: o.ttl } : {}),
  };
}

/**
 * tcp_opts_entry, written by CRIU 4.1 for every inet socket (empty for UDP): TCP_NODELAY and
 * TCP_CORK only when on, the keepalive tuning always. (tcp_stream_entry's own cork/nodelay are
 * the deprecated places for the first two.)
 */
function tcpOpts(o: InetSocketOptions) {
  const t = o.tcp;
  if (!t) return {};
  return {
    ...(t.nodelay ? { nodelay: true } : {}),
    ...(t.cork ? { cork: true } : {}),
    keepcnt: t.keepcnt,
    keepidle: t.keepidle,
    keepintvl: t.keepintvl,
  };
}

/**
 * Reads the connection in repair mode and writes tcp-stream-INO.img (INO in hex): the
 * tcp_stream_entry, then the receive queue's bytes, then the send queue's. Returns the state
 * TCP_INFO reports, which is what the inet entry records. The socket stays in repair mode, held
 * by the network lock, until the dump ends.
 */
async function dumpTcpStream(c: FdKindContext, ino: number, conn: string): Promise<number> {
  const lock = c.dump.sockets.networkLock!;
  const repair = await lock.repair(c.pid, c.fd.fd, ino);
  const s = await repair.save();
  if (!DUMPABLE_STATES.has(s.state)) {
    throw refuse(c, `${conn} went to state ${TCP_STATES[s.state] ?? s.state} while the network was locked`, 'UNSUPPORTED');
  }
  const img = await c.image(`tcp-stream-${ino.toString(16)}.img`);
  const entry = create(tcp_stream_entrySchema, {
    inqLen: s.inqLen,
    inqSeq: s.inqSeq,
    outqLen: s.outqLen,
    outqSeq: s.outqSeq,
    optMask: s.optMask,
    sndWscale: s.sndWscale,
    mssClamp: s.mssClamp,
    ...(s.optMask & TCPI_OPT_WSCALE ? { rcvWscale: s.rcvWscale } : {}),
    ...(s.optMask & TCPI_OPT_TIMESTAMPS && s.timestamp != null ? { timestamp: s.timestamp } : {}),
    unsqLen: s.unsqLen,
    ...(s.window
      ? { sndWl1: s.window.sndWl1, sndWnd: s.window.sndWnd, maxWindow: s.window.maxWindow, rcvWnd: s.window.rcvWnd, rcvWup: s.window.rcvWup }
      : {}),
  });
  await img.append(tcp_stream_entrySchema, entry, Buffer.concat([s.inq, s.outq]));
  return s.state;
}
