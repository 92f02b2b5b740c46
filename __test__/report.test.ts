// `tsdump report DIR -o FILE` on tsdump's own dumps of catalogue targets, opened in a real
// browser (Debian's chromium, headless, helpers/browser.ts): the file is self-contained (no
// script, nothing fetched, no console error), and what the page draws is checked against the
// images as pycriu decodes them: the process tree's pids, names and nesting; one block per
// mapping in address order, wider for longer mappings, filled with its kind's colour in the
// screenshot and darkened where pages were dumped; the timeline; the descriptors and the other
// ends of pipes and sockets; a damaged directory's problems.
import test, { type ExecutionContext } from 'ava';
import { cp, lstat, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KIND_COLOURS } from '../src/report/html.js';
import { launchBrowser, type Browser, type Page, type Png } from './helpers/browser.js';
import { critDecode, imageEntries } from './helpers/criu.js';
import type { Target } from './helpers/target.js';
import { dumpRunningTarget, runTsdump } from './helpers/tsdump.js';

type Json = Record<string, unknown>;

let browser: Promise<Browser> | undefined;
const sharedBrowser = (): Promise<Browser> => (browser ??= launchBrowser());
test.after.always(async () => {
  if (browser) await (await browser).close();
});

interface Reported {
  target: Target;
  dir: string;
  html: string;
  file: string;
  images: Map<string, unknown>;
  page: Page;
}

const entries = imageEntries;

/** Starts NAME, dumps it with tsdump (left running), writes its report and opens it. */
async function reported(t: ExecutionContext, name: string): Promise<Reported> {
  const { target, work, dir, images } = await dumpRunningTarget(t, name);
  const file = join(work, 'report.html');
  const r = await runTsdump(['report', dir, '-o', file]);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, '');
  const page = await (await sharedBrowser()).open(`file://${file}`);
  const timing = await page.evaluate<{ load: number; size: number }>(
    `(() => { const n = performance.getEntriesByType('navigation')[0]; return { load: n.loadEventEnd, size: n.decodedBodySize }; })()`,
  );
  t.log(`${name}: ${timing.size} bytes, load event after ${timing.load.toFixed(1)} ms`);
  return { target, dir, file, html: await readFile(file, 'utf8'), images, page };
}

/** Nothing but the file itself was loaded, and nothing went wrong. */
async function selfContained(t: ExecutionContext, r: Reported): Promise<void> {
  t.is((await stat(r.file)).mode & 0o777, 0o600, 'owner-only: it names every file the tree had open');
  t.notRegex(r.html, /<script|<link|<img|<iframe|<object|\ssrc=|url\(|@import|https?:\/\//i, 'no script and no outside reference');
  t.deepEqual(r.page.log.errors, [], 'console errors');
  t.deepEqual(r.page.log.requests, [`file://${r.file}`], 'the page fetched nothing else');
}

const rgb = (hex: string): [number, number, number] => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)) as [number, number, number];
const near = (a: readonly number[], b: readonly number[], tol = 3): boolean => a.every((v, i) => Math.abs(v - b[i]!) <= tol);

interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

/** Some pixel inside the box is dark: text was drawn there. */
function inked(png: Png, b: Box): boolean {
  for (let y = Math.ceil(b.y); y < b.y + b.h; y++) {
    for (let x = Math.ceil(b.x); x < b.x + b.w; x++) {
      const [r, g, bl] = png.pixel(x, y);
      if (r + g + bl < 3 * 160) return true;
    }
  }
  return false;
}

test('report of a 7-process tree: the tree, each address space and the timeline are drawn as the images say', async (t) => {
  const r = await reported(t, 't_forktree');
  await selfContained(t, r);
  const tree = entries(r.images, 'pstree.img') as { pid: number; ppid: number }[];
  const comm = (pid: number): string => (entries(r.images, `core-${pid}.img`)[0]!.tc as Json).comm as string;
  t.is(tree.length, 7);

  // the tree: every pid with its name, under its parent
  const drawn = await r.page.evaluate<{ text: string; parent: string | null; box: Box }[]>(`[...document.querySelectorAll('ul.tree a.proc')].map((a) => {
      const up = a.parentElement.parentElement.closest('li');
      const b = a.querySelector('.pid').getBoundingClientRect();
      return { text: a.textContent, parent: up ? up.querySelector(':scope > a.proc .pid').textContent : null,
               box: { x: b.left + scrollX, y: b.top + scrollY, w: b.width, h: b.height } };
    })`);
  t.deepEqual(
    drawn.map((d) => [d.text, d.parent]).sort(),
    tree.map((p) => [`${p.pid} ${comm(p.pid)}`, tree.some((q) => q.pid === p.ppid) ? String(p.ppid) : null]).sort(),
  );

  const png = await r.page.screenshot();
  for (const d of drawn) t.true(d.box.w > 0 && inked(png, d.box), `pid ${d.text} is drawn`);

  // each address space: one block per mapping in address order, sized by length, in its colour
  for (const p of tree) {
    const vmas = entries(r.images, `mm-${p.pid}.img`)[0]!.vmas as { start: number; end: number }[];
    const blocks = await r.page.evaluate<{ start: string; kind: string; width: number; box: Box }[]>(`[...document.querySelectorAll('#p-${p.pid} svg.map g.vma')].map((g) => {
        const rects = [...g.querySelectorAll('rect:not(.d)')];
        const b = rects[0].getBoundingClientRect();
        return { start: g.dataset.start, kind: g.dataset.kind, width: rects.reduce((s, x) => s + x.width.baseVal.value, 0),
                 box: { x: b.left + scrollX, y: b.top + scrollY, w: b.width, h: b.height } };
      })`);
    t.deepEqual(
      blocks.map((b) => BigInt(`0x${b.start}`)),
      vmas.map((v) => BigInt(v.start)),
      `${p.pid}: a block per mapping, in address order`,
    );
    const bySize = vmas.map((v, i) => ({ len: v.end - v.start, width: blocks[i]!.width })).sort((a, b) => a.len - b.len);
    for (let i = 1; i < bySize.length; i++) t.true(bySize[i]!.width >= bySize[i - 1]!.width - 0.01, `${p.pid}: a longer mapping is not drawn narrower`);
    for (const b of blocks) {
      // the top band of a block is never shaded: it shows the kind's colour
      const at = png.pixel(b.box.x + b.box.w / 2, b.box.y + 3);
      if (b.box.w >= 3) t.true(near(at, rgb(KIND_COLOURS[b.kind]!)), `${p.pid} ${b.start} ${b.kind}: ${at.join(',')} vs ${KIND_COLOURS[b.kind]}`);
    }

    // dumped pages: shaded blocks exactly where the pagemap stores pages
    const stored = entries(r.images, `pagemap-${p.pid}.img`).slice(1).filter((e) => ((e.flags as number) & 4) !== 0);
    const shades = await r.page.evaluate<{ kind: string; box: Box }[]>(`[...document.querySelectorAll('#p-${p.pid} svg.map rect.d')].map((x) => {
        const b = x.getBoundingClientRect();
        return { kind: x.closest('g').dataset.kind, box: { x: b.left + scrollX, y: b.top + scrollY, w: b.width, h: b.height } };
      })`);
    t.is(shades.length > 0, stored.length > 0, `${p.pid}: shaded where pages were dumped`);
    for (const s of shades.filter((x) => x.box.w >= 3)) {
      const want = rgb(KIND_COLOURS[s.kind]!).map((c) => c * 0.62);
      const at = png.pixel(s.box.x + s.box.w / 2, s.box.y + s.box.h / 2);
      t.true(near(at, want, 4), `${p.pid} dumped ${s.kind}: ${at.join(',')} vs ${want.join(',')}`);
    }
  }

  // the timeline, from stats-dump
  const stats = ((await critDecode(join(r.dir, 'stats-dump'))) as { entries: Json[] }).entries[0]!.dump as Json;
  const timeline = await r.page.evaluate<{ cls: string; text: string; box: Box }[]>(`[...document.querySelectorAll('svg.timeline g')].map((g) => {
      const b = g.querySelector('rect').getBoundingClientRect();
      return { cls: g.getAttribute('class'), text: g.querySelector('text.v').textContent, box: { x: b.left + scrollX, y: b.top + scrollY, w: b.width, h: b.height } };
    })`);
  const ms = (us: unknown): string => `${((us as number) / 1000).toFixed(1)} ms`;
  t.deepEqual(
    timeline.map((x) => [x.cls, x.text]),
    [
      ['t-freezing', ms(stats.freezing_time)],
      ['t-frozen', ms(stats.frozen_time)],
      ['t-memdump', ms(stats.memdump_time)],
      ['t-memwrite', ms(stats.memwrite_time)],
    ],
  );
  const frozen = timeline[1]!.box;
  t.true(near(png.pixel(frozen.x + frozen.w / 2, frozen.y + frozen.h / 2), rgb('#f5a7a7')), 'the frozen bar is drawn');
  const written = await r.page.evaluate<string>(`[...document.querySelectorAll('table.stats tr')].find((tr) => tr.textContent.startsWith('pages written')).children[1].textContent`);
  t.is(written, String(stats.pages_written));
});

test('report of processes talking over pipes and unix sockets: each descriptor links to the other end; a damaged copy shows its problems', async (t) => {
  const r = await reported(t, 't_unix_sockets');
  await selfContained(t, r);
  const tree = entries(r.images, 'pstree.img') as { pid: number }[];
  t.true(tree.length >= 2);
  const files = new Map(entries(r.images, 'files.img').map((f) => [f.id as number, f]));
  const holders = new Map<number, { pid: number; fd: number }[]>();
  const fdsOf = (pid: number): Json[] => entries(r.images, `fdinfo-${entries(r.images, `ids-${pid}.img`)[0]!.files_id as number}.img`);
  for (const p of tree) {
    for (const fd of fdsOf(p.pid)) {
      const usk = files.get(fd.id as number)!.usk as Json | undefined;
      if (usk) holders.set(usk.ino as number, [...(holders.get(usk.ino as number) ?? []), { pid: p.pid, fd: fd.fd as number }]);
    }
  }
  let across = 0;
  for (const p of tree) {
    const rows = await r.page.evaluate<{ fd: string; kind: string; links: string[] }[]>(`[...document.querySelectorAll('#p-${p.pid} table.fds tbody tr')].map((tr) => ({
        fd: tr.children[0].textContent, kind: tr.children[1].textContent, links: [...tr.children[3].querySelectorAll('a')].map((a) => a.getAttribute('href') + ' ' + a.textContent) }))`);
    t.deepEqual(rows.map((x) => x.fd), [...fdsOf(p.pid).map((f) => String(f.fd)), 'cwd', 'root']);
    for (const fd of fdsOf(p.pid)) {
      const usk = files.get(fd.id as number)!.usk as Json | undefined;
      if (!usk || !usk.peer) continue;
      const row = rows.find((x) => x.fd === String(fd.fd))!;
      t.is(row.kind, 'unix');
      for (const h of holders.get(usk.peer as number) ?? []) {
        t.true(row.links.some((l) => l.startsWith(`#p-${h.pid} ${h.pid}`) && l.endsWith(` fd ${h.fd}`)), `${p.pid} fd ${fd.fd} -> ${h.pid} fd ${h.fd}: ${row.links.join('; ')}`);
        if (h.pid !== p.pid) across++;
      }
    }
  }
  t.true(across > 0, 'a socket pair between parent and child links across processes');
  const targets = await r.page.evaluate<string[]>(`[...document.querySelectorAll('table.fds a')].map((a) => a.getAttribute('href')).filter((h) => !document.querySelector(h))`);
  t.deepEqual(targets, [], 'every link leads to a section of the page');

  // the same dump without its inventory: the report is still written, and says what is wrong
  const broken = join(r.dir, '..', 'unfinished');
  await cp(r.dir, broken, { recursive: true });
  await rm(join(broken, 'inventory.img'));
  const file = join(r.dir, '..', 'unfinished.html');
  const run = await runTsdump(['report', broken, '-o', file]);
  t.is(run.code, 1);
  t.regex(run.stderr, /^tsdump: .*unfinished is INCOMPLETE \(the report says so too\):\ntsdump: {3}incomplete: no inventory\.img/);
  const page = await (await sharedBrowser()).open(`file://${file}`);
  t.deepEqual(page.log.errors, []);
  const shown = await page.evaluate<{ verdict: string; problems: string[] }>(`({ verdict: document.getElementById('verdict').textContent,
      problems: [...document.querySelectorAll('.problems li')].map((li) => li.textContent) })`);
  t.is(shown.verdict, 'incomplete');
  t.true(shown.problems.some((p) => p.startsWith('incomplete: no inventory.img')), shown.problems.join('\n'));
});

test('report without -o prints the page; with --json, what it wrote; never through a planted link', async (t) => {
  const { work, dir } = await dumpRunningTarget(t, 't_counter');
  const out = await runTsdump(['report', dir]);
  t.is(out.code, 0, out.stderr);
  t.regex(out.stdout, /^<!DOCTYPE html>.*<\/html>\n$/s);
  const file = join(work, 'r.html');
  const json = await runTsdump(['report', dir, '-o', file, '--json']);
  t.is(json.code, 0, json.stderr);
  t.like(JSON.parse(json.stdout), { command: 'report', output: file, bytes: (await stat(file)).size, processes: 1, verdict: 'complete', problems: [] });
  // a link planted where the report goes is replaced, never written through
  const victim = join(work, 'victim');
  await writeFile(victim, 'keep me\n');
  const planted = join(work, 'planted.html');
  await symlink(victim, planted);
  t.is((await runTsdump(['report', dir, '-o', planted])).code, 0);
  t.is(await readFile(victim, 'utf8'), 'keep me\n');
  t.true((await lstat(planted)).isFile());
  t.regex(await readFile(planted, 'utf8'), /^<!DOCTYPE html>/);
  const missing = await runTsdump(['report', join(work, 'nope')]);
  t.is(missing.code, 1);
  t.regex(missing.stderr, /^tsdump: .*nope: cannot list the images directory: ENOENT\n$/);
});
