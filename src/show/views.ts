// `tsdump show DIR` and its views. --ps, --fds, --mems and --rss print what `crit x DIR ps|fds|
// mems|rss` prints, character for character, so either tool can be diffed against the other;
// their --json forms carry the same facts as data (addresses as hex strings, sizes in bytes,
// files described in words). Without a view: a summary of every process and the dump's stats.

import { fd_types } from '../images/gen/fdinfo_pb.js';
import type { vma_entry } from '../images/gen/vma_pb.js';
import { quotedPrintable } from '../images/crit.js';
import { PE_LAZY, PE_PARENT, pagemapPages } from '../images/pagemap.js';
import { PAGE_SIZE, VMA, inTreeOrder, storedPages, verdict, type DumpDir, type DumpProcess } from './dir.js';
import { fileInfo, peersOf, type FdRef } from './files.js';
import { sizeText } from '../size-text.js';

export const SHOW_DIR_VIEWS = ['ps', 'fds', 'mems', 'rss'] as const;
export type ShowDirView = (typeof SHOW_DIR_VIEWS)[number];

const MAP_GROWSDOWN = 0x100;

const hex = (n: bigint | number): string => n.toString(16);
const hex0x = (n: bigint | number): string => `0x${n.toString(16)}`;
const pad = (s: string | number, width: number): string => String(s).padStart(width);
const padEnd = (s: string | number, width: number): string => String(s).padEnd(width);

/** What a mapping is, for colours and JSON. */
export function vmaKind(v: vma_entry): string {
  const s = v.status;
  if (s & (VMA.VDSO | VMA.VVAR)) return 'vdso';
  if (s & VMA.VSYSCALL) return 'vsyscall';
  if (s & VMA.SYSVIPC) return 'sysvipc';
  if (s & VMA.SOCKET) return 'packet';
  if (s & VMA.AIORING) return 'aio';
  if (s & VMA.MEMFD) return 'memfd';
  if (s & VMA.FILE_SHARED) return 'file-shared';
  if (s & VMA.FILE_PRIVATE) return 'file';
  if (s & VMA.ANON_SHARED) return 'anon-shared';
  if (s & VMA.STACK || v.flags & MAP_GROWSDOWN) return 'stack';
  if (s & VMA.HEAP) return 'heap';
  return 'anon';
}

/** The file a mapping maps, if it maps one. */
export function vmaFile(d: Pick<DumpDir, 'files'>, v: vma_entry): string | undefined {
  return v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED) ? (d.files.get(Number(v.shmid))?.reg?.name ?? '?') : undefined;
}

export function protText(prot: number): string {
  return `${prot & 1 ? 'r' : '-'}${prot & 2 ? 'w' : '-'}${prot & 4 ? 'x' : '-'}`;
}

/** crit's one-word name of an open file (its get_file_str). */
function critFileText(d: DumpDir, type: fd_types, id: number): string {
  const f = d.files.get(id);
  switch (type) {
    case fd_types.REG:
      return f?.reg?.name || 'unknown path';
    case fd_types.PIPE:
      return f?.pipe ? `pipe[${f.pipe.pipeId}]` : 'pipe[?]';
    case fd_types.UNIXSK: {
      const u = f?.usk;
      if (!u) return 'unix[?]';
      // crit prints the name quoted-printable, as its JSON holds it
      const name = u.name.length > 0 ? ` ${quotedPrintable(u.name)}` : '';
      return `unix[${u.ino} (${u.peer})${name}]`;
    }
    default:
      return `${fd_types[type] ?? type}.${id}`;
  }
}

/** crit x DIR ps */
function psText(d: DumpDir): string[] {
  const lines = [`${pad('PID', 7)}${pad('PGID', 7)}${pad('SID', 7)}   COMM`];
  for (const p of inTreeOrder(d.processes)) lines.push(`${pad(p.pid, 7)}${pad(p.pgid, 7)}${pad(p.sid, 7)}   ${' '.repeat(4 * p.depth)}${p.comm}`);
  return lines;
}

/** crit x DIR fds */
function fdsText(d: DumpDir): string[] {
  const lines: string[] = [];
  for (const p of d.processes) {
    lines.push(String(p.pid));
    for (const fd of p.fds ?? []) lines.push(`\t${pad(fd.fd, 7)}: ${critFileText(d, fd.type, fd.id)}`);
    if (p.fs) {
      lines.push(`\t${pad('cwd', 7)}: ${critFileText(d, fd_types.REG, p.fs.cwdId)}`);
      lines.push(`\t${pad('root', 7)}: ${critFileText(d, fd_types.REG, p.fs.rootId)}`);
    }
  }
  return lines;
}

/** crit x DIR mems: shared objects are numbered in order of appearance across the dump. */
function memsText(d: DumpDir): string[] {
  const lines: string[] = [];
  const ids = new Map<bigint, number>();
  const idOf = (shmid: bigint): string => {
    if (!ids.has(shmid)) ids.set(shmid, ids.size + 1);
    return hex(ids.get(shmid)!);
  };
  for (const p of d.processes) {
    lines.push(String(p.pid));
    if (!p.mm) continue;
    lines.push(`\t${padEnd('exe', 36)}    ${critFileText(d, fd_types.REG, p.mm.exeFileId)}`);
    for (const v of p.mm.vmas) {
      const st = v.status;
      let fn: string;
      if (st & VMA.SYSVIPC) fn = ` ips[${idOf(v.shmid)}]`;
      else if (st & VMA.ANON_SHARED) fn = ` shmem[${idOf(v.shmid)}]`;
      else if (st & VMA.SOCKET) fn = ` packet[${idOf(v.shmid)}]`;
      else if (st & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) {
        fn = ` ${critFileText(d, fd_types.REG, Number(v.shmid))}`;
        if (v.pgoff) fn += ` + ${hex0x(v.pgoff)}`;
        if (st & VMA.FILE_SHARED) fn += ' (s)';
      } else if (st & VMA.STACK) fn = ' [stack]';
      else if (st & VMA.VSYSCALL) fn = ' [vsyscall]';
      else if (st & VMA.VDSO) fn = ' [vdso]';
      else if (v.flags & MAP_GROWSDOWN) fn = ' [stack?]';
      else fn = '';
      if (!(st & VMA.REGULAR)) fn += ' *';
      lines.push(`\t${padEnd(`${hex(v.start).padStart(8, '0')}-${hex(v.end).padStart(8, '0')}`, 36)}${protText(v.prot)}${fn}`);
    }
  }
  return lines;
}

/**
 * crit x DIR rss: each pagemap run, beside the mappings it covers ("~" for one already named by
 * the run before). The cursor arithmetic is crit's, Python's negative indexing included.
 */
function rssText(d: DumpDir): string[] {
  const lines: string[] = [];
  for (const p of d.processes) {
    lines.push(String(p.pid));
    const vmas = p.mm?.vmas ?? [];
    const at = (i: number): vma_entry | undefined => vmas[i < 0 ? vmas.length + i : i];
    let vmi = 0;
    let pvmi = -1;
    for (const pm of p.pagemap ?? []) {
      const pages = pagemapPages(pm);
      const pstr = `\t${hex(pm.vaddr)} / ${padEnd(String(pages), 8)}`;
      while (vmi < vmas.length && at(vmi)!.end <= pm.vaddr) vmi++;
      const pme = pm.vaddr + pages * BigInt(PAGE_SIZE);
      let vstr = '';
      while (vmi < vmas.length && at(vmi)!.start < pme) {
        const v = at(vmi)!;
        if (vmi === pvmi) vstr += ' ~';
        else {
          vstr += ` ${hex(v.start).padStart(8, '0')} / ${padEnd(String((v.end - v.start) / BigInt(PAGE_SIZE)), 8)}`;
          if (v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) vstr += ` ${critFileText(d, fd_types.REG, Number(v.shmid))}`;
          pvmi = vmi;
        }
        vstr += `\n\t${' '.repeat(23)}`;
        vmi++;
      }
      vmi--;
      lines.push(`${padEnd(pstr, 24)}${vstr}`);
    }
  }
  return lines;
}

const plural = (n: number, word: string, words = `${word}s`): string => `${n} ${n === 1 ? word : words}`;

/** Totals of one process, for the summary and the report. */
export function processTotals(p: DumpProcess): { vmas: number; mappedBytes: number; dumpedPages: number; parentPages: number; fds: number } {
  const vmas = p.mm?.vmas ?? [];
  let dumped = 0n;
  let parent = 0n;
  for (const e of p.pagemap ?? []) {
    dumped += storedPages(e);
    if (e.flags & PE_PARENT) parent += pagemapPages(e);
  }
  return {
    vmas: vmas.length,
    mappedBytes: Number(vmas.reduce((s, v) => s + (v.end - v.start), 0n)),
    dumpedPages: Number(dumped),
    parentPages: Number(parent),
    fds: p.fds?.length ?? 0,
  };
}

function headline(d: DumpDir): string {
  const what = d.preDump ? 'pre-dump' : 'dump';
  const v = verdict(d);
  const state = v === 'complete' ? 'complete' : v.toUpperCase();
  return `${d.dir}: ${what} of ${plural(d.processes.length, 'process', 'processes')}, ${state} (${plural(d.images.size, 'image')})`;
}

/** The stats line: CRIU's dump timings and page counters, in milliseconds and pages. */
export function statsText(d: DumpDir): string | undefined {
  const s = d.stats;
  if (!s) return undefined;
  const ms = (us: number): string => `${(us / 1000).toFixed(1)} ms`;
  return (
    `stats: freezing ${ms(s.freezingTime)}, frozen ${ms(s.frozenTime)}, memory dump ${ms(s.memdumpTime)}, memory write ${ms(s.memwriteTime)}; ` +
    `pages scanned ${s.pagesScanned}, written ${s.pagesWritten}, skipped from parent ${s.pagesSkippedParent}`
  );
}

function summaryText(d: DumpDir): string[] {
  const lines = [headline(d)];
  for (const p of inTreeOrder(d.processes)) {
    const t = processTotals(p);
    const parts = [p.state, plural(p.threads.length, 'thread')];
    if (p.mm) parts.push(`${plural(t.vmas, 'vma')}, ${sizeText(t.mappedBytes)} mapped, ${t.dumpedPages} pages dumped${t.parentPages ? ` (${t.parentPages} in the parent)` : ''}`);
    if (p.fds) parts.push(plural(t.fds, 'fd'));
    lines.push(`${'  '.repeat(p.depth + 1)}${p.pid} ${p.comm}: ${parts.join(', ')}`);
  }
  const stats = statsText(d);
  if (stats) lines.push(stats);
  return lines;
}

/** A view as the lines `show` prints. */
export function viewText(d: DumpDir, view?: ShowDirView): string {
  const lines = view === 'ps' ? psText(d) : view === 'fds' ? fdsText(d) : view === 'mems' ? memsText(d) : view === 'rss' ? rssText(d) : summaryText(d);
  return lines.join('\n') + '\n';
}

function vmaJson(d: DumpDir, v: vma_entry, pages?: { dumped: number; parent: number }): Record<string, unknown> {
  const file = vmaFile(d, v);
  return {
    start: hex0x(v.start),
    end: hex0x(v.end),
    size: Number(v.end - v.start),
    prot: protText(v.prot),
    kind: vmaKind(v),
    shared: (v.flags & 0x1) !== 0,
    ...(file !== undefined ? { file, offset: Number(v.pgoff) } : {}),
    ...(pages ? { dumpedPages: pages.dumped, parentPages: pages.parent } : {}),
    // CRIU keeps non-regular mappings (vsyscall) out of the restore
    ...(v.status & VMA.REGULAR ? {} : { regular: false }),
  };
}

/** Pages per mapping: stored in this directory, and left in the parent images. */
export function pagesPerVma(p: DumpProcess): { dumped: number; parent: number }[] {
  const vmas = p.mm?.vmas ?? [];
  const out = vmas.map(() => ({ dumped: 0, parent: 0 }));
  let vi = 0;
  for (const e of p.pagemap ?? []) {
    const stored = storedPages(e) > 0n;
    const parent = (e.flags & PE_PARENT) !== 0;
    if (!stored && !parent) continue;
    let at = e.vaddr;
    const end = e.vaddr + pagemapPages(e) * BigInt(PAGE_SIZE);
    while (at < end && vi < vmas.length) {
      const v = vmas[vi]!;
      if (v.end <= at) {
        vi++;
        continue;
      }
      const from = at > v.start ? at : v.start;
      const to = end < v.end ? end : v.end;
      if (to > from) {
        const n = Number((to - from) / BigInt(PAGE_SIZE));
        if (stored) out[vi]!.dumped += n;
        else out[vi]!.parent += n;
      }
      if (end <= v.end) break;
      at = v.end;
      vi++;
    }
  }
  return out;
}

/** Runs of pages as the pagemap lists them. */
function pagemapJson(p: DumpProcess): Record<string, unknown>[] {
  return (p.pagemap ?? []).map((e) => ({
    vaddr: hex0x(e.vaddr),
    pages: Number(pagemapPages(e)),
    where: e.flags & PE_PARENT ? 'parent' : storedPages(e) > 0n ? 'images' : 'zero',
    ...(e.flags & PE_LAZY ? { lazy: true } : {}),
  }));
}

function fdsJson(d: DumpDir, p: DumpProcess, peers: (r: FdRef) => FdRef[]): Record<string, unknown> {
  const fds = (p.fds ?? []).map((fd) => {
    const info = fileInfo(d, fd.type, fd.id);
    const peer = peers({ pid: p.pid, fd: fd.fd });
    return {
      fd: fd.fd,
      type: fd_types[fd.type] ?? fd.type,
      id: fd.id,
      kind: info.kind,
      text: info.text,
      ...(info.path !== undefined ? { path: info.path } : {}),
      ...(peer.length ? { peers: peer } : {}),
      ...(fd.flags ? { cloexec: true } : {}),
    };
  });
  return {
    pid: p.pid,
    fds,
    ...(p.fs ? { cwd: d.files.get(p.fs.cwdId)?.reg?.name ?? null, root: d.files.get(p.fs.rootId)?.reg?.name ?? null } : {}),
  };
}

function statsJson(d: DumpDir): Record<string, number> | undefined {
  const s = d.stats;
  if (!s) return undefined;
  return {
    freezingTime: s.freezingTime,
    frozenTime: s.frozenTime,
    memdumpTime: s.memdumpTime,
    memwriteTime: s.memwriteTime,
    pagesScanned: Number(s.pagesScanned),
    pagesSkippedParent: Number(s.pagesSkippedParent),
    pagesWritten: Number(s.pagesWritten),
    pagesLazy: Number(s.pagesLazy),
  };
}

/** A view as the one JSON document `show --json` prints. */
export function viewJson(d: DumpDir, view?: ShowDirView): Record<string, unknown> {
  const head = {
    dir: d.dir,
    kind: d.preDump ? 'pre-dump' : 'dump',
    verdict: verdict(d),
    problems: d.problems,
    ...(view ? { view } : {}),
  };
  const base = (p: DumpProcess) => ({ pid: p.pid, ppid: p.ppid, pgid: p.pgid, sid: p.sid, comm: p.comm, state: p.state, threads: p.threads });
  switch (view) {
    case 'ps':
      return { ...head, processes: inTreeOrder(d.processes).map((p) => ({ ...base(p), depth: p.depth })) };
    case 'fds': {
      const peers = peersOf(d);
      return { ...head, processes: d.processes.map((p) => fdsJson(d, p, peers)) };
    }
    case 'mems':
      return {
        ...head,
        processes: d.processes.map((p) => ({
          pid: p.pid,
          ...(p.mm ? { exe: d.files.get(p.mm.exeFileId)?.reg?.name ?? null, vmas: p.mm.vmas.map((v) => vmaJson(d, v)) } : {}),
        })),
      };
    case 'rss':
      return {
        ...head,
        processes: d.processes.map((p) => {
          const pages = pagesPerVma(p);
          return { pid: p.pid, vmas: (p.mm?.vmas ?? []).map((v, i) => vmaJson(d, v, pages[i])), pagemap: pagemapJson(p) };
        }),
      };
    default: {
      const stats = statsJson(d);
      return {
        ...head,
        images: d.images.size,
        processes: inTreeOrder(d.processes).map((p) => ({ ...base(p), depth: p.depth, ...processTotals(p) })),
        ...(d.shmem.length ? { sharedMemory: d.shmem.map((m) => ({ shmid: m.shmid, dumpedPages: Number(m.pagemap.reduce((s, e) => s + storedPages(e), 0n)) })) } : {}),
        ...(stats ? { stats } : {}),
      };
    }
  }
}
