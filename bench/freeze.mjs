#!/usr/bin/env node
// Freeze-time benchmark (not a test): how long tsdump takes to seize a 100-process tree and a
// 200-thread process, next to the reference CRIU's `freezing_time` (from `crit decode` of the
// stats-dump written by `criu dump --leave-running`) on the same kind of target in the same run.
//
//   sudo node bench/freeze.mjs [rounds]      (needs build/targets/cap_target and the .node)
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const root = join(import.meta.dirname, '..');
const require = createRequire(import.meta.url);
const { Session } = require(join(root, 'native', 'index.cjs'));
const TARGET = join(root, 'build', 'targets', 'cap_target');
const CRIU = '/opt/criu-ref/bin/criu';
const CRIT = '/opt/criu-ref/bin/crit';
const rounds = Number(process.argv[2] ?? 5);

async function start(mode, n, readyAt) {
  const dir = mkdtempSync(join(tmpdir(), 'tsdump-bench-'));
  const report = join(dir, 'report');
  const pid = Number(
    execFileSync('/bin/sh', ['-c', 'setsid "$0" "$1" "$2" "$3" </dev/null >/dev/null 2>&1 & echo $!', TARGET, report, mode, String(n)], {
      encoding: 'utf8',
    }).trim(),
  );
  for (const deadline = Date.now() + 20_000; ; await sleep(20)) {
    if (existsSync(report) && readFileSync(report).length >= 4096 && readFileSync(report).readBigUInt64LE(2048) >= readyAt) break;
    if (Date.now() > deadline) throw new Error(`${mode} ${n}: not ready`);
  }
  return {
    pid,
    stop() {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // gone
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function tsdumpFreeze(pid) {
  const s = new Session();
  const us = [];
  let tasks = 0;
  try {
    for (let i = 0; i < rounds; i++) {
      const t0 = process.hrtime.bigint();
      const tree = await s.seizeTree(pid);
      const wall = Number(process.hrtime.bigint() - t0) / 1000;
      tasks = tree.processes.reduce((n, p) => n + p.threads.length, 0);
      await s.releaseTree({ mode: 'resume' });
      us.push({ seize: tree.seizeTimeUs, wall });
      await sleep(50);
    }
  } finally {
    await s.releaseTree({ mode: 'resume' }).catch(() => undefined);
    s.close();
  }
  return { tasks, seizeUs: median(us.map((x) => x.seize)), wallUs: median(us.map((x) => x.wall)) };
}

function criuFreeze(pid) {
  if (!existsSync(CRIU)) return { error: 'reference CRIU not installed' };
  const out = [];
  for (let i = 0; i < Math.min(rounds, 3); i++) {
    const dir = mkdtempSync(join(tmpdir(), 'tsdump-bench-criu-'));
    try {
      execFileSync(CRIU, ['dump', '-t', String(pid), '-D', dir, '--leave-running', '-o', 'dump.log', '-v2'], { stdio: 'ignore' });
      const stats = JSON.parse(execFileSync(CRIT, ['decode', '-i', join(dir, 'stats-dump')], { encoding: 'utf8' }));
      out.push(Number(stats.entries[0].dump.freezing_time));
    } catch (e) {
      const log = existsSync(join(dir, 'dump.log')) ? readFileSync(join(dir, 'dump.log'), 'utf8').split('\n').filter((l) => /Error/.test(l)).slice(-3) : [];
      return { error: `criu dump failed: ${e.message.split('\n')[0]} ${log.join(' | ')}` };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return { freezingUs: median(out) };
}

const cases = [
  { name: '100-process tree', mode: 'forktree', n: 100, readyAt: 100n },
  { name: '200-thread process', mode: 'threads', n: 200, readyAt: 1n },
];
console.log(`freeze benchmark, median of ${rounds} rounds (CRIU: of up to 3), microseconds`);
for (const c of cases) {
  const tg = await start(c.mode, c.n, c.readyAt);
  try {
    const ts = await tsdumpFreeze(tg.pid);
    const criu = criuFreeze(tg.pid);
    console.log(
      `${c.name.padEnd(20)} tasks=${String(ts.tasks).padStart(4)}  tsdump seize=${ts.seizeUs.toFixed(0).padStart(7)}  (call ${ts.wallUs.toFixed(0)})  ` +
        (criu.error ? `criu: ${criu.error}` : `criu freezing_time=${String(criu.freezingUs).padStart(7)}`),
    );
  } finally {
    tg.stop();
  }
}
