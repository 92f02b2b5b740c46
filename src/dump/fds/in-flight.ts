// Unix sockets in flight: a socket sent with SCM_RIGHTS and not received yet lives only in the
// receiving socket's queue. Its peer (often the other end of a pair the tree keeps) must not be
// taken for a socket outside the tree, so before refusing a peer as outside, the queues of the
// tree's sockets are searched (and the queues of the sockets found there, in turn).
import { closeSync } from 'node:fs';
import { readdir, readlink } from 'node:fs/promises';
import { native } from '../../native.js';
import type { FdKindContext } from './kind.js';
import { socketTables, treePids } from './socket-diag.js';

const TCP_LISTEN = 10;
const SOCKET = /^socket:\[(\d+)\]$/;

/** The inodes of the unix sockets in flight anywhere in the tree's socket queues (once per dump). */
export async function inFlightSocketInodes(c: FdKindContext): Promise<Set<number>> {
  const tables = await socketTables(c);
  tables.inFlight ??= scan(tables.unix, treePids(c));
  return tables.inFlight;
}

async function scan(unix: Map<number, { rqlen: number; state: number }>, pids: readonly number[]): Promise<Set<number>> {
  const queued = (ino: number) => {
    const sk = unix.get(ino);
    return sk !== undefined && sk.rqlen > 0 && sk.state !== TCP_LISTEN;
  };
  const todo: { pid: number; fd: number }[] = [];
  for (const pid of pids) {
    for (const name of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
      const ino = SOCKET.exec(await readlink(`/proc/${pid}/fd/${name}`).catch(() => ''))?.[1];
      if (ino !== undefined && queued(Number(ino))) todo.push({ pid, fd: Number(name) });
    }
  }
  const found = new Set<number>();
  const held: number[] = [];
  try {
    for (let q = todo.shift(); q; q = todo.shift()) {
      let messages;
      try {
        messages = native.peekSocketQueue(q.pid, q.fd);
      } catch {
        continue; // the socket's own dump reports what is wrong with its queue
      }
      for (const fd of messages.flatMap((m) => m.fds)) {
        held.push(fd);
        const ino = Number(SOCKET.exec(await readlink(`/proc/self/fd/${fd}`).catch(() => ''))?.[1] ?? NaN);
        if (!unix.has(ino) || found.has(ino)) continue;
        found.add(ino);
        if (queued(ino)) todo.push({ pid: process.pid, fd });
      }
    }
  } finally {
    for (const fd of held) closeSync(fd);
  }
  return found;
}
