// The arm64 dump bench, guest side (bench/arm64.sh starts it in the arm64 guest): the installed
// arm64 tsdump against the guest's own criu 4.1.1, end to end, on the same shapes as on x86_64:
// an idle process, 256 MiB of touched memory, a 100-process tree, a 200-thread process.
//
//   node bench/arm64-guest.mjs [rounds, default 3]
//
// Each round starts a fresh target per tool and times the command users run (`tsdump dump` and
// `criu dump`, -t PID -D DIR --shell-job, images on the guest's tmpfs), tools alternating which
// goes first; frozen time is each tool's own stats-dump (decoded by `tsdump show`, as crit
// would). The CPU is emulated (qemu TCG): absolute times say nothing about arm64 hardware, so
// only the ratios tsdump/criu of the medians are printed.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const root = join(import.meta.dirname, '..');
const CLI = join(root, 'node_modules', 'tsdump', 'dist', 'cli.js');
const CRIU = process.env.TSDUMP_CRIU ?? '/usr/sbin/criu';
const rounds = Number(process.argv[2] ?? 3);

const SHAPES = [
  { name: 'idle process', target: 'mem_bench', args: ['1'] },
  { name: '256 MiB', target: 'mem_bench', args: ['256'] },
  { name: '100 processes', target: 'cap_target', args: ['forktree', '100'], tasks: 100 },
  { name: '200 threads', target: 'cap_target', args: ['threads', '200'], tasks: 200 },
];

/** Starts a target in its own session; resolves when it is ready. */
async function start(shape) {
  const dir = mkdtempSync('/tmp/tsdump-bench-');
  const exe = join(root, 'build', 'targets', shape.target);
  // mem_bench speaks the CTL protocol (CTL/ready); cap_target writes a report file.
  const first = shape.target === 'mem_bench' ? dir : join(dir, 'report');
  const pid = Number(
    execFileSync('/bin/sh', ['-c', 'setsid "$@" </dev/null >/dev/null 2>&1 & echo $!', 'sh', exe, first, ...shape.args], { encoding: 'utf8' }).trim(),
  );
  for (const deadline = Date.now() + 300_000; ; await sleep(50)) {
    if (shape.target === 'mem_bench' ? existsSync(join(dir, 'ready')) : reportReady(first, shape.tasks)) break;
    if (Date.now() > deadline) throw new Error(`${shape.name}: target not ready`);
  }
  return { pid, dir };
}

/** cap_target: the ready counter at offset 2048 reaches the number of tasks. */
function reportReady(report, tasks) {
  if (!existsSync(report)) return false;
  const b = readFileSync(report);
  return b.length >= 4096 && b.readBigUInt64LE(2048) >= BigInt(tasks === 200 ? 1 : tasks);
}

function stop(t) {
  try {
    process.kill(-t.pid, 'SIGKILL');
  } catch {
    // gone (the dump kills it)
  }
  rmSync(t.dir, { recursive: true, force: true });
}

function frozenMs(imagesDir) {
  const out = execFileSync(process.execPath, [CLI, 'show', join(imagesDir, 'stats-dump')], { encoding: 'utf8' });
  return Number(JSON.parse(out).entries[0].dump.frozen_time) / 1000;
}

function dump(tool, pid, imagesDir) {
  const argv =
    tool === 'tsdump'
      ? [process.execPath, [CLI, 'dump', '-t', String(pid), '-D', imagesDir, '--shell-job']]
      : [CRIU, ['dump', '-t', String(pid), '-D', imagesDir, '--shell-job', '-o', 'dump.log']];
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv[1], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) {
    const log = tool === 'criu' ? readFileSync(join(imagesDir, 'dump.log'), 'utf8').split('\n').slice(-15).join('\n') : '';
    throw new Error(`${tool} dump of ${pid} failed (${r.status}): ${r.stderr.slice(-1500)}${log}`);
  }
  return { wallMs, frozenMs: frozenMs(imagesDir) };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

console.log(`arm64 guest (qemu TCG), ${rounds} rounds per shape, tools alternating; ratio = tsdump / criu of the medians`);
let order = 0;
for (const shape of SHAPES) {
  const runs = { tsdump: [], criu: [] };
  for (let i = 0; i < rounds; i++) {
    for (const tool of order++ % 2 === 0 ? ['tsdump', 'criu'] : ['criu', 'tsdump']) {
      const t = await start(shape);
      const imagesDir = join(t.dir, 'images');
      mkdirSync(imagesDir, { mode: 0o700 });
      try {
        runs[tool].push(dump(tool, t.pid, imagesDir));
      } finally {
        stop(t);
      }
    }
  }
  const ratio = (k) => (median(runs.tsdump.map((r) => r[k])) / median(runs.criu.map((r) => r[k]))).toFixed(2);
  console.log(`${shape.name.padEnd(14)} wall ${ratio('wallMs')}x  frozen ${ratio('frozenMs')}x`);
}
