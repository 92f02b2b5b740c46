// The acceptance catalogue: every program the end-to-end tests checkpoint, with what it proves
// and how the reference CRIU fares with it on this machine. One table, iterated by
// __test__/targets.test.ts (reference CRIU, proving the targets and the harness) and by tsdump's
// end-to-end test (same table, `tsdump dump` instead of `criu dump`, through roundTrip()).
import { createConnection } from 'node:net';
import { createSocket } from 'node:dgram';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { criuRestore, makeWorkDir } from './criu.js';
import { belongsTo, isAlive, killTree, logTail, requestVerify, startTarget, waitGone, type Target } from './target.js';
import { startGoHttp, startNodeHttp, startPython, startRedis } from './programs.js';
import { startPostgres } from './postgres.js';
import { lockPtys } from './pty-lock.js';

/** A running subject of a round trip: a C target or a real program. */
export interface Subject {
  readonly name: string;
  /** Root PID: dumped, then expected back under the same PID after restore. */
  readonly pid: number;
  /** The tree at ready time, root first. */
  readonly pids: readonly number[];
  /** Identifies our processes among recycled PIDs (see belongsTo): the CTL/work directory. */
  readonly marker: string;
  /** Checks the (restored) subject; resolves to "PASS" or "FAIL: ...". */
  verify(): Promise<string>;
  /** Kills the tree (original or restored); never throws. */
  kill(): Promise<void>;
  /** Diagnostics for assertion messages (log tail). */
  describe(): string;
}

/** How the reference CRIU 4.1.1 does with the entry on this machine (kernel 6.18, no CAP_SYS_RESOURCE). */
export type Reference =
  /** dump → restore → verify passes. */
  | { readonly expect: 'pass' }
  /**
   * CRIU dumps and restores it, but restores part of the state wrongly: verification fails, and
   * `match` pins the known symptom (a change of behaviour then shows up as a test failure).
   */
  | { readonly expect: 'fail'; readonly match: RegExp; readonly reason: string }
  /**
   * CRIU cannot dump it here: its dump fails with `match` in dump.log and leaves the subject
   * running, which is then checked live.
   */
  | { readonly expect: 'cannot-dump'; readonly match: RegExp; readonly reason: string };

export interface CatalogueEntry {
  readonly name: string;
  /** What the subject sets up and checks after restore. */
  readonly verifies: string;
  readonly reference: Reference;
  /** Convenience mirror of reference.expect !== 'cannot-dump'. */
  readonly criuCanDump: boolean;
  /** Extra `dump` arguments the subject needs (for both dumpers). */
  readonly dumpArgs?: readonly string[];
  /** Extra `criu restore` arguments the subject needs. */
  readonly restoreArgs?: readonly string[];
  /** Starts the subject inside workDir and waits until it is ready to be dumped. */
  start(workDir: string): Promise<Subject>;
}

const INET_REASON =
  'CRIU 4.1.1 cannot dump inet sockets on this kernel: getsockopt(SOL_SOCKET, SO_PASSCRED) on an ' +
  'inet socket fails with EOPNOTSUPP (dump.log: "sockets: Can\'t get 1:16 opt: Operation not supported")';
const INET: Reference = { expect: 'cannot-dump', match: /Can't get 1:16 opt: Operation not supported/, reason: INET_REASON };

function targetSubject(target: Target, exercise?: (t: Target) => Promise<string | undefined>): Subject {
  return {
    name: target.name,
    pid: target.pid,
    pids: target.pids,
    marker: target.ctl,
    async verify() {
      const [result, problem] = await Promise.all([
        requestVerify(target),
        exercise ? exercise(target).catch((e: unknown) => `exercise: ${String(e)}`) : Promise.resolve(undefined),
      ]);
      if (problem !== undefined && result === 'PASS') return `FAIL: ${problem}`;
      return problem === undefined ? result : `${result}; ${problem}`;
    },
    kill: () => killTree(target.pid, target.ctl, target.pids),
    describe: () => `--- ${target.name} log ---\n${logTail(target)}`,
  };
}

function cTarget(
  name: string,
  verifies: string,
  reference: Reference = { expect: 'pass' },
  exercise?: (t: Target) => Promise<string | undefined>,
): CatalogueEntry {
  return {
    name,
    verifies,
    reference,
    criuCanDump: reference.expect !== 'cannot-dump',
    start: async (dir) => targetSubject(await startTarget(name, { dir }), exercise),
  };
}

/** A C target that opens pseudo-terminals: it holds the pty lock (pty-lock.ts) until killed. */
function ptyTarget(name: string, verifies: string): CatalogueEntry {
  const entry = cTarget(name, verifies);
  return {
    ...entry,
    start: async (dir) => {
      const release = await lockPtys();
      try {
        const subject = await entry.start(dir);
        return { ...subject, kill: () => subject.kill().finally(release) };
      } catch (e) {
        await release();
        throw e;
      }
    },
  };
}

/** t_tcp_listen's outside half: connect + "ping", and a UDP datagram; returns a problem or undefined. */
async function exerciseInet(t: Target): Promise<string | undefined> {
  const tcpPort = Number(t.info.tcp_port);
  const udpPort = Number(t.info.udp_port);
  const tcpReply = await new Promise<string>((resolve, reject) => {
    const s = createConnection({ host: '127.0.0.1', port: tcpPort });
    let data = '';
    s.setTimeout(8000, () => s.destroy(new Error('TCP timeout')));
    s.on('connect', () => s.write('ping\n'));
    s.on('data', (b) => (data += b.toString()));
    s.on('end', () => resolve(data));
    s.on('error', reject);
  });
  const udpReply = await new Promise<string>((resolve, reject) => {
    const u = createSocket('udp4');
    const timer = setTimeout(() => {
      u.close();
      reject(new Error('UDP timeout'));
    }, 8000);
    u.on('message', (m) => {
      clearTimeout(timer);
      u.close();
      resolve(m.toString());
    });
    u.send('dgram', udpPort, '127.0.0.1');
  });
  if (tcpReply !== `pong ${t.pid}\n`) return `TCP reply ${JSON.stringify(tcpReply)}`;
  if (udpReply !== 'dgram-ack') return `UDP reply ${JSON.stringify(udpReply)}`;
  return undefined;
}

export const catalogue: readonly CatalogueEntry[] = [
  cTarget('t_counter', 'a counter loop whose state lives in integer and SSE registers, cross-checked against memory every round; the counter keeps advancing after restore'),
  cTarget('t_memory', 'patterned heap, .data, .bss and stack; an mmap region with patterned, zeroed-after-write, read-only-touched, never-touched, MADV_DONTNEED and sparse pages, and a read-only patterned part; never-touched pages still not resident (mincore); maps unchanged'),
  cTarget('t_threads', '40 workers (visited and handed over in batches) with __thread word + buffer, pthread key, thread name, per-thread signal mask and a running counter; another thread in pthread_cond_wait; same TIDs, TLS addresses/values, names, masks; counters advance; the futex waiter wakes'),
  cTarget('t_gpregs', 'a thread spinning with a distinct value in each of 14 general registers, checked every pass, and a thread in pause() with a pattern in its callee-saved registers: no register comes back holding another\'s value, the spinner still counts, the sleeper wakes with its registers as it left them'),
  cTarget('t_forktree', '7 processes over 2 sessions and 4 process groups (a child leading its own group, a setsid child whose kid leads another group, grandchildren in inherited groups); each keeps pid, ppid, pgid, sid and its children'),
  cTarget('t_pipes', 'pipes parent<->child and in-process with 40 000/3 000/5 000/200 000 (256 KiB pipe)/1 000 (writer closed) queued bytes, an empty O_NONBLOCK pipe, a dup at fd 100; exact bytes then EAGAIN/EOF, pipe sizes and flags kept, pipes still carry data'),
  cTarget('t_files', 'fixed-number fds: O_RDONLY at offset 123 with FD_CLOEXEC, a second O_RDONLY|O_NONBLOCK open at 1000, O_RDWR at 4103 dup\'d to 50, O_APPEND, dup3 O_CLOEXEC, a directory, /dev/null, /dev/zero; cwd and umask 027; offsets, shared vs separate descriptions, flags, inodes, writes land right'),
  cTarget('t_signals', 'SA_SIGINFO|SA_RESTART handler with sa_mask, SA_ONSTACK on a sigaltstack, SA_RESETHAND|SA_NODEFER, ignored/default; blocked mask; pending SIGINT (private) and 3 queued SIGRTMIN+1 (private+shared) delivered in order with values; SA_RESTART still restarts read()'),
  cTarget('t_timers', 'ITIMER_REAL/VIRTUAL periodic and ITIMER_PROF one-shot; POSIX timers (MONOTONIC periodic with sigev value, REALTIME one-shot 1000 s, disarmed); intervals, remaining times, timer ids, siginfo; all periodic ones keep firing'),
  cTarget('t_mappings', 'anon private RW / PROT_NONE / read-only, a hole, anon shared with a child, file MAP_SHARED written through, file MAP_PRIVATE with COW pages, read-only file view at an offset; same maps lines and contents; sharing (anon and page cache) still live; COW never reached the file'),
  cTarget('t_unix_sockets', 'socketpairs stream/dgram/seqpacket in-process and stream parent<->child with queued data both ways, a shut-down writer, SO_RCVBUF; exact bytes and message boundaries, EOF after shutdown, new data flows after restore'),
  cTarget('t_eventfds', 'eventfd (counter 7, NONBLOCK|CLOEXEC) and another (3); signalfd with a pending SIGUSR2 (value 77); timerfds (periodic with a far first expiry, one-shot 1000 s, disarmed); epoll over eventfd/pipe(EPOLLET)/signalfd with data values; registrations, counters, values, timers kept'),
  cTarget('t_timerfd_expired', 'a periodic 20 ms timerfd that expired unread before the dump: unread expirations readable and it keeps ticking', {
    expect: 'fail',
    match: /^FAIL: timerfd stopped ticking after restore \(armed: 0 ms left\)$/,
    reason: 'CRIU 4.1.1 dumps an expired-unread periodic timerfd with it_value 0 (fdinfo shows 0 until the next read re-arms it), so restore leaves it disarmed',
  }),
  cTarget('t_eventfd_semaphore', 'an EFD_SEMAPHORE eventfd with counter 3: three reads of 1 then EAGAIN', {
    expect: 'fail',
    match: /^FAIL: semaphore read 0 gave 3 \(r=8\); semaphore read 1 gave 0 \(r=-1\); semaphore read 2 gave 0 \(r=-1\)$/,
    reason: 'CRIU 4.1.1 does not record EFD_SEMAPHORE (it is not a file status flag), so the eventfd comes back in counter mode',
  }),
  cTarget('t_task_attrs', 'rlimits (NOFILE 256/1024 enforced, CORE 0, STACK 4 MiB, MSGQUEUE), nice 7 under SCHED_BATCH, comm via PR_SET_NAME, child-subreaper and no_new_privs flags'),
  cTarget('t_credentials', 'fsuid 1000 and fsgid 1003, groups {5, 1001, 1002}; CAP_SYS_TIME out of permitted, CAP_NET_RAW and CAP_MKNOD out of effective, two inheritable caps, one ambient, two dropped from the bounding set; securebits KEEP_CAPS|NO_SETUID_FIXUP: /proc/self/status credentials unchanged, each value read back, a raw socket still refused'),
  cTarget('t_zombie', 'two unreaped zombies (exit 42; killed by SIGTERM) and a live child; after restore waitpid gives exactly those statuses and the live child is still ours'),
  cTarget('t_ghost_file', 'an 8 KiB file unlinked while open (O_RDWR, offset 100) and an empty unlinked O_APPEND file: contents, offsets, flags, st_nlink 0, writes'),
  cTarget('t_fifo', 'a named FIFO open at both ends with 3 000 queued bytes, and a second FIFO read by a child with 500 queued bytes: same inode, exact bytes, data flows'),
  cTarget('t_memfd', 'memfds: a sparse 128 KiB one as fd (offset 1234) and MAP_SHARED mapping; a sealed one (GROW|SHRINK|WRITE|SEAL, CLOEXEC); one only mapped (shared at an offset + a private COW page, no sealing allowed); one shared by parent and child (one description, offset 777) plus a read-only reopen: contents, holes, offsets, names, fd flags, map<->fd sharing both ways, seals enforced, one inode across tasks'),
  cTarget('t_unix_listen', 'a path-bound listening unix socket with an accepted connection (data queued both ways) and a bound dgram socket with 2 queued datagrams: addresses, data, new connections and datagrams after restore'),
  cTarget('t_inotify', 'an inotify watch (IN_CREATE|IN_DELETE) on a directory with one event queued: the queued event survives, the watch fires again with the same wd', {
    expect: 'fail',
    match: /^FAIL: queued IN_CREATE 'before' lost$/,
    reason: 'CRIU restores inotify watches but not the queue of unread events (the watch itself works: that is the only check failing)',
  }),
  {
    ...cTarget('t_file_locks', 'flock(LOCK_EX), a POSIX write lock on bytes 10..19 and an OFD read lock on 100..199, checked from a forked process (holder pid, ranges, free bytes)'),
    // Both sides: without it the dump refuses ("Some file locks are hold by dumping tasks") and
    // the restore skips the locks.
    dumpArgs: ['--file-locks'],
    restoreArgs: ['--file-locks'],
  },
  cTarget('t_seccomp', 'seccomp filters: a 3-thread root sharing [getppid→77, getpgrp→78 (TSYNC)] and a 2-thread child whose second thread adds getsid→79 (LOG); every thread still gets its errnos, the other calls work, Seccomp/Seccomp_filters per thread as before, and a new TSYNC filter installs'),
  cTarget('t_seccomp_strict', 'a thread in seccomp strict mode blocked in read() beside a normal main thread: the worker is still in mode 1 (main in 0) and still echoes bytes through its pipes'),
  ptyTarget('t_pty', 'a pty pair it opened itself (ptmx master, raw-mode /dev/pts slave, 37x101 window) with 6 bytes queued at the slave and 9 at the master: same pts index, mode, window, queued bytes, and data crosses both ways after restore'),
  ptyTarget('t_pty_session', 'a terminal emulator\'s layout: the root holds a pty master, its child leads a session whose controlling terminal is the raw-mode slave: session, foreground group, /dev/tty and the master index kept, bytes cross the pair'),
  cTarget('t_sigtrap', 'a SIGTRAP handler (SA_SIGINFO|SA_RESTART, sa_mask {SIGUSR1}): same handler address, flags and mask; raise() and int3 run it with its mask'),
  cTarget('t_unix_dgram_oneway', 'dgram senders connected one way (two in the root, one in a child, listed before their receivers) to a path-bound receiver with 4 queued datagrams, and one to an abstract-named receiver: peer names, queue order and boundaries, and every sender reaches its receiver after restore'),
  cTarget('t_epoll_closed_tfd', 'an epoll set whose pipe and eventfd targets were added through fds since closed (the files moved to other fds), two registrations under one fd number, and an ordinary one: each file wakes the set with its own data and events, edge-triggering kept'),
  cTarget('t_vma_flags', 'anonymous regions mlock()ed, MAP_LOCKED, MAP_NORESERVE, MAP_GROWSDOWN and madvised SEQUENTIAL, RANDOM, DONTFORK, DONTDUMP, MERGEABLE, HUGEPAGE, NOHUGEPAGE, WIPEONFORK, and an mlock()ed file mapping: each keeps exactly its VmFlags and contents, locked ones stay resident (VmLck unchanged), a forked child misses the DONTFORK region and sees the WIPEONFORK one zeroed', {
    expect: 'fail',
    match: /^FAIL: MADV_WIPEONFORK: VmFlags '[a-z ]*' lacks wf; MADV_WIPEONFORK region not zero in a forked child$/,
    reason: 'CRIU 4.1.1 keeps the madvise flags it knows (criu/proc_parse.c) and wipe-on-fork is not among them, so the region is restored without it',
  }),
  cTarget('t_ghost_sparse', 'deleted-but-open sparse files: 2 GiB holding 16 KiB in three extents (under the 1 MiB ghost limit by allocated space) and 20 KiB with a hole inside: sizes, contents, zeros, and the same data extents (SEEK_DATA/SEEK_HOLE) and st_blocks after restore, offsets'),
  cTarget('t_unix_scm', 'SCM_RIGHTS in flight: a dgram queue holding a pipe end (its writer in the table, data queued), a regular file shared with fd 20, an eventfd, and a seqpacket socket whose peer stays in the table (queues both ways), a stream queue holding a file fd: message order, each fd the file it was (data, shared offset, counter), the in-flight socket talks to its peer'),
  {
    ...cTarget('t_link_remap', 'a file open at offset 5 and a file mapped MAP_SHARED, each unlinked under its name while another hard link keeps it: the fd and the mapping are those inodes (writes show under the other name), contents and offset kept, the old names still absent, no link_remap.* left behind'),
    // without it both dumpers refuse the files (their names are gone, their contents are not ghosts)
    dumpArgs: ['--link-remap'],
  },
  cTarget('t_pidfd', 'pidfds on a live child (blocking and PIDFD_NONBLOCK) and on a reaped one: same pid behind each, flags kept, pidfd_send_signal and waitid(P_PIDFD) reach the child, the reaped one is readable and names no process'),
  cTarget('t_devices', 'memory character devices held open: /dev/null O_RDWR, /dev/urandom, /dev/full and /dev/kmsg write-only: same devices and access modes, urandom reads, full refuses writes with ENOSPC'),
  cTarget('t_netlink', 'netlink sockets: NETLINK_ROUTE bound to its port id in a multicast group with SO_RCVBUF set, an unbound one, a NETLINK_GENERIC one bound to an explicit port id and connected: protocols, port ids, groups and buffer kept, each still answered by the kernel'),
  cTarget('t_tcp_listen', 'a listening TCP socket and a bound UDP socket on 127.0.0.1; after restore it accepts a connection and answers, and answers a datagram; address, port, SO_ACCEPTCONN, SO_REUSEADDR kept', INET, exerciseInet),
  {
    name: 'redis-server',
    verifies: 'redis-server (TCP on 127.0.0.1 and a unix socket) holding 100 000 keys; after restore DBSIZE is 100000, sampled GETs match, a SET/GET round trip works over TCP',
    reference: INET,
    criuCanDump: false,
    start: (dir) => startRedis(dir, { tcp: true }),
  },
  {
    name: 'redis-server-unix',
    verifies: 'the same redis-server with 100 000 keys listening on a unix socket only (no inet socket, so the reference CRIU can dump it): DBSIZE, sampled GETs, SET/GET after restore',
    reference: { expect: 'pass' },
    criuCanDump: true,
    start: (dir) => startRedis(dir, { tcp: false }),
  },
  {
    name: 'node-http',
    verifies: 'this machine\'s node running an HTTP server on 127.0.0.1 with 2 000 in-memory items; after restore GET /state returns the same checksum and hit count + 1, POST /item still works',
    reference: INET,
    criuCanDump: false,
    start: (dir) => startNodeHttp(dir, { tcp: true }),
  },
  {
    name: 'node-http-unix',
    verifies: 'the same node HTTP server listening on a unix socket path: state checksum, hit count, POST after restore',
    reference: { expect: 'pass' },
    criuCanDump: true,
    start: (dir) => startNodeHttp(dir, { tcp: false }),
  },
  {
    name: 'python-state',
    verifies: 'python3 holding a 100 000-entry dict, a list, a half-consumed generator and a worker thread; after restore the digest matches, the generator resumes where it stopped, the thread still counts',
    reference: { expect: 'pass' },
    criuCanDump: true,
    start: (dir) => startPython(dir),
  },
  {
    name: 'go-http-mptcp',
    verifies:
      'a Go >= 1.24 HTTP server, its net.Listen("tcp") an MPTCP listener, holding 2 000 items, 300 parked goroutines and a ticker, with 3 idle keep-alive clients outside the tree (2 TCP, 1 MPTCP); ' +
      'after dump and restore with --tcp-close it serves the same state, lets the restored connections go and the clients reconnect; its listener is TCP after the restore',
    reference: {
      expect: 'cannot-dump',
      match: /Unsupported proto 262/,
      reason: 'CRIU 4.1.1 dumps inet sockets of protocol IP, TCP, UDP and UDPLITE only (criu/sk-inet.c can_dump_ipproto), not IPPROTO_MPTCP',
    },
    criuCanDump: false,
    // MPTCP has no TCP_REPAIR: its connections can only come back closed
    dumpArgs: ['--tcp-close'],
    restoreArgs: ['--tcp-close'],
    start: (dir) => startGoHttp(dir),
  },
  {
    name: 'postgresql',
    verifies:
      'PostgreSQL 15 (postmaster and its 5 workers, each attaching the cluster\'s SysV interlock segment) with 100 000 rows and a client connection held open; ' +
      'restored in an IPC namespace of its own holding that segment, the held session still has its temporary table and settings and writes a row, and a new connection sees every row',
    reference: {
      ...INET,
      reason:
        `${INET_REASON}; past that, it refuses the SysV segment of a tree in its own IPC namespace ` +
        '("Task N with SysVIPC shmem map @ADDR doesn\'t live in IPC ns", shown on t_sysv_ipc by dump-sysv-ipc.test.ts)',
    },
    criuCanDump: false,
    // the held client connection is carried over (TCP_REPAIR)
    dumpArgs: ['--tcp-established'],
    restoreArgs: ['--tcp-established'],
    start: (dir) => startPostgres(dir),
  },
];

export interface RoundTripOptions {
  /**
   * Restores the images (default: reference `criu restore -D DIR --shell-job -d` plus the
   * entry's restoreArgs).
   */
  readonly restore?: (imagesDir: string, extraArgs: readonly string[]) => Promise<unknown>;
}

export interface RoundTrip {
  readonly subject: Subject;
  readonly workDir: string;
  readonly imagesDir: string;
  /** The restored subject's verdict: "PASS" or "FAIL: ...". */
  readonly result: string;
}

/**
 * start → dump (by `dump`, e.g. criuDump or tsdump's) → wait for the original tree to be gone →
 * restore → the same root PID is alive again and ours → verify. The subject is killed in
 * teardown, and the work dir (images + logs) kept if the test failed. Throws (with the subject's
 * log) if a step before verification fails; returns the verdict for the caller to assert.
 */
export async function roundTrip(
  t: ExecutionContext,
  entry: CatalogueEntry,
  dump: (pid: number, imagesDir: string, extraArgs: readonly string[]) => Promise<unknown>,
  opts: RoundTripOptions = {},
): Promise<RoundTrip> {
  const workDir = await makeWorkDir(t);
  const subject = await entry.start(workDir);
  t.teardown(() => subject.kill());
  const imagesDir = join(workDir, 'images');
  await mkdir(imagesDir, { mode: 0o700 });
  const step = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (e) {
      throw new Error(`${entry.name}: ${what}: ${e instanceof Error ? e.message : String(e)}\n${subject.describe()}`, { cause: e });
    }
  };
  await step('dump', () => dump(subject.pid, imagesDir, entry.dumpArgs ?? []));
  // The dump kills the tree; its PIDs must be free (reaped) before the restore can reuse them.
  await step('original tree exit', () => waitGone(subject.pids));
  await step('restore', () => (opts.restore ?? criuRestore)(imagesDir, entry.restoreArgs ?? []));
  if (!isAlive(subject.pid) || !belongsTo(subject.pid, subject.marker)) {
    throw new Error(`${entry.name}: restored root PID ${subject.pid} is not running\n${subject.describe()}`);
  }
  const result = await subject.verify();
  return { subject, workDir, imagesDir, result };
}

/**
 * Starts the subject, optionally runs `before` on it (e.g. a dump that is expected to fail and
 * leave it running), then verifies it live, without any restore.
 */
export async function liveCheck(
  t: ExecutionContext,
  entry: CatalogueEntry,
  before?: (subject: Subject, workDir: string) => Promise<void>,
): Promise<string> {
  const workDir = await makeWorkDir(t);
  const subject = await entry.start(workDir);
  t.teardown(() => subject.kill());
  if (before) await before(subject, workDir);
  return subject.verify();
}
