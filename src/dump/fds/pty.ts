// Unix98 pty pairs the tree opened itself: masters (/dev/ptmx) and their /dev/pts/N slaves, as
// CRIU's TTY files (criu/tty.c). Each end is a TTY file entry naming its path in a REG entry;
// each end kind of a pair has one tty-info entry, id 2N for the slave and 2N+1 for the master;
// and after all tasks are dumped, the bytes waiting at either end go to tty-data.img under the
// id of the end they wait at.
//
// Restore (CRIU) reopens /dev/ptmx until it gets index N again, so a pair comes back only where
// that index is free; it then reopens the slaves by path, sets termios, window size, packet mode
// and lock, and writes each end's queued bytes into the other end.
import { create } from '@bufbuild/protobuf';
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { TtyType, tty_data_entrySchema, tty_info_entrySchema } from '../../images/gen/tty_pb.js';
import { native } from '../../native.js';
import { TsdumpError } from '../../errors.js';
import type { FdKindContext, FileEntryInit, FileTableAccess } from './kind.js';

export interface PtyEnd {
  kind: 'master' | 'slave';
  index: number;
  pid: number;
  fd: number;
  target: string;
  /** tty-info id: 2N for slaves, 2N+1 for masters. */
  infoId: number;
  /** A slave that is the task's controlling terminal (restore may re-attach the restorer's). */
  ctty: boolean;
  /** Session of the pair as this end reports it (0: none). */
  sid: number;
}

export const ptyInfoId = (index: number, master: boolean): number => index * 2 + (master ? 1 : 0);

interface TermiosInit {
  cIflag: number;
  cOflag: number;
  cCflag: number;
  cLflag: number;
  cLine: number;
  cIspeed: number;
  cOspeed: number;
  cCc: number[];
}

/** What tty-info records of a terminal's settings (tty.ts reads them). */
export interface TtyParams {
  termios: TermiosInit;
  termiosLocked: TermiosInit;
  winsize: { wsRow: number; wsCol: number; wsXpixel: number; wsYpixel: number };
  exclusive: boolean;
}

/** A master's file entry, writing its tty-info the first time this pair's master is met. */
export async function ptyMasterEntry(
  c: FdKindContext,
  params: (pid: number, fd: number) => TtyParams,
  encodeDev: (dev: bigint) => number,
): Promise<FileEntryInit> {
  const m = native.ptyMaster(c.pid, c.fd.fd);
  const infoId = ptyInfoId(m.index, true);
  if (c.firstTime(`tty:${infoId}`)) {
    const info = create(tty_info_entrySchema, {
      id: infoId,
      type: TtyType.PTY,
      locked: m.locked,
      packetMode: m.packetMode,
      sid: m.sid,
      pgrp: m.pgrp,
      rdev: encodeDev(c.fd.rdev),
      ...params(c.pid, c.fd.fd),
      pty: { index: m.index },
      dev: Number(c.fd.dev),
      uid: c.fd.uid,
      gid: c.fd.gid,
    });
    await (await c.image('tty-info.img')).append(tty_info_entrySchema, info);
  }
  c.dump.ptyEnds.push({ kind: 'master', index: m.index, pid: c.pid, fd: c.fd.fd, target: c.fd.target, infoId, ctty: false, sid: m.sid });
  const regfId = await c.pathFile(c.fd.target, c.fileFlags, { mode: c.fd.mode });
  return { type: fd_types.TTY, id: c.id, tty: { id: c.id, ttyInfoId: infoId, flags: c.fileFlags, fown: c.fown, regfId } };
}

/** An fd on /dev/tty: the terminal of session `sid` (pts index, if a pty) reopened on restore. */
export interface CttyUser {
  pid: number;
  fd: number;
  sid: number;
  index: number | undefined;
  leader: boolean;
}

/** Remembers an fd on /dev/tty; whether its session gets a terminal back is decided at the end. */
export function recordCtty(c: FdKindContext, sid: number, index: number | undefined, leader: boolean): void {
  c.dump.ptyCttys.push({ pid: c.pid, fd: c.fd.fd, sid, index, leader });
}

/** Remembers a slave end; whether it may be dumped is decided once every task's fds are known. */
export function recordSlave(c: FdKindContext, index: number, ctty: boolean, sid: number): void {
  c.dump.ptyEnds.push({ kind: 'slave', index, pid: c.pid, fd: c.fd.fd, target: c.fd.target, infoId: ptyInfoId(index, false), ctty, sid });
}

/**
 * CRIU's tty_post_actions: every slave needs its master in the tree (but for the one terminal a
 * --shell-job inherits), every terminal of a session needs that session's leader in the tree (or
 * --shell-job), and the queued bytes of each pair go to tty-data.img.
 */
export async function finishPtyDump(files: FileTableAccess, tree: { pids: readonly number[]; shellJob: boolean }): Promise<void> {
  const { ptyEnds: ends, ptyCttys: cttys } = files.state;
  const mastered = new Set(ends.filter((e) => e.kind === 'master').map((e) => e.index));
  const unpaired = new Set<number>();
  for (const e of ends) {
    if (e.kind !== 'slave' || mastered.has(e.index)) continue;
    const where = `pid ${e.pid}: fd ${e.fd} (${e.target})`;
    if (!e.ctty) {
      throw new TsdumpError(
        'UNSUPPORTED_FD',
        `${where}: a pty slave that is not the process's controlling terminal, and whose master (/dev/ptmx) is open in no task of the tree; tsdump cannot dump it`,
      );
    }
    if (!tree.shellJob) {
      throw new TsdumpError(
        'UNSUPPORTED_FD',
        `${where}: the process has a terminal open; dump it with --shell-job if it is the terminal inherited from a shell`,
      );
    }
    unpaired.add(e.index);
  }
  if (unpaired.size > 1) {
    throw new TsdumpError('UNSUPPORTED_FD', `only one inherited terminal can be dumped with --shell-job; the tree has /dev/pts/${[...unpaired].join(', /dev/pts/')}`);
  }
  for (const e of ends) {
    // the terminal of a session is recreated by its leader, which must be in the tree
    if (e.sid !== 0 && !tree.pids.includes(e.sid) && !tree.shellJob) {
      throw new TsdumpError(
        'UNSUPPORTED_FD',
        `pid ${e.pid}: fd ${e.fd} (${e.target}): the terminal of session ${e.sid}, whose leader is not in the tree; dump with --shell-job`,
      );
    }
  }

  for (const u of cttys) {
    // its terminal is a pair the tree opened (restore makes it the session's again), or the
    // one a shell job inherited, which restore replaces by its own
    if (u.index !== undefined && mastered.has(u.index)) continue;
    const where = `pid ${u.pid}: fd ${u.fd} (/dev/tty)`;
    if (!tree.shellJob) {
      throw new TsdumpError('UNSUPPORTED_FD', `${where}: the process's terminal is not in the tree; dump with --shell-job if it is the terminal inherited from a shell`);
    }
    if (u.leader) {
      // criu restore opens the fds of a session leader before it gives it the restorer's terminal
      throw new TsdumpError(
        'UNSUPPORTED_FD',
        `${where}: the process leads its session, whose terminal is outside the tree: criu restore --shell-job reopens /dev/tty before that session has a terminal`,
      );
    }
  }

  // Pairs as CRIU links them: in dump order, each end with the next end of the other kind of the
  // same index; its list puts the pair found last first, and each pair's first end first.
  const linked = new Set<PtyEnd>();
  const pairs: [PtyEnd, PtyEnd][] = [];
  for (const [i, e] of ends.entries()) {
    if (linked.has(e)) continue;
    const peer = ends.slice(i + 1).find((p) => !linked.has(p) && p.index === e.index && p.kind !== e.kind);
    if (!peer) continue;
    linked.add(e).add(peer);
    pairs.unshift([e, peer]);
  }
  const queued: { ttyId: number; data: Uint8Array }[] = [];
  for (const [a, b] of pairs) {
    for (const [end, peer] of [
      [a, b],
      [b, a],
    ] as const) {
      const data = native.ttyTakeQueued(end.pid, end.fd, peer.pid, peer.fd);
      if (data.length > 0) queued.push({ ttyId: end.infoId, data: new Uint8Array(data) });
    }
  }
  if (queued.length === 0) return;
  const img = await files.image('tty-data.img');
  for (const q of queued) await img.append(tty_data_entrySchema, create(tty_data_entrySchema, q));
}
