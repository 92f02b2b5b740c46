// Downtime bench (issue 7): frozen time of a target with SIZE MiB of private memory that rewrites
// 1% of its pages per second, dumped plainly vs pre-dumped and then dumped incrementally. Not a
// test: prints numbers.
//
//   npx tsx bench/predump.ts [SIZE MiB, default 1024] [--fs tmpfs|disk] [--gap SECONDS, default 1]
//
// Per round, one fresh target (build/targets/p_dirty SIZE RATE):
//   tsdump plain:        `tsdump dump -R`                                  → frozen time
//   CRIU plain:          `criu dump -R` (stats-dump frozen_time)
//   tsdump incremental:  `tsdump pre-dump`, GAP s running, `tsdump dump --prev-images-dir
//                        --track-mem -R`                                   → frozen time of each
//   CRIU incremental:    tried last; not possible on this kernel (criu pre-dump aborts without
//                        soft-dirty, leaving its parasite mapping in the target)
// After every dump the target verifies itself live (its pages against its generation table).
// Frozen times are the dumpers' own figures (stats frozen_time: from the tree stopped to
// released), so process start-up is not counted for either tool.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const CRIU = '/opt/criu-ref/bin/criu';
const CRIT = '/opt/criu-ref/bin/crit';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : dflt;
};
const size = Number(args[0] && !args[0].startsWith('--') ? args[0] : '1024');
const root = opt('fs', 'tmpfs') === 'disk' ? '/var/tmp' : '/dev/shm';
const gapS = Number(opt('gap', '1'));
const rounds = Number(opt('rounds', '2'));
const pages = size * 256;
const rate = Math.max(1, Math.round(pages / 100)); // 1% of the pages per second

const sleep = (s: number) => spawnSync('sleep', [String(s)]);

function startTarget(): { pid: number; ctl: string } {
  const ctl = mkdtempSync('/tmp/tsdump-bench-ctl-');
  execFileSync('setsid', ['-f', 'build/targets/p_dirty', ctl, String(size), String(rate)], { stdio: 'ignore' });
  for (const deadline = Date.now() + 120_000; !existsSync(join(ctl, 'ready')); ) {
    if (Date.now() > deadline) throw new Error('bench target not ready');
    sleep(0.05);
  }
  const pid = Number(/pid=(\d+)/.exec(readFileSync(join(ctl, 'ready'), 'utf8'))![1]);
  return { pid, ctl };
}

function verify(ctl: string): string {
  rmSync(join(ctl, 'result'), { force: true });
  writeFileSync(join(ctl, 'verify'), '1\n');
  for (const deadline = Date.now() + 60_000; Date.now() < deadline; sleep(0.05)) {
    if (existsSync(join(ctl, 'result'))) {
      const text = readFileSync(join(ctl, 'result'), 'utf8').trim();
      rmSync(join(ctl, 'verify'), { force: true }); // lets the target take the next request
      return text;
    }
  }
  return 'FAIL: no result';
}

interface Run {
  frozenMs: number;
  written: number;
  parent: number;
}

function tsdump(argv: string[]): Run {
  const r = spawnSync('node', ['dist/cli.js', ...argv, '--json'], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`tsdump ${argv.join(' ')}: ${r.stdout}${r.stderr}`);
  const j = JSON.parse(r.stdout) as { pages: { written: number; skippedParent: number }; timings: { frozenTime: number } };
  return { frozenMs: j.timings.frozenTime / 1000, written: j.pages.written, parent: j.pages.skippedParent };
}

function criuDump(pid: number, dir: string): Run {
  mkdirSync(dir, { recursive: true });
  const r = spawnSync(CRIU, ['dump', '-t', String(pid), '-D', dir, '--shell-job', '-R', '-o', 'dump.log'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`criu dump failed: ${readFileSync(join(dir, 'dump.log'), 'utf8').slice(-1500)}`);
  const st = JSON.parse(execFileSync(CRIT, ['decode', '-i', join(dir, 'stats-dump')], { encoding: 'utf8' })) as {
    entries: { dump: { frozen_time: number; pages_written: number } }[];
  };
  const d = st.entries[0]!.dump;
  return { frozenMs: d.frozen_time / 1000, written: d.pages_written, parent: 0 };
}

function criuPreDumpWorks(pid: number, dir: string): boolean {
  mkdirSync(dir, { recursive: true });
  return spawnSync(CRIU, ['pre-dump', '-t', String(pid), '-D', dir, '-o', 'pre-dump.log']).status === 0;
}

const fmt = (r: Run) => `${r.frozenMs.toFixed(1).padStart(8)} ms frozen, ${String(r.written).padStart(7)} pages written${r.parent ? `, ${r.parent} left in the parent` : ''}`;

console.log(`target: ${size} MiB (${pages} pages), rewriting ${rate} pages/s (1%); images on ${root}; gap ${gapS} s; ${rounds} rounds`);
for (let round = 1; round <= rounds; round++) {
  const work = mkdtempSync(join(root, 'tsdump-bench-predump-'));
  const t = startTarget();
  try {
    sleep(1);
    const plain = tsdump(['dump', '-t', String(t.pid), '-D', join(work, 'plain'), '--shell-job', '-R']);
    const v1 = verify(t.ctl);
    rmSync(join(work, 'plain'), { recursive: true, force: true });
    // CRIU before tsdump's pre-dump: the tracking userfaultfd that leaves is nothing CRIU dumps
    const criu = criuDump(t.pid, join(work, 'criu'));
    rmSync(join(work, 'criu'), { recursive: true, force: true });
    sleep(gapS);
    const pre = tsdump(['pre-dump', '-t', String(t.pid), '-D', join(work, 'pre')]);
    sleep(gapS);
    const inc = tsdump(['dump', '-t', String(t.pid), '-D', join(work, 'inc'), '--shell-job', '-R', '--prev-images-dir', '../pre', '--track-mem']);
    rmSync(join(work, 'pre'), { recursive: true, force: true });
    rmSync(join(work, 'inc'), { recursive: true, force: true });
    const v2 = verify(t.ctl);
    // last: an aborted criu pre-dump leaves its parasite mapping behind in the target
    const criuPre = criuPreDumpWorks(t.pid, join(work, 'criu-pre'));
    console.log(`round ${round}:`);
    console.log(`  tsdump plain dump      ${fmt(plain)}`);
    console.log(`  tsdump pre-dump        ${fmt(pre)}`);
    console.log(`  tsdump incremental     ${fmt(inc)}   (downtime ${(plain.frozenMs / inc.frozenMs).toFixed(1)}x shorter)`);
    console.log(`  criu plain dump        ${fmt(criu)}`);
    console.log(`  criu pre-dump          ${criuPre ? 'worked' : 'refused/aborted (no soft-dirty on this kernel)'}`);
    console.log(`  target verified live:  ${v1} / ${v2}`);
  } finally {
    try {
      process.kill(t.pid, 'SIGKILL');
    } catch {
      // gone
    }
    rmSync(work, { recursive: true, force: true });
    rmSync(t.ctl, { recursive: true, force: true });
  }
}
