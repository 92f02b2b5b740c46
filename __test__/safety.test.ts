// What tsdump promises whatever the images directory, the signals or the other users do: nothing
// is written outside -D (no link planted there is followed), an existing checkpoint is never
// damaged, and the tree is left running unless a dump completed. The attacker here is a real
// unprivileged user (nobody, through setpriv) planting real symlinks; the writes run as root.
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { dump, preDump } from '../src/index.js';
import { runPageServer } from '../src/page-server.js';
import { TsdumpError } from '../src/errors.js';
import { makeWorkDir } from './helpers/criu.js';
import { killTree, startDetachedTarget, startTarget, type Target } from './helpers/target.js';
import { assertUnchanged, describe, snapshot, startDump } from './helpers/tree-state.js';

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

test.serial('pre-dump: tsdump-track.json linked away mid-run fails the pre-dump, the link is not followed', async (t) => {
  const { work, victim, pub } = await arena(t, 0o1777);
  const target = await detached(t, work);
  const err = await t.throwsAsync(
    preDump({ pid: target.pid, imagesDir: pub }, { stage: (name) => name === 'release' && plantLinks(victim, pub, ['tsdump-track.json']) }),
    { instanceOf: TsdumpError },
  );
  t.is(err!.code, 'IMAGE_IO');
  t.regex(err!.message, /tsdump-track\.json/);
  assertVictimUntouched(t, victim);
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
