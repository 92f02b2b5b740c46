// PostgreSQL as a checkpoint subject: Debian's postgresql-15 (scripts/test-deps.sh installs it),
// a fresh cluster per subject, run as the postgres user (the server refuses root), 100 000 rows,
// and a client connection of this process held open across the dump. Every PostgreSQL process attaches a small SysV shared memory segment (the data
// directory's interlock), which is what makes it a subject: its SysV objects are dumped as the
// tree's own IPC namespace (src/dump/sysv-ipc.ts).
//
// A minimal client of PostgreSQL's wire protocol (v3, trust authentication, simple queries) is
// enough here and keeps the test free of a driver dependency.
import { execFile, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, statSync } from 'node:fs';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Subject } from './catalogue.js';
import { freePort, readIfExists, startTime } from './programs.js';
import { killTree, treePids } from './target.js';

export const PG_BIN = process.env.TSDUMP_PG_BIN ?? '/usr/lib/postgresql/15/bin';
export const PG_ROWS = 100_000;

/** Rows are (i, md5(i)); the checksum covers them all, in order. */
const CHECKSUM = "select count(*), sum(i), md5(string_agg(v, ',' order by i)) from t";

/** One open connection: simple queries, one at a time; rows come back as text. */
export class PgConnection {
  private buf = Buffer.alloc(0);
  private waiting: (() => void) | undefined;
  private closed: Error | undefined;

  private constructor(private readonly sock: Socket) {
    sock.on('data', (b: Buffer) => {
      this.buf = Buffer.concat([this.buf, b]);
      this.waiting?.();
    });
    const end = (e?: Error) => {
      this.closed ??= e ?? new Error('the server closed the connection');
      this.waiting?.();
    };
    sock.on('error', end);
    sock.on('close', () => end());
  }

  static async open(port: number, timeoutMs = 10_000): Promise<PgConnection> {
    const sock = createConnection({ host: '127.0.0.1', port });
    await new Promise<void>((res, rej) => {
      sock.once('connect', res);
      sock.once('error', rej);
    });
    const c = new PgConnection(sock);
    const params = Buffer.from('user\0postgres\0database\0postgres\0\0');
    const start = Buffer.alloc(8);
    start.writeInt32BE(8 + params.length, 0);
    start.writeInt32BE(196608, 4); // protocol 3.0
    sock.write(Buffer.concat([start, params]));
    await c.untilReady(timeoutMs);
    return c;
  }

  /** The next message: [type, body]. */
  private async message(deadline: number): Promise<[string, Buffer]> {
    for (;;) {
      if (this.buf.length >= 5) {
        const len = this.buf.readInt32BE(1);
        if (this.buf.length >= 1 + len) {
          const type = String.fromCharCode(this.buf[0]!);
          const body = this.buf.subarray(5, 1 + len);
          this.buf = this.buf.subarray(1 + len);
          return [type, body];
        }
      }
      if (this.closed) throw this.closed;
      if (Date.now() > deadline) throw new Error('PostgreSQL: no answer in time');
      await new Promise<void>((res) => {
        this.waiting = res;
        setTimeout(res, 50);
      });
      this.waiting = undefined;
    }
  }

  /** Reads up to ReadyForQuery; the rows of the last result, or the server's error. */
  private async untilReady(timeoutMs: number): Promise<string[][]> {
    const deadline = Date.now() + timeoutMs;
    let rows: string[][] = [];
    let error: string | undefined;
    for (;;) {
      const [type, body] = await this.message(deadline);
      if (type === 'T') rows = [];
      else if (type === 'D') {
        const n = body.readInt16BE(0);
        const row: string[] = [];
        let at = 2;
        for (let i = 0; i < n; i++) {
          const len = body.readInt32BE(at);
          at += 4;
          row.push(len < 0 ? '' : body.toString('utf8', at, at + len));
          at += Math.max(len, 0);
        }
        rows.push(row);
      } else if (type === 'E') {
        // fields: a type byte and a NUL-terminated string each; M is the message
        const fields = body.toString('utf8').split('\0');
        error = fields.find((f) => f.startsWith('M'))?.slice(1) ?? 'error';
      } else if (type === 'R' && body.readInt32BE(0) !== 0) {
        throw new Error(`PostgreSQL asks for authentication ${body.readInt32BE(0)} (the cluster should trust local TCP)`);
      } else if (type === 'Z') {
        if (error !== undefined) throw new Error(`PostgreSQL: ${error}`);
        return rows;
      }
    }
  }

  /** Runs `sql` (one or more statements); the rows of the last one. */
  async query(sql: string, timeoutMs = 30_000): Promise<string[][]> {
    const q = Buffer.from(`${sql}\0`);
    const head = Buffer.alloc(5);
    head.write('Q', 0);
    head.writeInt32BE(4 + q.length, 1);
    this.sock.write(Buffer.concat([head, q]));
    return this.untilReady(timeoutMs);
  }

  close(): void {
    this.sock.destroy();
  }
}

function run(cmd: string, args: readonly string[], opts: { uid: number; gid: number; cwd: string }): Promise<void> {
  return new Promise((res, rej) =>
    execFile(cmd, [...args], { ...opts, timeout: 60_000 }, (err, _out, stderr) => (err ? rej(new Error(`${cmd} ${args.join(' ')}: ${stderr || err.message}`)) : res())),
  );
}

function ipcNamespace(pid: number | 'self'): bigint | undefined {
  try {
    return statSync(`/proc/${pid}/ns/ipc`, { bigint: true }).ino;
  } catch {
    return undefined;
  }
}

/**
 * A PostgreSQL 15 cluster (initdb, trust authentication, listening on 127.0.0.1 and a unix
 * socket), with table t holding PG_ROWS rows and a client connection of this process held open,
 * which set a temporary table and application_name only its own backend knows. verify():
 *   - over the held connection: the session's temporary table and application_name are still
 *     there (the same backend, over the same TCP connection: dump and restore --tcp-established),
 *     and it inserts a row;
 *   - over a new connection: the rows and their checksum, plus that row;
 *   - the postmaster's IPC namespace: ours while it runs as started, a new one once restored
 *     (its SysV segment lives there).
 */
export async function startPostgres(_workDir: string): Promise<Subject> {
  if (!existsSync(join(PG_BIN, 'postgres'))) throw new Error(`${PG_BIN}/postgres missing: apt-get install -y postgresql-15`);
  const pgUser = userIds('postgres');
  // The server runs as postgres, which cannot enter the test's owner-only work dir: the cluster
  // gets its own directory, removed with the subject.
  const dir = await mkdtemp('/tmp/tsdump-pg-');
  await chown(dir, pgUser.uid, pgUser.gid);
  const data = join(dir, 'data');
  const as = { uid: pgUser.uid, gid: pgUser.gid, cwd: dir };
  await run(join(PG_BIN, 'initdb'), ['-D', data, '--auth=trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale=C'], as);
  const port = await freePort();
  const logPath = join(dir, 'log');
  const fd = openSync(logPath, 'a', 0o600);
  let pid: number;
  try {
    await chown(logPath, pgUser.uid, pgUser.gid);
    const child = spawn(
      join(PG_BIN, 'postgres'),
      ['-D', data, '-k', dir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'shared_buffers=32MB', '-c', 'fsync=off'],
      { ...as, detached: true, stdio: ['ignore', fd, fd] },
    );
    child.on('error', () => undefined);
    child.unref();
    if (child.pid === undefined) throw new Error('cannot start postgres');
    pid = child.pid;
  } finally {
    closeSync(fd);
  }
  const log = () => {
    try {
      return readFileSync(logPath, 'utf8').split('\n').slice(-30).join('\n');
    } catch {
      return '';
    }
  };
  let held: PgConnection | undefined;
  // What a killed PostgreSQL leaves behind: its SysV segment in our IPC namespace (the original's,
  // also after a dump: SysV objects outlive their processes) and its POSIX shared memory files.
  let segment: { key: number; id: number } | undefined;
  const shmFiles = new Set<string>();
  const noteShmFiles = () => {
    for (const p of treePids(pid)) {
      for (const m of readIfExists(`/proc/${p}/maps`)?.matchAll(/\/dev\/shm\/(PostgreSQL\.\d+)/g) ?? []) shmFiles.add(m[1]!);
    }
  };
  const kill = async (): Promise<void> => {
    held?.close();
    noteShmFiles();
    await killTree(pid, data);
    if (segment) await removeSegment(segment);
    for (const f of shmFiles) await rm(join('/dev/shm', f), { force: true });
    await rm(dir, { recursive: true, force: true });
  };
  let before: string[];
  let started: string | undefined;
  try {
    const deadline = Date.now() + 30_000;
    let setup: PgConnection | undefined;
    while (!setup) {
      setup = await PgConnection.open(port, 2000).catch(async (e: unknown) => {
        if (Date.now() > deadline) throw new Error(`postgres not ready: ${String(e)}\n--- log ---\n${log()}`);
        await sleep(100);
        return undefined;
      });
    }
    await setup.query(`create table t (i int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, ${PG_ROWS}) g; checkpoint`);
    before = (await setup.query(CHECKSUM))[0]!;
    setup.close();
    if (before[0] !== String(PG_ROWS)) throw new Error(`table t holds ${before[0]} rows`);
    held = await PgConnection.open(port);
    await held.query("create temp table session_state as select 42 as v; set application_name = 'tsdump-held'");
    // Without its SysV interlock segment this subject would prove nothing about SysV IPC.
    if (!readFileSync(`/proc/${pid}/maps`, 'utf8').includes('/SYSV')) throw new Error('the postmaster attaches no SysV segment');
    started = startTime(pid);
    // postmaster.pid's 7th line: the segment's key and id
    const [key, id] = (readIfExists(join(data, 'postmaster.pid'))?.split('\n')[6] ?? '').trim().split(/\s+/).map(Number);
    if (key !== undefined && id !== undefined && Number.isInteger(key) && Number.isInteger(id)) segment = { key, id };
    noteShmFiles();
  } catch (e) {
    await kill();
    throw e;
  }
  const session = held;
  return {
    name: 'postgresql',
    pid,
    pids: treePids(pid),
    marker: data,
    async verify() {
      const problems: string[] = [];
      try {
        const restored = startTime(pid) !== started;
        const ns = ipcNamespace(pid);
        if (restored === (ns === ipcNamespace('self'))) problems.push(`the postmaster is ${restored ? 'restored in our' : 'live in another'} IPC namespace`);
        const [state] = await session.query("select v, current_setting('application_name') from session_state");
        if (state?.[0] !== '42' || state[1] !== 'tsdump-held') problems.push(`the held session sees ${JSON.stringify(state)}`);
        await session.query(`insert into t values (${PG_ROWS + 1}, 'written over the held connection')`);
        const fresh = await PgConnection.open(port);
        try {
          const [now] = await fresh.query(`select count(*), sum(i), md5(string_agg(v, ',' order by i)) from t where i <= ${PG_ROWS}`);
          if (JSON.stringify(now) !== JSON.stringify(before)) problems.push(`rows now ${JSON.stringify(now)}, were ${JSON.stringify(before)}`);
          const [added] = await fresh.query(`select count(*) from t where i > ${PG_ROWS}`);
          if (added?.[0] !== '1') problems.push(`the row written over the held connection: ${JSON.stringify(added)}`);
        } finally {
          fresh.close();
        }
        return problems.length === 0 ? 'PASS' : `FAIL: ${problems.join('; ')}`;
      } catch (e) {
        return `FAIL: ${[...problems, e instanceof Error ? e.message : String(e)].join('; ')}`;
      }
    },
    kill,
    describe: () => `--- postgres log ---\n${log()}`,
  };
}

/** ipcrm of the segment in our namespace, if it still is the one (same id and key). */
async function removeSegment(s: { key: number; id: number }): Promise<void> {
  const line = readIfExists('/proc/sysvipc/shm')
    ?.split('\n')
    .map((l) => l.trim().split(/\s+/))
    .find((f) => Number(f[1]) === s.id && Number(f[0]) === s.key);
  if (line) await new Promise((res) => execFile('ipcrm', ['-m', String(s.id)], () => res(undefined)));
}

/** uid and gid of a user, from /etc/passwd. */
function userIds(name: string): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${name}:`));
  const f = line?.split(':');
  if (!f || f.length < 4) throw new Error(`no ${name} user (apt-get install -y postgresql-15 creates it)`);
  return { uid: Number(f[2]), gid: Number(f[3]) };
}
