// Where one dump's time goes: the library's `dump()` of a fresh bench target (bench/dump.ts's
// shapes), with every native call timed from TypeScript (count, total, share of the dump) and
// every stage timed. Time outside native calls is the TypeScript side (image encoding, file
// writes, /proc reads done there, promise hops). Not a test.
//
//   npx tsx bench/profile.ts [procs100 | threads200 | ...] [--warm]   (--warm: one dump first)
import { spawnSync, execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const ROOT = resolve(import.meta.dirname, '..');
const SHAPES: Record<string, string[]> = {
  idle: ['procs', '1', '0'],
  procs10: ['procs', '10', '0'],
  procs20: ['procs', '20', '0'],
  procs100: ['procs', '100', '0'],
  procs500: ['procs', '500', '0'],
  threads10: ['threads', '10'],
  threads200: ['threads', '200'],
  threads1000: ['threads', '1000'],
  mem1g: ['procs', '1', '1024'],
};
const shape = process.argv[2] ?? 'procs100';
if (!SHAPES[shape]) throw new Error(`unknown shape ${shape}; known: ${Object.keys(SHAPES).join(', ')}`);

if (!process.env['TSDUMP_BENCH_REAPED']) {
  const r = spawnSync(join(ROOT, 'build/subreaper'), [process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, TSDUMP_BENCH_REAPED: '1' },
  });
  process.exit(r.status ?? 1);
}

const require = createRequire(import.meta.url);
const binding = require(join(ROOT, 'native/index.cjs')) as Record<string, unknown> & { Session: { prototype: Record<string, unknown> } };
const spent = new Map<string, { n: number; ms: number }>();
/** The visits' own timings (TaskVisitJob.facts' VisitTimingsInfo), summed. */
const visit = new Map<string, number>();
let inNative = 0;
const wrap = (owner: Record<string, unknown>, name: string) => {
  // a getter on a napi class's prototype throws when read there: only plain methods are wrapped
  const fn = Object.getOwnPropertyDescriptor(owner, name)?.value as unknown;
  if (typeof fn !== 'function' || name === 'constructor') return;
  owner[name] = function (this: unknown, ...args: unknown[]) {
    const t0 = performance.now();
    const done = () => {
      const s = spent.get(name) ?? { n: 0, ms: 0 };
      s.n++;
      s.ms += performance.now() - t0;
      spent.set(name, s);
      inNative--;
    };
    inNative++;
    try {
      const r = (fn as (...a: unknown[]) => unknown).apply(this, args);
      if (r instanceof Promise) {
        return r
          .then((v: unknown) => {
            const t = (v as { timings?: Record<string, number> } | undefined)?.timings;
            if (name === 'facts' && t) for (const [k, ns] of Object.entries(t)) visit.set(k, (visit.get(k) ?? 0) + ns / 1e6);
            return v;
          })
          .finally(done);
      }
      done();
      return r;
    } catch (e) {
      done();
      throw e;
    }
  };
};
// classes keep their statics (ImagesDir.open...): their prototypes' methods are timed, not the class
const isClass = (v: unknown): v is { prototype: Record<string, unknown> } => typeof v === 'function' && /^[A-Z]/.test(v.name);
for (const name of Object.keys(binding)) {
  const value = binding[name];
  if (isClass(value)) for (const method of Object.getOwnPropertyNames(value.prototype)) wrap(value.prototype, method);
  else wrap(binding, name);
}

const { dump } = (await import(join(ROOT, 'dist/index.js'))) as typeof import('../src/index.js');

async function target(): Promise<{ pid: number; ctl: string }> {
  const ctl = mkdtempSync('/tmp/tsdump-profile-ctl-');
  execFileSync('setsid', ['-f', join(ROOT, 'build/targets/bench_shape'), ctl, ...SHAPES[shape]!], { stdio: 'ignore' });
  while (!existsSync(join(ctl, 'ready'))) await sleep(20);
  return { pid: Number(/pid=(\d+)/.exec(readFileSync(join(ctl, 'ready'), 'utf8'))![1]), ctl };
}

async function once(): Promise<{ ms: number; stages: Map<string, number>; frozenMs: number }> {
  const t = await target();
  const dir = mkdtempSync('/dev/shm/tsdump-profile-');
  const stages = new Map<string, number>();
  let cur = '';
  let at = performance.now();
  const mark = (next: string) => {
    const now = performance.now();
    const key = cur.replace(/ \d+$/, ' N');
    stages.set(key, (stages.get(key) ?? 0) + now - at);
    cur = next;
    at = now;
  };
  const t0 = performance.now();
  try {
    const r = await dump({ pid: t.pid, imagesDir: dir, shellJob: true }, { stage: mark });
    mark('');
    return { ms: performance.now() - t0, stages, frozenMs: r.timings.frozenTime / 1000 };
  } finally {
    try {
      process.kill(-t.pid, 'SIGKILL');
    } catch {
      // killed by the dump
    }
    rmSync(dir, { recursive: true, force: true });
    rmSync(t.ctl, { recursive: true, force: true });
  }
}

if (process.argv.includes('--warm')) {
  await once();
  spent.clear();
  visit.clear();
}
const r = await once();
console.log(`${shape}: dump() ${r.ms.toFixed(1)} ms, frozen ${r.frozenMs.toFixed(1)} ms`);
console.log('stages:');
for (const [k, v] of [...r.stages].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`  ${v.toFixed(1).padStart(8)} ms  ${k || '(before the first stage)'}`);
console.log('native calls (time seen from TypeScript, queueing included):');
let total = 0;
for (const [k, v] of [...spent].sort((a, b) => b[1].ms - a[1].ms)) {
  total += v.ms;
  console.log(`  ${v.ms.toFixed(1).padStart(8)} ms  ${String(v.n).padStart(5)} x  ${(v.ms / v.n).toFixed(3).padStart(8)} ms  ${k}`);
}
// a visit's threads() and facts() are awaited while the main thread writes images: their sum
// overlaps the rest, and "elsewhere" is then a lower bound
console.log(`  ${total.toFixed(1).padStart(8)} ms  in native calls; ${Math.max(0, r.ms - total).toFixed(1)} ms or more elsewhere (TypeScript, fs, promise hops)`);
if (visit.size) {
  console.log('inside the visits (the tracer thread):');
  for (const [k, ms] of visit) console.log(`  ${ms.toFixed(1).padStart(8)} ms  ${k.replace(/Ns$/, '')}`);
}
if (inNative) console.log(`(${inNative} native calls still open)`);
