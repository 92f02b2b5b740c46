// The application's own latency around a dump (issue 14): redis-server holding ~MIB MiB of 4 KiB
// values answers a client outside the dumped tree that keeps SETting random keys, one request at a
// time (so every request is timed, and the pages it dirties must be copied on write while a
// snapshot lives), while `tsdump dump -R --tcp-established` or the same with `--snapshot` runs,
// alternating. Prints p50 / p99 / max of the requests before, during (dump start to exit) and
// after each dump. The client talks TCP over loopback in a network namespace of the bench's own
// (`unshare -n`): a unix-socket client would be an external stream peer, which a dump refuses,
// and the TCP connection's lock (iptables) stays inside that namespace. Not a test: compare the
// two modes within one run.
//
//   npm run build && bash scripts/build-test-programs.sh && npx tsx bench/snapshot-latency.ts [--mib 1024] [--rounds 3]
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'dist/cli.js');
const SUBREAPER = join(ROOT, 'build/subreaper');
const argv = process.argv.slice(2);
const opt = (name: string, dflt: number): number => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
};
const mib = opt('mib', 1024);
const rounds = opt('rounds', 3);
const PORT = 6399;
const { readImage } = (await import(join(ROOT, 'dist/images/index.js'))) as typeof import('../src/images/index.js');

/** tsdump's own frozen time (its stats-dump), ms. */
async function frozenMs(images: string): Promise<number> {
  const img = await readImage(join(images, 'stats-dump'));
  return Number((img.entries[0]!.message as unknown as { dump: { frozenTime: number } }).dump.frozenTime) / 1000;
}

// A network namespace of our own (loopback up), under the subreaper that reaps the snapshot holders.
if (!process.env['TSDUMP_BENCH_REAPED']) {
  const r = spawnSync('unshare', ['-n', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh', SUBREAPER, process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, TSDUMP_BENCH_REAPED: '1' },
  });
  process.exit(r.status ?? 1);
}

const dir = mkdtempSync('/tmp/tsdump-bench-redis-');
const sock = join(dir, 'redis.sock');
execFileSync('setsid', ['-f', 'redis-server', '--port', String(PORT), '--bind', '127.0.0.1', '--unixsocket', sock, '--unixsocketperm', '700', '--save', '', '--appendonly', 'no', '--dir', dir, '--logfile', join(dir, 'log')], {
  stdio: 'ignore',
});
for (const deadline = Date.now() + 10_000; !existsSync(sock); await sleep(20)) if (Date.now() > deadline) throw new Error('redis did not start');
const pid = Number(/process_id:(\d+)/.exec(execFileSync('redis-cli', ['-s', sock, 'info', 'server'], { encoding: 'utf8' }))![1]);
const keys = Math.round((mib * 1024) / 4);
execFileSync('redis-benchmark', ['-s', sock, '-t', 'set', '-n', String(keys), '-r', String(keys), '-d', '4096', '-q', '-P', '32'], { stdio: 'ignore' });
const used = /used_memory_human:(\S+)/.exec(execFileSync('redis-cli', ['-s', sock, 'info', 'memory'], { encoding: 'utf8' }))![1];

/** One client sending SETs back to back: each request's latency (ms) with its start time. */
class Writer {
  readonly samples: { at: number; ms: number }[] = [];
  private stop = false;
  private readonly conn: Socket = createConnection({ host: '127.0.0.1', port: PORT });
  private readonly value = 'x'.repeat(4096);
  async run(): Promise<void> {
    await new Promise((res) => this.conn.once('connect', res));
    while (!this.stop) {
      const key = `key:${String(Math.floor(Math.random() * keys)).padStart(12, '0')}`;
      const cmd = `*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$${this.value.length}\r\n${this.value}\r\n`;
      const t0 = performance.now();
      await new Promise<void>((res) => {
        this.conn.once('data', () => res());
        this.conn.write(cmd);
      });
      this.samples.push({ at: t0, ms: performance.now() - t0 });
    }
    this.conn.destroy();
  }
  finish(): void {
    this.stop = true;
  }
}

const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] ?? NaN;
const fmt = (xs: number[]): string =>
  xs.length ? `p50 ${pct(xs, 50).toFixed(2)}  p99 ${pct(xs, 99).toFixed(2)}  max ${Math.max(...xs).toFixed(1)} ms  (${xs.length} requests)` : '-';

console.log(`bench/snapshot-latency.ts: redis-server pid ${pid}, ${keys} keys of 4 KiB (used_memory ${used}), ${rounds} rounds`);
/** Per mode, per round: wall and frozen ms, the snapshot's extra MiB, the latencies during the dump. */
const runs = new Map<string, { wall: number; frozen: number; extraMiB: number; p50: number; p99: number; max: number }[]>();
try {
  for (let r = 0; r < rounds; r++) {
    for (const mode of r % 2 ? ['--snapshot', ''] : ['', '--snapshot']) {
      const name = mode || 'frozen copy';
      const images = mkdtempSync(join('/dev/shm', 'tsdump-bench-redis-img-'));
      const w = new Writer();
      const running = w.run();
      await sleep(1000);
      const t0 = performance.now();
      const args = [CLI, 'dump', '-t', String(pid), '-D', images, '-R', '--tcp-established', '--json', ...(mode ? [mode] : [])];
      const dump = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      dump.stdout.on('data', (b: Buffer) => (out += b.toString()));
      dump.stderr.on('data', (b: Buffer) => (err += b.toString()));
      const code = await new Promise<number | null>((res) => dump.once('close', res));
      const t1 = performance.now();
      await sleep(1000);
      w.finish();
      await running;
      const frozen = code === 0 ? await frozenMs(images) : NaN;
      const extraMiB = code === 0 ? ((JSON.parse(out) as { snapshot?: { extraBytes: number } }).snapshot?.extraBytes ?? 0) / 2 ** 20 : NaN;
      rmSync(images, { recursive: true, force: true });
      const window = (lo: number, hi: number) => w.samples.filter((s) => s.at >= lo && s.at < hi).map((s) => s.ms);
      const during = window(t0, t1);
      if (code === 0) runs.set(name, [...(runs.get(name) ?? []), { wall: t1 - t0, frozen, extraMiB, p50: pct(during, 50), p99: pct(during, 99), max: Math.max(...during) }]);
      const extra = mode ? `, extra ${extraMiB.toFixed(0)} MiB` : '';
      console.log(`${name.padEnd(12)} exit ${code}, ${(t1 - t0).toFixed(0)} ms, frozen ${frozen.toFixed(0)} ms${extra}${code ? `: ${err.trim()}` : ''}`);
      console.log(`    before ${fmt(window(t0 - 1000, t0))}`);
      console.log(`    during ${fmt(during)}`);
      console.log(`    after  ${fmt(window(t1, Infinity))}`);
    }
  }
} finally {
  process.kill(pid, 'SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}
const median = (xs: number[]): number => pct(xs, 50);
console.log(`medians over the rounds (during = dump start to exit):`);
for (const [name, rs] of runs) {
  const m = (k: keyof (typeof rs)[number]) => median(rs.map((x) => x[k]));
  console.log(
    `${name.padEnd(12)} wall ${m('wall').toFixed(0)} ms, frozen ${m('frozen').toFixed(0)} ms, during p50 ${m('p50').toFixed(2)} p99 ${m('p99').toFixed(2)} max ${m('max').toFixed(0)} ms` +
      (name === 'frozen copy' ? '' : `, extra ${m('extraMiB').toFixed(0)} MiB`),
  );
}
