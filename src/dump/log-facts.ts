// The dump's decisions as log lines (-v4): each task seized, each thread, each VMA and what the
// drain did with it, each fd with its kind and path, each socket with its state and ends, each
// task's page counts. The facts are the
// ones the native visit already returned; nothing here asks the kernel anything. Each stage
// calls one of these in one line, where it takes the decision; at lower levels they return early.
import type { FdInfoEntry, MemoryDump, SeizedProcessInfo, VmaDumpInfo, VmaInfo } from '../../native/index.js';
import { fd_types, type fdinfo_entry } from '../images/gen/fdinfo_pb.js';
import { LOG_DEBUG, LOG_INFO, type Logger } from '../log.js';
import type { DumpCounters, DumpTimings } from './stats.js';
import type { FileEntryInit } from './fds/kind.js';
import { SOCK_TYPES, TCP_STATES, inetAddress } from './fds/inet-socket.js';

const hex = (n: bigint): string => n.toString(16);

function debugOn(log: Logger | undefined): log is Logger {
  return log !== undefined && log.level >= LOG_DEBUG;
}

function protString(prot: number, shared: boolean): string {
  return `${prot & 1 ? 'r' : '-'}${prot & 2 ? 'w' : '-'}${prot & 4 ? 'x' : '-'}${shared ? 's' : 'p'}`;
}

/** A seized task and its threads, as the freeze left them. */
export function logSeizedTask(log: Logger | undefined, p: SeizedProcessInfo): void {
  if (!debugOn(log)) return;
  log.debug(`seized task ${p.pid} (${p.comm}): ppid ${p.ppid}, state ${p.state}${p.stopped ? ' (job-control stopped)' : ''}, ${p.threads.length} thread(s), seccomp ${p.seccompMode}`, {
    pid: p.pid,
    event: 'task',
    comm: p.comm,
    ppid: p.ppid,
    pgid: p.pgid,
    sid: p.sid,
    state: p.state,
    stopped: p.stopped,
    threads: p.threads.length,
    seccomp: p.seccompMode,
  });
  for (const t of p.threads) {
    log.debug(`  thread ${t.tid} of ${p.pid}${t.stopSignal ? ` stopped by signal ${t.stopSignal}` : ''}, seccomp ${t.seccompMode}`, {
      pid: p.pid,
      event: 'thread',
      tid: t.tid,
      stopSignal: t.stopSignal ?? null,
      seccomp: t.seccompMode,
    });
  }
}

/**
 * Every VMA of a visited task: its range, protection, flags and file as the inspection saw it,
 * and what the page drain decided for it (pages dumped, or skipped and why).
 */
export function logVmas(log: Logger | undefined, pid: number, vmas: readonly VmaInfo[], memory: Pick<MemoryDump, 'vmas' | 'afterRelease'>): void {
  if (!debugOn(log)) return;
  const byStart = new Map(memory.vmas.map((d) => [d.start, d]));
  // --snapshot: the pages are counted after the release ("pages of PID" then)
  const dumped = (d: VmaDumpInfo) => (memory.afterRelease ? 'pages scanned after the release' : `${d.pagesDumped} page(s) dumped`);
  for (const v of vmas) {
    const d = byStart.get(v.start);
    const what = d === undefined ? 'not drained (no private pages to copy)' : d.decision === 'skip' || d.decision === 'unsupported' ? `skipped: ${d.reason}` : `${d.decision}: ${dumped(d)}${d.reason ? ` (${d.reason})` : ''}`;
    const name = v.path ?? '';
    log.debug(`  vma ${hex(v.start)}-${hex(v.end)} ${protString(v.prot, v.shared)} ${v.kind}${name ? ` ${name}` : ''}${v.deleted ? ' (deleted)' : ''} [${v.vmFlags}]: ${what}`, {
      pid,
      event: 'vma',
      start: hex(v.start),
      end: hex(v.end),
      prot: protString(v.prot, v.shared),
      kind: v.kind,
      path: v.path ?? null,
      deleted: v.deleted,
      vmFlags: v.vmFlags,
      decision: d?.decision ?? 'none',
      reason: d?.reason ?? null,
      pagesDumped: memory.afterRelease ? null : (d?.pagesDumped ?? 0),
    });
  }
}

/** One fd: its number, the kind of file entry it became, the file's id and what it names. */
export function logFd(log: Logger | undefined, pid: number, fd: FdInfoEntry, entry: fdinfo_entry): fdinfo_entry {
  if (!debugOn(log)) return entry;
  const kind = fd_types[entry.type] ?? String(entry.type);
  log.debug(`  fd ${fd.fd}: ${kind} id ${entry.id} ${fd.target} (flags 0${fd.flags.toString(8)}, mode 0${fd.mode.toString(8)}${fd.ino ? `, ino ${fd.ino}` : ''})`, {
    pid,
    event: 'fd',
    fd: fd.fd,
    kind,
    id: entry.id,
    target: fd.target,
    flags: fd.flags,
    mode: fd.mode,
    ino: fd.ino.toString(),
  });
  return entry;
}

/** A task's page drain: how many pages were scanned, written, zero or skipped, and how. */
export function logMemory(
  log: Logger | undefined,
  pid: number,
  m: Pick<MemoryDump, 'counts' | 'pagesInParent' | 'vmspliceCalls' | 'bytesWritten' | 'timings'> & { blobRefused?: string | undefined },
): void {
  if (!debugOn(log)) return;
  const c = m.counts;
  log.debug(
    `pages of ${pid}: ${c.scanned} scanned, ${c.written} written, ${c.zero} zero, ${c.skipped} skipped, ${c.absent} absent, ${m.pagesInParent} in parent; ` +
      `${m.vmspliceCalls} pipe load(s)${m.blobRefused ? ` (resident parasite refused: ${m.blobRefused})` : ''}; scan ${us(m.timings.scanNs)} us, drain ${us(m.timings.drainNs)} us`,
    {
      pid,
      event: 'pages',
      scanned: c.scanned,
      written: c.written,
      zero: c.zero,
      skipped: c.skipped,
      absent: c.absent,
      inParent: m.pagesInParent,
      pipeLoads: m.vmspliceCalls,
      bytesWritten: m.bytesWritten,
      scanUs: us(m.timings.scanNs),
      drainUs: us(m.timings.drainNs),
      vmspliceUs: us(m.timings.vmspliceNs),
      spliceUs: us(m.timings.spliceNs),
    },
  );
}

const us = (ns: number): number => Math.round(ns / 1000);

/** How the tree was left, and the dump's stats (info: a normal run's summary). */
export function logRelease(log: Logger | undefined, mode: string, timings: DumpTimings, counters: DumpCounters): void {
  if (!log || log.level < LOG_INFO) return;
  log.info(`tree released (${mode}); frozen ${timings.frozenTime} us, freezing ${timings.freezingTime} us, memdump ${timings.memdumpTime} us, memwrite ${timings.memwriteTime} us, total ${timings.totalTime} us`, {
    event: 'release',
    mode,
    ...timings,
    pagesScanned: counters.pagesScanned,
    pagesWritten: counters.pagesWritten,
  });
}

/** What a socket's file entry says of it: its type, state and both ends. */
function socketFacts(e: FileEntryInit): Record<string, string | number> | undefined {
  if (e.usk) {
    const name = e.usk.name ? Buffer.from(e.usk.name) : Buffer.alloc(0);
    // an abstract name starts with a NUL, shown as '@' as ss does
    const shown = name.length === 0 ? '(unnamed)' : name[0] === 0 ? `@${name.subarray(1).toString()}` : name.toString();
    return { socket: 'unix', sockType: SOCK_TYPES[e.usk.type ?? 0] ?? String(e.usk.type), state: TCP_STATES[e.usk.state ?? 0] ?? String(e.usk.state), name: shown, peer: e.usk.peer ?? 0 };
  }
  if (e.isk) {
    const family = e.isk.family ?? 0;
    return {
      socket: family === 10 ? 'inet6' : 'inet',
      sockType: SOCK_TYPES[e.isk.type ?? 0] ?? String(e.isk.type),
      proto: e.isk.proto ?? 0,
      state: TCP_STATES[e.isk.state ?? 0] ?? String(e.isk.state),
      local: inetAddress(family, e.isk.srcAddr ?? [], e.isk.srcPort ?? 0),
      remote: inetAddress(family, e.isk.dstAddr ?? [], e.isk.dstPort ?? 0),
    };
  }
  if (e.nlsk) return { socket: 'netlink', protocol: e.nlsk.protocol ?? 0, portid: e.nlsk.portid ?? 0 };
  return undefined;
}

/** A socket's new open description: the file entry it became, with its type, state and ends. */
export function logSocket(log: Logger | undefined, pid: number, fd: FdInfoEntry, entry: FileEntryInit): void {
  if (!debugOn(log)) return;
  const sk = socketFacts(entry);
  if (!sk) return;
  const kind = fd_types[entry.type ?? 0] ?? String(entry.type);
  const about = Object.entries(sk)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  log.debug(`  socket id ${entry.id} (fd ${fd.fd} of ${pid}): ${kind} ${about}`, { pid, event: 'socket', fd: fd.fd, id: entry.id ?? 0, kind, target: fd.target, ...sk });
}
