// Downtime bench (issue 7): frozen time of a target with SIZE MiB of private memory that rewrites
// 1% of its pages per second, dumped plainly vs pre-dumped and then dumped incrementally. Not a
// test: prints numbers.
//
//   npx tsx bench/predump.ts [SIZE MiB, default 1024] [--fs tmpfs|disk] [--gap SECONDS, default 1]
//                            [--modes splice,read]
//
// Per round and pre-dump mode, one fresh target (build/targets/p_dirty SIZE RATE); the plain
// dumps run on the first mode's target only:
//   tsdump plain:        `tsdump dump -R`                                  → frozen time
//   CRIU plain:          `criu dump -R` (stats-dump frozen_time)
//   tsdump incremental:  `tsdump pre-dump --pre-dump-mode MODE`, GAP s running, `tsdump dump
//                        --prev-images-dir --track-mem -R`                 → frozen time of each
//                        (read mode: the pages are read after the release, so the pre-dump's
//                        frozen time no longer grows with SIZE; its total time is printed too)
//   CRIU incremental:    tried last; not possible on this kernel (criu pre-dump aborts without
//                        soft-dirty, leaving its parasite mapping in the target)
// After every dump the target verifies itself live (its pages against its generation table).
// Frozen times are the dumpers' own figures (stats frozen_time: from the tree stopped to
// released), so process start-up is not counted for either tool. This VM returns freed memory to
// its host and touching it again costs 2-3 s/GiB, so (SIZE + 512) MiB is touched and freed
// before each timed run (build/targets/mem_touch), as bench/memdump.ts does.
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
const modes = opt('modes', 'splice,read').split(',');
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
  totalMs?: number;
  written: number;
  parent: number;
}

/** Touches and frees enough memory that the next run's images do not pay the VM's first touch. */
function warm(ctl: string): void {
  execFileSync('build/targets/mem_touch', [ctl, String(size + 512)]);
}

function tsdump(argv: string[]): Run {
  warm('/tmp');
  const r = spawnSync('node', ['dist/cli.js', ...argv, '--json'], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`tsdump ${argv.join(' ')}: ${r.stdout}${r.stderr}`);
  const j = JSON.parse(r.stdout) as { pages: { written: number; skippedParent: number }; timings: { frozenTime: number; totalTime: number } };
  return { frozenMs: j.timings.frozenTime / 1000, totalMs: j.timings.totalTime / 1000, written: j.pages.written, parent: j.pages.skippedParent };
}

function criuDump(pid: number, dir: string): Run {
  mkdirSync(dir, { recursive: true });
  warm('/tmp');
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

console.log(`target: ${size} MiB (${pages} pages), rewriting ${rate} pages/s (1%); images on ${root}; gap ${gapS} s; ${rounds} rounds; modes ${modes.join(', ')}`);
for (let round = 1; round <= rounds; round++) {
  console.log(`round ${round}:`);
  for (const [i, mode] of modes.entries()) {
    const work = mkdtempSync(join(root, 'tsdump-bench-predump-'));
    const t = startTarget();
    try {
      sleep(1);
      let plain: Run | undefined;
      let v1 = '';
      if (i === 0) {
        plain = tsdump(['dump', '-t', String(t.pid), '-D', join(work, 'plain'), '--shell-job', '-R']);
        v1 = verify(t.ctl);
        rmSync(join(work, 'plain'), { recursive: true, force: true });
        // CRIU before tsdump's pre-dump: the tracking userfaultfd that leaves is nothing CRIU dumps
        const criu = criuDump(t.pid, join(work, 'criu'));
        rmSync(join(work, 'criu'), { recursive: true, force: true });
        console.log(`  tsdump plain dump               ${fmt(plain)}`);
        console.log(`  criu plain dump                 ${fmt(criu)}`);
      }
      sleep(gapS);
      const pre = tsdump(['pre-dump', '-t', String(t.pid), '-D', join(work, 'pre'), '--pre-dump-mode', mode]);
      sleep(gapS);
      const inc = tsdump(['dump', '-t', String(t.pid), '-D', join(work, 'inc'), '--shell-job', '-R', '--prev-images-dir', '../pre', '--track-mem']);
      rmSync(join(work, 'pre'), { recursive: true, force: true });
      rmSync(join(work, 'inc'), { recursive: true, force: true });
      const v2 = verify(t.ctl);
      console.log(`  tsdump pre-dump (${mode.padEnd(6)})       ${fmt(pre)}, ${pre.totalMs!.toFixed(1)} ms in all`);
      console.log(`  tsdump incremental after ${mode.padEnd(6)} ${fmt(inc)}${plain ? `   (downtime ${(plain.frozenMs / inc.frozenMs).toFixed(1)}x shorter than plain)` : ''}`);
      if (i === modes.length - 1) {
        // last: an aborted criu pre-dump leaves its parasite mapping behind in the target
        const criuPre = criuPreDumpWorks(t.pid, join(work, 'criu-pre'));
        console.log(`  criu pre-dump                   ${criuPre ? 'worked' : 'refused/aborted (no soft-dirty on this kernel)'}`);
      }
      console.log(`  target verified live (${mode}):  ${v1 ? `${v1} / ` : ''}${v2}`);
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
}
