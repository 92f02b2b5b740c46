// The library (`import { dump } from 'tsdump'`): typed options and result, stage events,
// cancellation through an AbortSignal, typed errors. Targets are started detached, so they are
// not children of this process and are traced from here; children of this process are dumped
// through a worker process (library-own-child.test.ts).
import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dump, TsdumpError } from '../src/index.js';
import { criuRestore, makeWorkDir } from './helpers/criu.js';
import { killTree, procState, requestVerify, startDetachedTarget, waitGone } from './helpers/target.js';

/** The process (thread group) whose thread traces pid, or 0. */
function tracerProcess(pid: number): number {
  const field = (p: number, name: string) => Number(new RegExp(`^${name}:\\s*(\\d+)`, 'm').exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0);
  const tid = field(pid, 'TracerPid');
  return tid === 0 ? 0 : field(tid, 'Tgid');
}

test.serial('dump() reports stages in flow order and a result the reference CRIU restores', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startDetachedTarget('t_counter', { dir: work });
  t.teardown(() => killTree(target.pid, target.ctl));
  const stages: string[] = [];
  const pages: { n: number; task: { pid: number; written: number; total: number } }[] = [];
  const imagesDir = join(work, 'images');
  let tracer = 0;
  const result = await dump(
    { pid: target.pid, imagesDir, shellJob: true },
    {
      stage: (s) => {
        stages.push(s);
        // not our child: traced from this very process (no worker), by one of our threads
        if (s === `dump task ${target.pid}`) tracer = tracerProcess(target.pid);
      },
      pages: (n, task) => pages.push({ n, task }),
    },
  );
  t.is(tracer, process.pid, 'traced in-process');
  // during the copy (throttled) and at its end: the last one carries the whole count
  const written = result.counters.pagesWritten;
  t.deepEqual(pages.at(-1), { n: written, task: { pid: target.pid, written, total: written } }, 'the last pages event: the task copied whole');
  t.true(pages.every((p, i) => i === 0 || p.n > pages[i - 1]!.n), 'increasing counts');
  t.deepEqual(result.processes.map((p) => p.pid), [target.pid]);
  t.is(result.released, 'killed');
  t.true(result.counters.pagesWritten > 0);
  // every stage of a plain dump, in cr_dump_tasks' order (index.ts): pre-dump scripts run before
  // plugins load, zombies after the file locks and terminals, the inventory last before post-dump
  t.deepEqual(stages, [
    'prepare images dir',
    'pre-dump scripts',
    'load plugins',
    'open parent images',
    'collect pstree',
    'collect time namespace',
    'collect ipc namespace',
    'collect cgroups',
    'open file table',
    'collect seccomp filters',
    `dump task ${target.pid}`,
    'dump file locks',
    'tty post actions',
    'dump zombies',
    'dump pstree',
    'dump ipc namespace',
    'dump time namespace',
    'dump cgroups',
    'fix external unix sockets',
    'write inventory',
    'post-dump scripts',
    'finish',
  ]);
  await waitGone([target.pid]);
  await criuRestore(imagesDir);
  t.is(await requestVerify(target), 'PASS');
});

test.serial('an aborted signal cancels the dump: CANCELLED, no inventory.img, the target runs on', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startDetachedTarget('t_counter', { dir: work });
  t.teardown(() => killTree(target.pid, target.ctl));
  const imagesDir = join(work, 'images');
  const controller = new AbortController();
  const err = await t.throwsAsync(
    dump({ pid: target.pid, imagesDir, signal: controller.signal }, { stage: (s) => s === 'collect pstree' && controller.abort() }),
    { instanceOf: TsdumpError },
  );
  t.is(err?.code, 'CANCELLED');
  t.false(existsSync(join(imagesDir, 'inventory.img')));
  t.notRegex(procState(target.pid) ?? 'gone', /^[tTZ]|gone/);
  t.is(await requestVerify(target), 'PASS');
});

test('a missing pid is ESRCH_TARGET', async (t) => {
  const work = await makeWorkDir(t);
  const err = await t.throwsAsync(dump({ pid: 0x3ffffff, imagesDir: join(work, 'images') }), { instanceOf: TsdumpError });
  t.is(err?.code, 'ESRCH_TARGET');
});
