// fanotify: the group's init flags and its inode marks (CRIU's fanotify_file_entry with a
// fanotify_mark_entry per `fanotify ino:` line of fdinfo). The inspector does not parse
// fanotify lines, so fdinfo is read here.
import { readFile } from 'node:fs/promises';
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { mark_type } from '../../images/gen/fsnotify_pb.js';
import { TsdumpError } from '../../errors.js';
import { isAnon } from './anon.js';
import { fhEntry } from './inotify.js';
import type { FdKind } from './kind.js';
import { checkUnreadEvents } from './notify-queue.js';

/** `key:hex key:hex ...` after the `fanotify ` prefix. */
function fields(rest: string): Map<string, string> {
  return new Map(rest.trim().split(/\s+/).map((kv) => [kv.slice(0, kv.indexOf(':')), kv.slice(kv.indexOf(':') + 1)]));
}

export const fanotifies: FdKind = {
  name: 'fanotify groups',
  matches: (fd) => isAnon(fd, 'fanotify'),
  async entry(c) {
    const where = `pid ${c.pid}: fd ${c.fd.fd} (${c.fd.target})`;
    const text = await readFile(`/proc/${c.pid}/fdinfo/${c.fd.fd}`, 'utf8');
    let faflags: number | undefined;
    let evflags = 0;
    const marks = [];
    for (const line of text.split('\n')) {
      if (!line.startsWith('fanotify ')) continue;
      const f = fields(line.slice('fanotify '.length));
      const hex = (k: string) => parseInt(f.get(k) ?? '0', 16);
      if (f.has('event-flags')) {
        faflags = hex('flags');
        evflags = hex('event-flags');
      } else if (f.has('ino')) {
        const w = {
          ino: BigInt(`0x${f.get('ino')!}`),
          sdev: BigInt(hex('sdev')),
          fhandleBytes: hex('fhandle-bytes'),
          fhandleType: hex('fhandle-type'),
          fHandle: f.get('f_handle') ?? '',
        };
        marks.push({
          id: 0,
          type: mark_type.INODE,
          mflags: hex('mflags'),
          mask: hex('mask'),
          ignoredMask: hex('ignored_mask'),
          sDev: hex('sdev'),
          ie: { iIno: w.ino, fHandle: fhEntry(c.pid, c.fd.fd, w) },
        });
      } else {
        // Mount and filesystem marks: CRIU's image has mount marks, but only by mount id of a
        // dumped mount tree, and no filesystem marks at all.
        throw new TsdumpError('UNSUPPORTED_FD', `${where}: tsdump cannot dump fanotify mount or filesystem marks yet (${line})`);
      }
    }
    if (faflags === undefined) throw new TsdumpError('KERNEL', `${where}: fdinfo has no "fanotify flags:" line`);
    // an event is its 24-byte metadata, plus info records (file handles, names, a pidfd) in a
    // group made with FAN_REPORT_PIDFD, _FID, _DIR_FID, _NAME, _TARGET_FID or _MNT
    const FAN_REPORT_INFO = 0x80 | 0x200 | 0x400 | 0x800 | 0x1000 | 0x4000;
    checkUnreadEvents(c, { what: 'fanotify', min: 24, max: faflags & FAN_REPORT_INFO ? 24 + 2048 : 24 });
    return {
      type: fd_types.FANOTIFY,
      id: c.id,
      ffy: { id: c.id, flags: c.fileFlags, fown: c.fown, faflags, evflags, mark: marks },
    };
  },
};
