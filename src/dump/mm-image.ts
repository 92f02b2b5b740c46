// mm-PID.img (the address space: mm fields, VMAs, auxv) and pagemap-PID.img (which pages of it
// are in pages-N.img). Page data itself is drained by the Rust core, never here.
//
// The executable and every file mapping are looked at through the task's own links
// (/proc/PID/exe, /proc/PID/map_files/START-END), as CRIU opens them: the size and build-id
// restore validates must be the mapped file's, and the path /proc/PID/maps prints may name
// another file by now, which is refused (FileTable.newPathFile), as CRIU refuses it. A mapped
// file that was deleted — a binary or library replaced on disk by a rename, the usual way of
// upgrading one — is kept as a ghost file, as CRIU keeps it; restore recreates it beside
// whatever now holds the path.
import { stat, statfs } from 'node:fs/promises';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { mm_entrySchema } from '../images/gen/mm_pb.js';
import type { vma_entry } from '../images/gen/vma_pb.js';
import { pagemap_headSchema, pagemap_entrySchema } from '../images/gen/pagemap_pb.js';
import { ImageBuffer, pagemapEntry, type ImagesDir, type ImageTarget } from '../images/index.js';
import { encodePagemapEntries } from '../images/pagemap.js';
import { TsdumpError } from '../errors.js';
import type { MemoryDump, ParasiteInfo, ProcessInspection, ShmemDumpInfo, VmaInfo } from '../../native/index.js';
import type { FileTable } from './file-table.js';
import { isMemfdVma, mappingOpenFlags, memfdMappingFile } from './fds/memfd.js';
import { pageBytesN } from '../arch/index.js';

const MAP_SHARED = 0x1;
const MAP_PRIVATE = 0x2;
const MAP_ANONYMOUS = 0x20;
const PROT_WRITE = 0x2;
const O_RDWR = 2;
const HUGETLBFS_MAGIC = 0x958458f6;
const DELETED = ' (deleted)';

// vma_entry.status bits (CRIU's VMA_AREA_* / VMA_*).
const VMA_AREA_REGULAR = 1 << 0;
const VMA_AREA_VSYSCALL = 1 << 2;
const VMA_AREA_VDSO = 1 << 3;
const VMA_AREA_HEAP = 1 << 5;
const VMA_FILE_PRIVATE = 1 << 6;
const VMA_FILE_SHARED = 1 << 7;
const VMA_ANON_SHARED = 1 << 8;
const VMA_ANON_PRIVATE = 1 << 9;
const VMA_AREA_SYSVIPC = 1 << 10;
const VMA_AREA_VVAR = 1 << 12;
const VMA_AREA_MEMFD = 1 << 14;

/**
 * VmFlags mnemonics that CRIU replays with madvise, and the advice number each stands for; plus
 * wipe-on-fork, which CRIU 4.1.1 drops and its restore replays all the same.
 */
const MADVISE_FLAGS: Readonly<Record<string, number>> = {
  rr: 1, // MADV_RANDOM
  sr: 2, // MADV_SEQUENTIAL
  dc: 10, // MADV_DONTFORK
  mg: 12, // MADV_MERGEABLE
  hg: 14, // MADV_HUGEPAGE
  nh: 15, // MADV_NOHUGEPAGE
  dd: 16, // MADV_DONTDUMP
  wf: 18, // MADV_WIPEONFORK
};

const MAP_LOCKED = 0x2000;
/** VmFlags mnemonics that CRIU keeps as mmap flags (restore maps the VMA with them). */
const MMAP_FLAGS: Readonly<Record<string, number>> = {
  gd: 0x100, // MAP_GROWSDOWN
  lo: MAP_LOCKED, // mlock()ed or mapped locked: restored populated, never served lazily
  nr: 0x4000, // MAP_NORESERVE
};

function mmapFlags(vmFlags: readonly string[]): number {
  return vmFlags.reduce((bits, f) => bits | (MMAP_FLAGS[f] ?? 0), 0);
}

function madvise(vmFlags: readonly string[]): bigint {
  let bits = 0n;
  for (const f of vmFlags) {
    const advice = MADVISE_FLAGS[f];
    if (advice !== undefined) bits |= 1n << BigInt(advice);
  }
  return bits;
}

/**
 * The mm image's entry and its mappings as plain objects: the image encoder reads them as they
 * are (encode.ts), without create()'s walk over every field of every mapping while frozen.
 */
export type VmaFields = Pick<vma_entry, 'start' | 'end' | 'pgoff' | 'shmid' | 'prot' | 'flags' | 'status' | 'fd'> & Partial<Pick<vma_entry, 'madv' | 'fdflags'>>;
export type MmFields = MessageInitShape<typeof mm_entrySchema> & { vmas: VmaFields[] };

export async function buildMm(
  pid: number,
  proc: ProcessInspection,
  parasite: ParasiteInfo,
  files: FileTable,
): Promise<MmFields> {
  if (!proc.exe) throw new TsdumpError('PROCFS', `pid ${pid}: /proc/${pid}/exe has no target`);
  const exeLink = `/proc/${pid}/exe`;
  let exeFileId: number;
  if (proc.exe.endsWith(DELETED)) {
    exeFileId = await files.deletedPathFile(exeLink, proc.exe.slice(0, -DELETED.length), 0, `pid ${pid}: executable ${proc.exe}`);
  } else {
    // the core stat'ed it through the link already
    const exeStat = proc.exeStat ?? (await stat(exeLink, { bigint: true }));
    exeFileId = await files.pathFile(proc.exe, 0, { mode: Number(exeStat.mode), size: BigInt(exeStat.size), source: exeLink });
  }
  const vmas: VmaFields[] = [];
  for (const vma of proc.vmas) {
    const entry = await vmaEntry(pid, vma, files);
    setVmFlags(entry, vma.vmFlags);
    const prev = vmas.at(-1);
    // [vvar_vclock] (6.13+) is the tail of the vvar area: CRIU keeps the two as one VMA.
    if (vma.kind === 'vvar_vclock' && prev && prev.status & VMA_AREA_VVAR && prev.end === vma.start) {
      prev.end = vma.end;
      continue;
    }
    vmas.push(entry);
  }
  const auxv = Array.from(proc.auxv);
  const { mm } = proc;
  return {
    mmStartCode: mm.startCode,
    mmEndCode: mm.endCode,
    mmStartData: mm.startData,
    mmEndData: mm.endData,
    mmStartStack: mm.startStack,
    mmStartBrk: mm.startBrk,
    mmBrk: mm.brk,
    mmArgStart: mm.argStart,
    mmArgEnd: mm.argEnd,
    mmEnvStart: mm.envStart,
    mmEnvEnd: mm.envEnd,
    exeFileId,
    mmSavedAuxv: auxv,
    vmas,
    dumpable: parasite.misc.dumpable,
    thpDisabled: parasite.misc.thpDisabled,
  };
}

/**
 * What a mapping's VmFlags decide in its entry: the advice CRIU replays with madvise, the mmap
 * flags restore maps it with, and a SysV segment attached read-only from a writable id's open
 * mode. Applied as the mm image is built, or with --snapshot once the snapshot has told the
 * flags after the release (snapshot.ts).
 */
export function setVmFlags(entry: VmaFields, vmFlags: string): void {
  const flags = vmFlags.split(' ');
  const madv = madvise(flags);
  if (madv) entry.madv = madv;
  entry.flags |= mmapFlags(flags);
  if (entry.status & VMA_AREA_SYSVIPC && flags.includes('mw')) entry.fdflags = O_RDWR;
}

async function vmaEntry(pid: number, vma: VmaInfo, files: FileTable): Promise<VmaFields> {
  // one literal of one shape (a spread of two objects cost ~4 us a mapping while frozen)
  const entry = (f: { flags: number; status: number; pgoff?: bigint; shmid?: bigint; fdflags?: number }): VmaFields => ({
    start: vma.start,
    end: vma.end,
    pgoff: f.pgoff ?? 0n,
    shmid: f.shmid ?? 0n,
    prot: vma.prot,
    flags: f.flags,
    status: f.status,
    fd: -1n,
    ...(f.fdflags !== undefined ? { fdflags: f.fdflags } : {}),
  });
  const anon = MAP_PRIVATE | MAP_ANONYMOUS;
  const at = () => `pid ${pid}: VMA ${vma.start.toString(16)}-${vma.end.toString(16)}`;
  switch (vma.kind) {
    case 'vsyscall':
      return entry({ flags: anon, status: VMA_AREA_VSYSCALL | VMA_ANON_PRIVATE });
    case 'vvar':
    case 'vvar_vclock':
      return entry({ flags: anon, status: VMA_AREA_REGULAR | VMA_ANON_PRIVATE | VMA_AREA_VVAR });
    case 'vdso':
      return entry({ flags: anon, status: VMA_AREA_REGULAR | VMA_AREA_VDSO | VMA_ANON_PRIVATE });
    case 'heap':
      return entry({ flags: anon, status: VMA_AREA_REGULAR | VMA_AREA_HEAP | VMA_ANON_PRIVATE });
    case 'stack':
    case 'anon':
      if (vma.shared) break;
      return entry({ flags: anon, status: VMA_AREA_REGULAR | VMA_ANON_PRIVATE });
    case 'shmem_anon':
      // MAP_SHARED|MAP_ANONYMOUS: the object (named by its inode) is dumped once, see dumpShmem.
      return entry({
        pgoff: vma.pgoff,
        shmid: vma.inode,
        flags: MAP_SHARED | MAP_ANONYMOUS,
        status: VMA_AREA_REGULAR | VMA_ANON_SHARED,
      });
    case 'sysv_shm':
      // SysV shared memory: shmid is the segment's id (its inode), its contents are the IPC
      // namespace's (sysv-ipc.ts, which also checked that restore can re-attach it)
      return entry({
        pgoff: vma.pgoff,
        shmid: vma.inode,
        flags: MAP_SHARED | MAP_ANONYMOUS,
        status: VMA_AREA_REGULAR | VMA_ANON_SHARED | VMA_AREA_SYSVIPC,
        fdflags: vma.prot & PROT_WRITE ? O_RDWR : 0,
      });
    case 'file': {
      if (isMemfdVma(vma)) {
        // the memfd's contents are its inode's (memfd-inodes.ts); shmid names its MEMFD file entry
        return entry({
          pgoff: vma.pgoff,
          shmid: BigInt(await memfdMappingFile(files, pid, vma)),
          flags: vma.shared ? MAP_SHARED : MAP_PRIVATE,
          status: VMA_AREA_REGULAR | (vma.shared ? VMA_FILE_SHARED : VMA_FILE_PRIVATE) | VMA_AREA_MEMFD,
          fdflags: mappingOpenFlags(pid, vma),
        });
      }
      if (!vma.path) break;
      // The mode the task opened the file with, as CRIU reads it from the map_files link: restore
      // opens the file with it. The file entry itself carries no mode (one per file, as CRIU's).
      const fdflags = mappingOpenFlags(pid, vma);
      const source = `/proc/${pid}/map_files/${vma.start.toString(16)}-${vma.end.toString(16)}`;
      let id: number;
      if (vma.deleted) {
        // hugetlbfs files (MAP_HUGETLB shared memory, hugetlb memfds) cannot be read into a ghost
        if ((await statfs(source)).type === HUGETLBFS_MAGIC) break;
        id = await files.deletedPathFile(source, vma.path, 0, `${at()} (${vma.path}${DELETED})`);
      } else {
        const st = vma.file ?? (await stat(source, { bigint: true }));
        id = await files.pathFile(vma.path, 0, { mode: Number(st.mode), size: BigInt(st.size), source });
      }
      return entry({
        pgoff: vma.pgoff,
        shmid: BigInt(id),
        flags: vma.shared ? MAP_SHARED : MAP_PRIVATE,
        status: VMA_AREA_REGULAR | (vma.shared ? VMA_FILE_SHARED : VMA_FILE_PRIVATE),
        fdflags,
      });
    }
    default:
      break;
  }
  const what =
    vma.kind === 'file' && vma.deleted
      ? `mapping of deleted hugetlbfs file ${vma.path ?? ''}`
      : vma.deleted
        ? `mapping of deleted file ${vma.path ?? ''}`
        : `${vma.kind}${vma.shared ? ' shared' : ''} mapping ${vma.path ?? ''}`;
  throw new TsdumpError('UNSUPPORTED_VMA', `${at()}: tsdump cannot dump a ${what.trim()} yet`);
}

const PE_LAZY = 1 << 1;
const PE_PRESENT = 1 << 2;

/** Private anonymous memory can be served lazily (userfaultfd) at restore, as CRIU marks it. */
function lazyCapable(vma: VmaFields): boolean {
  const special = VMA_AREA_VDSO | VMA_AREA_VSYSCALL | VMA_AREA_VVAR;
  return (
    (vma.flags & (MAP_ANONYMOUS | MAP_PRIVATE | MAP_LOCKED)) === (MAP_ANONYMOUS | MAP_PRIVATE) && (vma.status & special) === 0
  );
}

/**
 * pagemap-PID.img: the drained runs, marked lazy where CRIU would, and merged where runs touch
 * with equal flags (the pages file holds them back to back either way).
 */
export async function writePagemap(dir: ImageTarget, pid: number, pagesId: number, memory: Pick<MemoryDump, 'entries'>, vmas: readonly VmaFields[]): Promise<void> {
  const runs: { vaddr: bigint; nrPages: number; flags: number }[] = [];
  let v = 0;
  for (const e of memory.entries) {
    while (v < vmas.length && vmas[v]!.end <= e.vaddr) v++;
    const vma = vmas[v];
    // pages left in the parent stay plain PE_PARENT holes, as CRIU writes them
    const flags = vma && vma.start <= e.vaddr && lazyCapable(vma) && e.flags & PE_PRESENT ? e.flags | PE_LAZY : e.flags;
    const prev = runs.at(-1);
    if (prev && prev.flags === flags && prev.vaddr + BigInt(prev.nrPages) * pageBytesN() === e.vaddr) prev.nrPages += e.nrPages;
    else runs.push({ vaddr: e.vaddr, nrPages: e.nrPages, flags });
  }
  await new ImageBuffer(dir, `pagemap-${pid}.img`)
    .append(pagemap_headSchema, { pagesId })
    // hand-encoded: the tree is frozen meanwhile, and the schema path costs ~20 us per entry
    .appendEncoded(pagemap_entrySchema, encodePagemapEntries(runs), runs.length)
    .write();
}

/**
 * pagemap-shmem-INO.img: a shared anonymous object's (or a memfd's) pages, addressed by offset in
 * the object.
 */
export async function writeShmemPagemap(dir: ImagesDir, shmem: Pick<ShmemDumpInfo, 'shmid' | 'entries'>, pagesId: number): Promise<void> {
  const image = new ImageBuffer(dir, `pagemap-shmem-${shmem.shmid}.img`).append(pagemap_headSchema, { pagesId });
  for (const e of shmem.entries) image.append(pagemap_entrySchema, pagemapEntry(e.vaddr, e.nrPages, e.flags));
  await image.write();
}
