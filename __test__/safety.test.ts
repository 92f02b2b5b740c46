// What tsdump promises whatever the images directory, the signals or the other users do: nothing
// is written outside -D (no link planted there is followed), an existing checkpoint is never
// damaged, and the tree is left running unless a dump completed. The attacker here is a real
// unprivileged user (nobody, through setpriv) planting real symlinks; the writes run as root.
import test, { type ExecutionContext } from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { truncate } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { dump, preDump } from '../src/index.js';
import { runPageServer } from '../src/page-server.js';
import { MAX_IMAGE_BYTES } from '../src/images/reader.js';
import { loadPluginsFrom } from '../src/plugins/index.js';
import { parseCommandLine } from '../src/cli/args.js';
import { TsdumpError, asTsdumpError } from '../src/errors.js';
import { showImage } from '../src/show.js';
import { criuRestore, makeWorkDir } from './helpers/criu.js';
import { CLI, runTsdump } from './helpers/tsdump.js';
import { belongsTo, isAlive, killTree, requestVerify, startDetachedTarget, startTarget, waitGone, type Target } from './helpers/target.js';
import { assertUnchanged, describe, fileSize, snapshot, startDump, until } from './helpers/tree-state.js';

const NOBODY = 65534;
const PRECIOUS = 'precious root-only data\n';

/** Runs argv as the unprivileged user nobody, synchronously (a stage hook must plant before the flow goes on). */
function asNobody(...argv: string[]): void {
  execFileSync('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--', ...argv], { stdio: 'pipe' });
}

/**
 * A work dir others can traverse, holding `victim` (a root-owned 0600 file an attacker would like
 * overwritten) and `pub`, a directory everyone may write into.
 */
async function arena(t: ExecutionContext, pubMode: number): Promise<{ work: string; victim: string; pub: string }> {
  const work = await makeWorkDir(t);
  chmodSync(work, 0o755);
  const victim = join(work, 'victim');
  writeFileSync(victim, PRECIOUS, { mode: 0o600 });
  const pub = join(work, 'pub');
  mkdirSync(pub);
  chmodSync(pub, pubMode);
  return { work, victim, pub };
}

function plantLinks(victim: string, dir: string, names: readonly string[]): void {
  for (const n of names) asNobody('ln', '-s', victim, join(dir, n));
}

function assertVictimUntouched(t: ExecutionContext, victim: string): void {
  t.is(readFileSync(victim, 'utf8'), PRECIOUS, 'the file the link pointed at was written');
}

async function detached(t: ExecutionContext, work: string): Promise<Target> {
  const target = await startDetachedTarget('f_faults', { dir: work, args: ['4'] });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  return target;
}

// --- 1. nothing written outside -D --------------------------------------------------------------

test.serial('an images dir another user owns is refused; the link its owner planted is never followed; the tree runs on', async (t) => {
  const { work, victim, pub } = await arena(t, 0o1777);
  const ckpt = join(pub, 'ckpt');
  asNobody('mkdir', '-m', '0777', ckpt);
  plantLinks(victim, ckpt, ['pages-1.img', 'dump.log']);
  const target = await startTarget('f_faults', { dir: work, args: ['4'] });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const before = snapshot(target.pids);
  for (const args of [[], ['-o', 'dump.log']]) {
    const r = await startDump(target.pid, ckpt, args).done;
    t.is(r.code, 1, describe(r));
    t.is(r.error?.code, 'IMAGE_IO', describe(r));
    t.regex(r.error?.message ?? '', new RegExp(`images dir ${ckpt} belongs to uid ${NOBODY}, not to us`));
  }
  assertVictimUntouched(t, victim);
  assertUnchanged(t, before, target.pids);
});

test.serial('an images dir others may write into (no sticky bit) is refused with what to do', async (t) => {
  const { work, pub } = await arena(t, 0o777);
  const target = await startTarget('f_faults', { dir: work, args: ['4'] });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const r = await startDump(target.pid, pub).done;
  t.is(r.error?.code, 'IMAGE_IO', describe(r));
  t.regex(r.error?.message ?? '', /is writable by everyone \(mode 777\).*chmod go-w/);
  t.deepEqual(readdirSync(pub), []);
});

test.serial('a sticky shared dir of ours: a pages image linked away after the checks fails the dump, the link is not followed', async (t) => {
  const { work, victim, pub } = await arena(t, 0o1777);
  const target = await detached(t, work);
  const before = snapshot(target.pids);
  const err = await t.throwsAsync(
    dump(
      { pid: target.pid, imagesDir: pub, leaveRunning: true },
      {
        // the hook runs synchronously before the stage: the images dir was checked, nothing is written yet
        stage: (name) => {
          if (name === 'collect pstree') plantLinks(victim, pub, ['pages-1.img', `core-${target.pid}.img`, 'stats-dump', 'inventory.img']);
        },
      },
    ),
    { instanceOf: TsdumpError },
  );
  t.is(err!.code, 'IMAGE_IO');
  t.regex(err!.message, /pages-1\.img: EEXIST/);
  assertVictimUntouched(t, victim);
  for (const n of ['pages-1.img', 'inventory.img']) t.true(lstatSync(join(pub, n)).isSymbolicLink(), `${n}: the attacker's own link is left alone`);
  assertUnchanged(t, before, target.pids);
});

test.serial('the -o log: a link planted under its name is replaced, never written through', async (t) => {
  const { work, victim, pub } = await arena(t, 0o1777);
  plantLinks(victim, pub, ['dump.log']);
  const target = await startTarget('f_faults', { dir: work, args: ['4'] });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const r = await startDump(target.pid, pub, ['-R', '-o', 'dump.log']).done;
  t.is(r.code, 0, describe(r));
  assertVictimUntouched(t, victim);
  const log = lstatSync(join(pub, 'dump.log'));
  t.true(log.isFile() && log.uid === 0 && (log.mode & 0o777) === 0o600, 'a fresh owner-only log of ours');
  t.regex(readFileSync(join(pub, 'dump.log'), 'utf8'), /Dumping finished successfully/);
});

test.serial('pre-dump: tsdump-track.json linked away mid-run fails the pre-dump, the link is not followed, no tracking is left', async (t) => {
  const { work, victim, pub } = await arena(t, 0o1777);
  const target = await detached(t, work);
  const before = snapshot(target.pids);
  const err = await t.throwsAsync(
    preDump({ pid: target.pid, imagesDir: pub }, { stage: (name) => name === 'release' && plantLinks(victim, pub, ['tsdump-track.json']) }),
    { instanceOf: TsdumpError },
  );
  t.is(err!.code, 'IMAGE_IO');
  t.regex(err!.message, /tsdump-track\.json/);
  assertVictimUntouched(t, victim);
  // the failed pre-dump ended the tracking it armed: no userfaultfd is left in the task
  assertUnchanged(t, before, target.pids);
});

/** Asks a page server to open the pagemap of pid 4242 (OPEN2), then hangs up. */
async function openPagemap(port: number): Promise<void> {
  const s = connect({ host: '127.0.0.1', port });
  await new Promise<void>((res, rej) => s.once('connect', res).once('error', rej));
  const h = Buffer.alloc(24);
  h.writeUInt32LE(4, 0); // PS_IOV_OPEN2
  h.writeBigUInt64LE((4242n << 8n) | 1n, 16);
  s.write(h);
  await new Promise<void>((res) => {
    s.once('data', () => res()).once('close', () => res()).once('error', () => res());
  });
  s.destroy();
}

test.serial("page server: .part files linked away by another user are not followed", async (t) => {
  const { victim, pub } = await arena(t, 0o1777);
  plantLinks(victim, pub, ['pagemap-4242.img.part', 'pages-65537.img.part']);
  let listening!: (port: number) => void;
  const port = new Promise<number>((res) => (listening = res));
  // the failing client is dropped and the server waits for the next one: the test ends it
  let droppedNow!: (err: TsdumpError) => void;
  const dropped = new Promise<TsdumpError>((res) => (droppedNow = res));
  const ac = new AbortController();
  const serving = runPageServer({ imagesDir: pub, address: '127.0.0.1', port: 0, signal: ac.signal, onListening: (l) => listening(l.port), onClientDropped: ({ error }) => droppedNow(error) });
  serving.catch(() => undefined);
  await openPagemap(await port);
  const err = await dropped;
  ac.abort();
  t.is(((await t.throwsAsync(serving, { instanceOf: TsdumpError })) as TsdumpError).code, 'CANCELLED');
  t.is(err.code, 'IMAGE_IO');
  t.regex(err.message, /pagemap-4242\.img\.part: EEXIST/);
  assertVictimUntouched(t, victim);
});

// --- 2. an existing checkpoint is never damaged ---------------------------------------------------

/** Every entry of dir with a hash of its content (links by their target). */
function contents(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of readdirSync(dir).sort()) {
    const st = lstatSync(join(dir, n));
    out[n] = st.isFile() ? createHash('sha256').update(readFileSync(join(dir, n))).digest('hex') : st.isSymbolicLink() ? 'link' : 'dir';
  }
  return out;
}

/** Kills the original f_faults tree and restores it from dir; its self-check must pass. */
async function restoreAndVerify(t: ExecutionContext, target: Target, dir: string, logSizeAtDump: number, restoreArgs: readonly string[] = []): Promise<void> {
  await killTree(target.pid, target.ctl, target.pids);
  await waitGone(target.pids);
  // restore wants the target's log (its stdout) at the size it had when dumped
  await truncate(join(target.ctl, 'log'), logSizeAtDump);
  await criuRestore(dir, restoreArgs);
  t.true(isAlive(target.pid) && belongsTo(target.pid, target.ctl), 'restored under its pid');
  t.is(await requestVerify(target, { timeoutMs: 30_000 }), 'PASS');
}

test.serial('a second dump into a directory holding a checkpoint is refused: the checkpoint stays whole and restores', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startTarget('f_faults', { dir: work, args: ['8'] });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const dir = join(work, 'ckpt');
  const first = await startDump(target.pid, dir, ['-R']).done;
  t.is(first.code, 0, describe(first));
  const logSize = statSync(join(target.ctl, 'log')).size;
  const kept = contents(dir);
  const before = snapshot(target.pids);
  const second = await startDump(target.pid, dir).done;
  t.is(second.code, 1, describe(second));
  t.is(second.error?.code, 'IMAGE_IO');
  t.regex(second.error?.message ?? '', /already holds a checkpoint \(core-\d+\.img, .*\); tsdump never writes over one.*--replace-images/);
  t.deepEqual(contents(dir), kept, 'the checkpoint is exactly as it was');
  assertUnchanged(t, before, target.pids);
  await restoreAndVerify(t, target, dir, logSize);
});

test.serial('--replace-images: a replacement that fails leaves the old checkpoint whole; one that completes is swapped in', async (t) => {
  const work = await makeWorkDir(t);
  // the lock makes a dump without --file-locks fail once every task's images are written
  const target = await startTarget('f_faults', { dir: work, args: ['8', 'lock', 'child'] });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const dir = join(work, 'ckpt');
  writeFileSync(join(work, 'ckpt.keep'), '');
  t.is((await startDump(target.pid, dir, ['-R', '-l']).done).code, 0);
  writeFileSync(join(dir, 'notes.txt'), 'mine');
  const old = contents(dir);

  const failed = await startDump(target.pid, dir, ['-R', '--replace-images']).done;
  t.is(failed.code, 1, describe(failed));
  t.regex(failed.error?.message ?? '', /holds a file lock/);
  t.regex(failed.stderr, new RegExp(`the new one is written to ${work}/\\.ckpt\\.tsdump-\\d+-0`));
  t.deepEqual(contents(dir), old, 'the old checkpoint is untouched');
  t.deepEqual(readdirSync(work).sort(), ['ckpt', 'ckpt.keep', 'ctl-f_faults'], 'nothing left beside it');

  const done = await startDump(target.pid, dir, ['-R', '-l', '--replace-images']).done;
  t.is(done.code, 0, describe(done));
  const now = contents(dir);
  t.is(now['notes.txt'], old['notes.txt'], 'what is not a checkpoint file stays');
  t.not(now['inventory.img'], old['inventory.img'], 'a new checkpoint');
  t.deepEqual(Object.keys(now).filter((n) => !(n in old)), [], 'no stray file');
  t.deepEqual(readdirSync(work).sort(), ['ckpt', 'ckpt.keep', 'ctl-f_faults']);
  t.is(statSync(dir).mode & 0o777, 0o700);
  await restoreAndVerify(t, target, dir, statSync(join(target.ctl, 'log')).size, ['--file-locks']);
});

// --- 3. -D, and what a failed run leaves ----------------------------------------------------------

test.serial('-D without a value is a usage error; nothing is dumped', async (t) => {
  for (const argv of [['dump', '-t', '1', '-D'], ['dump', '-D', '-t', '1'], ['pre-dump', '-t', '1', '-D']]) {
    const r = await runTsdump(argv);
    t.is(r.code, 1, argv.join(' '));
    t.regex(r.stderr, /option -D\/--images-dir requires an argument/);
  }
});

test.serial('a missing -D is created and said so; a failed dump removes what it created, and nothing else', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startTarget('f_faults', { dir: work, args: ['8', 'lock'] });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const before = snapshot(target.pids);
  const fresh = join(work, 'new', 'deeper');
  const r = await startDump(target.pid, fresh).done;
  t.is(r.error?.code, 'UNSUPPORTED', describe(r));
  t.regex(r.stderr, new RegExp(`created images dir ${fresh} \\(owner-only\\)`));
  t.regex(r.stderr, /removed the \d+ files this run wrote/);
  t.false(existsSync(join(work, 'new')), 'the directories it made are gone too');

  const mine = join(work, 'mine');
  mkdirSync(mine, { mode: 0o700 });
  writeFileSync(join(mine, 'notes.txt'), 'mine');
  const r2 = await startDump(target.pid, mine, ['-o', 'dump.log']).done;
  t.is(r2.error?.code, 'UNSUPPORTED', describe(r2));
  t.deepEqual(readdirSync(mine).sort(), ['dump.log', 'notes.txt'], 'the log explains the failure; no image is left');
  assertUnchanged(t, before, target.pids);
});

test.serial('a cancelled dump (SIGTERM mid-drain) leaves no partial images', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startTarget('f_faults', { dir: work, args: ['256'] });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const dir = join(work, 'images');
  const run = startDump(target.pid, dir);
  await until('the drain to start', () => fileSize(join(dir, 'pages-1.img')) > 16 << 20 || run.child.exitCode !== null, 60_000, 1);
  run.child.kill('SIGTERM');
  const r = await run.done;
  t.is(r.error?.code, 'CANCELLED', describe(r));
  t.false(existsSync(dir), 'the images dir this run made is gone with its partial images');
});

// --- 6. after the commit point, signals do not abort ----------------------------------------------

test.serial('SIGTERM, SIGINT and SIGHUP after the commit point (a slow post-dump script): the dump finishes as asked and succeeds', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startTarget('f_faults', { dir: work, args: ['8'] });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const marker = join(work, 'post-dump-running');
  const script = join(work, 'slow-post-dump.sh');
  writeFileSync(script, `#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] || exit 0\ntouch ${marker}\nsleep 2\n`, { mode: 0o700 });
  const dir = join(work, 'images');
  const run = startDump(target.pid, dir, ['--action-script', script]);
  await until('the post-dump script', () => existsSync(marker) || run.child.exitCode !== null, 60_000);
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) run.child.kill(sig);
  const r = await run.done;
  t.is(r.code, 0, describe(r));
  t.is(r.result?.released, 'killed', 'the tree was killed as asked');
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) t.regex(r.stderr, new RegExp(`interrupted by ${sig} after the checkpoint was complete: finishing as asked`));
  t.true(existsSync(join(dir, 'inventory.img')));
  await waitGone(target.pids);
});

test.serial('library: an abort after the commit point changes nothing; the dump resolves', async (t) => {
  const work = await makeWorkDir(t);
  const target = await detached(t, work);
  const ac = new AbortController();
  const r = await dump(
    { pid: target.pid, imagesDir: join(work, 'images'), leaveRunning: true, signal: ac.signal },
    { stage: (name) => name === 'post-dump scripts' && ac.abort() },
  );
  t.is(r.released, 'running');
  t.true(existsSync(join(work, 'images', 'inventory.img')));
});

test.serial('SIGHUP mid-drain cancels like SIGTERM: the tree is released unchanged', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startTarget('f_faults', { dir: work, args: ['256'] });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const before = snapshot(target.pids);
  const dir = join(work, 'images');
  const run = startDump(target.pid, dir);
  await until('the drain to start', () => fileSize(join(dir, 'pages-1.img')) > 16 << 20 || run.child.exitCode !== null, 60_000, 1);
  run.child.kill('SIGHUP');
  const r = await run.done;
  t.is(r.code, 1, describe(r));
  t.is(r.error?.code, 'CANCELLED', describe(r));
  t.regex(r.error?.message ?? '', /interrupted by SIGHUP/);
  assertUnchanged(t, before, target.pids);
  t.is(await requestVerify(target, { timeoutMs: 30_000 }), 'PASS');
});

// --- 7. memory tracking ends, and never outlives a failed run --------------------------------------

test.serial('pre-dump tracking: a dump that does not name the pre-dump says how to end it; stop-tracking ends it', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startTarget('f_faults', { dir: work, args: ['8', 'child'] });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const before = snapshot(target.pids);
  const pre = join(work, 'pre');
  t.is((await runTsdump(['pre-dump', '-t', String(target.pid), '-D', pre])).code, 0);
  t.true(snapshot(target.pids).fds.get(target.pid)!.some((l) => /userfaultfd/.test(l)), 'the pre-dump left its tracking');

  const refused = await startDump(target.pid, join(work, 'plain'), ['-R']).done;
  t.is(refused.error?.code, 'UNSUPPORTED_FD', describe(refused));
  t.regex(refused.error?.message ?? '', /memory-tracking userfaultfd a tsdump pre-dump left: name that pre-dump with --prev-images-dir .*`tsdump stop-tracking/);

  const stop = await runTsdump(['stop-tracking', '-t', String(target.pid), '-D', pre, '--json']);
  t.is(stop.code, 0, stop.stderr);
  t.deepEqual((JSON.parse(stop.stdout) as { closed: { pid: number }[] }).closed.map((c) => c.pid).sort(), [...target.pids].sort());
  assertUnchanged(t, before, target.pids);
  const again = await runTsdump(['stop-tracking', '-t', String(target.pid), '-D', pre]);
  t.regex(again.stdout, /no tracking of that pre-dump is left/);
  t.is((await startDump(target.pid, join(work, 'plain2'), ['-R']).done).code, 0, 'a plain dump works again');
});

test.serial('dump --track-mem --leave-running that fails: the tracking it armed is ended, none is left', async (t) => {
  const work = await makeWorkDir(t);
  // the lock fails the dump once every task was drained (and armed)
  const target = await startTarget('f_faults', { dir: work, args: ['8', 'lock', 'child'] });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const before = snapshot(target.pids);
  const pre = join(work, 'pre');
  t.is((await runTsdump(['pre-dump', '-t', String(target.pid), '-D', pre])).code, 0);
  const r = await startDump(target.pid, join(work, 'next'), ['-R', '--track-mem', '--prev-images-dir', '../pre']).done;
  t.is(r.error?.code, 'UNSUPPORTED', describe(r));
  t.regex(r.error?.message ?? '', /holds a file lock/);
  assertUnchanged(t, before, target.pids);
});

// --- 12. show reads image files only ---------------------------------------------------------------

test.serial('show refuses a FIFO, /dev/zero and an oversized file at once, without reading them', async (t) => {
  const work = await makeWorkDir(t);
  const fifo = join(work, 'core-1.img');
  execFileSync('mkfifo', [fifo]);
  const big = join(work, 'files.img');
  writeFileSync(big, '');
  execFileSync('truncate', ['-s', String(MAX_IMAGE_BYTES + 1), big]);
  for (const [path, why] of [
    [fifo, 'a FIFO, not an image file'],
    ['/dev/zero', 'a character device, not an image file'],
    [big, `${MAX_IMAGE_BYTES + 1} bytes, more than any image tsdump reads`],
  ] as const) {
    const started = Date.now();
    const r = await runTsdump(['show', path, '--json'], 10_000);
    t.is(r.code, 1, `${path}: ${r.stderr}`);
    t.true(r.stderr.includes(`${path}: byte 0: ${why}`), r.stderr);
    t.true(Date.now() - started < 8_000, `${path}: answered at once`);
  }
});

// --- 13. plugins: nothing others could have written is loaded --------------------------------------

test.serial('plugins that another user owns or may write, or that sit in such a directory, are refused before they run', async (t) => {
  const { work, pub } = await arena(t, 0o1777);
  const define = JSON.stringify(new URL('../src/plugins/define.ts', import.meta.url).href);
  const ran = join(work, 'ran');
  const plugin = (name: string) =>
    `import { writeFileSync } from 'node:fs';\nimport { definePlugin } from ${define};\nwriteFileSync(${JSON.stringify(ran)}, 'ran');\nexport default definePlugin({ name: '${name}' });\n`;
  const cases: { setup: (dir: string) => void; message: RegExp }[] = [
    { setup: (dir) => asNobody('sh', '-c', `cat > ${dir}/p.mjs`), message: /plugin .*p\.mjs belongs to uid 65534 \(neither root nor us\)/ },
    { setup: (dir) => (writeFileSync(join(dir, 'p.mjs'), plugin('w')), chmodSync(join(dir, 'p.mjs'), 0o666)), message: /plugin .*p\.mjs is writable by everyone \(mode 666\)/ },
    { setup: (dir) => (writeFileSync(join(dir, 'p.mjs'), plugin('g')), chmodSync(dir, 0o775)), message: /plugin dir .* is writable by its group \(mode 775\)/ },
  ];
  for (const [i, c] of cases.entries()) {
    const dir = join(work, `lib${i}`);
    mkdirSync(dir, { mode: 0o755 });
    if (i === 0) {
      chmodSync(dir, 0o777);
      c.setup(dir);
      writeFileSync(join(dir, 'p.mjs'), plugin('n'));
      chmodSync(dir, 0o755);
    } else c.setup(dir);
    const err = await t.throwsAsync(loadPluginsFrom(dir), { instanceOf: TsdumpError });
    t.is(err!.code, 'PLUGIN');
    t.regex(err!.message, c.message);
  }
  // a link from a trusted directory to a plugin in a directory others may write is refused too
  const linked = join(work, 'linked');
  mkdirSync(linked, { mode: 0o755 });
  const open = join(pub, 'open');
  mkdirSync(open);
  chmodSync(open, 0o777);
  writeFileSync(join(open, 'q.mjs'), plugin('q'));
  execFileSync('ln', ['-s', join(open, 'q.mjs'), join(linked, 'q.mjs')]);
  const err = await t.throwsAsync(loadPluginsFrom(linked), { instanceOf: TsdumpError });
  t.regex(err!.message, new RegExp(`plugin .*q\\.mjs: its directory ${open} is writable by everyone`));
  t.false(existsSync(ran), 'no refused plugin ran');
});

// --- 14. config files serve every command; each command acts on its own options ------------------------

test.serial('a config file: a CRIU option tsdump lacks is refused naming file and line, by the commands that dump only', async (t) => {
  const work = await makeWorkDir(t);
  const conf = join(work, 'criu.conf');
  writeFileSync(conf, '# site defaults\nshell-job\ntcp-established\nfile-locks\naction-script /bin/true\nlazy-pages\n');
  const env = { env: { CRIU_CONFIG_FILE: conf } };
  for (const command of ['dump', 'pre-dump']) {
    const err = await t.throwsAsync(parseCommandLine([command, '-t', '1'], env), { instanceOf: TsdumpError });
    t.is(err!.code, 'UNSUPPORTED');
    t.is(err!.message, `${conf}:6: option --lazy-pages is not supported by tsdump yet`);
  }
  // what does not dump does not care
  const img = join(work, 'x.img');
  writeFileSync(img, '');
  t.like(await parseCommandLine(['show', img], env), { command: 'show', path: img });
  t.like(await parseCommandLine(['check'], env), { command: 'check' });
  const shown = await runTsdump(['show', '/nonexistent.img']);
  t.regex(shown.stderr, /nonexistent/);

  // a pre-dump leaves out what only a dump acts on; a dump takes it all
  writeFileSync(conf, 'shell-job\ntcp-established\nfile-locks\naction-script /bin/true\nghost-limit 1M\n');
  const pre = await parseCommandLine(['pre-dump', '-t', '1'], env);
  t.true(pre.command === 'pre-dump' && pre.options.shellJob && pre.options.tcpEstablished === undefined && pre.options.actionScripts === undefined);
  const full = await parseCommandLine(['dump', '-t', '1'], env);
  t.like(full.command === 'dump' ? full.options : {}, { tcpEstablished: true, fileLocks: true, actionScripts: ['/bin/true'], ghostLimit: 1 << 20 });
});

test.serial('pre-dump refuses, by name, the options on its command line it does not act on', async (t) => {
  for (const extra of [['--action-script', '/bin/true'], ['-L', '/tmp'], ['--tcp-established'], ['--file-locks'], ['--ext-unix-sk'], ['-s']]) {
    const r = await runTsdump(['pre-dump', '-t', '1', '-D', '/nonexistent', ...extra]);
    t.is(r.code, 1, extra.join(' '));
    t.regex(r.stderr, /option --[a-z-]+ is not supported by tsdump pre-dump\n$/, extra.join(' '));
  }
});

// --- 15. every error a caller sees is a TsdumpError with a stable code ---------------------------------

test.serial('the codes a non-root user, a missing file and a vanished task get', async (t) => {
  const { work, pub } = await arena(t, 0o1777);
  // a non-root user dumping its own process: the permission it lacks, by code, not INTERNAL
  const sleeper = spawn('sleep', ['60'], { uid: NOBODY, gid: NOBODY, stdio: 'ignore' });
  t.teardown(() => sleeper.kill('SIGKILL'));
  await until('sleep to exec', () => readFileSync(`/proc/${sleeper.pid}/cmdline`, 'utf8').startsWith('sleep'));
  const r = await new Promise<{ code: number | null; stdout: string }>((res) => {
    const c = spawn(process.execPath, [CLI, 'dump', '-t', String(sleeper.pid), '-D', join(pub, 'd'), '-R', '--json'], {
      uid: NOBODY,
      gid: NOBODY,
      env: { ...process.env, HOME: pub },
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    let out = '';
    c.stdout.on('data', (b: Buffer) => (out += b.toString()));
    c.once('close', (code) => res({ code, stdout: out }));
  });
  t.is(r.code, 1);
  const error = (JSON.parse(r.stdout) as { error: { code: string; message: string } }).error;
  t.is(error.code, 'EPERM_PTRACE', error.message);
  t.regex(error.message, new RegExp(`^pid ${sleeper.pid}: `));
  t.deepEqual(readdirSync(pub), [], 'and nothing is left');

  // missing files
  for (const [p, code] of [
    [showImage(join(work, 'missing.img')), 'IMAGE_IO'],
    [dump({ pid: sleeper.pid!, imagesDir: join(work, 'i1'), libDir: join(work, 'no-plugins') }), 'PLUGIN'],
    [dump({ pid: sleeper.pid!, imagesDir: join(work, 'i2'), prevImagesDir: '../no-parent' }), 'IMAGE_IO'],
  ] as const) {
    t.is((await t.throwsAsync(p, { instanceOf: TsdumpError }))!.code, code);
  }
  // a vanished task
  sleeper.kill('SIGKILL');
  await new Promise((res) => sleeper.once('exit', res));
  for (const run of [dump, preDump]) {
    const err = await t.throwsAsync(run({ pid: sleeper.pid!, imagesDir: join(work, 'gone') }), { instanceOf: TsdumpError });
    t.is(err!.code, 'ESRCH_TARGET');
  }
  // what the kernel says through Node, typed at the boundary
  const sys = (code: string, path: string) => Object.assign(new Error(`${code}: x, stat '${path}'`), { code, path });
  t.like(asTsdumpError(sys('ENOENT', '/proc/77/map_files/1-2')), { code: 'ESRCH_TARGET', message: "pid 77: ENOENT: x, stat '/proc/77/map_files/1-2' (the task is gone)" });
  t.is(asTsdumpError(sys('EACCES', '/proc/77/environ')).code, 'EPERM_PTRACE');
  t.is(asTsdumpError(new TypeError('x is undefined')).code, 'INTERNAL');
});

// --- 16. two dumps in one process share nothing ------------------------------------------------------

test.serial('two library dumps of different trees at once in one process: both complete and both restore', async (t) => {
  const work = await makeWorkDir(t);
  // A plugin that holds each dump at pauseDevices (after the tree is seized and the dump's state
  // set up, before any fd is dumped) until both dumps got there: their fd work then interleaves.
  const lib = join(work, 'lib');
  mkdirSync(lib, { mode: 0o755 });
  const define = JSON.stringify(new URL('../src/plugins/define.ts', import.meta.url).href);
  writeFileSync(
    join(lib, 'barrier.mjs'),
    `import { definePlugin } from ${define};\n` +
      'const seen = new Set(); let open; const both = new Promise((r) => (open = r));\n' +
      "export default definePlugin({ name: 'barrier', hooks: { async pauseDevices(_t, ctx) { seen.add(ctx.imagesDir); if (seen.size === 2) open(); await both; return false; } } });\n",
  );
  const subjects = await Promise.all(['t_unix_sockets', 't_pty'].map((name) => startDetachedTarget(name, { dir: join(work, name) })));
  for (const s of subjects) t.teardown(() => killTree(s.pid, s.ctl, s.pids));
  const dirs = subjects.map((s) => join(work, `${s.name}-images`));
  const results = await Promise.all(subjects.map((s, i) => dump({ pid: s.pid, imagesDir: dirs[i]!, shellJob: true, libDir: lib })));
  t.deepEqual(results.map((r) => r.released), ['killed', 'killed']);
  for (const [i, s] of subjects.entries()) {
    await waitGone(s.pids);
    await criuRestore(dirs[i]!);
    t.true(isAlive(s.pid) && belongsTo(s.pid, s.ctl), `${s.name}: restored under its pid`);
    t.is(await requestVerify(s, { timeoutMs: 30_000 }), 'PASS', s.name);
  }
});
