// The GNU build-id of an ELF file, as CRIU records it in reg_file_entry.build_id: restore reads
// the build-id of the file it reopens and refuses a different one ("File X has bad build-ID"),
// where a same-sized rebuilt binary would pass the size check. The rules are CRIU's (files-reg.c,
// get_build_id), so both tools agree on which files have one and what it is:
//  - only the first 1 MiB of the file counts (the note sits near the start of any real ELF);
//  - the first PT_NOTE segment holding a note of type NT_GNU_BUILD_ID wins; the note's name is
//    not checked, and a note header may start right at the segment's end;
//  - a description of 1..512 bytes is kept, padded with zeros to whole 32-bit words, each word
//    read little-endian (the host order of the x86_64 and aarch64 CRIU builds).
// Only the ELF header, the program headers and the note segments are read, by synchronous calls:
// the tree is frozen meanwhile, and a read from the page cache takes microseconds where an
// awaited one costs a turn of the event loop.
import { closeSync, openSync, readSync } from 'node:fs';
import { TsdumpError } from '../errors.js';

/** CRIU's BUILD_ID_MAP_SIZE: how much of the file is looked at. */
const MAP_SIZE = 1 << 20;
const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const EI_CLASS = 4;
const ELFCLASS32 = 1;
const ELFCLASS64 = 2;
const PT_NOTE = 4;
const NT_GNU_BUILD_ID = 3;
const NOTE_HEADER = 12;
const MAX_DESC = 512;

/** Field offsets and sizes of the two ELF classes (Elf32_* / Elf64_*). */
const LAYOUT = {
  [ELFCLASS32]: { ehdr: 52, phoff: 28, phnum: 44, phdr: 32, pOffset: 4, pFilesz: 16, word: 4 },
  [ELFCLASS64]: { ehdr: 64, phoff: 32, phnum: 56, phdr: 56, pOffset: 8, pFilesz: 32, word: 8 },
} as const;

/** Rounds a u32 up to 4 in u32 arithmetic, wrapping as C's ALIGN does (never negative). */
const align4 = (n: number) => ((n + 3) & ~3) >>> 0;

/**
 * The build-id words of the file at `path` whose size is `size`, or undefined when it has none
 * (not ELF, no note, a malformed one). Errors opening or reading the file are thrown.
 */
export function elfBuildId(path: string, size: number | bigint): number[] | undefined {
  const fileSize = Number(size);
  if (fileSize < ELF_MAGIC.length + 1) return undefined;
  const fd = openSync(path, 'r');
  try {
    return buildIdOf(fd, Math.min(fileSize, MAP_SIZE));
  } finally {
    closeSync(fd);
  }
}

/**
 * How much of the file is read at once first: headers and the build-id note of a linked binary
 * sit in its first page or two, so one read (not one per header) serves them while the tree is
 * frozen; anything beyond is read where it lies.
 */
const HEAD_READ = 16 * 1024;

/** `limit`: the bytes CRIU maps (min(st_size, 1 MiB)); nothing past it is read. */
function buildIdOf(fd: number, limit: number): number[] | undefined {
  const fromFile = (offset: number, len: number): Buffer => {
    const buf = Buffer.alloc(len);
    const bytesRead = len > 0 ? readSync(fd, buf, 0, len, offset) : 0;
    return buf.subarray(0, bytesRead);
  };
  const head = fromFile(0, Math.min(limit, HEAD_READ));
  const read = (offset: number, length: number): Buffer => {
    const len = Math.max(0, Math.min(length, limit - offset));
    // a short head means the file ended there: what it lacks is not in the file either
    if (offset + len <= HEAD_READ || head.length < HEAD_READ) return head.subarray(offset, offset + len);
    return fromFile(offset, len);
  };
  const ident = read(0, ELF_MAGIC.length + 1);
  if (ident.length < ELF_MAGIC.length + 1 || !ident.subarray(0, ELF_MAGIC.length).equals(ELF_MAGIC)) return undefined;
  const elfClass = ident[EI_CLASS];
  if (elfClass !== ELFCLASS32 && elfClass !== ELFCLASS64) return undefined;
  const l = LAYOUT[elfClass];
  if (limit < l.ehdr) return undefined;
  const ehdr = read(0, l.ehdr);
  if (ehdr.length < l.ehdr) return undefined;
  const word = (b: Buffer, at: number) => (l.word === 8 ? Number(b.readBigUInt64LE(at)) : b.readUInt32LE(at));
  const phoff = word(ehdr, l.phoff);
  const phnum = ehdr.readUInt16LE(l.phnum);
  if (phnum === 0 || phoff === 0) return undefined;

  // program headers that lie wholly inside the looked-at bytes; the first one past stops the walk
  const lastPhdr = limit - l.phdr;
  const count = phoff > lastPhdr ? 0 : Math.min(phnum, Math.floor((lastPhdr - phoff) / l.phdr) + 1);
  const phdrs = read(phoff, count * l.phdr);
  for (let i = 0; i < count; i++) {
    const ph = phdrs.subarray(i * l.phdr, (i + 1) * l.phdr);
    if (ph.length < l.phdr || ph.readUInt32LE(0) !== PT_NOTE) continue;
    const start = word(ph, l.pOffset);
    if (start === 0) continue;
    const lastNote = Math.min(start + word(ph, l.pFilesz), limit - NOTE_HEADER);
    if (start > lastNote) continue;
    const notes = read(start, lastNote - start + NOTE_HEADER);
    for (let at = 0; start + at <= lastNote && at + NOTE_HEADER <= notes.length; ) {
      const namesz = notes.readUInt32LE(at);
      const descsz = notes.readUInt32LE(at + 4);
      if (notes.readUInt32LE(at + 8) === NT_GNU_BUILD_ID) return descOf(read, start + at, namesz, descsz, limit);
      at += NOTE_HEADER + align4(namesz) + align4(descsz);
    }
  }
  return undefined;
}

function descOf(
  read: (offset: number, length: number) => Buffer,
  note: number,
  namesz: number,
  descsz: number,
  limit: number,
): number[] | undefined {
  if (descsz === 0 || descsz > MAX_DESC) return undefined;
  const at = note + NOTE_HEADER + align4(namesz);
  if (at > limit - descsz) return undefined;
  const desc = read(at, descsz);
  if (desc.length < descsz) return undefined;
  const padded = Buffer.alloc(align4(descsz));
  desc.copy(padded);
  const words: number[] = [];
  for (let i = 0; i < padded.length; i += 4) words.push(padded.readUInt32LE(i));
  return words;
}

/**
 * reg_file_entry's build_id field for a regular file CRIU would validate (size recorded): read
 * through `source` (the task's own open file where there is one). As in CRIU, a file that cannot
 * be read fails the dump rather than be restored unchecked.
 */
export function buildIdField(source: string, size: number | bigint, what: string): { buildId?: number[] } {
  try {
    const words = elfBuildId(source, size);
    return words ? { buildId: words } : {};
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new TsdumpError('PROCFS', `${what}: cannot read ${source} for its ELF build-id: ${reason}`, { cause: err });
  }
}
