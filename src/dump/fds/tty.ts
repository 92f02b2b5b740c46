// Pseudo-terminal slaves (/dev/pts/N): CRIU's TTY. Only the terminal a job inherited from its
// shell is dumpable, and only with --shell-job: its master lives outside the tree, so restore
// cannot recreate the pair and instead re-attaches the restorer's own terminal in its place.
import { readFileSync } from 'node:fs';
import { create } from '@bufbuild/protobuf';
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { TtyType, tty_info_entrySchema } from '../../images/gen/tty_pb.js';
import { native } from '../../native.js';
import { TsdumpError } from '../../errors.js';
import type { FdKind } from './kind.js';

const PTS = /^\/dev\/pts\/(\d+)$/;
const PTMX = /^\/dev\/(pts\/)?ptmx$/;
const O_RDWR = 2;

/** Session, controlling tty (encoded dev_t) and its foreground group, from /proc/PID/stat. */
function jobOf(pid: number): { sid: number; ttyNr: number; tpgid: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name may hold spaces and parentheses; fields resume after the last ')'.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { sid: Number(f[3]), ttyNr: Number(f[4]), tpgid: Number(f[5]) };
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

export const terminals: FdKind = {
  name: 'terminals',
  matches: (fd) => PTS.test(fd.target) || PTMX.test(fd.target),
  async entry(c) {
    const where = `pid ${c.pid}: fd ${c.fd.fd} (${c.fd.target})`;
    if (PTMX.test(c.fd.target)) {
      throw new TsdumpError('UNSUPPORTED_FD', `${where}: tsdump cannot dump a pseudo-terminal master (ptmx) yet`);
    }
    if (!c.shellJob) {
      throw new TsdumpError(
        'UNSUPPORTED_FD',
        `${where}: the process has a terminal open; dump it with --shell-job if it is the terminal inherited from a shell`,
      );
    }
    const rdev = encodeDev(c.fd.rdev);
    const job = jobOf(c.pid);
    if (job.ttyNr !== rdev) {
      throw new TsdumpError(
        'UNSUPPORTED_FD',
        `${where}: only the inherited controlling terminal can be dumped with --shell-job; this pty is not the process's controlling terminal`,
      );
    }
    const index = Number(PTS.exec(c.fd.target)![1]);
    // One tty_info per terminal; its id is the pty index, unique among the /dev/pts slaves.
    if (c.firstTime(`tty:${rdev}`)) {
      const s = native.ttyState(c.pid, c.fd.fd);
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
      const info = create(tty_info_entrySchema, {
        id: index,
        type: TtyType.PTY,
        // Lock state and packet mode are master-side settings; a slave reports neither.
        locked: false,
        exclusive: s.exclusive,
        packetMode: false,
        sid: job.sid,
        pgrp: job.tpgid > 0 ? job.tpgid : 0,
        rdev,
        termios: termios(s.termios),
        termiosLocked: termios(s.termiosLocked),
        winsize: { wsRow: s.wsRow, wsCol: s.wsCol, wsXpixel: s.wsXpixel, wsYpixel: s.wsYpixel },
        pty: { index },
        dev: Number(c.fd.dev),
        uid: c.fd.uid,
        gid: c.fd.gid,
      });
      await (await c.image('tty-info.img')).append(tty_info_entrySchema, info);
    }
    // CRIU 4.x also names the slave by path (a REG entry) so restore can reopen it.
    const regfId = await c.pathFile(c.fd.target, O_RDWR, { mode: c.fd.mode });
    return { type: fd_types.TTY, id: c.id, tty: { id: c.id, ttyInfoId: index, flags: c.fileFlags, fown: c.fown, regfId } };
  },
};
