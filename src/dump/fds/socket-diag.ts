// What the kernel's sock_diag tables say about the sockets of this dump, read once per dump (the
// tree is frozen, so the tables hold still), and which socket inodes the dumped tree holds — the
// test for "is this peer inside the tree?" that decides between dumping a pair and refusing or
// marking an external peer (CRIU's --ext-unix-sk). Both belong to the dump (FdDumpState, kind.ts).
import { readdir, readlink } from 'node:fs/promises';
import { existsSync, readdirSync } from 'node:fs';
import type { InetSocketDiag, NetlinkSocketDiag, TcpRepairSocket, UnixSocketDiag } from '../../../native/index.js';
import { native } from '../../native.js';
import type { Logger } from '../../log.js';
import type { FdKindContext } from './kind.js';

/** Dump-wide settings the socket kinds need from DumpOptions, and the dumped tree. */
export interface SocketDumpSettings {
  /** --ext-unix-sk: a unix socket may have its peer outside the tree (dgram peers with a name). */
  readonly extUnixSk?: boolean;
  /** --tcp-established: established TCP connections may be dumped. */
  readonly tcpEstablished?: boolean;
  /** --tcp-close: connected TCP/MPTCP sockets are dumped stateless, for a restore that closes them. */
  readonly tcpClose?: boolean;
  /** The tree's connections, locked for this dump; their sockets are read in repair mode. */
  readonly networkLock?: ConnectionRepair;
  /** Root-first pids of the dumped processes. */
  readonly pids?: readonly number[];
  /** The dump's log, for what is dumped differently than it runs (an MPTCP listener). */
  readonly log?: Logger;
}

/** The network lock's part a socket's dump uses (../network-lock.ts): its connection in repair mode. */
export interface ConnectionRepair {
  repair(pid: number, fd: number, ino: number): TcpRepairSocket;
}

export interface SocketTables {
  unix: Map<number, UnixSocketDiag>;
  /** Listener inode by the inode of a client still waiting in its accept queue. */
  inflight: Map<number, number>;
  inet: Map<number, InetSocketDiag>;
  /** Bound netlink sockets (unbound ones are not in netlink_diag). */
  netlink: Map<number, NetlinkSocketDiag>;
  treeInodes?: Promise<Set<number>>;
  /** Unix sockets in flight in the queues of the tree's sockets (in-flight.ts). */
  inFlight?: Promise<Set<number>>;
  /** MPTCP sockets by inode, asked for when the dump meets its first one (see mptcpSocket). */
  mptcp?: Promise<Map<number, InetSocketDiag>>;
}

const AF_INET = 2;
const AF_INET6 = 10;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const IPPROTO_MPTCP = 262;

/** The diag tables of this dump, fetched on its first socket. */
export function socketTables(c: FdKindContext): Promise<SocketTables> {
  c.dump.socketTables ??= readTables();
  return c.dump.socketTables;
}

async function readTables(): Promise<SocketTables> {
  const unix = new Map<number, UnixSocketDiag>();
  const inflight = new Map<number, number>();
  for (const s of await native.unixSockets()) {
    unix.set(s.ino, s);
    for (const client of s.icons) inflight.set(client, s.ino);
  }
  const inet = new Map<number, InetSocketDiag>();
  for (const family of [AF_INET, AF_INET6]) {
    for (const proto of [IPPROTO_TCP, IPPROTO_UDP]) {
      for (const s of await native.inetSockets(family, proto)) inet.set(s.ino, s);
    }
  }
  const netlink = new Map<number, NetlinkSocketDiag>();
  for (const s of native.netlinkSockets()) netlink.set(s.ino, s);
  return { unix, inflight, inet, netlink };
}

/** The dumped processes (root first). */
export function treePids(c: FdKindContext): readonly number[] {
  return c.dump.sockets.pids ?? tracedByUs();
}

/**
 * inet_diag's MPTCP entry for the socket `ino` (its TCP subflows are in `inet` under the same
 * inode, but the MPTCP entry is the socket the task holds).
 */
export async function mptcpSocket(c: FdKindContext, ino: number): Promise<InetSocketDiag | undefined> {
  const t = await socketTables(c);
  t.mptcp ??= mptcpSockets();
  return (await t.mptcp).get(ino);
}

/** Every MPTCP socket of this network namespace, by inode. */
export async function mptcpSockets(): Promise<Map<number, InetSocketDiag>> {
  const out = new Map<number, InetSocketDiag>();
  for (const family of [AF_INET, AF_INET6]) {
    for (const s of native.inetSockets(family, IPPROTO_MPTCP)) out.set(s.ino, s);
  }
  return out;
}

/** Socket inodes held open by any process of the dumped tree. */
export async function treeSocketInodes(c: FdKindContext): Promise<Set<number>> {
  const t = await socketTables(c);
  t.treeInodes ??= collectTreeInodes(treePids(c));
  return t.treeInodes;
}

/** Socket inodes the fd tables of `pids` hold. */
export async function collectTreeInodes(pids: readonly number[]): Promise<Set<number>> {
  const inodes = new Set<number>();
  for (const pid of pids) {
    const dir = `/proc/${pid}/fd`;
    for (const fd of await readdir(dir).catch(() => [] as string[])) {
      const target = await readlink(`${dir}/${fd}`).catch(() => '');
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m) inodes.add(Number(m[1]));
    }
  }
  return inodes;
}

/** Processes whose tracer is one of our threads: the seized tree when nobody told us its pids. */
function tracedByUs(): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const tracer = native.tracerPid(Number(name));
    if (tracer && existsSync(`/proc/self/task/${tracer}`)) out.push(Number(name));
  }
  return out;
}

/** A unix address for messages: path, "@abstract" or "(unbound)". */
export function unixName(name: Uint8Array): string {
  if (name.length === 0) return '(unbound)';
  if (name[0] === 0) return `@${Buffer.from(name.subarray(1)).toString('utf8')}`;
  // Bound with the terminating NUL counted in the address length (as most programs do).
  return Buffer.from(name).toString('utf8').replace(/\0+$/, '');
}
