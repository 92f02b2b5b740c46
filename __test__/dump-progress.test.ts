// Progress during the copy (issue 16): the library's `pages` event fires while a task's pages are
// drained, with its total from the page scan, and the CLI draws bytes copied of that total on a
// terminal (nothing on a pipe), or writes it as JSON lines with --progress json. The target is
// 256 MiB of written anonymous memory, so the copy takes many pipe loads.
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { dump, type TaskPages } from '../src/index.js';
import { makeWorkDir } from './helpers/criu.js';
import { killTree, settledState, startDetachedTarget, startTarget } from './helpers/target.js';
import { CLI, runTsdump } from './helpers/tsdump.js';
import type { ProgressJsonLine } from '../src/progress.js';
import { holdPtys } from './helpers/pty-lock.js';
import { PAGES_EVENT_MS, watchPages } from '../src/dump/page-progress.js';
import { setTimeout as sleep } from 'node:timers/promises';

const exec = promisify(execFile);
const MIB = 256;

test('watchPages: polls the counter of the task it follows, reports only what is new, a task\'s end at once, and never after stop (or without a listener)', async (t) => {
  let all = 0;
  let pid = 0;
  let calls = 0;
  let unheardCalls = 0;
  const reading = () => ({ pid, pagesDone: all, pagesTotal: 100, pagesAll: all });
  const session = { progress: () => ((calls += 1), reading()) };
  const unheard = watchPages({ progress: () => ((unheardCalls += 1), reading()) }, undefined);
  const seen: number[] = [];
  const watch = watchPages(session, (written, task) => seen.push(task.pid, written, task.written));
  watch.follow(7);
  await sleep(PAGES_EVENT_MS * 3);
  t.true(calls >= 1, 'polled on its own');
  t.deepEqual(seen, [], 'nothing drained yet: nothing reported');
  [pid, all] = [7, 10];
  await sleep(PAGES_EVENT_MS * 3);
  t.deepEqual(seen, [7, 10, 10], 'one report of the new count, however many polls');
  // task 7 ended at 20 pages; task 8's drain has begun by the time the dump looks
  [pid, all] = [8, 25];
  await sleep(PAGES_EVENT_MS * 3);
  t.deepEqual(seen, [7, 10, 10], 'the next task waits until it is followed');
  watch.ended({ pid: 7, pagesDone: 20, pagesTotal: 100, pagesAll: 20 });
  t.deepEqual(seen, [7, 10, 10, 7, 20, 20], "a task's end is reported at once, from its own reading");
  watch.follow(8);
  await sleep(PAGES_EVENT_MS * 3);
  t.deepEqual(seen, [7, 10, 10, 7, 20, 20, 8, 25, 25], 'then the next one');
  watch.ended({ pid: 8, pagesDone: 25, pagesTotal: 100, pagesAll: 25 });
  t.is(seen.length, 9, 'an end already reported is not repeated');
  watch.stop();
  unheard.stop();
  const stoppedAt = calls;
  all = 30;
  await sleep(PAGES_EVENT_MS * 3);
  t.is(calls, stoppedAt, 'no poll after stop');
  t.is(seen.length, 9);
  t.is(unheardCalls, 0, 'a watch without a listener never polls');
});

test.serial('dump(): `pages` events during the copy, increasing, with a constant total equal to the pages written', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startDetachedTarget('mem_bench', { dir: work, args: [String(MIB)], timeoutMs: 60_000 });
  t.teardown(() => killTree(target.pid, target.ctl));
  const events: { written: number; task: TaskPages }[] = [];
  const result = await dump({ pid: target.pid, imagesDir: join(work, 'images'), leaveRunning: true }, { pages: (written, task) => events.push({ written, task: { ...task } }) });
  t.log(`${events.length} pages events: ${events.map((e) => e.task.written).join(' ')}`);
  t.true(events.length >= 3, `several events during the copy, not one at its end (${events.length})`);
  const { pagesWritten } = result.counters;
  t.true(pagesWritten >= (MIB << 20) / 4096, 'the whole 256 MiB was copied');
  for (const e of events) t.deepEqual({ pid: e.task.pid, total: e.task.total }, { pid: target.pid, total: pagesWritten }, 'one task, its total known from the first event');
  for (let i = 1; i < events.length; i++) t.true(events[i]!.written > events[i - 1]!.written, 'counts increase');
  t.true(events.slice(0, -1).some((e) => e.task.written > 0 && e.task.written < e.task.total), 'at least one event in the middle of the copy');
  t.deepEqual(events.at(-1), { written: pagesWritten, task: { pid: target.pid, written: pagesWritten, total: pagesWritten } }, 'the last one at the end of it');
  t.is(await settledState(target.pid), 'S', 'left running');
});

test.serial('CLI dump under a pseudo-terminal: the line shows bytes copied of the total', async (t) => {
  await holdPtys(t);
  const work = await makeWorkDir(t);
  const target = await startDetachedTarget('mem_bench', { dir: work, args: [String(MIB)], timeoutMs: 60_000 });
  t.teardown(() => killTree(target.pid, target.ctl));
  const pty = await exec('script', ['-qc', `${process.execPath} ${CLI} dump -t ${target.pid} -D ${join(work, 'images')} -R`, '/dev/null'], { maxBuffer: 1 << 20 });
  const drawn = pty.stdout.split('\r\x1b[2K').filter((l) => l.startsWith(`dump task ${target.pid}  `));
  t.log(drawn.join('\n'));
  t.true(
    drawn.some((l) => /^dump task \d+ {2}\d+(\.\d)? (KiB|MiB) of 25[67]\.\d MiB \(\d+%\)/.test(l)),
    'bytes copied of the total on the task line',
  );
  t.regex(pty.stdout, /\r\x1b\[2K$/, 'erased at the end');
  t.is(await settledState(target.pid), 'S');
});

/** `tsdump dump ARGS` through a pipe: its stderr, one progress JSON object per line. */
async function progressLines(t: ExecutionContext, args: readonly string[]): Promise<ProgressJsonLine[]> {
  const r = await runTsdump(['dump', ...args]);
  t.is(r.code, 0, r.stderr);
  return r.stderr
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as ProgressJsonLine);
}

test.serial('CLI dump through a pipe: no progress line; --progress json: lines whose bytes grow to the total, per task of a tree', async (t) => {
  const work = await makeWorkDir(t);
  const big = await startDetachedTarget('mem_bench', { dir: join(work, 'big'), args: [String(MIB)], timeoutMs: 60_000 });
  t.teardown(() => killTree(big.pid, big.ctl));
  const piped = await runTsdump(['dump', '-t', String(big.pid), '-D', join(work, 'images-piped'), '-R']);
  t.is(piped.code, 0, piped.stderr);
  t.is(piped.stderr, '', 'nothing drawn on a pipe');

  const lines = await progressLines(t, ['-t', String(big.pid), '-D', join(work, 'images-json'), '-R', '--progress', 'json']);
  t.true(lines.some((l) => l.stage === 'collect pstree'), 'a line per stage');
  const copy = lines.filter((l) => l.pid === big.pid && l.bytes !== undefined);
  t.log(copy.map((l) => `${l.bytes}/${l.totalBytes} ${l.bytesPerSec ?? '-'} B/s ${l.secondsLeft ?? '-'} s`).join('\n'));
  // the line is throttled to one per 100 ms, and on an idle machine 256 MiB copies in less: one
  // line during the copy at least, and the last at its end
  t.true(copy.length >= 2 && copy[0]!.bytes! < copy[0]!.totalBytes!, `lines during the copy (${copy.length})`);
  const total = copy[0]!.totalBytes!;
  t.true(total >= MIB << 20, 'the total is known from the first line: the page scan precedes the copy');
  t.true(copy.every((l) => l.stage === `dump task ${big.pid}` && l.totalBytes === total));
  for (let i = 1; i < copy.length; i++) t.true(copy[i]!.bytes! > copy[i - 1]!.bytes! && copy[i]!.time >= copy[i - 1]!.time, 'bytes and time grow');
  t.is(copy.at(-1)!.bytes, total, 'the last line at the total');
  t.true(
    copy.slice(1).every((l) => l.bytesPerSec! > 0 && (l.bytes === total ? l.secondsLeft === 0 : l.secondsLeft! > 0)),
    'rate and time left once the copy has run a while',
  );

  // a tree: each task's copy has its own lines, in its own stage, ending at its own total (the
  // next task is copied while the last one's images are written: its lines wait for its stage)
  const tree = await startTarget('t_pipes', { dir: join(work, 'tree') });
  t.teardown(() => killTree(tree.pid, tree.ctl, tree.pids));
  const treeLines = await progressLines(t, ['-t', String(tree.pid), '-D', join(work, 'images-tree'), '-R', '--shell-job', '--progress=json']);
  for (const pid of tree.pids) {
    const last = treeLines.filter((l) => l.pid === pid).at(-1);
    t.like(last, { pid }, `lines for ${pid}`);
    t.true(last!.totalBytes! > 0 && last!.bytes === last!.totalBytes, `${pid} copied whole`);
    t.true(
      treeLines.filter((l) => l.pid === pid && l.bytes !== undefined).every((l) => l.stage === `dump task ${pid}`),
      `${pid}'s copy in its own stage`,
    );
  }
});
