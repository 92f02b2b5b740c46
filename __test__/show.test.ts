// `tsdump show DIR` on tsdump's own dumps of catalogue targets: crit x's four views printed
// character for character (crit x run on the same images), their --json forms checked against
// the images as pycriu decodes them (pids, mappings, pages, descriptors and the peers at their
// other ends), and directories that are not a finished dump (no inventory.img, a missing core,
// a short pages file, an unreadable image, a pre-dump) called out on stderr with exit status 1.
// (The same views against CRIU's own dumps of every catalogue subject: images.test.ts.)
import test, { type ExecutionContext } from 'ava';
import { cp, rm, truncate, writeFile } from 'node:fs/promises';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { imageEntries, makeWorkDir } from './helpers/criu.js';
import { critExplore } from './helpers/crit.js';
import { killTree, startTarget } from './helpers/target.js';
import { dumpRunningTarget, runTsdump, type CliRun } from './helpers/tsdump.js';

type Json = Record<string, unknown>;
const VIEWS = ['ps', 'fds', 'mems', 'rss'] as const;

/** Bytes of all the dump's pages files (one per process: pagemap heads name their own). */
function pagesBytes(dir: string): number {
  return readdirSync(dir)
    .filter((f) => /^pages-\d+\.img$/.test(f))
    .reduce((s, f) => s + statSync(join(dir, f)).size, 0);
}

const entries = imageEntries;

async function showJson(args: string[]): Promise<{ run: CliRun; doc: Json }> {
  const run = await runTsdump(['show', ...args, '--json']);
  return { run, doc: JSON.parse(run.stdout) as Json };
}

for (const name of ['t_unix_sockets', 't_tcp_listen', 't_forktree', 't_mappings', 't_zombie']) {
  test(`${name}: show's views of tsdump's dump print as crit x prints them, and their --json forms hold the images' facts`, async (t) => {
    const { target, dir, images } = await dumpRunningTarget(t, name);
    const tree = entries(images, 'pstree.img');
    const pids = tree.map((p) => p.pid as number);
    const live = pids.filter((pid) => entries(images, `mm-${pid}.img`).length > 0);

    const explored = await critExplore(dir);
    for (const view of VIEWS) {
      const ours = await runTsdump(['show', dir, `--${view}`]);
      t.is(ours.code, 0, ours.stderr);
      t.is(ours.stderr, '');
      const theirs = explored[view];
      if ('text' in theirs) t.is(ours.stdout, theirs.text, `show --${view} vs crit x ${view}`);
      // crit dies on a zombie's missing ids/fs/mm images; tsdump lists it and goes on
      else for (const pid of pids) t.regex(ours.stdout, new RegExp(`^ *${pid}\\b`, 'm'), `${view}: ${theirs.error}`);
    }

    const summary = await showJson([dir]);
    t.is(summary.run.code, 0);
    t.like(summary.doc, { kind: 'dump', verdict: 'complete', problems: [] });
    const procs = summary.doc.processes as Json[];
    t.deepEqual(procs.map((p) => p.pid).sort(), [...pids].sort());
    t.is(procs[0]!.pid, target.pid, 'the root comes first');
    let pagesTotal = 0;
    for (const p of procs) {
      const core = entries(images, `core-${p.pid}.img`)[0] as { tc: { comm: string } };
      t.is(p.comm, core.tc.comm);
      const vmas = (entries(images, `mm-${p.pid}.img`)[0]?.vmas ?? []) as { start: number; end: number }[];
      t.is(p.vmas, vmas.length);
      t.is(p.mappedBytes, vmas.reduce((s, v) => s + v.end - v.start, 0));
      pagesTotal += p.dumpedPages as number;
    }
    for (const m of (summary.doc.sharedMemory ?? []) as Json[]) pagesTotal += m.dumpedPages as number;
    t.is(pagesTotal * 4096, pagesBytes(dir), 'dumped pages = the pages files');

    // ps: the tree, parents before children, depths from the ppids
    const ps = (await showJson([dir, '--ps'])).doc.processes as Json[];
    for (const p of ps) {
      const parent = ps.find((q) => q.pid === p.ppid);
      t.is(p.depth, parent ? (parent.depth as number) + 1 : 0);
      if (parent) t.true(ps.indexOf(parent) < ps.indexOf(p));
    }

    // mems: every mapping, bounds as the mm image holds them
    const mems = (await showJson([dir, '--mems'])).doc.processes as Json[];
    for (const pid of live) {
      const vmas = entries(images, `mm-${pid}.img`)[0]!.vmas as { start: number; end: number }[];
      const ours = mems.find((p) => p.pid === pid)!.vmas as { start: string; end: string; size: number; kind: string }[];
      t.deepEqual(
        ours.map((v) => [BigInt(v.start), BigInt(v.end)]),
        vmas.map((v) => [BigInt(v.start), BigInt(v.end)]),
      );
      t.true(ours.every((v) => v.size === Number(BigInt(v.end) - BigInt(v.start))));
      t.true(ours.some((v) => v.kind === 'stack'), 'the stack is told apart');
    }

    // rss: the pages per mapping add up to the pages file
    const rss = (await showJson([dir, '--rss'])).doc.processes as { vmas: { dumpedPages: number }[] }[];
    const shmemPages = ((summary.doc.sharedMemory ?? []) as Json[]).reduce((s, m) => s + (m.dumpedPages as number), 0);
    t.is((rss.flatMap((p) => p.vmas).reduce((s, v) => s + v.dumpedPages, 0) + shmemPages) * 4096, pagesBytes(dir));

    // fds: every descriptor, cwd and root, and the other end of each pipe and connected unix socket
    const fds = (await showJson([dir, '--fds'])).doc.processes as { pid: number; fds: Json[]; cwd?: string; root?: string }[];
    const files = new Map(entries(images, 'files.img').map((f) => [f.id as number, f]));
    const holders = new Map<string, { pid: number; fd: number }[]>();
    const fdsOf = (pid: number): Json[] => {
      const ids = entries(images, `ids-${pid}.img`)[0];
      return ids ? entries(images, `fdinfo-${ids.files_id as number}.img`) : [];
    };
    for (const pid of live) {
      for (const fd of fdsOf(pid)) {
        const f = files.get(fd.id as number)!;
        const key = f.pipe ? `pipe:${(f.pipe as Json).pipe_id}` : f.usk ? `unix:${(f.usk as Json).ino}` : undefined;
        if (key) holders.set(key, [...(holders.get(key) ?? []), { pid, fd: fd.fd as number }]);
      }
    }
    for (const pid of live) {
      const ours = fds.find((p) => p.pid === pid)!;
      t.deepEqual(ours.fds.map((f) => f.fd), fdsOf(pid).map((f) => f.fd));
      t.is(ours.cwd, target.ctl, 'cwd');
      t.is(ours.root, '/');
      for (const fd of fdsOf(pid)) {
        const f = files.get(fd.id as number)!;
        const mine = ours.fds.find((x) => x.fd === fd.fd)!;
        const others = (key: string) => (holders.get(key) ?? []).filter((h) => !(h.pid === pid && h.fd === fd.fd));
        const want = f.pipe
          ? others(`pipe:${(f.pipe as Json).pipe_id}`)
          : f.usk && (f.usk as Json).peer
            ? others(`unix:${(f.usk as Json).peer}`)
            : undefined;
        if (want?.length) for (const w of want) t.true((mine.peers as Json[] | undefined)?.some((p) => p.pid === w.pid && p.fd === w.fd), `${pid}/${fd.fd} (${String(mine.text)}): peer ${w.pid}/${w.fd}`);
      }
    }
    if (name === 't_unix_sockets') {
      const across = fds.flatMap((p) => p.fds.filter((f) => f.kind === 'unix' && (f.peers as Json[] | undefined)?.some((q) => q.pid !== p.pid)));
      t.true(across.length > 0, 'a socketpair between parent and child shows its peer in the other process');
    }
    if (name === 't_tcp_listen') {
      const texts = fds.flatMap((p) => p.fds.map((f) => f.text));
      t.true(texts.includes(`tcp 127.0.0.1:${target.info.tcp_port} LISTEN`), texts.join('\n'));
      t.true(texts.includes(`udp 127.0.0.1:${target.info.udp_port}`), texts.join('\n'));
    }
  });
}

/** Copies a finished dump, damages the copy with `damage`, and returns `show`'s verdict on it. */
async function damaged(src: string, work: string, label: string, damage: (dir: string) => Promise<void>, args: string[] = []): Promise<{ text: CliRun; json: Json }> {
  const dir = join(work, label);
  await cp(src, dir, { recursive: true });
  await damage(dir);
  const text = await runTsdump(['show', dir, ...args]);
  const { doc } = await showJson([dir, ...args]);
  return { text, json: doc };
}

test('show calls out a directory that is not a finished dump: stderr, exit status 1, and the reason in --json', async (t) => {
  const { target, dir, images } = await dumpRunningTarget(t, 't_forktree');
  const work = join(dir, '..');
  const child = target.pids.find((p) => p !== target.pid)!;

  const unfinished = await damaged(dir, work, 'no-inventory', (d) => rm(join(d, 'inventory.img')));
  t.is(unfinished.text.code, 1);
  t.regex(unfinished.text.stdout, /: dump of 7 processes, INCOMPLETE \(/, 'the headline says it');
  t.regex(unfinished.text.stderr, /^tsdump: .*no-inventory is INCOMPLETE:\ntsdump: {3}incomplete: no inventory\.img: the dump did not finish/);
  t.like(unfinished.json, { verdict: 'incomplete' });
  t.is((unfinished.json.processes as Json[]).length, 7, 'what is there is still shown');

  const noCore = await damaged(dir, work, 'no-core', (d) => rm(join(d, `core-${child}.img`)), ['--ps']);
  t.is(noCore.text.code, 1);
  t.regex(noCore.text.stderr, new RegExp(`incomplete: no core-${child}\\.img \\(the registers and state of process ${child}\\)`));
  t.regex(noCore.text.stdout, /^ {4}PID {3}PGID {4}SID {3}COMM\n/, 'the view is still printed');

  const pages = `pages-${entries(images, `pagemap-${target.pid}.img`)[0]!.pages_id as number}.img`;
  const size = statSync(join(dir, pages)).size;
  const short = await damaged(dir, work, 'short-pages', (d) => truncate(join(d, pages), size - 4096), ['--rss']);
  t.is(short.text.code, 1);
  t.regex(short.text.stderr, new RegExp(`incomplete: ${pages.replace('.', '\\.')} holds ${size - 4096} bytes where the pagemaps of process ${target.pid} list ${size / 4096} pages`));

  const garbled = await damaged(dir, work, 'garbled-files', (d) => writeFile(join(d, 'files.img'), Buffer.from('not an image at all')), ['--fds']);
  t.is(garbled.text.code, 1);
  t.like(garbled.json, { verdict: 'inconsistent' });
  t.regex(garbled.text.stderr, /inconsistent: unreadable image: .*files\.img/);
  t.regex(garbled.text.stderr, /inconsistent: fdinfo-\d+\.img \(fd \d+\) names file id \d+, which files\.img does not hold/);

  const noTree = await damaged(dir, work, 'no-pstree', (d) => rm(join(d, 'pstree.img')));
  t.is(noTree.text.code, 1);
  t.regex(noTree.text.stderr, /^tsdump: .*no-pstree: no pstree\.img: not a \(finished\) dump; it holds \d+ files\n$/);
});

test('show knows a pre-dump for what it is: memory only, complete without cores or descriptors', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startTarget('t_memory', { dir: work });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const dir = join(work, 'pre');
  const r = await runTsdump(['pre-dump', '-t', String(target.pid), '-D', dir, '--shell-job']);
  t.is(r.code, 0, r.stderr);
  const shown = await runTsdump(['show', dir]);
  t.is(shown.code, 0, shown.stderr);
  t.regex(shown.stdout, /: pre-dump of 1 process, complete \(/);
  const { doc } = await showJson([dir]);
  t.like(doc, { kind: 'pre-dump', verdict: 'complete' });
});
