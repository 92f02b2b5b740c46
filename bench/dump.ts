// The dump users run, end to end: `tsdump dump -t PID -D DIR --shell-job` (the CLI as shipped)
// against the reference `criu dump -t PID -D DIR --shell-job`, and the library's `dump()` called
// from this long-running Node process (start-up paid once), on fresh identical targets of each
// shape. Not a test: prints medians and ratios.
//
//   npm run build && bash scripts/build-test-programs.sh
//   npx tsx bench/dump.ts [--rounds 3] [--shapes idle,procs10,...] [--dir /dev/shm] [--baseline DIR]
//
// --baseline DIR times another build of tsdump (DIR/dist/cli.js, e.g. an earlier commit built
// elsewhere) as a fourth tool, in the same rotation: a before/after under the same load.
//
//   npx tsx bench/dump.ts --snapshot [--shapes mem256m,mem1g,mem4g]
//
// --snapshot (issue 14): every tool leaves the tree running (-R), and `tsdump dump -R --snapshot`
// (the copy after the release, from a copy-on-write snapshot) is timed beside `tsdump dump -R`
// (the frozen copy) and `criu dump -R`; the library is left out. Its extra memory is the
// snapshot's own report (--json): near zero on these idle targets, whose pages nobody writes.
// With --baseline, the other build runs with --snapshot too.
//
// Method: for every round and shape each tool dumps its own fresh target (started the same way,
// idle once set up), the tools' order rotating from round to round; wall time is the command's
// (spawn to exit, for the library the call), frozen time each tool's own stats-dump frozen_time
// (decoded here with tsdump's image reader, which `tsdump show` and the tests prove crit-
// identical), peak RSS from /usr/bin/time. Memory shapes touch and free (size + 512 MiB) right
// before each timed dump: this VM gives freed memory back to its host and touching it again costs
// 2-3 s/GiB (../shared/README.md). Images go to tmpfs (--dir) and are removed after each run.
// CRIU's frozen_time runs to after the tree is killed and inventory.img written; tsdump's ends
// where its stats-dump is written, just before those two (see bench/README.md).
import { spawnSync, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const ROOT = resolve(import.meta.dirname, '..');
const CRIU = '/opt/criu-ref/bin/criu';
const TARGET = join(ROOT, 'build/targets/bench_shape');
const TOUCH = join(ROOT, 'build/targets/mem_touch');
const SUBREAPER = join(ROOT, 'build/subreaper');
const CLI = join(ROOT, 'dist/cli.js');

interface Shape {
  name: string;
  what: string;
  args: string[];
  /** MiB of memory in the whole tree (touch-and-free before the dump). */
  mib: number;
}

const SHAPES: Shape[] = [
  { name: 'idle', what: 'one idle process', args: ['procs', '1', '0'], mib: 0 },
  { name: 'mem256m', what: '256 MiB anonymous', args: ['procs', '1', '256'], mib: 256 },
  { name: 'procs10', what: '10 processes', args: ['procs', '10', '0'], mib: 0 },
  { name: 'procs20', what: '20 processes', args: ['procs', '20', '0'], mib: 0 },
  { name: 'procs100', what: '100 processes', args: ['procs', '100', '0'], mib: 0 },
  { name: 'procs500', what: '500 processes', args: ['procs', '500', '0'], mib: 0 },
  { name: 'threads10', what: '10 threads', args: ['threads', '10'], mib: 0 },
  { name: 'threads200', what: '200 threads', args: ['threads', '200'], mib: 0 },
  { name: 'threads1000', what: '1000 threads', args: ['threads', '1000'], mib: 0 },
  { name: 'mem1g', what: '1 GiB anonymous', args: ['procs', '1', '1024'], mib: 1024 },
  { name: 'mem4g', what: '4 GiB anonymous', args: ['procs', '1', '4096'], mib: 4096 },
  { name: 'tree100x64m', what: '100 processes x 64 MiB', args: ['procs', '100', '64'], mib: 6400 },
];

type Tool = 'criu' | 'cli' | 'lib' | 'base' | 'snap';

interface Run {
  wallMs: number;
  frozenMs: number;
  rssMiB?: number;
  /** snap: the snapshot's extra memory (its --json report). */
  extraMiB?: number;
}

const argv = process.argv.slice(2);
const snapshotMode = argv.includes('--snapshot');
/** --snapshot needs the tree left running; the other tools then do the same. */
const leave = snapshotMode ? ['-R'] : [];
const opt = (name: string): string | undefined => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
};
const rounds = Number(opt('rounds') ?? 3);
const wanted = opt('shapes')?.split(',');
const shapes = wanted ? SHAPES.filter((s) => wanted.includes(s.name)) : snapshotMode ? SHAPES.filter((s) => ['mem256m', 'mem1g', 'mem4g'].includes(s.name)) : SHAPES;
const imagesRoot = opt('dir') ?? '/dev/shm';
const baseline = opt('baseline');
const TOOLS: Tool[] = [...(snapshotMode ? ['criu', 'cli', 'snap'] as const : ['criu', 'cli', 'lib'] as const), ...(baseline ? ['base'] as const : [])];
if (wanted && shapes.length !== wanted.length) throw new Error(`unknown shape in ${wanted.join(',')}; known: ${SHAPES.map((s) => s.name).join(',')}`);

// Killed trees must be reaped, and the targets must not be this process's children (the library
// would dump them through a worker): run under the subreaper, targets detached with setsid -f.
if (!process.env['TSDUMP_BENCH_REAPED']) {
  const r = spawnSync(SUBREAPER, [process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, TSDUMP_BENCH_REAPED: '1' },
  });
  process.exit(r.status ?? 1);
}

for (const f of [CRIU, TARGET, TOUCH, CLI]) if (!existsSync(f)) throw new Error(`${f} is missing (see the usage at the top of bench/dump.ts)`);
const { dump } = (await import(join(ROOT, 'dist/index.js'))) as typeof import('../src/index.js');
const { readImage } = (await import(join(ROOT, 'dist/images/index.js'))) as typeof import('../src/images/index.js');

function memAvailableMiB(): number {
  const m = /MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

async function startTarget(shape: Shape): Promise<{ pid: number; ctl: string }> {
  const ctl = mkdtempSync('/tmp/tsdump-bench-ctl-');
  execFileSync('setsid', ['-f', TARGET, ctl, ...shape.args], { stdio: 'ignore' });
  for (const deadline = Date.now() + 300_000; !existsSync(join(ctl, 'ready')); await sleep(20)) {
    if (Date.now() > deadline) throw new Error(`${shape.name}: target not ready (${ctl}/log)`);
  }
  const pid = Number(/pid=(\d+)/.exec(readFileSync(join(ctl, 'ready'), 'utf8'))![1]);
  return { pid, ctl };
}

function killTree(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // the dump killed it
  }
}

async function frozenMs(dir: string): Promise<number> {
  const img = await readImage(join(dir, 'stats-dump'));
  const entry = img.entries[0]!.message as unknown as { dump: { frozenTime: number } };
  return Number(entry.dump.frozenTime) / 1000;
}

/** Runs a command under /usr/bin/time: wall ms (spawn to exit) and peak RSS. */
function timed(cmd: string[]): { wallMs: number; rssMiB: number; stdout: string } {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', 'TIME %M', ...cmd], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const m = /TIME (\d+)/.exec(r.stderr);
  if (r.status !== 0 || !m) throw new Error(`${cmd.slice(0, 2).join(' ')} failed (${r.status}): ${r.stderr.slice(-1500)}`);
  return { wallMs, rssMiB: Number(m[1]) / 1024, stdout: r.stdout };
}

async function runTool(tool: Tool, pid: number, dir: string): Promise<Run> {
  if (tool === 'lib') {
    const t0 = process.hrtime.bigint();
    await dump({ pid, imagesDir: dir, shellJob: true });
    return { wallMs: Number(process.hrtime.bigint() - t0) / 1e6, frozenMs: await frozenMs(dir) };
  }
  const cmd =
    tool === 'criu'
      ? [CRIU, 'dump', '-t', String(pid), '-D', dir, '--shell-job', '-o', 'dump.log', ...leave]
      : [process.execPath, tool === 'base' ? join(baseline!, 'dist/cli.js') : CLI, 'dump', '-t', String(pid), '-D', dir, '--shell-job', ...leave, ...(tool === 'snap' || (tool === 'base' && snapshotMode) ? ['--snapshot', '--json'] : [])];
  const t = timed(cmd);
  const extra = tool === 'snap' || (tool === 'base' && snapshotMode) ? (JSON.parse(t.stdout) as { snapshot?: { extraBytes: number } }).snapshot?.extraBytes : undefined;
  return { wallMs: t.wallMs, rssMiB: t.rssMiB, frozenMs: await frozenMs(dir), ...(extra !== undefined ? { extraMiB: extra / 2 ** 20 } : {}) };
}

async function once(shape: Shape, tool: Tool): Promise<Run> {
  const target = await startTarget(shape);
  const dir = join(imagesRoot, `tsdump-bench-${tool}-${process.pid}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { mode: 0o700 });
  try {
    if (shape.mib) execFileSync(TOUCH, [target.ctl, String(shape.mib + 512)]);
    return await runTool(tool, target.pid, dir);
  } finally {
    killTree(target.pid);
    rmSync(dir, { recursive: true, force: true });
    rmSync(target.ctl, { recursive: true, force: true });
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

// The library's first call pays module loading and JIT: not what a running service pays.
{
  const warm = await startTarget(SHAPES[0]!);
  const dir = mkdtempSync(join(imagesRoot, 'tsdump-bench-warm-'));
  try {
    await dump({ pid: warm.pid, imagesDir: dir, shellJob: true });
  } finally {
    killTree(warm.pid);
    rmSync(dir, { recursive: true, force: true });
    rmSync(warm.ctl, { recursive: true, force: true });
  }
}

interface Summary {
  shape: Shape;
  med: Partial<Record<Tool, { wallMs: number; frozenMs: number; rssMiB?: number; extraMiB?: number }>>;
  errors: string[];
}
const summaries: Summary[] = [];
const f0 = (x: number | undefined): string => (x === undefined ? '-' : x.toFixed(0));
const f2 = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(2));

console.log(`bench/dump.ts: ${rounds} rounds, images in ${imagesRoot}, ${new Date().toISOString()}`);
for (const shape of shapes) {
  // target + images of both kinds in memory at once, with room to spare
  const need = shape.mib * 2 + 1024;
  if (need > memAvailableMiB()) {
    console.log(`${shape.what}: skipped (needs ~${need} MiB free, ${memAvailableMiB().toFixed(0)} available)`);
    continue;
  }
  const runs: Record<Tool, Run[]> = { criu: [], cli: [], lib: [], base: [], snap: [] };
  const errors: string[] = [];
  for (let r = 0; r < rounds; r++) {
    const order = [...TOOLS.slice(r % TOOLS.length), ...TOOLS.slice(0, r % TOOLS.length)];
    for (const tool of order) {
      try {
        runs[tool].push(await once(shape, tool));
      } catch (e) {
        errors.push(`${tool}: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`);
      }
    }
  }
  const med: Summary['med'] = {};
  for (const tool of TOOLS) {
    const xs = runs[tool];
    if (!xs.length) continue;
    const rss = xs.flatMap((x) => (x.rssMiB === undefined ? [] : [x.rssMiB]));
    const extra = xs.flatMap((x) => (x.extraMiB === undefined ? [] : [x.extraMiB]));
    med[tool] = {
      wallMs: median(xs.map((x) => x.wallMs)),
      frozenMs: median(xs.map((x) => x.frozenMs)),
      ...(rss.length ? { rssMiB: Math.max(...rss) } : {}),
      ...(extra.length ? { extraMiB: Math.max(...extra) } : {}),
    };
  }
  summaries.push({ shape, med, errors });
  const { criu, cli, lib, base, snap } = med;
  if (snapshotMode) {
    console.log(
      `${shape.what.padEnd(24)} criu -R ${f0(criu?.wallMs).padStart(6)} / ${f0(criu?.frozenMs).padStart(6)} ms` +
        `  tsdump -R ${f0(cli?.wallMs).padStart(6)} / ${f0(cli?.frozenMs).padStart(6)} ms` +
        `  --snapshot ${f0(snap?.wallMs).padStart(6)} / ${f0(snap?.frozenMs).padStart(6)} ms (extra ${f0(snap?.extraMiB)} MiB)` +
        (base ? `  baseline --snapshot ${f0(base.wallMs).padStart(6)} / ${f0(base.frozenMs).padStart(6)} ms` : '') +
        `  frozen x${f2(snap && cli && snap.frozenMs / cli.frozenMs)} of tsdump, x${f2(snap && criu && snap.frozenMs / criu.frozenMs)} of criu` +
        `  wall x${f2(snap && cli && snap.wallMs / cli.wallMs)} of tsdump`,
    );
    for (const e of errors) console.log(`    error ${e}`);
    continue;
  }
  console.log(
    `${shape.what.padEnd(24)} criu ${f0(criu?.wallMs).padStart(6)} / ${f0(criu?.frozenMs).padStart(6)} ms` +
      (base ? `  baseline ${f0(base.wallMs).padStart(6)} / ${f0(base.frozenMs).padStart(6)} ms (x${f2(criu && base.frozenMs / criu.frozenMs)})` : '') +
      `  tsdump ${f0(cli?.wallMs).padStart(6)} / ${f0(cli?.frozenMs).padStart(6)} ms (rss ${f0(cli?.rssMiB)} MiB)` +
      `  library ${f0(lib?.wallMs).padStart(6)} / ${f0(lib?.frozenMs).padStart(6)} ms` +
      `  frozen x${f2(cli && criu && cli.frozenMs / criu.frozenMs)} (lib x${f2(lib && criu && lib.frozenMs / criu.frozenMs)})` +
      `  wall x${f2(cli && criu && cli.wallMs / criu.wallMs)} (lib x${f2(lib && criu && lib.wallMs / criu.wallMs)})`,
  );
  for (const e of errors) console.log(`    error ${e}`);
}

// Growth: how frozen time scales with processes and threads, each tool against itself.
for (const series of [['procs10', 'procs100', 'procs500'], ['threads10', 'threads200', 'threads1000']]) {
  const got = series.map((n) => summaries.find((s) => s.shape.name === n));
  if (got.some((s) => !s?.med.criu || !s.med.cli)) continue;
  const step = (tool: Tool) =>
    got
      .slice(1)
      .map((s, i) => f2(s!.med[tool]!.frozenMs / got[i]!.med[tool]!.frozenMs))
      .join(', then x');
  console.log(`growth ${series.join(' -> ')}: criu x${step('criu')}; tsdump x${step('cli')}` + (baseline && got.every((s) => s!.med.base) ? `; baseline x${step('base')}` : ''));
}
if (snapshotMode) {
  console.log('| case (all -R) | CRIU wall / frozen ms | tsdump wall / frozen ms | tsdump --snapshot wall / frozen ms | frozen: snapshot / tsdump | frozen: snapshot / CRIU | wall: snapshot / tsdump | snapshot extra MiB |');
  console.log(`|${' --- |'.repeat(8)}`);
  const wf = (r: { wallMs: number; frozenMs: number } | undefined): string => `${f0(r?.wallMs)} / ${f0(r?.frozenMs)}`;
  for (const { shape, med: m } of summaries) {
    const cells = [shape.what, wf(m.criu), wf(m.cli), wf(m.snap), f2(m.snap && m.cli && m.snap.frozenMs / m.cli.frozenMs)];
    cells.push(f2(m.snap && m.criu && m.snap.frozenMs / m.criu.frozenMs), f2(m.snap && m.cli && m.snap.wallMs / m.cli.wallMs), f0(m.snap?.extraMiB));
    console.log(`| ${cells.join(' | ')} |`);
  }
  process.exit(0);
}
const baseCols = baseline ? ' baseline wall / frozen ms | baseline frozen ratio |' : '';
console.log(`| case | CRIU wall / frozen ms |${baseCols} tsdump wall / frozen ms | library wall / frozen ms | frozen ratio | tsdump peak RSS MiB |`);
console.log(`| --- | --- |${baseline ? ' --- | --- |' : ''} --- | --- | --- | --- |`);
for (const { shape, med } of summaries) {
  const { criu, cli, lib, base } = med;
  const baseCells = baseline ? ` ${f0(base?.wallMs)} / ${f0(base?.frozenMs)} | ${f2(base && criu && base.frozenMs / criu.frozenMs)} |` : '';
  console.log(
    `| ${shape.what} | ${f0(criu?.wallMs)} / ${f0(criu?.frozenMs)} |${baseCells} ${f0(cli?.wallMs)} / ${f0(cli?.frozenMs)} | ${f0(lib?.wallMs)} / ${f0(lib?.frozenMs)} | ` +
      `${f2(cli && criu && cli.frozenMs / criu.frozenMs)} | ${f0(cli?.rssMiB)} |`,
  );
}
