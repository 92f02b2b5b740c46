// Runs inside the arm64 guest (started by scripts/test-arm64.sh, compiled there with
// __test__/arm64/tsconfig.json): the catalogue subjects that make sense on arm64, each dumped by
// the installed arm64 tsdump (the packed tarballs, as a user installs them) and restored by the
// guest's own criu; the restored program verifies itself. Prints one line per subject and then
// "N passed, M failed"; exits non-zero if anything failed.
//
//   node __test__/arm64/guest.js [--core-tests EXE] [--pac] [NAME...]
//
// --core-tests runs tsdump-core's unit tests (built for aarch64) first and counts each of them.
// --pac (on a CPU with pointer authentication): checks that tsdump records every thread's PAC
// keys as the guest's criu does, instead of round trips.
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { join, resolve } from 'node:path';
import type { ExecutionContext } from 'ava';
import { catalogue, liveCheck, roundTrip, type CatalogueEntry, type Subject } from '../helpers/catalogue.js';
import { criuDump, makeWorkDir } from '../helpers/criu.js';
import { killTree, logTail, REPO_ROOT, requestVerify, spawnWithProtocol, startTarget } from '../helpers/target.js';

/** The installed package's CLI (npm install of the packed tarballs next to this tree). */
const CLI = resolve(REPO_ROOT, 'node_modules/tsdump/dist/cli.js');
/** Generous: the guest is an emulated CPU (start-up ~15x, compute 3-5x slower than the host). */
const SUBJECT_TIMEOUT_MS = 240_000;

/**
 * Catalogue entries not run here, and why. Everything else in the catalogue runs.
 */
const NOT_ON_ARM64: Readonly<Record<string, string>> = {
  t_seccomp: 'its filters name x86_64 syscall numbers (getpgrp has none on arm64)',
  'redis-server': 'no redis-server in the guest image',
  'redis-server-unix': 'no redis-server in the guest image',
  'node-http': "Debian's arm64 node maps io_uring at start-up, which neither tsdump nor criu dumps",
  'node-http-unix': "Debian's arm64 node maps io_uring at start-up, which neither tsdump nor criu dumps",
};

/**
 * Where the guest's criu 4.1.1 restores a subject wrongly from its own dump too. The subject is
 * then round-tripped by both dumpers and passes when tsdump's images give exactly the verdict
 * criu's own give, and that verdict is the pinned symptom.
 */
const CRIU_GAPS: Readonly<Record<string, { match: RegExp; reason: string }>> = {
  t_memory: {
    match: /^FAIL: untouched pages resident after restore: got \d+ \(0x[0-9a-f]+\), want 0 \(0x0\)$/,
    reason: "criu 4.1.1's restore on arm64 leaves some never-touched pages of a private region resident",
  },
};

/** What tsdump must refuse, as in __test__/dump.test.ts: the subject runs on. */
const REFUSED: Readonly<Record<string, { code: string; match: RegExp }>> = {
  t_eventfd_semaphore: { code: 'UNSUPPORTED_FD', match: /cannot dump EFD_SEMAPHORE eventfds/ },
  t_inotify: { code: 'UNSUPPORTED_FD', match: /cannot dump inotify descriptors with unread events/ },
};

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

function tsdump(args: readonly string[]): Promise<CliResult> {
  return new Promise((res) =>
    execFile(process.execPath, [CLI, ...args], { timeout: SUBJECT_TIMEOUT_MS, maxBuffer: 1 << 26 }, (err, stdout, stderr) =>
      res({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

async function tsdumpDump(pid: number, imagesDir: string, extraArgs: readonly string[]): Promise<{ code?: string }> {
  const r = await tsdump(['dump', '-t', String(pid), '-D', imagesDir, '--shell-job', '--json', ...extraArgs]);
  if (r.code !== 0) {
    const code = /"code":\s*"([A-Z_]+)"/.exec(r.stdout)?.[1];
    throw Object.assign(new Error(`tsdump dump exited ${r.code}: ${r.stderr.trim()}`), { code });
  }
  return {};
}

/** The minimum of ava's ExecutionContext the catalogue helpers use: teardowns, passed, log. */
class Context {
  passed = false;
  readonly logs: string[] = [];
  private readonly teardowns: (() => unknown)[] = [];
  teardown(fn: () => unknown): void {
    this.teardowns.push(fn);
  }
  log(...values: unknown[]): void {
    this.logs.push(values.map(String).join(' '));
  }
  async finish(): Promise<void> {
    for (const fn of this.teardowns.reverse()) await Promise.resolve(fn()).catch(() => undefined);
  }
  get ava(): ExecutionContext {
    return this as unknown as ExecutionContext;
  }
}

/** A Python TCP key-value service (__test__/programs/py_tcp_service.py), checked from outside too. */
const pythonTcp: CatalogueEntry = {
  name: 'python-tcp-service',
  verifies: 'python3 serving a 20 000-key store on a listening TCP socket with a thread per connection; after restore the store digest matches, GET/SET/STATS answer over a new connection from the same pid',
  reference: { expect: 'pass' },
  criuCanDump: true,
  async start(workDir: string): Promise<Subject> {
    const ctl = join(workDir, 'ctl-pytcp');
    await mkdir(ctl, { mode: 0o700 });
    const program = join(REPO_ROOT, '__test__/programs/py_tcp_service.py');
    const target = await spawnWithProtocol('python-tcp-service', '/usr/bin/python3', [program, ctl], ctl, 60_000);
    const port = Number(target.info.port);
    const ask = (lines: string[]) =>
      new Promise<string[]>((res, rej) => {
        const s = createConnection({ host: '127.0.0.1', port });
        let data = '';
        s.setTimeout(20_000, () => s.destroy(new Error('TCP timeout')));
        s.on('connect', () => s.write(lines.map((l) => `${l}\n`).join('')));
        s.on('data', (b) => {
          data += b.toString();
          if (data.split('\n').length > lines.length) s.end();
        });
        s.on('close', () => res(data.trim().split('\n')));
        s.on('error', rej);
      });
    return {
      name: 'python-tcp-service',
      pid: target.pid,
      pids: target.pids,
      marker: ctl,
      async verify() {
        const own = await requestVerify(target, { timeoutMs: 60_000 });
        const replies = await ask(['GET key123', 'SET after restore', 'GET after', 'STATS']).catch((e: unknown) => [`error ${String(e)}`]);
        const want = ['v123-', 'OK', 'restore', `keys=20001 hits=`];
        const bad = replies.length !== 4 || !replies[0]!.startsWith(want[0]!) || replies[1] !== 'OK' || replies[2] !== 'restore' || !replies[3]!.includes(`pid=${target.pid}`);
        if (bad) return `FAIL: over TCP ${JSON.stringify(replies)}${own === 'PASS' ? '' : `; ${own}`}`;
        return own;
      },
      kill: () => killTree(target.pid, ctl, target.pids),
      describe: () => `--- python log ---\n${logTail(target)}`,
    };
  },
};

async function roundTripEntry(entry: CatalogueEntry): Promise<string> {
  const ctx = new Context();
  try {
    const refused = REFUSED[entry.name];
    if (refused) {
      const verdict = await liveCheck(ctx.ava, entry, async (subject, workDir) => {
        const imagesDir = join(workDir, 'images');
        const err = (await tsdumpDump(subject.pid, imagesDir, entry.dumpArgs ?? []).then(
          () => undefined,
          (e: unknown) => e,
        )) as (Error & { code?: string }) | undefined;
        if (!err) throw new Error('tsdump dumped a subject it must refuse');
        if (err.code !== refused.code || !refused.match.test(err.message)) throw new Error(`wrong refusal: ${err.code}: ${err.message}`);
        if (existsSync(join(imagesDir, 'inventory.img'))) throw new Error('a refused dump left inventory.img');
      });
      ctx.passed = verdict === 'PASS';
      return verdict;
    }
    const rt = await roundTrip(ctx.ava, entry, tsdumpDump);
    const gap = CRIU_GAPS[entry.name];
    if (gap && rt.result !== 'PASS') {
      await rt.subject.kill();
      const control = await roundTrip(ctx.ava, entry, (pid, dir, extra) => criuDump(pid, dir, extra));
      const same = control.result === rt.result && gap.match.test(rt.result);
      ctx.passed = same;
      return same ? `PASS (${gap.reason}: criu's own images restore the same way)` : `tsdump: ${rt.result}; criu's own: ${control.result}`;
    }
    ctx.passed = rt.result === 'PASS';
    return rt.result === 'PASS' ? 'PASS' : `${rt.result}\n${rt.subject.describe()}`;
  } finally {
    await ctx.finish();
    if (!ctx.passed && ctx.logs.length) console.log(ctx.logs.join('\n'));
  }
}

/**
 * Every thread's pac_keys from a dump's core images, by tid, as the text `tsdump show` prints
 * (crit's JSON; compared as text, since the 64-bit key halves do not survive JSON.parse).
 */
async function pacKeys(dir: string, tids: readonly number[]): Promise<Map<number, string>> {
  const out = new Map<number, string>();
  for (const tid of tids) {
    const r = await tsdump(['show', join(dir, `core-${tid}.img`)]);
    if (r.code !== 0) throw new Error(`tsdump show core-${tid}.img: ${r.stderr}`);
    const at = r.stdout.indexOf('"pac_keys"');
    let end = r.stdout.indexOf('{', at);
    for (let depth = 0; at >= 0 && end < r.stdout.length; end++) {
      if (r.stdout[end] === '{') depth++;
      if (r.stdout[end] === '}' && --depth === 0) break;
    }
    out.set(tid, at < 0 ? '' : r.stdout.slice(at, end + 1).replace(/\s+/g, ''));
  }
  return out;
}

/**
 * With pointer authentication on: t_threads dumped with --leave-running by tsdump and then by
 * the guest's criu records the same address and generic keys for every thread, and they are
 * real keys (not zero).
 */
async function pacCheck(): Promise<string> {
  const ctx = new Context();
  try {
    const dir = await makeWorkDir(ctx.ava);
    const target = await startTarget('t_threads', { dir });
    ctx.teardown(() => killTree(target.pid, target.ctl, target.pids));
    const hwcap = await readFile('/proc/cpuinfo', 'utf8');
    if (!/\bpaca\b/.test(hwcap)) return 'FAIL: this CPU has no pointer authentication (run with ARM64_VM_CPU=max,pauth-impdef=on)';
    const tids = readdirSync(`/proc/${target.pid}/task`).map(Number).sort((a, b) => a - b);
    const ours = join(dir, 'tsdump');
    const theirs = join(dir, 'criu');
    await tsdumpDump(target.pid, ours, ['--leave-running']);
    await criuDump(target.pid, theirs, ['--leave-running']);
    const [a, b] = [await pacKeys(ours, tids), await pacKeys(theirs, tids)];
    const problems: string[] = [];
    for (const tid of tids) {
      const [x, y] = [a.get(tid) ?? '', b.get(tid) ?? ''];
      if (x !== y) problems.push(`tid ${tid}: tsdump ${x} criu ${y}`);
      // both kinds of key, and real ones: some key half is not zero
      if (!x.includes('pac_address_keys') || !x.includes('pac_generic_keys') || !/key_(lo|hi)":[1-9]/.test(x)) {
        problems.push(`tid ${tid}: no keys recorded: ${x}`);
      }
    }
    const verdict = await requestVerify(target, { timeoutMs: 60_000 });
    if (verdict !== 'PASS') problems.push(`after both dumps: ${verdict}`);
    ctx.passed = problems.length === 0;
    return ctx.passed ? 'PASS' : `FAIL: ${problems.join('; ')}`;
  } finally {
    await ctx.finish();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what}: no verdict after ${ms / 1000} s`)), ms)));
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** tsdump-core's unit test binary: one verdict per test, as cargo's harness prints them. */
function coreTests(exe: string): Promise<{ passed: number; failed: number }> {
  return new Promise((res) =>
    execFile(exe, ['--test-threads=2'], { timeout: SUBJECT_TIMEOUT_MS, maxBuffer: 1 << 26 }, (err, stdout, stderr) => {
      const lines = stdout.split('\n');
      const verdicts = lines.filter((l) => /^test \S+ \.\.\. (ok|FAILED|ignored)$/.test(l));
      for (const l of verdicts) if (!l.endsWith(' ok')) console.log(`FAIL core ${l}`);
      const passed = verdicts.filter((l) => l.endsWith(' ok')).length;
      let failed = verdicts.length - passed;
      if (err && failed === 0) {
        console.log(`FAIL core tests: ${err.message}\n${stdout.slice(-4000)}${stderr.slice(-2000)}`);
        failed = 1;
      } else if (failed) {
        console.log(stdout.slice(stdout.indexOf('failures:')));
      }
      console.log(`${failed ? 'FAIL' : 'ok  '} core: ${passed} unit tests passed, ${failed} failed`);
      res({ passed, failed });
    }),
  );
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const pac = args.includes('--pac');
  const at = args.indexOf('--core-tests');
  const coreExe = at >= 0 ? args.splice(at, 2)[1] : undefined;
  const names = args.filter((a) => !a.startsWith('--'));
  const all = [...catalogue.filter((e) => !(e.name in NOT_ON_ARM64)), pythonTcp];
  const unknown = names.filter((n) => !all.some((e) => e.name === n) && !(n in NOT_ON_ARM64));
  if (unknown.length) throw new Error(`unknown subjects: ${unknown.join(', ')}`);
  const skipped = names.filter((n) => n in NOT_ON_ARM64);
  for (const n of skipped) console.log(`skip ${n}: ${NOT_ON_ARM64[n]}`);
  const chosen = names.length ? all.filter((e) => names.includes(e.name)) : all;
  const jobs: [string, () => Promise<string>][] = pac ? [['pac-keys', pacCheck]] : chosen.map((e) => [e.name, () => roundTripEntry(e)]);
  let passed = 0;
  let failed = 0;
  if (coreExe && !pac) ({ passed, failed } = await coreTests(coreExe));
  for (const [name, job] of jobs) {
    const t0 = Date.now();
    const verdict = await withTimeout(job(), SUBJECT_TIMEOUT_MS, name).catch((e: unknown) => `FAIL: ${e instanceof Error ? e.message : String(e)}`);
    const secs = ((Date.now() - t0) / 1000).toFixed(1);
    if (verdict.startsWith('PASS')) {
      passed++;
      console.log(`ok   ${name} (${secs} s)${verdict.slice(4)}`);
    } else {
      failed++;
      console.log(`FAIL ${name} (${secs} s): ${verdict}`);
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed > 0 ? 1 : 0;
}

await main();
