// Runs inside the arm64 guest (started by scripts/test-arm64.sh, compiled there with
// __test__/arm64/tsconfig.json): the catalogue subjects that make sense on arm64, each dumped by
// the installed arm64 tsdump (the packed tarballs, as a user installs them) and restored by the
// guest's own criu; the restored program verifies itself. Prints one line per subject and then
// "N passed, M failed"; exits non-zero if anything failed.
//
//   node __test__/arm64/guest.js [--core-tests EXE] [--pac] [all | NAME...]
//
// With no name it runs CI_SUBSET (what `npm test` runs); `all` runs every subject.
// --core-tests runs tsdump-core's unit tests (built for aarch64) first and counts each of them.
// --pac (on a CPU with pointer authentication): checks that tsdump records every thread's PAC
// keys as the guest's criu does, instead of round trips.
import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ExecutionContext } from 'ava';
import { equals, toJsonString } from '@bufbuild/protobuf';
// the reader alone: the images index also brings the images directory, which loads the native core
import { readImage } from '../../src/images/reader.js';
import type { core_entry } from '../../src/images/gen/core_pb.js';
import { pac_keysSchema, type pac_keys } from '../../src/images/gen/core-aarch64_pb.js';
import { catalogue, liveCheck, roundTrip, type CatalogueEntry, type Subject } from '../helpers/catalogue.js';
import { criuDump, criuRestore, makeWorkDir } from '../helpers/criu.js';
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
  'go-http-mptcp': 'the Go target is built for the host only',
  postgresql: 'no postgresql in the guest image',
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

/**
 * What `npm test` runs in the guest, chosen to fit CI's time: the twelve self-verifying programs
 * of issue 13 (memory, threads, fork tree, pipes, files, signals, timers, mappings, credentials,
 * unix sockets, eventfds, counter), a Python TCP service as a user would dump one, the refusal
 * of a 32-bit task, and a live snapshot (`dump -R --snapshot`) against its torn control.
 */
const CI_SUBSET: readonly string[] = [
  't_memory', 't_threads', 't_forktree', 't_pipes', 't_files', 't_signals', 't_timers', 't_mappings',
  't_credentials', 't_unix_sockets', 't_eventfds', 't_counter', 'python-tcp-service', 'compat32', 'snapshot',
];

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

function tsdump(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((res) =>
    execFile(process.execPath, [CLI, ...args], { timeout: SUBJECT_TIMEOUT_MS, maxBuffer: 1 << 26, env: { ...process.env, ...env } }, (err, stdout, stderr) =>
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

/**
 * A minimal static AArch32 executable (ELF32, EM_ARM, EABI5): `loop: mov r7, #29; svc #0;
 * b loop`, i.e. pause() forever. Written here, no 32-bit toolchain needed.
 */
function aarch32PauseElf(): Buffer {
  const code = [0xe3a0701d, 0xef000000, 0xeafffffc];
  const base = 0x10000;
  const size = 52 + 32 + code.length * 4;
  const b = Buffer.alloc(size);
  b.set([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1], 0); // ELFCLASS32, little-endian, version 1
  b.writeUInt16LE(2, 16); // ET_EXEC
  b.writeUInt16LE(40, 18); // EM_ARM
  b.writeUInt32LE(1, 20);
  b.writeUInt32LE(base + 84, 24); // entry: right after the headers
  b.writeUInt32LE(52, 28); // program headers
  b.writeUInt32LE(0x05000000, 36); // EABI version 5
  b.writeUInt16LE(52, 40);
  b.writeUInt16LE(32, 42);
  b.writeUInt16LE(1, 44);
  // PT_LOAD of the whole file, R+X
  for (const [off, v] of [[0, 1], [4, 0], [8, base], [12, base], [16, size], [20, size], [24, 5], [28, 0x1000]] as const) b.writeUInt32LE(v, 52 + off);
  code.forEach((insn, i) => b.writeUInt32LE(insn, 84 + i * 4));
  return b;
}

/** A 32-bit (AArch32) task is refused by name, and left running as it was. */
async function compatRefused(): Promise<string> {
  const ctx = new Context();
  try {
    const dir = await makeWorkDir(ctx.ava);
    const exe = join(dir, 'pause32');
    await writeFile(exe, aarch32PauseElf(), { mode: 0o755 });
    const child = spawn(exe, [], { detached: true, stdio: 'ignore' });
    const started = await new Promise<Error | undefined>((res) => {
      child.once('spawn', () => res(undefined));
      child.once('error', res);
    });
    if (started) return `FAIL: this CPU runs no AArch32 code (${started.message})`;
    const pid = child.pid!;
    ctx.teardown(() => killTree(pid, dir));
    const state = () => readFileSync(`/proc/${pid}/status`, 'utf8').match(/^(State|TracerPid):.*$/gm)?.join(' ');
    for (const deadline = Date.now() + 30_000; !/State:\s+S/.test(state() ?? ''); await sleep(50)) {
      if (Date.now() > deadline) return `FAIL: the AArch32 task never slept: ${state()}`;
    }
    const before = state();
    const err = (await tsdumpDump(pid, join(dir, 'images'), []).then(
      () => undefined,
      (e: unknown) => e,
    )) as (Error & { code?: string }) | undefined;
    const problems: string[] = [];
    if (!err) problems.push('tsdump dumped a 32-bit task');
    else if (err.code !== 'UNSUPPORTED' || !/a 32-bit \(compat\) task; tsdump dumps 64-bit tasks only/.test(err.message)) problems.push(`refused as ${err.code}: ${err.message}`);
    if (existsSync(join(dir, 'images', 'inventory.img'))) problems.push('a refused dump left inventory.img');
    await sleep(200);
    if (state() !== before) problems.push(`task now ${state()}, was ${before}`);
    ctx.passed = problems.length === 0;
    return ctx.passed ? 'PASS' : `FAIL: ${problems.join('; ')}`;
  } finally {
    await ctx.finish();
  }
}

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
 * `dump -R --snapshot` (issue 14) on arm64: two s_writer processes, rewriting their memory without
 * pause, are released before their pages are copied from a snapshot the resident parasite forked
 * (`snapshot.held` 2: no fallback to a frozen copy); restored by the guest's criu, their memory
 * holds one instant (s_writer's generation check). The same dump made torn
 * (TSDUMP_TEST_TORN_SNAPSHOT=1, test only: the live memory read after the release, no snapshot)
 * must fail that check, or the PASS would prove nothing.
 */
async function snapshotCheck(): Promise<string> {
  const once = async (torn: boolean): Promise<string> => {
    const ctx = new Context();
    try {
      const dir = await makeWorkDir(ctx.ava);
      const target = await startTarget('s_writer', { dir, args: ['16', '2'], timeoutMs: 120_000 });
      ctx.teardown(() => killTree(target.pid, target.ctl, target.pids));
      const images = join(dir, 'images');
      const r = await tsdump(['dump', '-t', String(target.pid), '-D', images, '-R', '--snapshot', '--shell-job', '--json'], torn ? { TSDUMP_TEST_TORN_SNAPSHOT: '1' } : {});
      if (r.code !== 0) return `FAIL: tsdump dump --snapshot exited ${r.code}: ${r.stderr.trim()}`;
      const held = (JSON.parse(r.stdout) as { snapshot?: { held: number } }).snapshot?.held;
      if (!torn && held !== 2) return `FAIL: ${held ?? 0} of 2 processes had a snapshot: ${r.stderr.trim()}`;
      await killTree(target.pid, target.ctl, target.pids);
      await criuRestore(images);
      return await requestVerify(target, { timeoutMs: 120_000 });
    } finally {
      await ctx.finish();
    }
  };
  const verdict = await once(false);
  if (verdict !== 'PASS') return verdict;
  const torn = await once(true);
  return torn.startsWith('FAIL') ? 'PASS' : `FAIL: a torn copy passed the same check (${torn}): it proves nothing here`;
}

/** Every thread's pac_keys from a dump's core images, by tid, read by the project's image reader. */
async function pacKeys(dir: string, tids: readonly number[]): Promise<Map<number, pac_keys | undefined>> {
  const out = new Map<number, pac_keys | undefined>();
  for (const tid of tids) {
    const image = await readImage(join(dir, `core-${tid}.img`));
    out.set(tid, (image.entries[0]?.message as core_entry | undefined)?.tiAarch64?.pacKeys);
  }
  return out;
}

/**
 * With pointer authentication on: t_threads dumped with --leave-running by tsdump and then by
 * the guest's criu records the same address and generic keys (and enabled-keys mask) for every
 * thread, and they are real keys (not zero); the process runs on after both dumps.
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
    const text = (k: pac_keys | undefined) => (k ? toJsonString(pac_keysSchema, k) : 'none');
    for (const tid of tids) {
      const [x, y] = [a.get(tid), b.get(tid)];
      if (!x || !y || !equals(pac_keysSchema, x, y)) problems.push(`tid ${tid}: tsdump ${text(x)} criu ${text(y)}`);
      // both kinds of key, and real ones: some half of some key is not zero
      const k = x?.pacAddressKeys;
      const halves = k ? [k.apiakeyLo, k.apiakeyHi, k.apibkeyLo, k.apibkeyHi, k.apdakeyLo, k.apdakeyHi, k.apdbkeyLo, k.apdbkeyHi] : [];
      if (!x?.pacGenericKeys || !halves.some((h) => h !== 0n)) problems.push(`tid ${tid}: no keys recorded: ${text(x)}`);
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
  const given = args.filter((a) => !a.startsWith('--'));
  const names = given.length === 0 ? CI_SUBSET : given.includes('all') ? [] : given;
  type Job = [string, () => Promise<string>];
  const subjects = [...catalogue.filter((e) => !(e.name in NOT_ON_ARM64)), pythonTcp];
  const checks: Job[] = [
    ['compat32', compatRefused],
    ['snapshot', snapshotCheck],
  ];
  const known = [...subjects.map((e) => e.name), ...checks.map(([n]) => n)];
  const unknown = names.filter((n) => !known.includes(n) && !(n in NOT_ON_ARM64));
  if (unknown.length) throw new Error(`unknown subjects: ${unknown.join(', ')}`);
  for (const n of names.filter((x) => x in NOT_ON_ARM64)) console.log(`skip ${n}: ${NOT_ON_ARM64[n]}`);
  const wanted = (n: string) => given.includes('all') || names.includes(n);
  const jobs: Job[] = pac
    ? [['pac-keys', pacCheck]]
    : [...subjects.filter((e) => wanted(e.name)).map((e): Job => [e.name, () => roundTripEntry(e)]), ...checks.filter(([n]) => wanted(n))];
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
  console.log(`arm64: ${passed} passed, ${failed} failed`);
  process.exitCode = failed > 0 ? 1 : 0;
}

await main();
