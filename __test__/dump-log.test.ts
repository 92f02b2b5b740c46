// The dump log a bug report attaches (issue 16): a header (version, kernel, command line, options),
// and at -v4 one line per task, thread, VMA and fd, checked against what /proc showed of the real
// target before the dump; the same facts as JSON lines with --log-format json; none of them at -v2.
import test, { type ExecutionContext } from 'ava';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { makeWorkDir } from './helpers/criu.js';
import { killTree, startTarget, type Target } from './helpers/target.js';
import { runTsdump } from './helpers/tsdump.js';

const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

interface Seen {
  /** "start-end" of every line of /proc/PID/maps. */
  maps: string[];
  fds: number[];
}

/** What /proc shows of each process of the tree (taken before the dump). */
function look(target: Target): Map<number, Seen> {
  const seen = new Map<number, Seen>();
  for (const pid of target.pids) {
    const maps = readFileSync(`/proc/${pid}/maps`, 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(' ')[0]!);
    const fds = readdirSync(`/proc/${pid}/fd`)
      .map(Number)
      .sort((a, b) => a - b);
    seen.set(pid, { maps, fds });
  }
  return seen;
}

async function pipesTarget(t: ExecutionContext): Promise<{ target: Target; work: string; seen: Map<number, Seen> }> {
  const work = await makeWorkDir(t);
  const target = await startTarget('t_pipes', { dir: work });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  t.true(target.pids.length >= 2, 't_pipes is a tree of two');
  return { target, work, seen: look(target) };
}

async function dumpWithLog(t: ExecutionContext, target: Target, dir: string, extra: readonly string[]): Promise<string> {
  const r = await runTsdump(['dump', '-t', String(target.pid), '-D', dir, '-R', '--shell-job', '-o', 'dump.log', ...extra]);
  t.is(r.code, 0, r.stderr);
  return readFileSync(join(dir, 'dump.log'), 'utf8');
}

test('-v4 -o dump.log: header, then a line per task, thread, VMA (as /proc/PID/maps) and fd (as /proc/PID/fd)', async (t) => {
  const { target, work, seen } = await pipesTarget(t);
  const dir = join(work, 'images');
  const log = await dumpWithLog(t, target, dir, ['-v4']);
  const lines = log.trimEnd().split('\n');
  t.true(lines.every((l) => /^\(\d\d\.\d{6}\) /.test(l)), 'every line stamped the CRIU way');
  const text = lines.map((l) => l.slice(l.indexOf(') ') + 2));
  t.is(text[0], `tsdump version ${VERSION} (node ${process.version})`);
  t.true(text[1]!.startsWith(`kernel ${release()} `), text[1]);
  t.is(text[2], `command line: tsdump dump -t ${target.pid} -D ${dir} -R --shell-job -o dump.log -v4`);
  const options = JSON.parse(text[3]!.replace(/^options: /, '')) as Record<string, unknown>;
  t.like(options, { pid: target.pid, imagesDir: dir, verbosity: 4, logFile: 'dump.log', leaveRunning: true, shellJob: true });

  for (const [pid, { maps, fds }] of seen) {
    const threads = readdirSync(`/proc/${pid}/task`).map(Number);
    t.is(text.filter((l) => l.startsWith(`seized task ${pid} (t_pipes): `)).length, 1, `one task line for ${pid}`);
    t.deepEqual(
      text.filter((l) => new RegExp(`^  thread \\d+ of ${pid}[, ]`).test(l)).map((l) => Number(l.split(' ')[3])),
      threads,
      `a line per thread of ${pid}`,
    );
    // the task's section: from its stage line to the next stage ("dump task ..." or later)
    const from = text.indexOf(`stage: dump task ${pid}`);
    t.true(from > 0, `stage of ${pid}`);
    const section = text.slice(from + 1, text.findIndex((l, i) => i > from && !l.startsWith('  ') && !l.startsWith('pages of ')));
    const vmas = section.filter((l) => l.startsWith('  vma ')).map((l) => l.split(' ')[3]!);
    t.deepEqual(vmas, maps, `a line per VMA of ${pid}, as /proc/${pid}/maps listed them`);
    t.true(section.filter((l) => l.startsWith('  vma ')).every((l) => /: (skipped: .+|[a-z-]+: \d+ page\(s\) dumped.*|not drained .*)$/.test(l)), 'each says what was done with it');
    const fdLines = section.filter((l) => l.startsWith('  fd '));
    t.deepEqual(fdLines.map((l) => Number(/^ {2}fd (\d+): /.exec(l)![1])), fds, `a line per fd of ${pid}`);
    t.true(fdLines.some((l) => / PIPE id \d+ pipe:\[\d+\]/.test(l)), 'kind and path of the pipes');
    t.is(section.filter((l) => l.startsWith(`pages of ${pid}: `)).length, 1, 'the page counts of the task');
  }
  t.regex(log, /tree released \(running\); frozen \d+ us/);
});

test('-v4: each thread of a 42-thread task, and each socket with its kind, state and address', async (t) => {
  const work = await makeWorkDir(t);
  const threads = await startTarget('t_threads', { dir: join(work, 'threads') });
  t.teardown(() => killTree(threads.pid, threads.ctl, threads.pids));
  const sockets = await startTarget('t_tcp_listen', { dir: join(work, 'sockets') });
  t.teardown(() => killTree(sockets.pid, sockets.ctl, sockets.pids));

  const tids = readdirSync(`/proc/${threads.pid}/task`).map(Number);
  t.is(tids.length, 42);
  const text = (await dumpWithLog(t, threads, join(work, 'images-threads'), ['-v4'])).split('\n').map((l) => l.slice(l.indexOf(') ') + 2));
  t.deepEqual(
    text.filter((l) => l.startsWith('  thread ')).map((l) => Number(l.split(' ')[3])),
    tids,
    'a line per thread, as /proc/PID/task lists them',
  );

  const log = await dumpWithLog(t, sockets, join(work, 'images-sockets'), ['-v4']);
  const { tcp_port: tcp, udp_port: udp } = sockets.info;
  t.regex(log, new RegExp(`  socket id \\d+ \\(fd \\d+ of ${sockets.pid}\\): INETSK socket inet, sockType SOCK_STREAM, proto 6, state LISTEN, local 127\\.0\\.0\\.1:${tcp}, remote 0\\.0\\.0\\.0:0`));
  t.regex(log, new RegExp(`  socket id \\d+ \\(fd \\d+ of ${sockets.pid}\\): INETSK socket inet, sockType SOCK_DGRAM, proto 17, state CLOSE, local 127\\.0\\.0\\.1:${udp}, `));
  t.regex(log, / {2}fd \d+: INETSK id \d+ socket:\[\d+\]/, 'the fd line names the socket');
});

test('-v4 after a pre-dump with --track-mem: the tracking userfaultfd is skipped, with why, and the pages left in the parent counted', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startTarget('p_dirty', { dir: work, args: ['8', '0'] });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const pre = await runTsdump(['pre-dump', '-t', String(target.pid), '-D', join(work, 'd1')]);
  t.is(pre.code, 0, pre.stderr);
  const uffd = readdirSync(`/proc/${target.pid}/fd`).filter((fd) => {
    try {
      return readlinkSync(`/proc/${target.pid}/fd/${fd}`) === 'anon_inode:[userfaultfd]';
    } catch {
      return false;
    }
  });
  t.is(uffd.length, 1, 'the pre-dump left its tracking userfaultfd in the task');
  const log = await dumpWithLog(t, target, join(work, 'd2'), ['-v4', '--prev-images-dir', '../d1', '--track-mem']);
  t.regex(log, new RegExp(`\\) {3}fd ${uffd[0]}: skipped \\(the memory tracking's userfaultfd, closed in the task\\)\n`));
  const inParent = Number(new RegExp(`pages of ${target.pid}: .* (\\d+) in parent;`).exec(log)?.[1]);
  t.true(inParent >= 2048, `the 8 MiB left in the parent: ${inParent}`);
});

test('--log-format json: every line one object with time, elapsed, level, pid, stage, message; the same facts as fields', async (t) => {
  const { target, work, seen } = await pipesTarget(t);
  const log = await dumpWithLog(t, target, join(work, 'images'), ['-v4', '--log-format', 'json']);
  type Line = { time: string; elapsed: number; level: string; pid?: number; stage?: string; message: string; fields?: Record<string, unknown> };
  const lines = log
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as Line);
  t.true(lines.length > 50);
  for (const l of lines) {
    t.is(typeof l.elapsed, 'number');
    t.false(Number.isNaN(Date.parse(l.time)), l.time);
    t.true(['msg', 'error', 'warn', 'info', 'debug'].includes(l.level), l.level);
    t.is(typeof l.message, 'string');
  }
  t.deepEqual(lines.map((l) => l.elapsed), [...lines.map((l) => l.elapsed)].sort((a, b) => a - b), 'time since the log opened, increasing');
  t.like(lines[0], { level: 'msg', fields: { version: VERSION } });
  t.like(lines[1]!.fields, { release: release() });
  const events = (kind: string, pid: number) => lines.filter((l) => l.fields?.event === kind && l.pid === pid);
  for (const [pid, { maps, fds }] of seen) {
    t.like(events('task', pid)[0], { level: 'debug', stage: 'collect pstree', fields: { comm: 't_pipes', threads: 1 } });
    t.deepEqual(
      events('vma', pid).map((l) => `${String(l.fields!.start)}-${String(l.fields!.end)}`),
      maps,
    );
    t.true(events('vma', pid).every((l) => l.stage === `dump task ${pid}` && typeof l.fields!.decision === 'string'));
    t.deepEqual(
      events('fd', pid).map((l) => l.fields!.fd),
      fds,
    );
    t.true(events('fd', pid).every((l) => typeof l.fields!.kind === 'string' && typeof l.fields!.target === 'string'));
    t.is(events('pages', pid).length, 1);
  }
});

test('-v2 -o dump.log: the header, none of the debug lines', async (t) => {
  const { target, work } = await pipesTarget(t);
  const log = await dumpWithLog(t, target, join(work, 'images'), ['-v2']);
  const text = log.split('\n').map((l) => l.slice(l.indexOf(') ') + 2));
  t.is(text[0], `tsdump version ${VERSION} (node ${process.version})`);
  t.true(text.some((l) => l.startsWith('options: ')));
  for (const debug of ['seized task ', '  thread ', '  vma ', '  fd ', '  socket ', 'pages of ', 'stage: ']) {
    t.false(
      text.some((l) => l.startsWith(debug)),
      `no "${debug}" line at -v2`,
    );
  }
});
