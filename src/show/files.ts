// What an open file of a dump is, in words and as data: its kind, a one-line description, and
// the keys that pair it with the other end it talks to (both ends of a pipe, a unix socket and
// its peer, the two sides of a TCP connection inside the tree). `crit x`'s own terser strings
// are in views.ts; these feed `show --json` and `report`.

import { ipText } from '../images/crit.js';
import { fd_types, type file_entry } from '../images/gen/fdinfo_pb.js';
import { pushTo, type DumpDir } from './dir.js';

export interface FileInfo {
  /** file, directory, device, pipe, fifo, unix, tcp, udp, eventfd, epoll, memfd, tty, ... */
  readonly kind: string;
  readonly text: string;
  /** The file's path, for kinds that have one. */
  readonly path?: string;
  /** The object this descriptor refers to; another descriptor with the same key shares it. */
  readonly key?: string;
  /** The key of the object at the other end (a socket's peer). */
  readonly peerKey?: string;
}

export interface FdRef {
  readonly pid: number;
  readonly fd: number;
}

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFCHR = 0o020000;

const SOCK_TYPES: Readonly<Record<number, string>> = { 1: 'stream', 2: 'dgram', 3: 'raw', 5: 'seqpacket' };
const TCP_STATES: Readonly<Record<number, string>> = {
  1: 'ESTABLISHED', 2: 'SYN_SENT', 3: 'SYN_RECV', 4: 'FIN_WAIT1', 5: 'FIN_WAIT2', 6: 'TIME_WAIT', 7: 'CLOSE',
  8: 'CLOSE_WAIT', 9: 'LAST_ACK', 10: 'LISTEN', 11: 'CLOSING',
};
const IPPROTO: Readonly<Record<number, string>> = { 6: 'tcp', 17: 'udp', 136: 'udplite' };

/** An inet_sk_entry address: dotted IPv4, or [IPv6] ready for a :port. */
export function inetAddress(words: readonly number[], family: number): string {
  return family === 2 ? ipText(words.slice(0, 1)) : `[${ipText(words)}]`;
}

/** A unix socket name: a path, or @name for the abstract namespace. */
export function unixName(name: Uint8Array): string {
  if (name.length === 0) return '';
  return name[0] === 0 ? `@${Buffer.from(name.subarray(1)).toString('utf8')}` : Buffer.from(name).toString('utf8');
}

function regPath(d: Pick<DumpDir, 'files'>, id: number): string | undefined {
  return d.files.get(id)?.reg?.name;
}

/** Describes the file with id `id` that a descriptor of type `type` refers to. */
export function fileInfo(d: Pick<DumpDir, 'files' | 'memfdInodes'>, type: fd_types, id: number): FileInfo {
  const f: file_entry | undefined = d.files.get(id);
  const name = (fd_types[type] ?? `type ${type}`).toLowerCase();
  if (!f) return { kind: name, text: `${name} (file id ${id} missing from files.img)` };
  switch (type) {
    case fd_types.REG: {
      const path = f.reg?.name ?? '?';
      const fmt = (f.reg?.mode ?? 0) & S_IFMT;
      const kind = fmt === S_IFDIR ? 'directory' : fmt === S_IFCHR ? 'device' : 'file';
      return { kind, text: path, path };
    }
    case fd_types.PIPE:
      return { kind: 'pipe', text: `pipe[${f.pipe?.pipeId}]`, key: `pipe:${f.pipe?.pipeId}` };
    case fd_types.FIFO: {
      const path = f.fifo ? regPath(d, f.fifo.regfId) : undefined;
      return { kind: 'fifo', text: `fifo ${path ?? '?'}`, ...(path ? { path } : {}), key: `pipe:${f.fifo?.pipeId}` };
    }
    case fd_types.UNIXSK: {
      const u = f.usk;
      if (!u) break;
      const addr = unixName(u.name);
      const state = u.state === 10 ? 'listening' : u.state === 1 ? 'connected' : '';
      const text = ['unix', SOCK_TYPES[u.type] ?? `type ${u.type}`, state, addr].filter(Boolean).join(' ');
      return { kind: 'unix', text, ...(addr && !addr.startsWith('@') ? { path: addr } : {}), key: `unix:${u.ino}`, ...(u.peer ? { peerKey: `unix:${u.peer}` } : {}) };
    }
    case fd_types.INETSK: {
      const s = f.isk;
      if (!s) break;
      const proto = IPPROTO[s.proto] ?? `proto ${s.proto}`;
      const src = `${inetAddress(s.srcAddr, s.family)}:${s.srcPort}`;
      const dst = `${inetAddress(s.dstAddr, s.family)}:${s.dstPort}`;
      const connected = s.dstPort !== 0;
      const state = s.proto === 6 ? ` ${TCP_STATES[s.state] ?? s.state}` : '';
      const text = `${proto}${s.family === 10 ? '6' : ''} ${src}${connected ? ` -> ${dst}` : ''}${state}`;
      return { kind: proto, text, key: `inet:${proto}:${src}>${dst}`, ...(connected ? { peerKey: `inet:${proto}:${dst}>${src}` } : {}) };
    }
    case fd_types.EVENTFD:
      return { kind: 'eventfd', text: `eventfd (counter ${f.efd?.counter ?? '?'})` };
    case fd_types.EVENTPOLL:
      return { kind: 'epoll', text: `epoll (${f.epfd?.tfd.length ?? 0} watched)` };
    case fd_types.MEMFD: {
      const inode = f.memfd ? d.memfdInodes.get(BigInt(f.memfd.inodeId)) : undefined;
      return { kind: 'memfd', text: `memfd:${inode?.name ?? '?'}` };
    }
    case fd_types.TTY: {
      const path = f.tty ? regPath(d, f.tty.regfId) : undefined;
      return { kind: 'tty', text: path ?? 'tty', ...(path ? { path } : {}) };
    }
    default:
      break;
  }
  return { kind: name, text: name };
}

/** For each descriptor of the dump, the descriptors at the other end of what it refers to. */
export function peersOf(d: Pick<DumpDir, 'processes' | 'files' | 'memfdInodes'>): (ref: FdRef) => FdRef[] {
  const byKey = new Map<string, FdRef[]>();
  const info = new Map<string, FileInfo>();
  for (const p of d.processes) {
    for (const fd of p.fds ?? []) {
      const i = fileInfo(d, fd.type, fd.id);
      const ref = { pid: p.pid, fd: fd.fd };
      info.set(`${p.pid}/${fd.fd}`, i);
      if (i.key) pushTo(byKey, i.key, ref);
    }
  }
  // a listening or datagram socket is the peer of every socket naming it as theirs
  const namedBy = new Map<string, FdRef[]>();
  for (const p of d.processes) {
    for (const fd of p.fds ?? []) {
      const i = info.get(`${p.pid}/${fd.fd}`)!;
      if (i.peerKey) pushTo(namedBy, i.peerKey, { pid: p.pid, fd: fd.fd });
    }
  }
  return (ref) => {
    const i = info.get(`${ref.pid}/${ref.fd}`);
    if (!i) return [];
    const same = (r: FdRef): boolean => r.pid === ref.pid && r.fd === ref.fd;
    const out: FdRef[] = [];
    const add = (rs: readonly FdRef[] | undefined): void => {
      for (const r of rs ?? []) if (!same(r) && !out.some((o) => o.pid === r.pid && o.fd === r.fd)) out.push(r);
    };
    // the other ends of a pipe share its key; a socket's other end has its peer key
    if (i.kind === 'pipe' || i.kind === 'fifo') add(byKey.get(i.key!));
    if (i.peerKey) add(byKey.get(i.peerKey));
    if (i.key && i.kind !== 'pipe' && i.kind !== 'fifo') add(namedBy.get(i.key));
    return out;
  };
}
