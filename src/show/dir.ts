// An images directory read as one dump: the process tree with each process's core, memory map,
// pagemap, descriptors and fs, the shared file table and the stats, plus every way the directory
// falls short of what `criu restore` needs (an unfinished dump, a missing or unreadable image, a
// reference that leads nowhere, a pages file of the wrong size). `show`'s views and `report`
// read this; nothing here prints.

import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isFieldSet, type DescMessage, type Message, type MessageShape } from '@bufbuild/protobuf';
import { TsdumpError } from '../errors.js';
import { imageTypeForFile } from '../images/catalog.js';
import { readImage, type ImageFile } from '../images/reader.js';
import { core_entrySchema, task_kobj_ids_entrySchema, type core_entry } from '../images/gen/core_pb.js';
import { fdinfo_entrySchema, file_entrySchema, type fdinfo_entry, type file_entry } from '../images/gen/fdinfo_pb.js';
import { fs_entrySchema, type fs_entry } from '../images/gen/fs_pb.js';
import { inventory_entrySchema, type inventory_entry } from '../images/gen/inventory_pb.js';
import { memfd_inode_entrySchema, type memfd_inode_entry } from '../images/gen/memfd_pb.js';
import { mm_entrySchema, type mm_entry } from '../images/gen/mm_pb.js';
import { pagemap_entrySchema, pagemap_headSchema, type pagemap_entry } from '../images/gen/pagemap_pb.js';
import { pstree_entrySchema } from '../images/gen/pstree_pb.js';
import { stats_entrySchema, type dump_stats_entry } from '../images/gen/stats_pb.js';
import { PE_PARENT, PE_PRESENT, pagemapPages } from '../images/pagemap.js';

/** The page size CRIU's pagemaps count in on x86_64 and arm64 (4 KiB kernels). */
export const PAGE_SIZE = 4096;

/** core_entry.tc.task_state as CRIU writes it (compel's task states). */
export const TASK_STATES: Readonly<Record<number, string>> = { 1: 'running', 2: 'zombie', 3: 'stopped' };

/** vma_entry.status bits (CRIU's VMA_AREA_* and VMA_* flags). */
export const VMA = {
  REGULAR: 1 << 0,
  STACK: 1 << 1,
  VSYSCALL: 1 << 2,
  VDSO: 1 << 3,
  HEAP: 1 << 5,
  FILE_PRIVATE: 1 << 6,
  FILE_SHARED: 1 << 7,
  ANON_SHARED: 1 << 8,
  SYSVIPC: 1 << 10,
  SOCKET: 1 << 11,
  VVAR: 1 << 12,
  AIORING: 1 << 13,
  MEMFD: 1 << 14,
} as const;

/** Appends to the list under `key`, starting it if needed. */
export function pushTo<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

export interface Problem {
  /** incomplete: something a finished dump writes is not there; inconsistent: what is there disagrees. */
  readonly kind: 'incomplete' | 'inconsistent';
  readonly message: string;
}

export interface DumpProcess {
  readonly pid: number;
  readonly ppid: number;
  readonly pgid: number;
  readonly sid: number;
  readonly threads: readonly number[];
  /** Depth in the tree, 0 for a root. */
  readonly depth: number;
  readonly core?: core_entry;
  readonly comm: string;
  readonly state: string;
  readonly mm?: mm_entry;
  /** pagemap entries after the head. */
  readonly pagemap?: readonly pagemap_entry[];
  readonly pagesId?: number;
  readonly filesId?: number;
  readonly fds?: readonly fdinfo_entry[];
  readonly fs?: fs_entry;
}

/** Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, memfd-less), dumped once for all its users. */
export interface SharedMemory {
  readonly shmid: number;
  readonly pagesId: number;
  readonly pagemap: readonly pagemap_entry[];
}

export interface DumpDir {
  readonly dir: string;
  /** Every image file in the directory by name (unreadable ones are in `problems`). */
  readonly images: ReadonlyMap<string, ImageFile>;
  readonly inventory?: inventory_entry;
  /** A pre-dump's directory (memory only; no cores, descriptors or fs). */
  readonly preDump: boolean;
  /** In pstree.img's order (crit's order for fds, mems and rss). */
  readonly processes: readonly DumpProcess[];
  readonly shmem: readonly SharedMemory[];
  readonly files: ReadonlyMap<number, file_entry>;
  readonly memfdInodes: ReadonlyMap<bigint, memfd_inode_entry>;
  readonly stats?: dump_stats_entry;
  readonly problems: readonly Problem[];
}

function messagesOf<Desc extends DescMessage>(image: ImageFile | undefined, schema: Desc): MessageShape<Desc>[] {
  const out: MessageShape<Desc>[] = [];
  for (const e of image?.entries ?? []) {
    if (e.schema.typeName === schema.typeName) out.push(e.message as Message as MessageShape<Desc>);
  }
  return out;
}

/** Reads DIR as one dump. Throws only when DIR cannot be listed or holds no process tree. */
export async function loadDumpDir(dir: string): Promise<DumpDir> {
  let names: string[];
  try {
    names = (await readdir(dir)).sort();
  } catch (err) {
    throw new TsdumpError('IMAGE_IO', `${dir}: cannot list the images directory: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
  const present = new Set(names);
  const problems: Problem[] = [];
  const incomplete = (message: string): void => void problems.push({ kind: 'incomplete', message });
  const inconsistent = (message: string): void => void problems.push({ kind: 'inconsistent', message });

  const images = new Map<string, ImageFile>();
  const read = await Promise.allSettled(names.filter((n) => imageTypeForFile(n)).map(async (n) => [n, await readImage(join(dir, n))] as const));
  for (const r of read) {
    if (r.status === 'fulfilled') images.set(r.value[0], r.value[1]);
    else inconsistent(`unreadable image: ${r.reason instanceof Error ? r.reason.message : String(r.reason)}`);
  }
  const one = <Desc extends DescMessage>(name: string, schema: Desc): MessageShape<Desc> | undefined => messagesOf(images.get(name), schema)[0];

  const inventory = one('inventory.img', inventory_entrySchema);
  if (!inventory && !present.has('inventory.img')) {
    incomplete('no inventory.img: the dump did not finish (it failed, was interrupted or is still running), and criu restore refuses the directory');
  }
  const preDump = inventory !== undefined && isFieldSet(inventory, inventory_entrySchema.field.preDumpMode);
  // a pre-dump writes memory only: its processes are the pagemaps' (CRIU writes no pstree.img)
  const pagemapPids = names.flatMap((n) => /^pagemap-(\d+)\.img$/.exec(n)?.[1] ?? []).map(Number);
  let tree = messagesOf(images.get('pstree.img'), pstree_entrySchema).map((p) => ({ pid: p.pid, ppid: p.ppid, pgid: p.pgid, sid: p.sid, threads: p.threads }));
  if (tree.length === 0 && preDump) tree = pagemapPids.map((pid) => ({ pid, ppid: 0, pgid: 0, sid: 0, threads: [pid] }));
  if (tree.length === 0) {
    const why = present.has('pstree.img') ? 'pstree.img holds no process' : 'no pstree.img';
    throw new TsdumpError('IMAGE_FORMAT', `${dir}: ${why}: not a (finished) dump; ${names.length === 0 ? 'the directory is empty' : `it holds ${names.length} files`}`);
  }

  const files = new Map(messagesOf(images.get('files.img'), file_entrySchema).map((f) => [f.id, f]));
  const memfdInodes = new Map(messagesOf(images.get('memfd.img'), memfd_inode_entrySchema).map((m) => [m.inodeId, m]));
  const needFile = (id: number, what: string): void => {
    if (!files.has(id)) inconsistent(`${what} names file id ${id}, which files.img does not hold`);
  };
  const need = (name: string, why: string): boolean => {
    if (images.has(name)) return true;
    if (!present.has(name)) incomplete(`no ${name} (${why})`);
    return false;
  };

  // tree order from the flat pstree list: parents before children, as crit walks it
  const byPid = new Map(tree.map((p) => [p.pid, p]));
  const kids = new Map<number, typeof tree>();
  const roots: typeof tree = [];
  for (const p of tree) {
    if (p.ppid !== 0 && byPid.has(p.ppid)) pushTo(kids, p.ppid, p);
    else {
      if (p.ppid !== 0) inconsistent(`pstree.img: process ${p.pid} has parent ${p.ppid}, which is not in the tree`);
      roots.push(p);
    }
  }
  if (roots.length > 1 && !preDump) inconsistent(`pstree.img: ${roots.length} roots (${roots.map((r) => r.pid).join(', ')}); a dump has one`);

  const memoryOf = (pid: number): Pick<DumpProcess, 'mm' | 'pagemap' | 'pagesId'> => {
    const mmName = `mm-${pid}.img`;
    const mm = one(mmName, mm_entrySchema);
    if (!preDump && need(mmName, `the memory map of process ${pid}`) && mm) {
      needFile(mm.exeFileId, `${mmName} (exe)`);
      for (const v of mm.vmas) if (v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) needFile(Number(v.shmid), `${mmName} (mapping at 0x${v.start.toString(16)})`);
    }
    const pmName = `pagemap-${pid}.img`;
    const pmImage = images.get(pmName);
    need(pmName, `which pages of process ${pid} were dumped`);
    if (!pmImage) return mm ? { mm } : {};
    const head = messagesOf(pmImage, pagemap_headSchema)[0];
    const pagemap = messagesOf(pmImage, pagemap_entrySchema);
    if (mm) checkPagemap(pmName, pagemap, mm, inconsistent);
    return { ...(mm ? { mm } : {}), pagemap, ...(head ? { pagesId: head.pagesId } : {}) };
  };
  const processes: DumpProcess[] = [];
  const walk = (p: (typeof tree)[number], depth: number): void => {
    const core = one(`core-${p.pid}.img`, core_entrySchema);
    if (!preDump) need(`core-${p.pid}.img`, `the registers and state of process ${p.pid}`);
    const state = core?.tc ? (TASK_STATES[core.tc.taskState] ?? `state ${core.tc.taskState}`) : 'unknown';
    const base = { pid: p.pid, ppid: p.ppid, pgid: p.pgid, sid: p.sid, threads: p.threads, depth, comm: core?.tc?.comm ?? '?', state };
    if (state === 'zombie') {
      processes.push({ ...base, ...(core ? { core } : {}) });
    } else if (preDump) {
      processes.push({ ...base, ...memoryOf(p.pid) });
    } else {
      for (const tid of p.threads) if (tid !== p.pid) need(`core-${tid}.img`, `the registers of thread ${tid} of ${p.pid}`);
      const ids = one(`ids-${p.pid}.img`, task_kobj_ids_entrySchema);
      need(`ids-${p.pid}.img`, `which descriptor table, mm and fs process ${p.pid} uses`);
      const fs = one(`fs-${p.pid}.img`, fs_entrySchema);
      if (need(`fs-${p.pid}.img`, `the cwd and root of process ${p.pid}`) && fs) {
        needFile(fs.cwdId, `fs-${p.pid}.img (cwd)`);
        needFile(fs.rootId, `fs-${p.pid}.img (root)`);
      }
      const fdName = ids ? `fdinfo-${ids.filesId}.img` : undefined;
      const fds = fdName ? messagesOf(images.get(fdName), fdinfo_entrySchema) : undefined;
      if (fdName && need(fdName, `the descriptors of process ${p.pid}`)) {
        for (const fd of fds ?? []) needFile(fd.id, `${fdName} (fd ${fd.fd})`);
      }
      processes.push({
        ...base,
        ...(core ? { core } : {}),
        ...memoryOf(p.pid),
        ...(ids ? { filesId: ids.filesId } : {}),
        ...(fds && images.has(fdName!) ? { fds } : {}),
        ...(fs ? { fs } : {}),
      });
    }
    for (const c of kids.get(p.pid) ?? []) walk(c, depth + 1);
  };
  for (const r of roots) walk(r, 0);
  const order = new Map(tree.map((p, i) => [p.pid, i]));
  processes.sort((a, b) => order.get(a.pid)! - order.get(b.pid)!);

  const shmem: SharedMemory[] = [];
  for (const n of names) {
    const m = /^pagemap-shmem-(\d+)\.img$/.exec(n);
    const img = images.get(n);
    if (!m || !img) continue;
    const head = messagesOf(img, pagemap_headSchema)[0];
    if (head) shmem.push({ shmid: Number(m[1]), pagesId: head.pagesId, pagemap: messagesOf(img, pagemap_entrySchema) });
  }

  const parentOk = present.has('parent') && (await stat(join(dir, 'parent')).then((st) => st.isDirectory(), () => false));
  const owners = [
    ...processes.flatMap((p) => (p.pagemap && p.pagesId !== undefined ? [{ label: `process ${p.pid}`, pagesId: p.pagesId, pagemap: p.pagemap }] : [])),
    ...shmem.map((m) => ({ label: `shared memory ${m.shmid}`, pagesId: m.pagesId, pagemap: m.pagemap })),
  ];
  checkPages(present, images, owners, parentOk, problems);
  const stats = one('stats-dump', stats_entrySchema)?.dump;
  return { dir, images, ...(inventory ? { inventory } : {}), preDump, processes, shmem, files, memfdInodes, ...(stats ? { stats } : {}), problems };
}


/**
 * Pages a pagemap entry stores in this directory's pages file: present and not in a parent.
 * (PE_LAZY only says the pages could be served lazily; a dump without --lazy-pages still writes them.)
 */
export function storedPages(e: pagemap_entry): bigint {
  return e.flags & PE_PARENT || !(e.flags & PE_PRESENT) ? 0n : pagemapPages(e);
}

function checkPagemap(name: string, entries: readonly pagemap_entry[], mm: mm_entry, inconsistent: (m: string) => void): void {
  let vi = 0;
  let prevEnd = 0n;
  for (const e of entries) {
    const end = e.vaddr + pagemapPages(e) * BigInt(PAGE_SIZE);
    if (e.vaddr < prevEnd) {
      inconsistent(`${name}: entry at 0x${e.vaddr.toString(16)} overlaps or precedes the one before`);
      return;
    }
    prevEnd = end;
    // pages may span adjacent VMAs; every byte must lie in one
    let at = e.vaddr;
    while (at < end) {
      while (vi < mm.vmas.length && mm.vmas[vi]!.end <= at) vi++;
      const v = mm.vmas[vi];
      if (!v || v.start > at) {
        inconsistent(`${name}: pages at 0x${at.toString(16)} lie in no mapping of mm image`);
        return;
      }
      at = v.end < end ? v.end : end;
    }
  }
}

/** Each pages-N.img holds exactly the pages its pagemaps say; parent pages need a parent. */
function checkPages(
  present: ReadonlySet<string>,
  images: ReadonlyMap<string, ImageFile>,
  owners: readonly { label: string; pagesId: number; pagemap: readonly pagemap_entry[] }[],
  parentOk: boolean,
  problems: Problem[],
): void {
  const want = new Map<number, { pages: bigint; owners: string[] }>();
  let fromParent = false;
  for (const o of owners) {
    const w = want.get(o.pagesId) ?? { pages: 0n, owners: [] };
    for (const e of o.pagemap) {
      w.pages += storedPages(e);
      if (e.flags & PE_PARENT) fromParent = true;
    }
    w.owners.push(o.label);
    want.set(o.pagesId, w);
  }
  for (const [id, w] of want) {
    const name = `pages-${id}.img`;
    const img = images.get(name);
    const bytes = w.pages * BigInt(PAGE_SIZE);
    if (!img) {
      if (!present.has(name) && w.pages > 0n) problems.push({ kind: 'incomplete', message: `no ${name} (the ${w.pages} dumped pages of ${w.owners.join(', ')})` });
    } else if (BigInt(img.size) !== bytes) {
      problems.push({
        kind: BigInt(img.size) < bytes ? 'incomplete' : 'inconsistent',
        message: `${name} holds ${img.size} bytes where the pagemaps of ${w.owners.join(', ')} list ${w.pages} pages (${bytes} bytes)`,
      });
    }
  }
  if (fromParent && !parentOk) {
    const why = present.has('parent') ? 'the parent link leads to no directory' : 'there is no parent link (--prev-images-dir)';
    problems.push({ kind: 'incomplete', message: `pages are marked as in the parent images, but ${why}` });
  }
}

/** The verdict on a directory: complete, or the worse of its problems. */
export function verdict(d: Pick<DumpDir, 'problems'>): 'complete' | 'incomplete' | 'inconsistent' {
  if (d.problems.some((p) => p.kind === 'incomplete')) return 'incomplete';
  return d.problems.length > 0 ? 'inconsistent' : 'complete';
}

/** Processes in tree order (each before its children, as `crit x ps` prints them). */
export function inTreeOrder(processes: readonly DumpProcess[]): DumpProcess[] {
  const kids = new Map<number, DumpProcess[]>();
  const pids = new Set(processes.map((p) => p.pid));
  const roots: DumpProcess[] = [];
  for (const p of processes) {
    if (p.ppid !== 0 && pids.has(p.ppid)) pushTo(kids, p.ppid, p);
    else roots.push(p);
  }
  const out: DumpProcess[] = [];
  const walk = (p: DumpProcess): void => {
    out.push(p);
    for (const c of kids.get(p.pid) ?? []) walk(c);
  };
  roots.forEach(walk);
  return out;
}
