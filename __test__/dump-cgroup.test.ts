// Cgroup membership: a tree moved into freshly created cgroup v2 groups is dumped by tsdump and
// put back into them by the reference `criu restore` (its default --manage-cgroups=soft), and
// tsdump's cgroup.img, thread_core.cg_set and inventory root_cg_set equal CRIU's own dump of the
// same tree. The groups live in the unified hierarchy (/sys/fs/cgroup/unified/tsdump-test-* on
// this hybrid v1+v2 machine, /sys/fs/cgroup/tsdump-test-* on a v2-only one); only the unified
// hierarchy is touched, the v1 controllers' groups stay as the test runner's.
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, readlink, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { catalogue, type Subject } from './helpers/catalogue.js';
import { criuDump, criuRestore, critDecodeAll, makeWorkDir } from './helpers/criu.js';
import { TARGETS_DIR, belongsTo, isAlive, killTree, requestVerify, spawnWithProtocol, waitGone } from './helpers/target.js';
import { TsdumpCliError, tsdumpDump } from './helpers/tsdump.js';

/** Where the cgroup v2 hierarchy is mounted in our mount namespace. */
function unifiedMount(): string {
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep >= 0 && line.slice(sep + 3).startsWith('cgroup2 ') && line.split(' ')[3] === '/') return line.split(' ')[4]!;
  }
  throw new Error('no cgroup2 mount');
}

interface Groups {
  /** Paths as /proc/PID/cgroup shows them (relative to the hierarchy root). */
  readonly top: string;
  readonly sub: string;
  readonly abs: (rel: string) => string;
}

/**
 * Creates ROOT/tsdump-test-XXXX and ROOT/tsdump-test-XXXX/sub; teardown removes them once empty.
 * Register it before starting the subject: teardowns run last-registered-first, so the subject is
 * killed (and reaped by the subreaper) before the groups go.
 */
async function freshGroups(t: ExecutionContext): Promise<Groups> {
  const root = unifiedMount();
  const top = `/tsdump-test-${randomBytes(4).toString('hex')}`;
  const sub = `${top}/sub`;
  const abs = (rel: string) => join(root, rel);
  await mkdir(abs(top));
  t.teardown(async () => {
    for (const dir of [sub, top]) {
      for (let tries = 0; existsSync(abs(dir)); tries++) {
        try {
          await rmdir(abs(dir));
        } catch (e) {
          // EBUSY until the last (zombie) task of the group is reaped
          if (tries > 500) {
            t.log(`cannot remove ${abs(dir)}: ${String(e)}`);
            break;
          }
          await sleep(10);
        }
      }
    }
  });
  await mkdir(abs(sub));
  return { top, sub, abs };
}

/** Every thread of every process: its /proc/PID/task/TID/cgroup text. */
function membership(pids: readonly number[]): Map<number, string> {
  const out = new Map<number, string>();
  for (const pid of pids) {
    for (const tid of readdirSync(`/proc/${pid}/task`).map(Number)) out.set(tid, readFileSync(`/proc/${pid}/task/${tid}/cgroup`, 'utf8'));
  }
  return out;
}

const unifiedLine = (text: string) => text.split('\n').find((l) => l.startsWith('0::'));

/** Starts a catalogue subject and moves its processes: the last one into sub, the rest into top. */
async function startInGroups(t: ExecutionContext, name: string, work: string, groups: Groups): Promise<Subject> {
  const entry = catalogue.find((e) => e.name === name)!;
  const subject = await entry.start(work);
  t.teardown(() => subject.kill());
  const pids = subject.pids;
  for (const [i, pid] of pids.entries()) {
    const to = i === pids.length - 1 && pids.length > 1 ? groups.sub : groups.top;
    await writeFile(groups.abs(`${to}/cgroup.procs`), String(pid));
  }
  for (const [tid, text] of membership(pids)) {
    t.regex(unifiedLine(text) ?? '', new RegExp(`^0::${groups.top}(/sub)?$`), `thread ${tid} not moved`);
  }
  return subject;
}

for (const variant of ['kept', 'removed'] as const) {
  const title =
    variant === 'kept'
      ? 't_forktree in two fresh cgroups: tsdump dump → criu restore puts every task back in its cgroup'
      : 't_forktree in two fresh cgroups removed after the dump: criu restore recreates them from cgroup.img';
  test.serial(title, async (t) => {
    const work = await makeWorkDir(t);
    const groups = await freshGroups(t);
    const subject = await startInGroups(t, 't_forktree', work, groups);
    const before = membership(subject.pids);
    const images = join(work, 'images');
    await tsdumpDump(subject.pid, images);
    await waitGone(subject.pids);
    if (variant === 'removed') {
      await rmdir(groups.abs(groups.sub));
      await rmdir(groups.abs(groups.top));
    }
    await criuRestore(images);
    t.true(isAlive(subject.pid) && belongsTo(subject.pid, subject.marker), 'restored root is not running');
    const after = membership(subject.pids);
    t.deepEqual([...after.keys()].sort(), [...before.keys()].sort());
    for (const [tid, text] of before) t.is(after.get(tid), text, `thread ${tid}'s cgroups after restore`);
    t.true(existsSync(groups.abs(groups.sub)));
    t.is(await subject.verify(), 'PASS', subject.describe());
  });
}

for (const name of ['t_forktree', 't_threads']) {
  test.serial(`${name} in fresh cgroups: cgroup.img, cg_set and root_cg_set equal CRIU's`, async (t) => {
    const work = await makeWorkDir(t);
    const groups = await freshGroups(t);
    const subject = await startInGroups(t, name, work, groups);
    const ours = join(work, 'tsdump');
    const theirs = join(work, 'criu');
    await tsdumpDump(subject.pid, ours, ['--leave-running']);
    await criuDump(subject.pid, theirs);
    const [a, b] = await Promise.all([critDecodeAll(ours), critDecodeAll(theirs)]);
    t.true(b.has('cgroup.img'), 'CRIU wrote no cgroup.img');
    t.deepEqual(a.get('cgroup.img'), b.get('cgroup.img'));
    type Entries = { entries: Record<string, Record<string, unknown> | undefined>[] };
    const rootCgSet = (m: Map<string, unknown>) => (m.get('inventory.img') as Entries).entries[0]!.root_cg_set;
    t.is(rootCgSet(a), rootCgSet(b));
    const cores = [...b.keys()].filter((k) => /^core-\d+\.img$/.test(k));
    t.true(cores.length >= subject.pids.length);
    for (const core of cores) {
      const cgSet = (m: Map<string, unknown>) => (m.get(core) as Entries | undefined)?.entries[0]?.thread_core?.cg_set;
      t.is(cgSet(a), cgSet(b), core);
    }
  });
}

test.serial('a task in a cgroup namespace of its own is refused (its paths need the namespace\'s own view), and runs on', async (t) => {
  const work = await makeWorkDir(t);
  const ctl = join(work, 'ctl-t_counter');
  await mkdir(ctl, { mode: 0o700 });
  // unshare execs the target: same pid, in a new cgroup namespace
  const target = await spawnWithProtocol('t_counter', 'unshare', ['--cgroup', join(TARGETS_DIR, 't_counter'), ctl], ctl);
  t.teardown(() => killTree(target.pid, target.ctl));
  t.not(await readlink(`/proc/${target.pid}/ns/cgroup`), await readlink('/proc/self/ns/cgroup'));
  const images = join(work, 'images');
  const err = await t.throwsAsync(tsdumpDump(target.pid, images), { instanceOf: TsdumpCliError });
  t.is(err?.code, 'UNSUPPORTED');
  t.regex(err?.message ?? '', /another cgroup namespace/);
  t.false(existsSync(join(images, 'inventory.img')));
  t.is(await requestVerify(target), 'PASS');
});
