// Report bench (not a test): how big `tsdump report` makes the page of a 100-process dump, how
// long writing it takes, and how long Debian's chromium takes to open it (navigation start to
// the load event, in a fresh tab of a warm browser), each the median of several rounds. There
// is no CRIU counterpart to compare with; `crit x DIR mems` (one text view of the same
// directory) is timed beside it for scale.
//
//   npx tsx bench/report.ts [processes, default 100] [rounds, default 5]
//   (root; needs build/targets/cap_target (npm run build:test) and chromium (apt-get install chromium))
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { launchBrowser } from '../__test__/helpers/browser.js';

const root = join(import.meta.dirname, '..');
const CLI = join(root, 'dist', 'cli.js');
const TARGET = join(root, 'build', 'targets', 'cap_target');
const CRIT = '/opt/criu-ref/bin/crit';
const n = Number(process.argv[2] ?? 100);
const rounds = Number(process.argv[3] ?? 5);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const timed = (fn: () => void): number => {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
};

const work = mkdtempSync(join(tmpdir(), 'tsdump-bench-report-'));
const report = join(work, 'ready');
const pid = Number(
  execFileSync('/bin/sh', ['-c', 'setsid "$0" "$1" forktree "$2" </dev/null >/dev/null 2>&1 & echo $!', TARGET, report, String(n)], { encoding: 'utf8' }).trim(),
);
const browser = await launchBrowser();
try {
  for (const deadline = Date.now() + 30_000; ; await sleep(20)) {
    if (existsSync(report) && statSync(report).size >= 4096 && readFileSync(report).readBigUInt64LE(2048) >= BigInt(n)) break;
    if (Date.now() > deadline) throw new Error(`cap_target forktree ${n}: not ready`);
  }
  const dir = join(work, 'images');
  execFileSync(process.execPath, [CLI, 'dump', '-t', String(pid), '-D', dir, '-R', '--shell-job']);
  const html = join(work, 'report.html');
  const write: number[] = [];
  const crit: number[] = [];
  for (let i = 0; i < rounds; i++) {
    write.push(timed(() => execFileSync(process.execPath, [CLI, 'report', dir, '-o', html])));
    crit.push(timed(() => execFileSync(CRIT, ['x', dir, 'mems'], { stdio: 'ignore' })));
  }
  const load: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const page = await browser.open(`file://${html}`);
    if (page.log.errors.length) throw new Error(`console errors: ${page.log.errors.join('\n')}`);
    load.push(await page.evaluate<number>(`performance.getEntriesByType('navigation')[0].loadEventEnd`));
  }
  const blocks = readFileSync(html, 'utf8').match(/<g class="vma/g)?.length ?? 0;
  console.log(`report of ${n} processes: ${statSync(html).size} bytes, ${blocks} mapping blocks`);
  console.log(`tsdump report (wall, node start included): median ${median(write).toFixed(0)} ms; crit x DIR mems: ${median(crit).toFixed(0)} ms`);
  console.log(`chromium: load event after median ${median(load).toFixed(0)} ms (${rounds} rounds: ${load.map((x) => x.toFixed(0)).join(', ')} ms)`);
  console.log(`machine load average while measuring: ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
} finally {
  await browser.close();
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // gone
  }
  rmSync(work, { recursive: true, force: true });
}
