// `tsdump report`: one dump as one self-contained HTML page. Inline CSS and SVG only: no script,
// no font, no image, nothing fetched (the page's Content-Security-Policy forbids it), so it opens
// anywhere, offline, in any browser, and stays small enough to open at once for a large tree.
// What it draws: the verdict and its problems, the dump's timeline (stats-dump), the process
// tree, then per process its address space as a strip of mappings (width by length, colour by
// kind, dumped pages shaded) and its open files with the descriptors at their other ends.

import { PE_PARENT, pagemapPages } from '../images/pagemap.js';
import { PAGE_SIZE, inTreeOrder, storedPages, verdict, type DumpDir, type DumpProcess } from '../show/dir.js';
import { fileInfo, peersOf, type FdRef } from '../show/files.js';
import { pagesPerVma, processTotals, protText, vmaFile, vmaKind } from '../show/views.js';
import { sizeText } from '../size-text.js';

export interface ReportOptions {
  /** tsdump's version, printed in the footer. */
  readonly version?: string;
}

/** Fill colours of the mapping kinds (vmaKind's names). */
export const KIND_COLOURS: Readonly<Record<string, string>> = {
  file: '#7fb2e5',
  'file-shared': '#3f78c0',
  anon: '#9ed48f',
  heap: '#55b04f',
  stack: '#f2b65c',
  'anon-shared': '#c593e3',
  memfd: '#e68fbd',
  vdso: '#b8b8b8',
  vsyscall: '#d8d8d8',
  sysvipc: '#d9cf66',
  packet: '#d9cf66',
  aio: '#d9cf66',
};

const STRIP_WIDTH = 960;
const ROW_HEIGHT = 26;
const ROW_GAP = 6;
const MIN_BLOCK = 3;
const MAX_PEERS = 6;

const ESC: Readonly<Record<string, string>> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const esc = (s: string | number): string => String(s).replace(/[&<>"']/g, (c) => ESC[c]!);

const ms = (us: number): string => `${(us / 1000).toFixed(1)} ms`;
const hex = (n: bigint): string => n.toString(16);

/**
 * Lays a strip of `total` virtual pixels out in rows of STRIP_WIDTH: an interval [a, b) of the
 * strip becomes one rectangle per row it touches.
 */
function stripRects(a: number, b: number): { x: number; y: number; w: number }[] {
  const out: { x: number; y: number; w: number }[] = [];
  while (b - a > 0.01) {
    const row = Math.floor(a / STRIP_WIDTH);
    const end = Math.min(b, (row + 1) * STRIP_WIDTH);
    out.push({ x: a - row * STRIP_WIDTH, y: row * (ROW_HEIGHT + ROW_GAP), w: end - a });
    a = end;
  }
  return out;
}

const r1 = (n: number): string => (Math.round(n * 10) / 10).toString();

/** One process's address space: a block per mapping, in address order, dumped pages darkened. */
function memoryMap(d: DumpDir, p: DumpProcess): string {
  const vmas = p.mm?.vmas ?? [];
  if (vmas.length === 0) return '<p class="none">no memory map in this directory</p>';
  const lengths = vmas.map((v) => Number(v.end - v.start));
  const total = lengths.reduce((s, n) => s + n, 0);
  // every mapping gets MIN_BLOCK pixels plus its share of the rest by length; many mappings wrap
  const gaps: number[] = vmas.map((v, i) => (i > 0 && vmas[i - 1]!.end !== v.start ? 2 : 0));
  const width = Math.max(STRIP_WIDTH, vmas.length * (MIN_BLOCK + 2));
  const spare = width - vmas.length * MIN_BLOCK - gaps.reduce((s, g) => s + g, 0);
  const perByte = spare / total;
  const pages = pagesPerVma(p);
  const parts: string[] = [];
  const runs = p.pagemap ?? [];
  let ri = 0;
  let x = 0;
  vmas.forEach((v, i) => {
    x += gaps[i]!;
    const w = MIN_BLOCK + lengths[i]! * perByte;
    const kind = vmaKind(v);
    const file = vmaFile(d, v);
    const pg = pages[i]!;
    const vmaPages = lengths[i]! / PAGE_SIZE;
    const title =
      `${hex(v.start)}-${hex(v.end)} ${protText(v.prot)} ${kind}${file ? ` ${file}${v.pgoff ? ` +0x${hex(v.pgoff)}` : ''}` : ''}\n` +
      `${sizeText(lengths[i]!)}, ${pg.dumped} of ${vmaPages} pages dumped${pg.parent ? `, ${pg.parent} in the parent` : ''}`;
    parts.push(`<g class="vma" data-start="${hex(v.start)}" data-kind="${kind}"><title>${esc(title)}</title>`);
    for (const r of stripRects(x, x + w)) parts.push(`<rect x="${r1(r.x)}" y="${r.y}" width="${r1(r.w)}" height="${ROW_HEIGHT}"/>`);
    // dumped runs inside this mapping, merged where they would be closer than a pixel
    while (ri < runs.length && runs[ri]!.vaddr + pagemapPages(runs[ri]!) * BigInt(PAGE_SIZE) <= v.start) ri++;
    const scale = w / lengths[i]!;
    let open: [number, number] | undefined;
    const flush = (): void => {
      if (!open) return;
      for (const r of stripRects(open[0], Math.max(open[1], open[0] + 0.6))) {
        parts.push(`<rect class="d" x="${r1(r.x)}" y="${r.y + 8}" width="${r1(r.w)}" height="${ROW_HEIGHT - 8}"/>`);
      }
      open = undefined;
    };
    for (let j = ri; j < runs.length && runs[j]!.vaddr < v.end; j++) {
      const e = runs[j]!;
      if (storedPages(e) === 0n && !(e.flags & PE_PARENT)) continue;
      const end = e.vaddr + pagemapPages(e) * BigInt(PAGE_SIZE);
      const from = x + Number((e.vaddr > v.start ? e.vaddr : v.start) - v.start) * scale;
      const to = x + Number((end < v.end ? end : v.end) - v.start) * scale;
      if (open && from - open[1] < 1) open[1] = to;
      else {
        flush();
        open = [from, to];
      }
    }
    flush();
    parts.push('</g>');
    x += w;
  });
  const rows = Math.max(1, Math.ceil((x - 0.01) / STRIP_WIDTH));
  const height = rows * (ROW_HEIGHT + ROW_GAP) - ROW_GAP;
  return `<svg class="map" width="${STRIP_WIDTH}" height="${height}" viewBox="0 0 ${STRIP_WIDTH} ${height}" role="img" aria-label="address space of ${p.pid}">${parts.join('')}</svg>`;
}

function fdTable(d: DumpDir, p: DumpProcess, peers: (r: FdRef) => FdRef[], comm: ReadonlyMap<number, string>): string {
  if (!p.fds) return '';
  const link = (r: FdRef): string => `<a href="#p-${r.pid}">${r.pid}${r.pid === p.pid ? '' : ` ${esc(comm.get(r.pid) ?? '')}`} fd ${r.fd}</a>`;
  const rows = p.fds.map((fd) => {
    const info = fileInfo(d, fd.type, fd.id);
    const other = peers({ pid: p.pid, fd: fd.fd });
    const external = other.length === 0 && info.peerKey ? '<span class="ext">outside the dump</span>' : '';
    // a descriptor a whole tree inherited would otherwise list every process, in every process
    const shown = other.length > MAX_PEERS ? other.slice(0, MAX_PEERS - 1) : other;
    const more = other.length > shown.length ? `, <span class="dim">and ${other.length - shown.length} more</span>` : '';
    return `<tr><td class="num">${fd.fd}</td><td>${esc(info.kind)}</td><td class="mono">${esc(info.text)}</td><td>${shown.map(link).join(', ')}${more}${external}</td></tr>`;
  });
  if (p.fs) {
    for (const [what, id] of [['cwd', p.fs.cwdId], ['root', p.fs.rootId]] as const) {
      rows.push(`<tr><td class="num">${what}</td><td>directory</td><td class="mono">${esc(d.files.get(id)?.reg?.name ?? '?')}</td><td></td></tr>`);
    }
  }
  return `<table class="fds"><thead><tr><th>fd</th><th>kind</th><th>what</th><th>other end</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

function timeline(d: DumpDir): string {
  const s = d.stats;
  if (!s) return '<p class="none">no stats-dump in this directory</p>';
  // a Gantt chart on one time axis from the start of the freeze: a label column, then the bars,
  // each followed by its duration
  const LABEL = 110;
  const BARS = 640;
  const total = Math.max(1, s.freezingTime + s.frozenTime);
  const px = (us: number): number => (us / total) * BARS;
  const rows: [string, string, number, number][] = [
    ['freezing', 't-freezing', 0, s.freezingTime],
    ['frozen', 't-frozen', s.freezingTime, s.frozenTime],
    ['memory dump', 't-memdump', s.freezingTime, s.memdumpTime],
    ['memory write', 't-memwrite', s.freezingTime + s.memdumpTime, s.memwriteTime],
  ];
  const height = rows.length * 24;
  const bars = rows
    .map(([label, cls, at, us], i) => {
      const x = LABEL + px(at);
      const w = Math.max(px(us), 1);
      const y = i * 24 + 3;
      return (
        `<g class="${cls}"><title>${esc(`${label}: ${ms(us)}`)}</title><text x="0" y="${y + 13}">${label}</text>` +
        `<rect x="${r1(x)}" y="${y}" width="${r1(w)}" height="18"/><text class="v" x="${r1(x + w + 6)}" y="${y + 13}">${ms(us)}</text></g>`
      );
    })
    .join('');
  const svg = `<svg class="timeline" width="${LABEL + BARS + 90}" height="${height}" viewBox="0 0 ${LABEL + BARS + 90} ${height}" role="img" aria-label="dump timeline">${bars}</svg>`;
  const scanned = Number(s.pagesScanned);
  const written = Number(s.pagesWritten);
  const skipped = Number(s.pagesSkippedParent);
  const cell = (label: string, n: number): string => `<tr><th>${label}</th><td class="num">${n}</td><td class="num">${sizeText(n * PAGE_SIZE)}</td></tr>`;
  return (
    `${svg}<p class="note">From stats-dump: the time to freeze the tree, the time it stayed frozen, and within it the time spent collecting and writing memory.</p>` +
    `<table class="stats"><tbody>${cell('pages scanned', scanned)}${cell('pages written', written)}${cell('pages skipped (in the parent)', skipped)}` +
    `${cell('pages not written (never touched or zero)', Math.max(0, scanned - written - skipped))}${s.pagesLazy ? cell('lazy pages', Number(s.pagesLazy)) : ''}</tbody></table>`
  );
}

function tree(d: DumpDir): string {
  const ordered = inTreeOrder(d.processes);
  const out: string[] = ['<ul class="tree">'];
  let depth = 0;
  ordered.forEach((p, i) => {
    if (i > 0) {
      if (p.depth > depth) out.push('<ul>');
      else {
        out.push('</li>');
        for (; depth > p.depth; depth--) out.push('</ul></li>');
      }
    }
    depth = p.depth;
    const threads = p.threads.length > 1 ? `, ${p.threads.length} threads` : '';
    out.push(
      `<li><a class="proc" href="#p-${p.pid}"><b class="pid">${p.pid}</b> ${esc(p.comm)}</a> <span class="state s-${esc(p.state)}">${esc(p.state)}</span>` +
        `<span class="dim"> pgid ${p.pgid}, sid ${p.sid}${threads}</span>`,
    );
  });
  out.push('</li>');
  for (; depth > 0; depth--) out.push('</ul></li>');
  out.push('</ul>');
  return out.join('');
}

const KIND_CSS = Object.entries(KIND_COLOURS)
  .map(([k, c]) => `svg.map g[data-kind=${k}] rect{fill:${c}}`)
  .join('');

const CSS = `
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:20px 0 6px}.dim,.note,.none{color:#777}.note{font-size:12px}
.verdict{display:inline-block;padding:2px 8px;border-radius:4px;font-weight:bold}
.v-complete{background:#dff3dc;color:#22631b}.v-incomplete,.v-inconsistent{background:#fbdcdc;color:#9b1c1c}
.problems{border:2px solid #c53030;background:#fff5f5;padding:8px 16px;border-radius:4px}
.mono,td.mono{font-family:ui-monospace,monospace;font-size:12px}
table{border-collapse:collapse;margin:4px 0}td,th{padding:2px 8px;text-align:left;vertical-align:top}
tbody tr:nth-child(odd){background:#f6f6f6}.num{text-align:right}
ul.tree,ul.tree ul{list-style:none;padding-left:20px;margin:0}ul.tree{padding-left:0}
ul.tree li{position:relative;padding:1px 0}ul.tree ul li::before{content:"";position:absolute;left:-14px;top:0;height:12px;width:10px;border-left:1px solid #aaa;border-bottom:1px solid #aaa}
ul.tree ul li::after{content:"";position:absolute;left:-14px;top:12px;bottom:0;border-left:1px solid #aaa}ul.tree ul li:last-child::after{display:none}
a{color:#1a56a8;text-decoration:none}a:hover{text-decoration:underline}
.state{font-size:12px;padding:0 5px;border-radius:3px;background:#e6eefc}.s-zombie{background:#eee;color:#666}.s-stopped{background:#fdecc8}
.legend span{display:inline-block;margin-right:12px;font-size:12px}.sw{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px;border-radius:2px}
svg.map g[data-kind] rect.d{fill:#000;fill-opacity:.38}svg.map .vma:hover rect{stroke:#000;stroke-width:1}
svg{display:block}svg.timeline text{font-size:12px;fill:#111}svg.timeline text.v{fill:#555}.t-freezing rect{fill:#9fc3ea}.t-frozen rect{fill:#f5a7a7}.t-memdump rect{fill:#f6c96b}.t-memwrite rect{fill:#a6d99b}
.ext{color:#a15c00;font-size:12px}section.proc{margin-top:18px}
`;

/** The whole report for a loaded dump directory. */
export function renderReport(d: DumpDir, options: ReportOptions = {}): string {
  const v = verdict(d);
  const totals = d.processes.map(processTotals);
  const threads = d.processes.reduce((s, p) => s + p.threads.length, 0);
  const mapped = totals.reduce((s, t) => s + t.mappedBytes, 0);
  const dumped = totals.reduce((s, t) => s + t.dumpedPages, 0) + d.shmem.reduce((s, m) => s + Number(m.pagemap.reduce((a, e) => a + storedPages(e), 0n)), 0);
  const peers = peersOf(d);
  const comm = new Map(d.processes.map((p) => [p.pid, p.comm]));
  const legend = Object.entries(KIND_COLOURS)
    .filter(([k]) => k !== 'packet' && k !== 'aio')
    .map(([k, c]) => `<span><i class="sw" style="background:${c}"></i>${k === 'sysvipc' ? 'sysvipc / packet / aio' : k}</span>`)
    .join('');
  const sections = inTreeOrder(d.processes).map((p) => {
    const t = processTotals(p);
    const facts = [
      p.state,
      `${p.threads.length} thread${p.threads.length === 1 ? '' : 's'}`,
      ...(p.mm ? [`${t.vmas} mappings`, `${sizeText(t.mappedBytes)} mapped`, `${t.dumpedPages} pages dumped (${sizeText(t.dumpedPages * PAGE_SIZE)})`] : []),
      ...(p.fds ? [`${t.fds} fds`] : []),
    ];
    return (
      `<section class="proc" id="p-${p.pid}"><h3>${p.pid} ${esc(p.comm)} <span class="dim">(ppid ${p.ppid}; ${facts.join(', ')})</span></h3>` +
      (p.mm || p.pagemap ? memoryMap(d, p) : '') +
      fdTable(d, p, peers, comm) +
      '</section>'
    );
  });
  const problems = d.problems.length
    ? `<div class="problems"><b>This directory is ${v}:</b><ul>${d.problems.map((p) => `<li>${esc(p.kind)}: ${esc(p.message)}</li>`).join('')}</ul></div>`
    : '';
  return (
    '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">' +
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">` +
    '<meta name="viewport" content="width=device-width,initial-scale=1">' +
    `<title>tsdump report: ${esc(d.dir)}</title><style>${CSS}${KIND_CSS}</style></head><body>` +
    `<h1>${d.preDump ? 'Pre-dump' : 'Dump'} in ${esc(d.dir)}</h1>` +
    `<p><span class="verdict v-${v}" id="verdict">${v}</span> <span class="dim">${d.processes.length} processes, ${threads} threads, ` +
    `${sizeText(mapped)} mapped, ${dumped} pages dumped (${sizeText(dumped * PAGE_SIZE)}), ${d.images.size} images</span></p>` +
    problems +
    `<h2>Timeline</h2>${timeline(d)}` +
    `<h2>Process tree</h2>${tree(d)}` +
    `<h2>Processes</h2><p class="legend">${legend}<span><i class="sw" style="background:#555"></i>dumped pages (shaded)</span></p>` +
    '<p class="note">Each strip is one address space in address order: a block per mapping, its width growing with its length (every block at least a few pixels wide, small gaps where mappings are not adjacent). Hover a block for its range, protection, file and pages.</p>' +
    sections.join('') +
    `<p class="note">Written by tsdump${options.version ? ` ${esc(options.version)}` : ''} from the images alone.</p>` +
    '</body></html>\n'
  );
}
