// Memory dump bench: tsdump (seize + dumpMemory + kill) against the reference `criu dump` of the
// same kind of target in the same run. Not a test: prints numbers and ratios.
//
//   npx tsx bench/memdump.ts [sizes MiB, default 64,256,1024] [--mode vmsplice|read] [--fs tmpfs,disk]
//
// Method (issue 4): this VM returns freed memory to its host and re-touching it costs 2-3 s/GiB,
// so before each timed dump (size + 512 MiB) is touched and freed; the tools alternate order per
// size. CRIU writes its whole image set (core, mm, files...); for a target that is one anonymous
// mapping, memory is nearly all of it. Frozen time: CRIU's stats-dump frozen_time; tsdump's
// from the first PTRACE_SEIZE to the kill. `sync` runs before each timed dump so that one tool's
// writeback does not throttle the other's writes on disk.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const CRIU = '/opt/criu-ref/bin/criu';
const CRIT = '/opt/criu-ref/bin/crit';

interface Result {
  wallMs: number;
  frozenMs: number;
  pages: number;
  rssMiB: number;
}

const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : dflt;
};
const sizes = (args[0] && !args[0].startsWith('--') ? args[0] : '64,256,1024').split(',').map(Number);
const mode = opt('mode', 'vmsplice');
const filesystems = opt('fs', 'tmpfs,disk').split(',');
const roots: Record<string, string> = { tmpfs: '/dev/shm', disk: '/var/tmp' };

function startTarget(mib: number): { pid: number; ctl: string } {
  const ctl = mkdtempSync('/tmp/tsdump-bench-ctl-');
  execFileSync('setsid', ['-f', 'build/targets/mem_bench', ctl, String(mib)], { stdio: 'ignore' });
  for (const deadline = Date.now() + 120_000; !existsSync(join(ctl, 'ready')); ) {
    if (Date.now() > deadline) throw new Error('bench target not ready');
    spawnSync('sleep', ['0.05']);
  }
  const pid = Number(/pid=(\d+)/.exec(readFileSync(join(ctl, 'ready'), 'utf8'))![1]);
  return { pid, ctl };
}

/** Runs argv under /usr/bin/time; returns stdout, wall ms and peak RSS MiB. */
function timed(argv: string[]): { out: string; wallMs: number; rssMiB: number } {
  const r = spawnSync('/usr/bin/time', ['-f', 'TIME %e %M', ...argv], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const m = /TIME ([\d.]+) (\d+)/.exec(r.stderr);
  if (r.status !== 0 || !m) throw new Error(`${argv.join(' ')} failed: ${r.stderr.slice(-2000)}`);
  return { out: r.stdout, wallMs: Number(m[1]) * 1000, rssMiB: Number(m[2]) / 1024 };
}

function runTsdump(pid: number, dir: string): Result {
  const t = timed(['node', 'bench/memdump-worker.mjs', String(pid), dir, mode]);
  const j = JSON.parse(t.out.trim().split('\n').pop()!) as { frozenMs: number; pages: number };
  return { wallMs: t.wallMs, frozenMs: j.frozenMs, pages: j.pages, rssMiB: t.rssMiB };
}

function runCriu(pid: number, dir: string): Result {
  const t = timed([CRIU, 'dump', '-t', String(pid), '-D', dir, '--shell-job', '-o', join(dir, 'dump.log')]);
  const stats = JSON.parse(execFileSync(CRIT, ['decode', '-i', join(dir, 'stats-dump')], { encoding: 'utf8' }));
  const d = stats.entries[0].dump;
  return { wallMs: t.wallMs, frozenMs: Number(d.frozen_time) / 1000, pages: Number(d.pages_written), rssMiB: t.rssMiB };
}

const fmt = (r: Result): string =>
  `wall ${r.wallMs.toFixed(0).padStart(6)} ms  frozen ${r.frozenMs.toFixed(0).padStart(6)} ms  pages ${String(r.pages).padStart(8)}  rss ${r.rssMiB.toFixed(1).padStart(6)} MiB`;

let order = 0;
for (const fs of filesystems) {
  for (const mib of sizes) {
    const results: Record<string, Result> = {};
    const tools = order++ % 2 === 0 ? ['tsdump', 'criu'] : ['criu', 'tsdump'];
    for (const tool of tools) {
      const target = startTarget(mib);
      const dir = join(roots[fs]!, `tsdump-bench-${tool}-${process.pid}`);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { mode: 0o700 });
      try {
        execFileSync('build/targets/mem_touch', [target.ctl, String(mib + 512)]);
        // Start from clean page cache: the previous tool's writeback must not throttle this one.
        execFileSync('sync');
        results[tool] = tool === 'tsdump' ? runTsdump(target.pid, dir) : runCriu(target.pid, dir);
      } finally {
        try {
          process.kill(-target.pid, 'SIGKILL');
        } catch {
          // the dump killed it
        }
        rmSync(dir, { recursive: true, force: true });
        rmSync(target.ctl, { recursive: true, force: true });
      }
    }
    const a = results['tsdump']!;
    const b = results['criu']!;
    console.log(`${fs} ${mib} MiB (${mode})`);
    console.log(`  tsdump ${fmt(a)}`);
    console.log(`  criu   ${fmt(b)}`);
    console.log(`  ratio  wall ${(a.wallMs / b.wallMs).toFixed(2)}  frozen ${(a.frozenMs / b.frozenMs).toFixed(2)}`);
  }
}
