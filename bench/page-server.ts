// Page-server throughput on loopback: tsdump's receiver and client against the reference CRIU's,
// in the same run. Not a test: prints numbers and ratios.
//
//   npx tsx bench/page-server.ts [sizes MiB, default 256,1024] [--fs tmpfs|disk] [--rounds N]
//
// Two measurements per size (mem_bench target: every page written, distinct):
// 1. Receiver, CRIU as the sender: `criu dump --page-server` of a live target into
//    `criu page-server` vs tsdump's runPageServer. Rate = pages_written / memwrite_time from the
//    dump's stats-dump.img (the time CRIU spent pushing pages into the socket), plus dump wall time.
// 2. Client: a local dump's pagemap/pages replayed by tsdump's client (sendfile from the pages
//    file) into `criu page-server` and into tsdump's receiver; rate = bytes / (connect → CLOSE ack).
// Before every transfer (size + 512 MiB) is touched and freed (this VM returns freed memory to
// its host; see bench/memdump.ts). The receivers' directories are on --fs (tmpfs by default, so
// the numbers are the protocol's, not the disk's; tsdump fsyncs at CLOSE, CRIU does not).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { runPageServer, sendImagesToPageServer } from '../src/page-server.js';

const CRIU = '/opt/criu-ref/bin/criu';
const CRIT = '/opt/criu-ref/bin/crit';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : dflt;
};
const sizes = (args[0] && !args[0].startsWith('--') ? args[0] : '256,1024').split(',').map(Number);
const root = { tmpfs: '/dev/shm', disk: '/var/tmp' }[opt('fs', 'tmpfs')] ?? '/dev/shm';
const rounds = Number(opt('rounds', '2'));

function startTarget(mib: number): { pid: number; ctl: string } {
  const ctl = mkdtempSync('/tmp/tsdump-bench-ctl-');
  // stdio ignored: the daemonized target would otherwise hold execFileSync's output pipe open.
  execFileSync('setsid', ['-f', 'build/targets/mem_bench', ctl, String(mib)], { stdio: 'ignore' });
  for (const deadline = Date.now() + 120_000; !existsSync(join(ctl, 'ready')); ) {
    if (Date.now() > deadline) throw new Error('bench target not ready');
    spawnSync('sleep', ['0.05']);
  }
  const pid = Number(/pid=(\d+)/.exec(readFileSync(join(ctl, 'ready'), 'utf8'))![1]);
  execFileSync('build/targets/mem_touch', [ctl, String(mib + 512)]);
  return { pid, ctl };
}

function stopTarget(t: { pid: number; ctl: string }): void {
  try {
    process.kill(-t.pid, 'SIGKILL');
  } catch {
    // the dump killed it
  }
  rmSync(t.ctl, { recursive: true, force: true });
}

function freshDir(tag: string): string {
  const d = join(root, `tsdump-bench-ps-${tag}-${process.pid}`);
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d, { mode: 0o700 });
  return d;
}

async function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    });
  });
}

function listening(port: number): boolean {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .some((l) => {
      const c = l.trim().split(/\s+/);
      return c[1]?.endsWith(hex) && c[3] === '0A';
    });
}

function run(cmd: string, argv: string[]): Promise<number | null> {
  return new Promise((res, rej) => {
    const c = spawn(cmd, argv, { stdio: 'ignore' });
    c.once('error', rej);
    c.once('exit', (code) => res(code));
  });
}

/** A receiver on a free port: `done` settles when the session is over. */
async function receiver(kind: 'criu' | 'tsdump', dir: string): Promise<{ port: number; done: Promise<void> }> {
  if (kind === 'tsdump') {
    let bound!: (p: number) => void;
    const port = new Promise<number>((r) => (bound = r));
    const done = runPageServer({ imagesDir: dir, address: '127.0.0.1', port: 0, onListening: (l) => bound(l.port) }).then(() => undefined);
    return { port: await port, done };
  }
  const port = await freePort();
  const done = run(CRIU, ['page-server', '-D', dir, '--address', '127.0.0.1', '--port', String(port), '-o', 'ps.log']).then((code) => {
    if (code !== 0) throw new Error(`criu page-server exited ${code}`);
  });
  for (const deadline = Date.now() + 10_000; !listening(port); ) {
    if (Date.now() > deadline) throw new Error('criu page-server did not listen');
    await new Promise((r) => setTimeout(r, 10));
  }
  return { port, done };
}

interface Rate {
  mib: number;
  ms: number;
  wallMs?: number;
}
const mibps = (r: Rate): string => `${(r.mib / (r.ms / 1000)).toFixed(0).padStart(6)} MiB/s`;

/** criu dump --page-server of a live target into `kind`'s receiver. */
async function criuSends(kind: 'criu' | 'tsdump', mib: number): Promise<Rate> {
  const target = startTarget(mib);
  const local = freshDir(`local-${kind}`);
  const srv = freshDir(`srv-${kind}`);
  try {
    const r = await receiver(kind, srv);
    const t0 = performance.now();
    const code = await run(CRIU, ['dump', '-t', String(target.pid), '-D', local, '--shell-job', '-o', 'dump.log', '--page-server', '--address', '127.0.0.1', '--port', String(r.port)]);
    const wallMs = performance.now() - t0;
    if (code !== 0) throw new Error(`criu dump exited ${code}; see ${local}/dump.log`);
    await r.done;
    const d = JSON.parse(execFileSync(CRIT, ['decode', '-i', join(local, 'stats-dump')], { encoding: 'utf8' })).entries[0].dump;
    return { mib: (Number(d.pages_written) * 4096) / 2 ** 20, ms: Number(d.memwrite_time) / 1000, wallMs };
  } finally {
    stopTarget(target);
    rmSync(local, { recursive: true, force: true });
    rmSync(srv, { recursive: true, force: true });
  }
}

/** tsdump's client replays `dumpDir` into `kind`'s receiver. */
async function tsdumpSends(kind: 'criu' | 'tsdump', dumpDir: string, pid: number, mib: number): Promise<Rate> {
  const srv = freshDir(`replay-${kind}`);
  try {
    execFileSync('build/targets/mem_touch', ['/nonexistent', String(mib + 512)]);
    const r = await receiver(kind, srv);
    const s = await sendImagesToPageServer({ imagesDir: dumpDir, address: '127.0.0.1', port: r.port, pids: [pid] });
    await r.done;
    return { mib: (s.pages * 4096) / 2 ** 20, ms: s.elapsedMs };
  } finally {
    rmSync(srv, { recursive: true, force: true });
  }
}

for (const mib of sizes) {
  console.log(`${mib} MiB target, receivers on ${root}`);
  for (let round = 0; round < rounds; round++) {
    const order: ('criu' | 'tsdump')[] = round % 2 === 0 ? ['criu', 'tsdump'] : ['tsdump', 'criu'];
    const live: Record<string, Rate> = {};
    for (const k of order) live[k] = await criuSends(k, mib);
    console.log(
      `  criu dump → criu page-server   ${mibps(live.criu!)} (${live.criu!.mib.toFixed(0)} MiB in ${live.criu!.ms.toFixed(0)} ms; dump wall ${live.criu!.wallMs!.toFixed(0)} ms)`,
    );
    console.log(
      `  criu dump → tsdump page-server ${mibps(live.tsdump!)} (${live.tsdump!.mib.toFixed(0)} MiB in ${live.tsdump!.ms.toFixed(0)} ms; dump wall ${live.tsdump!.wallMs!.toFixed(0)} ms)`,
    );
    // A local dump to replay.
    const target = startTarget(mib);
    const dumpDir = freshDir('dump');
    try {
      execFileSync(CRIU, ['dump', '-t', String(target.pid), '-D', dumpDir, '--shell-job', '-o', 'dump.log']);
      const pages = readdirSync(dumpDir).filter((f) => f.startsWith('pages-'));
      if (pages.length !== 1) throw new Error(`expected one pages image, got ${pages.join(' ')}`);
      const replay: Record<string, Rate> = {};
      for (const k of order) replay[k] = await tsdumpSends(k, dumpDir, target.pid, mib);
      console.log(`  tsdump client → criu page-server   ${mibps(replay.criu!)} (${replay.criu!.ms.toFixed(0)} ms)`);
      console.log(`  tsdump client → tsdump page-server ${mibps(replay.tsdump!)} (${replay.tsdump!.ms.toFixed(0)} ms)`);
    } finally {
      stopTarget(target);
      rmSync(dumpDir, { recursive: true, force: true });
    }
  }
}
