// Real programs no one here wrote, as checkpoint subjects: redis-server with 100 000 keys, a
// Node.js HTTP server, a Python process. Each start* returns a Subject (see catalogue.ts) whose
// verify() talks to the restored program and answers "PASS" or "FAIL: ...".
//
// redis-server comes from apt (.ci/run installs it; locally: apt-get install -y redis-server).
// Programs listening on TCP cannot be dumped by the reference CRIU here (inet sockets), so each
// has a unix-socket variant that CRIU can dump, proving the helper itself.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { createConnection, createServer, type NetConnectOpts } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Subject } from './catalogue.js';
import { TARGETS_DIR, killTree, logTail, requestVerify, spawnWithProtocol, treePids } from './target.js';

const PROGRAMS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../programs');

export const REDIS_SERVER = process.env.TSDUMP_REDIS_SERVER ?? '/usr/bin/redis-server';
export const REDIS_KEYS = 100_000;

export function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** A free TCP port on 127.0.0.1 (bound, read, released). */
export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => res(port));
    });
  });
}

/** Spawns a program detached (own session), stdin /dev/null, output to dir/log, cwd dir. */
function spawnDetached(exe: string, args: readonly string[], dir: string): { pid: number; log: () => string } {
  const logPath = join(dir, 'log');
  const fd = openSync(logPath, 'a', 0o600);
  try {
    const child = spawn(exe, [...args], { detached: true, stdio: ['ignore', fd, fd], cwd: dir });
    child.on('error', () => undefined);
    child.unref();
    if (child.pid === undefined) throw new Error(`cannot start ${exe}`);
    return { pid: child.pid, log: () => readIfExists(logPath) ?? '' };
  } finally {
    closeSync(fd);
  }
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, log: () => string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what} not ready after ${timeoutMs} ms\n--- log ---\n${log().split('\n').slice(-30).join('\n')}`);
    await sleep(20);
  }
}

// ---- a minimal RESP (redis protocol) client: one connection, pipelined commands ----

export type RespValue = string | number | null | RespValue[] | Error;

function encodeCommand(args: readonly string[]): string {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
}

/** Parses one reply at buf[pos..]; returns [value, next] or undefined if incomplete. */
function parseReply(buf: Buffer, pos: number): [RespValue, number] | undefined {
  const eol = buf.indexOf('\r\n', pos);
  if (eol < 0) return undefined;
  const kind = String.fromCharCode(buf[pos]!);
  const line = buf.toString('utf8', pos + 1, eol);
  switch (kind) {
    case '+':
      return [line, eol + 2];
    case '-':
      return [new Error(line), eol + 2];
    case ':':
      return [Number(line), eol + 2];
    case '$': {
      const n = Number(line);
      if (n < 0) return [null, eol + 2];
      if (buf.length < eol + 2 + n + 2) return undefined;
      return [buf.toString('utf8', eol + 2, eol + 2 + n), eol + 2 + n + 2];
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return [null, eol + 2];
      const out: RespValue[] = [];
      let p = eol + 2;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, p);
        if (!r) return undefined;
        out.push(r[0]);
        p = r[1];
      }
      return [out, p];
    }
    default:
      throw new Error(`bad RESP reply type ${JSON.stringify(kind)}`);
  }
}

/** Sends the commands over one connection and returns their replies in order. */
export function redisCommands(where: NetConnectOpts, commands: readonly (readonly string[])[], timeoutMs = 20_000): Promise<RespValue[]> {
  return new Promise((res, rej) => {
    const sock = createConnection(where);
    const replies: RespValue[] = [];
    let buf = Buffer.alloc(0);
    let pos = 0;
    sock.setTimeout(timeoutMs, () => sock.destroy(new Error(`redis: no reply within ${timeoutMs} ms`)));
    sock.on('connect', () => sock.end(commands.map(encodeCommand).join('')));
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf.subarray(pos), chunk]);
      pos = 0;
      for (;;) {
        const r = parseReply(buf, pos);
        if (!r) break;
        replies.push(r[0]);
        pos = r[1];
      }
      if (replies.length >= commands.length) {
        sock.destroy();
        res(replies);
      }
    });
    sock.on('error', rej);
    sock.on('close', () => {
      if (replies.length < commands.length) rej(new Error(`redis: connection closed after ${replies.length}/${commands.length} replies`));
    });
  });
}

const redisValue = (i: number): string => `value:${i}:${(i * 2654435761) % 4294967296}`;

/**
 * redis-server with REDIS_KEYS keys (key:I → value:I:hash), persistence off, listening on a unix
 * socket and, with tcp, on 127.0.0.1:PORT. verify() checks DBSIZE, sampled GETs and a SET/GET
 * (over TCP when tcp, else the unix socket).
 */
export async function startRedis(workDir: string, opts: { tcp: boolean }): Promise<Subject> {
  if (!existsSync(REDIS_SERVER)) throw new Error(`${REDIS_SERVER} missing: apt-get install -y redis-server`);
  const dir = join(workDir, 'redis');
  await mkdir(dir, { mode: 0o700 });
  const sockPath = join(dir, 'redis.sock');
  const port = opts.tcp ? await freePort() : 0;
  // A config on the command line: no persistence (the dump must carry the data), no protected
  // mode surprises, log to stdout (our log file).
  const { pid, log } = spawnDetached(REDIS_SERVER, [
    '--port', String(port), '--bind', '127.0.0.1', '--unixsocket', sockPath, '--unixsocketperm', '700',
    '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--logfile', '',
  ], dir);
  const unix: NetConnectOpts = { path: sockPath };
  const tcp: NetConnectOpts = { host: '127.0.0.1', port };
  const subject: Subject = {
    name: opts.tcp ? 'redis-server' : 'redis-server-unix',
    pid,
    pids: [pid],
    marker: dir,
    async verify() {
      const where = opts.tcp ? tcp : unix;
      const sample = [0, 1, 12_345, 54_321, REDIS_KEYS - 1];
      for (let i = 0; i < 45; i++) sample.push((i * 2_221 + 7) % REDIS_KEYS);
      try {
        const replies = await redisCommands(where, [
          ['DBSIZE'],
          ...sample.map((i) => ['GET', `key:${i}`]),
          ['SET', 'after-restore', 'yes'],
          ['GET', 'after-restore'],
          ['GET', 'no-such-key'],
        ]);
        const problems: string[] = [];
        if (replies[0] !== REDIS_KEYS + 0) problems.push(`DBSIZE ${String(replies[0])}`);
        sample.forEach((k, j) => {
          if (replies[1 + j] !== redisValue(k)) problems.push(`GET key:${k} -> ${String(replies[1 + j])}`);
        });
        const tail = replies.slice(1 + sample.length);
        if (tail[0] !== 'OK' || tail[1] !== 'yes') problems.push(`SET/GET after restore -> ${String(tail[0])}/${String(tail[1])}`);
        if (tail[2] !== null) problems.push('GET of a missing key returned a value');
        return problems.length === 0 ? 'PASS' : `FAIL: ${problems.slice(0, 5).join('; ')}`;
      } catch (e) {
        return `FAIL: ${e instanceof Error ? e.message : String(e)}`;
      }
    },
    kill: () => killTree(pid, dir),
    describe: () => `--- redis log ---\n${log().split('\n').slice(-30).join('\n')}`,
  };
  try {
    await until('redis-server', 15_000, async () => ((await redisCommands(unix, [['PING']], 2000))[0] === 'PONG' ? true : undefined), log);
    for (let start = 0; start < REDIS_KEYS; start += 5_000) {
      const cmds: string[][] = [];
      for (let b = start; b < Math.min(start + 5_000, REDIS_KEYS); b += 1_000) {
        const mset = ['MSET'];
        for (let i = b; i < b + 1_000; i++) mset.push(`key:${i}`, redisValue(i));
        cmds.push(mset);
      }
      const r = await redisCommands(unix, cmds);
      if (r.some((x) => x !== 'OK')) throw new Error(`MSET failed: ${String(r.find((x) => x !== 'OK'))}`);
    }
    const [size] = await redisCommands(unix, [['DBSIZE']]);
    if (size !== REDIS_KEYS) throw new Error(`DBSIZE ${String(size)} after loading`);
    if (opts.tcp) {
      const [pong] = await redisCommands(tcp, [['PING']]);
      if (pong !== 'PONG') throw new Error(`PING over TCP: ${String(pong)}`);
    }
  } catch (e) {
    await subject.kill();
    throw e;
  }
  return { ...subject, pids: treePids(pid) };
}

interface HttpState {
  readonly hits: number;
  readonly count: number;
  readonly checksum: string;
}

function httpCall(where: { socketPath?: string; port?: number }, method: string, path: string): Promise<string> {
  return new Promise((res, rej) => {
    const req = request(
      { ...where, host: '127.0.0.1', method, path, agent: false, headers: { connection: 'close' }, timeout: 10_000 },
      (resp) => {
        let body = '';
        resp.on('data', (b: Buffer) => (body += b.toString()));
        resp.on('end', () => (resp.statusCode === 200 ? res(body) : rej(new Error(`${method} ${path}: HTTP ${resp.statusCode}`))));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timeout`)));
    req.on('error', rej);
    req.end();
  });
}

/**
 * This machine's node running __test__/programs/http_server.mjs on 127.0.0.1 (tcp) or a unix
 * socket. At ready the state (hit count, item count, checksum) is read once; verify() expects the
 * same checksum and count, hits + 1, and a working POST.
 */
export async function startNodeHttp(workDir: string, opts: { tcp: boolean }): Promise<Subject> {
  const dir = join(workDir, 'node-http');
  await mkdir(dir, { mode: 0o700 });
  const sockPath = join(dir, 'http.sock');
  const listen = opts.tcp ? String(await freePort()) : sockPath;
  const readyFile = join(dir, 'ready');
  const { pid, log } = spawnDetached(process.execPath, [join(PROGRAMS_DIR, 'http_server.mjs'), listen, readyFile], dir);
  const kill = (): Promise<void> => killTree(pid, dir);
  let before: HttpState;
  let where: { socketPath?: string; port?: number };
  try {
    const ready = await until('node http server', 15_000, async () => readIfExists(readyFile), log);
    if (!ready.includes(`pid=${pid}\n`)) throw new Error(`ready file names another pid: ${ready}`);
    where = opts.tcp ? { port: Number(listen) } : { socketPath: sockPath };
    before = JSON.parse(await httpCall(where, 'GET', '/state')) as HttpState;
    if (before.count !== 2000) throw new Error(`server holds ${before.count} items`);
  } catch (e) {
    await kill();
    throw e;
  }
  return {
    name: opts.tcp ? 'node-http' : 'node-http-unix',
    pid,
    pids: treePids(pid),
    marker: dir,
    async verify() {
      try {
        const now = JSON.parse(await httpCall(where, 'GET', '/state')) as HttpState;
        const problems: string[] = [];
        if (now.checksum !== before.checksum) problems.push('items checksum changed');
        if (now.count !== before.count) problems.push(`item count ${now.count}, want ${before.count}`);
        if (now.hits !== before.hits + 1) problems.push(`hits ${now.hits}, want ${before.hits + 1}`);
        const added = JSON.parse(await httpCall(where, 'POST', '/item?k=after&v=restore')) as { count: number };
        if (added.count !== before.count + 1) problems.push(`POST /item -> count ${added.count}`);
        return problems.length === 0 ? 'PASS' : `FAIL: ${problems.join('; ')}`;
      } catch (e) {
        return `FAIL: ${e instanceof Error ? e.message : String(e)}`;
      }
    },
    kill,
    describe: () => `--- node log ---\n${log().split('\n').slice(-30).join('\n')}`,
  };
}

/** python3 running __test__/programs/py_state.py under the CTL protocol. */
export async function startPython(workDir: string): Promise<Subject> {
  const ctl = join(workDir, 'ctl-python');
  await mkdir(ctl, { mode: 0o700 });
  // The system interpreter, not a version-manager shim that would fork or exec around it.
  const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const target = await spawnWithProtocol('python-state', python, [join(PROGRAMS_DIR, 'py_state.py'), ctl], ctl, 30_000);
  return {
    name: 'python-state',
    pid: target.pid,
    pids: target.pids,
    marker: ctl,
    verify: () => requestVerify(target),
    kill: () => killTree(target.pid, ctl, target.pids),
    describe: () => `--- python log ---\n${logTail(target)}`,
  };
}

export const GO_HTTP = join(TARGETS_DIR, 'go_http');

interface GoState {
  readonly hits: number;
  readonly count: number;
  readonly checksum: string;
  readonly parked: string;
  readonly ticking: number;
  readonly listenerProto: number;
}

/** GET path over a fresh connection (closed after the answer) or through a keep-alive agent. */
function goGet(port: number, path: string, agent?: Agent): Promise<{ body: string; reused: boolean }> {
  return new Promise((res, rej) => {
    const req = request(
      { host: '127.0.0.1', port, path, agent: agent ?? false, ...(agent ? {} : { headers: { connection: 'close' } }), timeout: 10_000 },
      (resp) => {
        let body = '';
        resp.on('data', (b: Buffer) => (body += b.toString()));
        resp.on('end', () => (resp.statusCode === 200 ? res({ body, reused: req.reusedSocket }) : rej(new Error(`GET ${path}: HTTP ${resp.statusCode}`))));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: timeout`)));
    req.on('error', rej);
    req.end();
  });
}

/** The kernel's start time of `pid` (clock ticks since boot): a restored process has a new one. */
export function startTime(pid: number): string | undefined {
  const stat = readIfExists(`/proc/${pid}/stat`);
  return stat?.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

/** go_http client: one MPTCP keep-alive connection; a GET /state per line written to it. */
function startMptcpClient(port: number, dir: string) {
  const child = spawn(GO_HTTP, ['client', String(port)], { cwd: dir, stdio: ['pipe', 'pipe', 'inherit'] });
  child.on('error', () => undefined);
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  let lines = 0;
  return {
    pid: child.pid,
    /** One request; resolves to the client's line ("ok mptcp=BOOL {...}" or "error ..."). */
    async get(): Promise<string> {
      const want = ++lines;
      child.stdin.write('\n');
      const deadline = Date.now() + 15_000;
      for (;;) {
        const got = out.split('\n');
        if (got.length > want) return got[want - 1]!;
        if (Date.now() > deadline) throw new Error(`MPTCP client: no answer (output so far: ${out})`);
        await sleep(10);
      }
    },
    stop: () => void child.kill('SIGKILL'),
  };
}

/**
 * A Go >= 1.24 HTTP server (__test__/targets/go_http, built by scripts/build-test-programs.sh)
 * whose net.Listen("tcp") opened an MPTCP listener, holding 2 000 items, 300 parked goroutines
 * and a ticker, with three idle keep-alive clients outside the tree: two TCP ones (an http.Agent
 * of this process) and an MPTCP one (go_http client). verify() tells a restored server (a new
 * start time) from the live one:
 *   - same items, parked goroutines' digest, hits + 1, the ticker still ticking;
 *   - live: the listener is MPTCP, the server holds the 3 idle connections, the clients reuse
 *     them (the MPTCP one still MPTCP);
 *   - restored (criu restore --tcp-close): the server let the restored connections go (they
 *     come back shut down), the listener is TCP (criu restore listens on TCP sockets only), and
 *     every client's next request succeeds over a new connection (the MPTCP client falling back
 *     to TCP).
 */
export async function startGoHttp(workDir: string): Promise<Subject> {
  const dir = join(workDir, 'go-http');
  await mkdir(dir, { mode: 0o700 });
  const readyFile = join(dir, 'ready');
  const { pid, log } = spawnDetached(GO_HTTP, ['serve', readyFile], dir);
  const agent = new Agent({ keepAlive: true, maxSockets: 2 });
  let mptcp: ReturnType<typeof startMptcpClient> | undefined;
  const kill = async (): Promise<void> => {
    agent.destroy();
    mptcp?.stop();
    await killTree(pid, dir);
  };
  let port: number;
  let before: GoState;
  let started: string | undefined;
  try {
    const ready = await until('go http server', 15_000, async () => readIfExists(readyFile), log);
    if (!ready.includes(`pid=${pid}\n`)) throw new Error(`ready file names another pid: ${ready}`);
    // Without MPTCP (net.mptcp.enabled=0, or a Go < 1.24) this subject would prove nothing.
    if (!ready.includes('proto=262\n')) throw new Error(`the Go server's listener is not MPTCP: ${ready}`);
    port = Number(/port=(\d+)/.exec(ready)![1]);
    await Promise.all([goGet(port, '/state', agent), goGet(port, '/state', agent)]);
    mptcp = startMptcpClient(port, dir);
    const line = await mptcp.get();
    if (!line.startsWith('ok mptcp=true ')) throw new Error(`MPTCP client: ${line}`);
    before = JSON.parse((await goGet(port, '/state')).body) as GoState;
    if (before.count !== 2000) throw new Error(`server holds ${before.count} items`);
    started = startTime(pid);
  } catch (e) {
    await kill();
    throw e;
  }
  const client = mptcp;
  return {
    name: 'go-http-mptcp',
    pid,
    pids: treePids(pid),
    marker: dir,
    async verify() {
      const problems: string[] = [];
      try {
        const restored = startTime(pid) !== started;
        // this check's own connection, plus the idle clients' while they are held
        const open = restored ? 1 : 4;
        let openNow: number;
        const deadline = Date.now() + 10_000;
        for (;;) {
          openNow = (JSON.parse((await goGet(port, '/conns')).body) as { open: number }).open;
          if (openNow === open || Date.now() > deadline) break;
          await sleep(50);
        }
        if (openNow !== open) problems.push(`the server holds ${openNow} connection(s), want ${open}`);
        const now = JSON.parse((await goGet(port, '/state')).body) as GoState;
        if (now.checksum !== before.checksum || now.count !== before.count) problems.push('items changed');
        if (now.parked !== before.parked) problems.push(`parked goroutines answer ${now.parked}, want ${before.parked}`);
        if (now.hits !== before.hits + 1) problems.push(`hits ${now.hits}, want ${before.hits + 1}`);
        if (!(now.ticking > before.ticking)) problems.push(`ticker stopped at ${now.ticking}`);
        const wantProto = restored ? 6 : 262;
        if (now.listenerProto !== wantProto) problems.push(`listener protocol ${now.listenerProto}, want ${wantProto}`);
        const tcp = await Promise.all([goGet(port, '/state', agent), goGet(port, '/state', agent)]);
        tcp.forEach((r, i) => {
          if (r.reused === restored) problems.push(`TCP client ${i}: ${r.reused ? 'reused its connection' : 'had to reconnect'}`);
        });
        const line = await client.get();
        const wantLine = `ok mptcp=${!restored} `;
        if (!line.startsWith(wantLine)) problems.push(`MPTCP client: ${line.slice(0, 120)} (want ${wantLine.trim()})`);
        return problems.length === 0 ? 'PASS' : `FAIL: ${problems.join('; ')}`;
      } catch (e) {
        return `FAIL: ${[...problems, e instanceof Error ? e.message : String(e)].join('; ')}`;
      }
    },
    kill,
    describe: () => `--- go http log ---\n${log().split('\n').slice(-30).join('\n')}`,
  };
}
