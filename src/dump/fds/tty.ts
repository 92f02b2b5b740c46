// Pseudo-terminals: CRIU's TTY files. A /dev/pts/N slave is dumpable when its master is open in
// the tree (the pair is recreated, see pty.ts), or with --shell-job when it is the terminal the
// job inherited from its shell: that master lives outside the tree, so restore re-attaches the
// restorer's own terminal in its place. Masters (/dev/ptmx) are in pty.ts.
import { readdir, readlink } from 'node:fs/promises';
import { create } from '@bufbuild/protobuf';
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { TtyType, tty_info_entrySchema } from '../../images/gen/tty_pb.js';
import { native } from '../../native.js';
import { TsdumpError } from '../../errors.js';
import type { FdKind, FdKindContext, FileEntryInit } from './kind.js';
import { ptyInfoId, ptyMasterEntry, recordCtty, recordSlave, type TtyParams } from './pty.js';

const PTS = /^\/dev\/pts\/(\d+)$/;
const PTMX = /^\/dev\/(pts\/)?ptmx$/;
/** /dev/tty, the controlling-terminal alias (char 5:0); CRIU's CTTY driver, index 1006. */
const CTTY = '/dev/tty';
const CTTY_RDEV = 5n << 8n;
const CTTY_INDEX = 1006;

/** Session, controlling tty (encoded dev_t) and its foreground group, from /proc/PID/stat. */
function jobOf(pid: number): { sid: number; ttyNr: number; tpgid: number } {
  const stat = native.procStat(pid);
  if (!stat) throw new TsdumpError('ESRCH_TARGET', `pid ${pid}: /proc/${pid}/stat cannot be read`);
  return stat;
}

/**
 * CRIU copies the control characters into termios_entry.c_cc with a plain memcpy of the bytes,
 * so the repeated uint32 holds the 19 bytes packed four to a word (little-endian memory order),
 * and its restore copies them back the same way; a byte per word would restore garbled keys.
 */
function packControlChars(cc: readonly number[]): number[] {
  const words = new Array<number>(cc.length).fill(0);
  cc.forEach((b, i) => {
    words[i >> 2] = (words[i >> 2]! | ((b & 0xff) << ((i & 3) * 8))) >>> 0;
  });
  return words;
}

/** The kernel's new_encode_dev, as /proc/PID/stat prints tty_nr and CRIU stores rdev. */
function encodeDev(dev: bigint): number {
  const major = Number((dev >> 8n) & 0xfffn) | Number((dev >> 32n) & ~0xfffn);
  const minor = Number(dev & 0xffn) | Number((dev >> 12n) & 0xffffff00n);
  return ((minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

/** Termios, locked termios, window size and exclusive mode of the terminal behind fd `fd` of `pid`. */
function ttyParams(pid: number, fd: number): TtyParams {
  const s = native.ttyState(pid, fd);
  const termios = (t: typeof s.termios) => ({
    cIflag: t.iflag,
    cOflag: t.oflag,
    cCflag: t.cflag,
    cLflag: t.lflag,
    cLine: t.line,
    cIspeed: 0,
    cOspeed: 0,
    cCc: packControlChars(t.cc),
  });
  return {
    termios: termios(s.termios),
    termiosLocked: termios(s.termiosLocked),
    winsize: { wsRow: s.wsRow, wsCol: s.wsCol, wsXpixel: s.wsXpixel, wsYpixel: s.wsYpixel },
    exclusive: s.exclusive,
  };
}

export const terminals: FdKind = {
  name: 'terminals',
  matches: (fd) => PTS.test(fd.target) || PTMX.test(fd.target) || (fd.target === CTTY && fd.rdev === CTTY_RDEV),
  async entry(c) {
    // a terminal's session and pair are known through the task holding it (CRIU refuses too)
    if (c.inFlight) throw new TsdumpError('UNSUPPORTED_FD', 'tsdump cannot dump terminals in flight');
    if (PTMX.test(c.fd.target)) return ptyMasterEntry(c, ttyParams, encodeDev);
    if (c.fd.target === CTTY) return cttyEntry(c);
    const rdev = encodeDev(c.fd.rdev);
    const job = jobOf(c.pid);
    // The task's own controlling terminal answers for its session; any other slave reports none
    // (what TIOCGSID/TIOCGPGRP tell the task itself, which is where CRIU asks).
    const ctty = job.ttyNr === rdev;
    const index = Number(PTS.exec(c.fd.target)![1]);
    const infoId = ptyInfoId(index, false);
    // Whether the slave may be dumped (its master in the tree, or --shell-job's inherited
    // terminal) is settled once every task's fds are known (finishPtyDump).
    recordSlave(c, index, ctty, ctty ? job.sid : 0);
    if (c.firstTime(`tty:${infoId}`)) {
      const info = create(tty_info_entrySchema, {
        id: infoId,
        type: TtyType.PTY,
        // Lock state and packet mode are master-side settings; a slave reports neither.
        locked: false,
        packetMode: false,
        sid: ctty ? job.sid : 0,
        pgrp: ctty && job.tpgid > 0 ? job.tpgid : 0,
        rdev,
        ...ttyParams(c.pid, c.fd.fd),
        pty: { index },
        dev: Number(c.fd.dev),
        uid: c.fd.uid,
        gid: c.fd.gid,
      });
      await (await c.image('tty-info.img')).append(tty_info_entrySchema, info);
    }
    // CRIU 4.x also names the slave by path (a REG entry) so restore can reopen it.
    const regfId = await c.pathFile(c.fd.target, c.fileFlags, { mode: c.fd.mode });
    return { type: fd_types.TTY, id: c.id, tty: { id: c.id, ttyInfoId: infoId, flags: c.fileFlags, fown: c.fown, regfId } };
  },
};

/**
 * An fd open on /dev/tty: restore reopens /dev/tty in the restored task once its session has a
 * terminal again, so what is recorded is the terminal's settings (read through the fd, which
 * reaches the real terminal) under CRIU's CTTY driver. Whether its session gets a terminal back
 * is settled with the other terminals (finishPtyDump).
 */
async function cttyEntry(c: FdKindContext): Promise<FileEntryInit> {
  const job = jobOf(c.pid);
  const where = `pid ${c.pid}: fd ${c.fd.fd} (${CTTY})`;
  if (job.ttyNr === 0) {
    throw new TsdumpError('UNSUPPORTED_FD', `${where}: the process has no controlling terminal any more (hung up or left); restore could not reopen it`);
  }
  await refuseSecondCtty(c);
  const index = ptsIndexOf(job.ttyNr);
  recordCtty(c, job.sid, index, job.sid === c.pid);
  const infoId = ptyInfoId(CTTY_INDEX, false);
  if (c.firstTime(`tty:${infoId}`)) {
    const info = create(tty_info_entrySchema, {
      id: infoId,
      type: TtyType.CTTY,
      locked: false,
      packetMode: false,
      sid: job.sid,
      pgrp: job.tpgid > 0 ? job.tpgid : 0,
      rdev: encodeDev(c.fd.rdev),
      ...ttyParams(c.pid, c.fd.fd),
      dev: Number(c.fd.dev),
      uid: c.fd.uid,
      gid: c.fd.gid,
    });
    await (await c.image('tty-info.img')).append(tty_info_entrySchema, info);
  }
  const regfId = await c.pathFile(CTTY, c.fileFlags, { mode: c.fd.mode });
  return { type: fd_types.TTY, id: c.id, tty: { id: c.id, ttyInfoId: infoId, flags: c.fileFlags, fown: c.fown, regfId } };
}

/**
 * criu restore 4.1.1 opens each /dev/tty description of a task only after every other terminal
 * of the task: two of them wait for each other forever. One description, dup'd, is fine.
 */
async function refuseSecondCtty(c: FdKindContext): Promise<void> {
  for (const name of await readdir(`/proc/${c.pid}/fd`)) {
    const fd = Number(name);
    if (fd === c.fd.fd || (await readlink(`/proc/${c.pid}/fd/${name}`).catch(() => '')) !== CTTY) continue;
    if (!native.kcmp(c.pid, c.pid, 'file', c.fd.fd, fd)) {
      throw new TsdumpError(
        'UNSUPPORTED_FD',
        `pid ${c.pid}: fds ${c.fd.fd} and ${fd} are two separate opens of ${CTTY}; criu restore waits forever on a task holding two (one, dup'd, restores)`,
      );
    }
  }
}

/** The /dev/pts/N index of a tty_nr (kernel dev encoding), or undefined for another terminal. */
function ptsIndexOf(ttyNr: number): number | undefined {
  const major = (ttyNr >> 8) & 0xfff;
  const minor = (ttyNr & 0xff) | ((ttyNr >> 12) & 0xfff00);
  return major >= 136 && major <= 143 ? (major - 136) * 256 + minor : undefined;
}
