// Deleted-but-open regular files ("ghost files"). The file table records the path it had; a
// remap-fpath.img entry points that file at ghost-file-N.img, which carries the metadata and the
// contents (up to --ghost-limit). Restore recreates the file next to the old path, opens it and
// unlinks it again. The same goes for a deleted file a task only maps or runs (a binary or library
// replaced on disk): ../file-table.ts deletedPathFile reads it through /proc/PID/map_files or
// /proc/PID/exe, as CRIU reads its mappings.
import { create } from '@bufbuild/protobuf';
import type { BigIntStats } from 'node:fs';
import { open, stat, statfs, type FileHandle } from 'node:fs/promises';
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { ghost_chunk_entrySchema, ghost_file_entrySchema } from '../../images/gen/ghost-file_pb.js';
import { remap_file_path_entrySchema, remap_type } from '../../images/gen/remap-file-path_pb.js';
import { TsdumpError } from '../../errors.js';
import { native } from '../../native.js';
import { buildIdField } from '../elf-build-id.js';
import { MQUEUE_MAGIC, refuseMessageQueue } from './regular.js';
import { pageBytesN } from '../../arch/index.js';
import { S_IFMT, S_IFREG, type FdKind, type FdKindContext, type FileEntryInit } from './kind.js';

const DELETED = ' (deleted)';
/** Like CRIU, ghosts under three pages are stored in one piece, bigger ones in chunks that skip holes. */
const CHUNK_PAGES = 3;
/** Read size while copying a chunk. */
const PIECE = 1 << 20;

/** What writing a ghost needs from the file table. */
export type GhostContext = Pick<FdKindContext, 'image' | 'firstTime' | 'ghostLimit' | 'remapLinked' | 'linkRemap' | 'dump'>;

/** The reg_file_entry fields that belong to the opener, not to the file. */
export interface GhostOpener {
  /** The file entry's id. */
  id: number;
  flags: number;
  pos: bigint;
  fown: FdKindContext['fown'];
}

/**
 * The file entry of a deleted regular file, readable through `link` (a /proc link of the task's)
 * and once named `path`: its contents go to a ghost image (once per file in the dump) and a remap
 * entry points the file entry at it. `what` names the user for messages.
 */
export async function ghostFileEntry(g: GhostContext, link: string, path: string, opener: GhostOpener, what: string): Promise<FileEntryInit> {
  const st = await stat(link, { bigint: true });
  if ((Number(st.mode) & S_IFMT) !== S_IFREG) {
    throw new TsdumpError('UNSUPPORTED_FD', `${what}: deleted ${path} is not a regular file; tsdump keeps only regular ones as ghost files`);
  }
  if (st.nlink !== 0n) {
    // unlinked under this name only: the contents live on under another, a link remap names it
    if (!g.linkRemap) {
      throw new TsdumpError(
        'UNSUPPORTED_FD',
        `${what}: the file was unlinked under this name but keeps ${st.nlink} other hard link(s); dump with --link-remap ` +
          '(a hard link beside it, link_remap.ID, that restore links back and removes)',
      );
    }
    await g.remapLinked(opener.id, link, path);
    return regEntry(link, path, opener, st, what);
  }
  // Only data is copied (holes stay holes), so the limit weighs the space the file takes, as
  // CRIU's does: a huge sparse file holding a few KiB is no bigger than those.
  const allocated = st.blocks * 512n;
  if (allocated > BigInt(g.ghostLimit)) {
    throw new TsdumpError(
      'UNSUPPORTED_FD',
      `${what}: deleted file holding ${allocated} bytes (size ${st.size}) is larger than the ghost limit (${g.ghostLimit} bytes); ` +
        'raise --ghost-limit to keep it in the images',
    );
  }
  const key = `${st.dev}:${st.ino}`;
  let ghostId = g.dump.ghostIds.get(key);
  if (ghostId === undefined) {
    ghostId = opener.id;
    g.dump.ghostIds.set(key, ghostId);
    await writeGhost(g, link, ghostId, st);
  }
  const remap = await g.image('remap-fpath.img');
  await remap.append(
    remap_file_path_entrySchema,
    create(remap_file_path_entrySchema, { origId: opener.id, remapId: ghostId, remapType: remap_type.GHOST }),
  );
  return regEntry(link, path, opener, st, what);
}

/** The opener's own entry of a remapped file: its old name, and what restore validates. */
async function regEntry(link: string, path: string, opener: GhostOpener, st: BigIntStats, what: string): Promise<FileEntryInit> {
  const size = sized(opener.flags, st.size);
  // As for any regular file whose size is recorded, CRIU adds the build-id, read from the deleted
  // file itself; its restore checks it against the file it brings back.
  const buildId = size.size !== undefined ? buildIdField(link, st.size, what) : {};
  return {
    type: fd_types.REG,
    id: opener.id,
    reg: { id: opener.id, flags: opener.flags, pos: opener.pos, fown: opener.fown, name: path, mode: Number(st.mode), ...size, ...buildId },
  };
}

export const ghostFiles: FdKind = {
  name: 'deleted files',
  matches: (fd) => fd.target.startsWith('/') && fd.target.endsWith(DELETED) && (fd.mode & S_IFMT) === S_IFREG,
  entry: async (c) => {
    const source = `/proc/${c.pid}/fd/${c.fd.fd}`;
    if ((await statfs(source)).type === MQUEUE_MAGIC) refuseMessageQueue(`pid ${c.pid}: fd ${c.fd.fd}`, c.fd.target);
    return ghostFileEntry(
      c,
      source,
      c.fd.target.slice(0, -DELETED.length),
      { id: c.id, flags: c.fileFlags, pos: c.fd.pos, fown: c.fown },
      `pid ${c.pid}: fd ${c.fd.fd} (${c.fd.target})`,
    );
  },
};

/**
 * st_dev in the kernel's own encoding (minor in the low 20 bits), as CRIU records a ghost's
 * device: restore matches ghosts to file mappings by it.
 */
function kernelDev(dev: bigint): number {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return Number(((major << 20n) | minor) & 0xffffffffn);
}

/** CRIU leaves the size out for O_WRONLY|O_APPEND files (logs that others may grow). */
function sized(flags: number, size: bigint): { size?: bigint } {
  const O_ACCMODE = 3, O_WRONLY = 1, O_APPEND = 0o2000;
  return (flags & O_ACCMODE) === O_WRONLY && flags & O_APPEND ? {} : { size };
}

async function writeGhost(c: GhostContext, link: string, ghostId: number, st: BigIntStats): Promise<void> {
  const chunks = st.size >= BigInt(CHUNK_PAGES) * pageBytesN();
  const head = create(ghost_file_entrySchema, {
    uid: Number(st.uid),
    gid: Number(st.gid),
    mode: Number(st.mode),
    dev: kernelDev(st.dev),
    ino: st.ino,
    atim: { tvSec: st.atimeNs / 1_000_000_000n, tvUsec: (st.atimeNs % 1_000_000_000n) / 1000n },
    mtim: { tvSec: st.mtimeNs / 1_000_000_000n, tvUsec: (st.mtimeNs % 1_000_000_000n) / 1000n },
    ...(chunks ? { chunks: true, size: st.size } : {}),
  });
  const img = await c.image(`ghost-file-${ghostId.toString(16)}.img`);
  // Read through /proc/PID/fd/N: works whatever the task's open mode, in bounded pieces.
  const fh = await open(link, 'r');
  try {
    if (!chunks) {
      const buf = Buffer.alloc(Number(st.size));
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      await img.append(ghost_file_entrySchema, head, buf.subarray(0, bytesRead));
      return;
    }
    await img.append(ghost_file_entrySchema, head);
    // One chunk per data extent, as CRIU writes them; restore sizes the file first, so the holes
    // between stay holes.
    for (const { offset, length } of native.dataExtents(link, st.size)) {
      const chunk = create(ghost_chunk_entrySchema, { len: length, off: offset });
      await img.appendStreamed(ghost_chunk_entrySchema, chunk, Number(length), readRange(fh, offset, length));
    }
  } finally {
    await fh.close();
  }
}

/**
 * `length` bytes of the file from `offset`, in pieces of one reused buffer; zeros past the end
 * if the file shrank meanwhile (the chunk's length is already promised).
 */
async function* readRange(fh: FileHandle, offset: bigint, length: bigint): AsyncGenerator<Uint8Array> {
  const buf = Buffer.alloc(PIECE);
  for (let done = 0n; done < length; ) {
    const want = Number(length - done < BigInt(PIECE) ? length - done : BigInt(PIECE));
    const { bytesRead } = await fh.read(buf, 0, want, Number(offset + done));
    if (bytesRead < want) buf.fill(0, bytesRead, want);
    yield buf.subarray(0, want);
    done += BigInt(want);
  }
}
