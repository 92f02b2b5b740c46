// Unix sockets (CRIU's UNIXSK): unix_sk_entry from unix_diag and the socket itself, the receive
// queue in sk-queues.img, and the peer rules of criu/sk-unix.c: a peer inside the tree is dumped
// with it; a peer outside is refused unless --ext-unix-sk, and then only a named dgram peer can
// be reconnected on restore (it gets an "external" entry of its own).
import { create } from '@bufbuild/protobuf';
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { sk_packet_entrySchema } from '../../images/gen/sk-packet_pb.js';
import { sk_shutdown } from '../../images/gen/sk-opts_pb.js';
import type { QueuedMessage, SocketInfo, UnixSocketDiag } from '../../../native/index.js';
import { TsdumpError } from '../../errors.js';
import type { FdKindContext, FileEntryInit } from './kind.js';
import { socketTables, treeSocketInodes, unixName } from './socket-diag.js';
import { skOpts } from './socket-opts.js';
import { inFlightSocketInodes } from './in-flight.js';

const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_SEQPACKET = 5;
const TCP_ESTABLISHED = 1;
const TCP_CLOSE = 7;
const TCP_LISTEN = 10;
/** unix_sk_entry.uflags: the peer is outside the dump (criu/sk-unix.c USK_EXTERN). */
const USK_EXTERN = 1;
/** scm_entry.type of descriptors (SOL_SOCKET's SCM_RIGHTS). */
const SCM_RIGHTS = 1;
/**
 * The first id of the entries written for external peers (FdDumpState.nextExternId). They have
 * no fd of their own, so they live apart from the file table's sequential ids; restore only
 * needs them unique.
 */
export const FIRST_EXTERN_ID = 0x7f000000;

/** The files.img ordering key of the unix socket with inode `ino` (FdKindContext.announce). */
const unixKey = (ino: number) => `unix:${ino}`;

function refuse(c: FdKindContext, why: string): TsdumpError {
  return new TsdumpError('UNSUPPORTED_FD', `pid ${c.pid}: fd ${c.fd.fd} (${c.fd.target}): ${why}`);
}

export async function unixSocketEntry(c: FdKindContext, ino: number, info: SocketInfo, inspectQueue: () => Promise<QueuedMessage[]>): Promise<FileEntryInit> {
  const tables = await socketTables(c);
  const sk = tables.unix.get(ino);
  if (!sk) throw refuse(c, 'unix socket not found in unix_diag (another network namespace?)');
  if (sk.sockType !== SOCK_STREAM && sk.sockType !== SOCK_DGRAM && sk.sockType !== SOCK_SEQPACKET) {
    throw refuse(c, `unix socket of type ${sk.sockType}; only stream, dgram and seqpacket are supported`);
  }
  if (sk.state !== TCP_ESTABLISHED && sk.state !== TCP_CLOSE && sk.state !== TCP_LISTEN) {
    throw refuse(c, `unix socket in state ${sk.state}`);
  }
  const named = sk.name.length > 0 && sk.name[0] !== 0;
  const file = named ? info.unixFile : undefined;
  if (named && !file) throw refuse(c, `bound unix socket ${unixName(sk.name)} without its socket file`);
  const shutdown = sk.shutdown as sk_shutdown;

  let peer = sk.peer;
  if (peer !== 0) {
    // Restore resolves a peer only among the sockets listed before: one that names a peer not
    // naming it back (a dgram sender connected to a bound receiver) must come after that peer.
    // A connected pair resolves either way; it is written in CRIU's order (after the peer if
    // the peer's fd comes later). An outside peer's entry is already written.
    if (await checkPeer(c, sk, peer)) c.writeAfter(unixKey(peer), tables.unix.get(peer)?.peer !== ino);
  } else if (sk.state === TCP_ESTABLISHED && sk.sockType !== SOCK_DGRAM) {
    // A connection not yet accept()ed: its peer is an embryo with no inode. Restore connects it
    // to the listener again, so the listener stands in as the peer.
    const listener = tables.inflight.get(ino);
    if (listener !== undefined) {
      if (tables.unix.get(listener)?.state !== TCP_LISTEN) throw refuse(c, `in-flight connection to a socket that does not listen (${listener})`);
      if (sk.wqlen !== 0) throw refuse(c, 'in-flight connection with queued outgoing data');
      peer = listener;
      c.writeAfter(unixKey(listener), true);
    } else if (shutdown !== sk_shutdown.BOTH) {
      throw refuse(c, 'connected unix socket whose peer is gone (dangling connection)');
    }
  } else if (sk.state === TCP_LISTEN && sk.icons.includes(0)) {
    throw refuse(c, 'listening unix socket with an in-flight connection whose client is already closed');
  }

  if (sk.rqlen !== 0 && sk.state !== TCP_LISTEN) {
    const messages = await inspectQueue();
    // the descriptors in flight belong to the file table from here on, whatever happens next
    c.adoptInFlight(messages.flatMap((m) => m.fds));
    const queue = await c.image('sk-queues.img');
    for (const m of messages) {
      // SCM_RIGHTS names the files by id (dumped first, as CRIU does); restore has the sender
      // send them again
      const rights = await c.inFlightFiles(m.fds);
      const entry = create(sk_packet_entrySchema, { idFor: c.id, length: m.data.length, scm: rights.length ? [{ type: SCM_RIGHTS, rights }] : [] });
      await queue.append(sk_packet_entrySchema, entry, m.data);
    }
  }

  let nameDir: string | undefined;
  if (file && sk.name[0] !== 0x2f /* '/' */) {
    // Bound by a relative name: restore binds from the directory it resolved to.
    const rel = Buffer.from(sk.name).toString('utf8').replace(/\0+$/, '');
    if (!file.path.endsWith(`/${rel}`)) throw refuse(c, `cannot resolve the relative socket name ${rel} (now ${file.path})`);
    nameDir = file.path.slice(0, file.path.length - rel.length - 1);
  }

  c.announce(unixKey(ino));
  return {
    type: fd_types.UNIXSK,
    id: c.id,
    usk: {
      id: c.id,
      ino,
      type: sk.sockType,
      state: sk.state,
      flags: c.fileFlags,
      uflags: 0,
      // unix_diag's write-queue figure; for a listener, its backlog (the only use on restore).
      backlog: sk.wqlen,
      peer,
      fown: c.fown,
      opts: skOpts(info.opts),
      name: sk.name,
      ...(c.netNsId ? { nsId: c.netNsId() } : {}),
      ...(shutdown !== sk_shutdown.NONE ? { shutdown } : {}),
      ...(file ? { filePerms: { mode: file.mode, uid: file.uid, gid: file.gid } } : {}),
      ...(nameDir !== undefined ? { nameDir } : {}),
      ...(file?.deleted ? { deleted: true } : {}),
    },
  };
}

/**
 * The peer must be dumped too, or be reachable by name on restore. Peers inside the tree get
 * their own entries when their fds are dumped; an outside peer is refused unless --ext-unix-sk,
 * and even then only a named dgram peer (restore reconnects to the name) is accepted.
 */
async function checkPeer(c: FdKindContext, sk: UnixSocketDiag, peerIno: number): Promise<boolean> {
  const tables = await socketTables(c);
  const peer = tables.unix.get(peerIno);
  if (!peer) throw refuse(c, `unix socket peer socket:[${peerIno}] not found in unix_diag`);
  if (peer.peer !== sk.ino && peer.name.length === 0) {
    throw refuse(c, `unix socket peer socket:[${peerIno}] is connected elsewhere and has no name to reach it by`);
  }
  if ((await treeSocketInodes(c)).has(peerIno) || (await inFlightSocketInodes(c)).has(peerIno)) return true;
  const where = `peer socket:[${peerIno}] (${unixName(peer.name)}) is outside the dumped tree`;
  if (!c.dump.sockets.extUnixSk) {
    throw refuse(c, `unix socket ${where}; dump the peer's process too, or allow external peers with --ext-unix-sk`);
  }
  if (peer.sockType !== SOCK_DGRAM) {
    throw refuse(c, `unix socket ${where}, and only dgram peers can be external (half of a stream connection cannot be restored)`);
  }
  if (peer.name.length === 0) throw refuse(c, `unix socket ${where} and has no name to reconnect to`);
  if (!c.firstTime(`unix-extern:${peerIno}`)) return false;
  const id = c.dump.nextExternId++;
  await c.fileEntry({
    type: fd_types.UNIXSK,
    id,
    usk: {
      id,
      ino: peerIno,
      type: SOCK_DGRAM,
      state: TCP_LISTEN,
      flags: 0,
      uflags: USK_EXTERN,
      backlog: 0,
      peer: 0,
      fown: { uid: 0, euid: 0, signum: 0, pidType: 0, pid: 0 },
      opts: { soSndbuf: 0, soRcvbuf: 0, soSndTmoSec: 0n, soSndTmoUsec: 0n, soRcvTmoSec: 0n, soRcvTmoUsec: 0n },
      name: peer.name,
    },
  });
  return false;
}
