// Established TCP connections (--tcp-established), end to end. The subject is a pair of
// __test__/targets/t_tcp_established processes over loopback: the target (dumped) and its peer
// (never dumped, the outside world), with bytes queued both ways — the peer's bytes unread in the
// target's receive queue, the target's bytes in its send queue, sent-but-unacknowledged and
// never-sent alike. After `criu restore --tcp-established` both ends check that every queued
// byte arrives exactly once and in order, then exchange more. Variants: IPv6, an AF_INET6 socket
// talking IPv4, half-closed connections (CLOSE_WAIT, FIN_WAIT1, FIN_WAIT2), connections both
// ends shut down (LAST_ACK, CLOSING), which must finish their shutdown after the restore, and a
// connection still being opened (SYN_SENT), which must complete its handshake. Those are all the
// states CRIU 4.1.1 dumps (criu/sk-inet.c can_dump_inet_sk); no descriptor is left in TIME_WAIT,
// and SYN_RECV (a Fast Open socket accepted mid-handshake) is refused by both, untested here.
//
// The network lock is watched through `iptables -S`: two DROP rules per connection while the
// dump runs; after a dump that kills the target they stay until the restore deletes them; after
// --leave-running or a failed dump none is left. Only the rules naming the subject's ports are
// looked at: other tests lock connections of their own meanwhile.
//
// Second check: the reference CRIU's own dump of the same subject. CRIU 4.1.1 cannot dump an inet
// socket on this kernel (SO_PASSCRED → EOPNOTSUPP); the test shows that, then runs CRIU again
// with build/passcred_off.so preloaded — answering exactly that query "off", as tsdump records
// it — and compares the tcp-stream and inet entries field by field, for the established
// connection and for each state added after it (FIN_WAIT2, LAST_ACK, CLOSING, SYN_SENT).
import test, { type ExecutionContext } from 'ava';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CRIU, critDecodeAll, criuRestore, makeWorkDir, run, summarizeLog } from './helpers/criu.js';
import { REPO_ROOT, isAlive, killTree, publish, requestVerify, settledState, startTarget, type Target } from './helpers/target.js';
import { TsdumpCliError, runTsdump, tsdumpDump } from './helpers/tsdump.js';
import { lockRulesNaming } from './helpers/iptables.js';

type Json = Record<string, unknown>;

/** The target's shutdown modes (t_tcp_established.c) and the state each holds the connection in. */
const SHUT_STATES = {
  peershut: { state: 8, name: 'CLOSE_WAIT' },
  targetshut: { state: 4, name: 'FIN_WAIT1' },
  finwait2: { state: 5, name: 'FIN_WAIT2' },
  lastack: { state: 9, name: 'LAST_ACK' },
  closing: { state: 11, name: 'CLOSING' },
} as const;
type Shut = keyof typeof SHUT_STATES;
/** States whose send queue ends with our FIN, not acknowledged: the kernel's figures count it. */
const FIN_QUEUED = [4, 9, 11];

// The target's sizes and pattern seeds (t_tcp_established.c).
const PEER_BYTES = 3000;
const TARGET_BYTES = 100000;
const SEED_PEER = 0xb0b;
const SEED_TARGET = 0xa11;
const SHIM = join(REPO_ROOT, 'build/passcred_off.so');

/** tgt_pattern_byte of __test__/targets/common.h. */
function patternByte(seed: number, off: number): number {
  let x = (Math.imul(Math.floor(off / 8), 2654435761) ^ Math.imul(seed, 40503)) >>> 0;
  x = (x ^ (x >>> 13)) >>> 0;
  x = Math.imul(x, 0x5bd1e995) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  return ((x >>> ((off % 4) * 8)) & 0xff) | (off % 8 === 0 ? 1 : 0);
}

function pattern(seed: number, from: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = patternByte(seed, from + i);
  return b;
}

interface Pair {
  readonly peer: Target;
  readonly target: Target;
  readonly peerPort: number;
  readonly localPort: number;
  /** Both ends on ::1. */
  readonly v6: boolean;
  /** The target an AF_INET6 socket talking IPv4 (::ffff:127.0.0.1). */
  readonly mapped: boolean;
}

/**
 * Starts the peer, then the target connected to it. With `unacked`, the peer's ACKs are dropped
 * (a rule of the test's own, removed after the dump) while the target writes, so part of its send
 * queue is sent but unacknowledged.
 */
async function startPair(
  t: ExecutionContext,
  dir: string,
  opts: { unacked?: boolean; packet?: boolean; v6?: boolean; mapped?: boolean; shut?: Shut; synsent?: boolean } = {},
): Promise<Pair & { ackDrop?: string[]; synDrop?: string[] }> {
  const peerDir = join(dir, 'peer');
  const targetDir = join(dir, 'target');
  await mkdir(peerDir, { mode: 0o700 });
  await mkdir(targetDir, { mode: 0o700 });
  const v6 = !!opts.v6;
  const mapped = !!opts.mapped;
  const shut = opts.shut ? [opts.shut] : opts.synsent ? ['synsent'] : [];
  const go = opts.unacked ? ['go'] : [];
  const peer = await startTarget('t_tcp_established', { dir: peerDir, args: ['peer', ...go, ...(v6 ? ['v6'] : []), ...shut] });
  t.teardown(() => killTree(peer.pid, peer.ctl));
  const peerPort = Number(peer.info.port);
  // synsent: the peer's host never sees the target's SYNs until the test deletes this rule.
  const synDrop = ['INPUT', '-p', 'tcp', '-s', '127.0.0.1', '-d', '127.0.0.1', '--dport', String(peerPort), '--syn', '-j', 'DROP'];
  if (opts.synsent) {
    await iptables(['-w', '-I', ...synDrop]);
    t.teardown(async () => {
      await run('iptables', ['-w', '-D', ...synDrop]);
    });
  }
  const args = ['target', String(peerPort), ...go, ...(opts.packet ? ['packet'] : []), ...(v6 ? ['v6'] : []), ...(mapped ? ['mapped'] : []), ...shut];
  const target = await startTarget('t_tcp_established', { dir: targetDir, args });
  t.teardown(() => killTree(target.pid, target.ctl));
  const localPort = Number(target.info.local_port);
  // A test failing between a dump that kills the target and the restore would leave the lock
  // (by design: the rules wait for a restore): lift it then.
  t.teardown(async () => {
    for (const rule of lockRules({ peerPort, localPort, v6 })) {
      await run(v6 ? 'ip6tables' : 'iptables', ['-w', ...rule.replace(/^-A /, '-D ').split(' ')]);
    }
  });
  if (opts.shut === 'closing') {
    // The target shut down first (FIN_WAIT1, its FIN behind the bytes the peer's window holds
    // back); now the peer's FIN reaches it.
    t.is(await tcpState({ localPort, peerPort }), 4, 'FIN_WAIT1 before the peer shuts down');
    await publish(join(peer.ctl, 'shut'), 'yes\n');
    await waitTcpState({ localPort, peerPort }, 11, target);
  }
  if (opts.synsent) return { peer, target, peerPort, localPort, v6, mapped, synDrop };
  if (!opts.unacked) return { peer, target, peerPort, localPort, v6, mapped };
  const ackDrop = ['INPUT', '-p', 'tcp', '-s', '127.0.0.1', '--sport', String(peerPort), '-d', '127.0.0.1', '--dport', String(localPort), '-j', 'DROP'];
  await iptables(['-w', '-I', ...ackDrop]);
  t.teardown(async () => {
    await run('iptables', ['-w', '-D', ...ackDrop]);
  });
  await publish(join(target.ctl, 'go'), 'go\n');
  const deadline = Date.now() + 10_000;
  while (!existsSync(join(target.ctl, 'written'))) {
    if (Date.now() > deadline) throw new Error(`target never wrote its bytes\n${target.log()}`);
    await sleep(5);
  }
  return { peer, target, peerPort, localPort, v6, mapped, ackDrop };
}

/**
 * The kernel's state of the target's connection (st of /proc/net/tcp or tcp6, the line whose
 * local and remote ports are the target's and the peer's), undefined when there is none.
 */
async function tcpState(p: Pick<Pair, 'localPort' | 'peerPort'>): Promise<number | undefined> {
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of (await readFile(table, 'utf8')).split('\n').slice(1)) {
      const [, local, remote, st] = line.trim().split(/\s+/);
      if (!local || !remote || !st) continue;
      const port = (addr: string) => parseInt(addr.slice(addr.lastIndexOf(':') + 1), 16);
      if (port(local) === p.localPort && port(remote) === p.peerPort) return parseInt(st, 16);
    }
  }
  return undefined;
}

async function waitTcpState(p: Pick<Pair, 'localPort' | 'peerPort'>, state: number, target: Target): Promise<void> {
  const deadline = Date.now() + 10_000;
  let now: number | undefined;
  while ((now = await tcpState(p)) !== state) {
    if (Date.now() > deadline) throw new Error(`connection in state ${now}, never ${state}\n${target.log()}`);
    await sleep(5);
  }
}

async function iptables(args: readonly string[]): Promise<string> {
  const r = await run('iptables', args);
  if (r.code !== 0) throw new Error(`iptables ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** The lock rules of the pair's connection now. */
function locks(p: Pick<Pair, 'localPort' | 'peerPort'>): Promise<string[]> {
  return lockRulesNaming([p.localPort, p.peerPort]);
}

/** The two rules of criu/netfilter.c for the target's connection, as `ip(6)tables -S` print them. */
function lockRules(p: Pick<Pair, 'peerPort' | 'localPort' | 'v6'>): string[] {
  const mark = '-p tcp -m mark ! --mark 0xc114 -m tcp';
  const host = p.v6 ? '::1/128' : '127.0.0.1/32';
  return [
    `-A INPUT -s ${host} -d ${host} ${mark} --sport ${p.peerPort} --dport ${p.localPort} -j DROP`,
    `-A OUTPUT -s ${host} -d ${host} ${mark} --sport ${p.localPort} --dport ${p.peerPort} -j DROP`,
  ];
}

async function verifyBoth(p: Pair): Promise<[string, string]> {
  const [a, b] = await Promise.all([requestVerify(p.target, { timeoutMs: 60_000 }), requestVerify(p.peer, { timeoutMs: 60_000 })]);
  return [a, b];
}

/** The dumped target is our child until the dump kills it: reaped before its PID is restored. */
async function waitExited(target: Target): Promise<void> {
  const timer = new AbortController();
  const late = sleep(10_000, undefined, { signal: timer.signal }).then(() => {
    throw new Error(`pid ${target.pid} not reaped`);
  });
  late.catch(() => undefined);
  try {
    await Promise.race([target.exited, late]);
  } finally {
    timer.abort();
  }
}

function entriesOf(images: Map<string, unknown>, name: string): Json[] {
  return ((images.get(name) as { entries?: Json[] } | undefined)?.entries ?? []) as Json[];
}

/** The target's inet entry and its tcp-stream entry (queues decoded) from one images dir. */
async function connectionImages(dir: string): Promise<{ isk: Json; stream: Json; inq: Buffer; outq: Buffer }> {
  const images = await critDecodeAll(dir);
  const isks = entriesOf(images, 'files.img')
    .filter((e) => e.isk)
    .map((e) => e.isk as Json);
  if (isks.length !== 1) throw new Error(`expected one inet socket, found ${isks.length}`);
  const isk = isks[0]!;
  const name = `tcp-stream-${(isk.ino as number).toString(16)}.img`;
  const [entry] = entriesOf(images, name);
  if (!entry) throw new Error(`${name} missing in ${dir}: ${[...images.keys()].join(' ')}`);
  const { extra, ...stream } = entry as Json & { extra?: { inq?: string; outq?: string } };
  return {
    isk,
    stream,
    inq: Buffer.from(extra?.inq ?? '', 'base64'),
    outq: Buffer.from(extra?.outq ?? '', 'base64'),
  };
}

/** What every dump of the subject must hold, whoever wrote it. */
function checkConnection(t: ExecutionContext, c: Awaited<ReturnType<typeof connectionImages>>, p: Pair): void {
  const { isk, stream, inq, outq } = c;
  // Addresses as the words of the address in memory order: 127.0.0.1, ::1 or ::ffff:127.0.0.1.
  const host = p.v6 ? [0, 0, 0, 0x01000000] : p.mapped ? [0, 0, 0xffff0000, 0x0100007f] : [0x0100007f];
  t.like(isk, { family: p.v6 || p.mapped ? 10 : 2, type: 1, proto: 6, src_port: p.localPort, dst_port: p.peerPort, src_addr: host, dst_addr: host });
  // O_RDWR | O_NONBLOCK; backlog is inet_diag's idiag_wqueue, for a connection its unacked bytes.
  t.is(isk.flags, 0o4002);
  // (inet_diag counts our queued FIN, as SIOCOUTQ does; outq_len leaves it out.)
  t.is(isk.backlog, (stream.outq_len as number) + (FIN_QUEUED.includes(isk.state as number) ? 1 : 0));
  // CRIU 4.1 asks IP_TTL of AF_INET sockets only.
  if (p.v6 || p.mapped) t.deepEqual(isk.ip_opts, {});
  else t.like(isk.ip_opts as Json, { ttl: 64 });
  t.like(isk.tcp_opts as Json, { nodelay: true });
  t.true([1, 4, 5, 8, 9, 11].includes(isk.state as number), `state ${String(isk.state)}`);
  // (SIOCINQ leaves a received FIN out, as the bytes do.)
  t.is(stream.inq_len, PEER_BYTES);
  t.true(inq.equals(pattern(SEED_PEER, 0, PEER_BYTES)), 'the receive queue holds the peer\'s bytes');
  const outqLen = stream.outq_len as number;
  // In FIN_WAIT2 the peer acknowledged every byte and the FIN: the send queue is empty.
  if (isk.state === 5) t.is(outqLen, 0);
  else t.true(outqLen > 0 && outqLen <= TARGET_BYTES);
  // The send queue is the tail of what the target wrote: the head was acknowledged.
  t.true(outq.equals(pattern(SEED_TARGET, TARGET_BYTES - outqLen, outqLen)), 'the send queue holds the tail of the target\'s bytes');
  t.true((stream.unsq_len as number) <= outqLen);
  // Negotiated on loopback: timestamps, SACK, window scaling; so both scales and the timestamp
  // are there, and the window (TCP_REPAIR_WINDOW) too.
  t.is(stream.opt_mask, 0x7);
  for (const k of ['rcv_wscale', 'timestamp', 'snd_wl1', 'snd_wnd', 'max_window', 'rcv_wnd', 'rcv_wup']) t.true(k in stream, k);
  t.false('nodelay' in stream, "CRIU 4.1 writes TCP_NODELAY in tcp_opts, tcp_stream_entry's copy is deprecated");
}

/** A connection caught in SYN_SENT: nothing queued, nothing negotiated yet. */
function checkSynSent(t: ExecutionContext, c: Awaited<ReturnType<typeof connectionImages>>, p: Pair): void {
  const { isk, stream } = c;
  t.like(isk, { family: 2, type: 1, proto: 6, state: 2, src_port: p.localPort, dst_port: p.peerPort, src_addr: [0x0100007f], dst_addr: [0x0100007f] });
  // inet_diag's write queue is write_seq - snd_una: the SYN's sequence number.
  t.is(isk.backlog, 1);
  t.false('shutdown' in isk);
  // SIOCINQ/SIOCOUTQ/SIOCOUTQNSD answer 0 in SYN_SENT; rcv_nxt is not known yet (0) and
  // outq_seq is the initial sequence number plus the SYN's one, which restore takes back off
  // before connecting again (libsoccr_set_sk_data_noq).
  t.like(stream, { inq_len: 0, inq_seq: 0, outq_len: 0, unsq_len: 0, opt_mask: 0, snd_wscale: 0, snd_wl1: 0, snd_wnd: 0, rcv_wup: 0 });
  for (const k of ['rcv_wscale', 'timestamp']) t.false(k in stream, `${k}: no option negotiated before the SYN-ACK`);
  t.is(c.inq.length + c.outq.length, 0);
}

test.serial('t_tcp_established: refused without --tcp-established, left running with its connection working', async (t) => {
  const dir = await makeWorkDir(t);
  const pair = await startPair(t, dir);
  const imagesDir = join(dir, 'images');
  const err = await t.throwsAsync(tsdumpDump(pair.target.pid, imagesDir), { instanceOf: TsdumpCliError });
  t.is(err?.code, 'UNSUPPORTED_FD');
  t.regex(
    err?.message ?? '',
    new RegExp(`ESTABLISHED TCP connection 127\\.0\\.0\\.1:${pair.localPort} -> 127\\.0\\.0\\.1:${pair.peerPort}; established connections are dumped only with --tcp-established`),
  );
  t.false(existsSync(join(imagesDir, 'inventory.img')));
  t.deepEqual(await locks(pair), [], 'no rule added');
  t.is(await settledState(pair.target.pid), 'S');
  t.deepEqual(await verifyBoth(pair), ['PASS', 'PASS']);
});

test.serial('t_tcp_established: sent, unsent and received bytes survive dump --tcp-established and criu restore --tcp-established', async (t) => {
  const dir = await makeWorkDir(t);
  const pair = await startPair(t, dir, { unacked: true });
  const imagesDir = join(dir, 'images');
  await tsdumpDump(pair.target.pid, imagesDir, ['--tcp-established']);
  await waitExited(pair.target);
  // The target was killed: its connection stays locked for the restore to unlock.
  const locked = await locks(pair);
  for (const r of lockRules(pair)) t.true(locked.includes(r), `${r}\n--- rules ---\n${locked.join('\n')}`);
  await iptables(['-w', '-D', ...pair.ackDrop!]);

  const c = await connectionImages(imagesDir);
  checkConnection(t, c, pair);
  // Nothing was acknowledged since the write (the test dropped the ACKs), so the send queue is
  // all TARGET_BYTES, and the part the peer's window had taken was sent: outq_len - unsq_len.
  t.is(c.stream.outq_len, TARGET_BYTES);
  t.true((c.stream.unsq_len as number) < TARGET_BYTES, `some bytes were sent: unsq_len ${String(c.stream.unsq_len)}`);

  const log = await criuRestore(imagesDir, ['--tcp-established']);
  t.regex(log, /Unlocked 127\.0\.0\.1:\d+ - 127\.0\.0\.1:\d+ connection/);
  t.deepEqual(await locks(pair), [], 'criu restore deleted the rules the dump left');
  // The peer already holds the sent part; the restored target sends on from snd_nxt within the
  // window it last heard of, and the peer's cumulative ACK covers both.
  t.deepEqual(await verifyBoth(pair), ['PASS', 'PASS']);
});

test.serial('t_tcp_established v6: an IPv6 connection is locked with ip6tables and restored', async (t) => {
  const dir = await makeWorkDir(t);
  const pair = await startPair(t, dir, { v6: true });
  const imagesDir = join(dir, 'images');
  await tsdumpDump(pair.target.pid, imagesDir, ['--tcp-established']);
  await waitExited(pair.target);
  const locked = (await run('ip6tables', ['-w', '-S'])).stdout.split('\n');
  for (const r of lockRules(pair)) t.true(locked.includes(r), `${r}\n--- rules ---\n${locked.join('\n')}`);
  const c = await connectionImages(imagesDir);
  checkConnection(t, c, pair);
  t.is(c.isk.v6only, false);
  await criuRestore(imagesDir, ['--tcp-established']);
  t.deepEqual(await locks(pair), [], 'criu restore deleted the ip6tables rules');
  t.deepEqual(await verifyBoth(pair), ['PASS', 'PASS']);
});

test.serial('t_tcp_established mapped: an AF_INET6 socket talking IPv4 is locked with iptables, as CRIU does', async (t) => {
  const dir = await makeWorkDir(t);
  const pair = await startPair(t, dir, { mapped: true });
  const imagesDir = join(dir, 'images');
  await tsdumpDump(pair.target.pid, imagesDir, ['--tcp-established']);
  await waitExited(pair.target);
  const locked = (await iptables(['-w', '-S'])).split('\n');
  for (const r of lockRules(pair)) t.true(locked.includes(r), `${r}\n--- rules ---\n${locked.join('\n')}`);
  checkConnection(t, await connectionImages(imagesDir), pair);
  await criuRestore(imagesDir, ['--tcp-established']);
  t.deepEqual(await locks(pair), [], 'criu restore deleted the iptables rules');
  t.deepEqual(await verifyBoth(pair), ['PASS', 'PASS']);
});

// Connections being shut down: CRIU's restore rebuilds each FIN from the state and from queue
// lengths that leave the FINs' sequence numbers out (soccr/soccr.c refresh_sk): ours with a
// shutdown() — marked sent and then acknowledged by a forged ACK in FIN_WAIT2 — and the peer's
// with a forged FIN packet marked 0xC114, which the lock lets through (libsoccr_restore). The
// states hold without help: FIN_WAIT2 and CLOSE_WAIT for as long as the sockets stay open, and
// LAST_ACK, CLOSING and FIN_WAIT1 because the target's FIN waits behind bytes the peer's closed
// window holds back (as CRIU's zdtm socket-tcp-closing holds CLOSING).
// After the restore both ends read the other's bytes and end of stream, exactly once; in the
// three states where both ends shut down, each then sees its socket closed, its FIN acknowledged
// by the other end.
for (const [shut, { state, name }] of Object.entries(SHUT_STATES) as [Shut, (typeof SHUT_STATES)[Shut]][]) {
  test.serial(`t_tcp_established ${shut}: a ${name} connection is restored and finishes its shutdown`, async (t) => {
    const dir = await makeWorkDir(t);
    const pair = await startPair(t, dir, { shut });
    t.is(await tcpState(pair), state, `${name} before the dump`);
    const imagesDir = join(dir, 'images');
    await tsdumpDump(pair.target.pid, imagesDir, ['--tcp-established']);
    await waitExited(pair.target);
    const c = await connectionImages(imagesDir);
    checkConnection(t, c, pair);
    t.is(c.isk.state, state);
    // inet_diag's shutdown bits: ours after our FIN, the peer's (read side) after its FIN.
    const sent = [4, 5, 9, 11].includes(state);
    const received = [8, 9, 11].includes(state);
    t.is(c.isk.shutdown, sent && received ? 'BOTH' : sent ? 'WRITE' : 'READ');
    // The queue lengths leave our FIN out: the bytes to replay are data only.
    t.is(c.outq.length, c.stream.outq_len as number);
    if (FIN_QUEUED.includes(state)) {
      t.true((c.stream.outq_len as number) < TARGET_BYTES);
      t.is(c.stream.unsq_len, c.stream.outq_len, 'nothing in flight: the FIN is behind unsent bytes');
    }
    if (state === 5) t.is(c.stream.unsq_len, 0);
    await criuRestore(imagesDir, ['--tcp-established']);
    t.deepEqual(await locks(pair), []);
    t.deepEqual(await verifyBoth(pair), ['PASS', 'PASS']);
  });
}

// A connection still being opened. CRIU 4.1.1 dumps SYN_SENT too (can_dump_inet_sk; CRIU's
// zdtm socket-tcp-syn-sent holds it the same way, dropping the SYNs): its restore sets the send
// queue's sequence number to the initial one, leaves repair mode for a connect() that queues the
// SYN again, and the kernel retransmits it once the lock is lifted. The test's own rule drops the
// SYNs until after the restore; then the handshake completes and the streams run both ways.
test.serial('t_tcp_established synsent: a SYN_SENT connection is restored and completes its handshake', async (t) => {
  const dir = await makeWorkDir(t);
  const pair = await startPair(t, dir, { synsent: true });
  t.is(await tcpState(pair), 2, 'SYN_SENT before the dump');
  const imagesDir = join(dir, 'images');
  await tsdumpDump(pair.target.pid, imagesDir, ['--tcp-established']);
  await waitExited(pair.target);
  const locked = await locks(pair);
  for (const r of lockRules(pair)) t.true(locked.includes(r), `${r}\n--- rules ---\n${locked.join('\n')}`);
  checkSynSent(t, await connectionImages(imagesDir), pair);
  await criuRestore(imagesDir, ['--tcp-established']);
  t.is(await tcpState(pair), 2, 'restored in SYN_SENT, its SYNs still dropped');
  await iptables(['-w', '-D', ...pair.synDrop!]);
  t.deepEqual(await locks(pair), [], 'criu restore deleted the lock rules');
  t.deepEqual(await verifyBoth(pair), ['PASS', 'PASS']);
});

test.serial('t_tcp_established: --leave-running hands the connection back and leaves no rule', async (t) => {
  const dir = await makeWorkDir(t);
  const pair = await startPair(t, dir);
  const imagesDir = join(dir, 'images');
  await tsdumpDump(pair.target.pid, imagesDir, ['--tcp-established', '--leave-running']);
  t.true(isAlive(pair.target.pid));
  t.is(await settledState(pair.target.pid), 'S', 'running (sleeping), not stopped');
  t.deepEqual(await locks(pair), []);
  checkConnection(t, await connectionImages(imagesDir), pair);
  // Out of repair mode: the queues are still there to read and the connection carries on.
  t.deepEqual(await verifyBoth(pair), ['PASS', 'PASS']);
});

test.serial('t_tcp_established: a dump failing after the connection went into repair mode puts it back and removes the rules', async (t) => {
  const dir = await makeWorkDir(t);
  // fd 3 the connection, fd 4 a packet socket tsdump refuses: the file table fails on the
  // second, with the first already in repair mode and the network locked.
  const pair = await startPair(t, dir, { packet: true });
  const imagesDir = join(dir, 'images');
  const err = await t.throwsAsync(tsdumpDump(pair.target.pid, imagesDir, ['--tcp-established', '-v4', '-o', 'dump.log']), { instanceOf: TsdumpCliError });
  t.is(err?.code, 'UNSUPPORTED_FD');
  t.regex(err?.message ?? '', /tsdump cannot dump packet sockets \(AF_PACKET, protocol \d+\) yet/);
  t.deepEqual(await locks(pair), [], 'no rule left');
  t.is(await settledState(pair.target.pid), 'S');
  t.deepEqual(await verifyBoth(pair), ['PASS', 'PASS']);
});

test.serial('t_tcp_established: a failing post-dump script unlocks the connection too', async (t) => {
  const dir = await makeWorkDir(t);
  const pair = await startPair(t, dir);
  const script = join(dir, 'fail-post-dump.sh');
  await writeFile(script, '#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] && exit 3\nexit 0\n', { mode: 0o700 });
  const r = await runTsdump(['dump', '-t', String(pair.target.pid), '-D', join(dir, 'images'), '--shell-job', '--tcp-established', '--action-script', script]);
  t.not(r.code, 0);
  t.regex(r.stderr, /post-dump/);
  t.deepEqual(await locks(pair), []);
  t.is(await settledState(pair.target.pid), 'S');
  t.deepEqual(await verifyBoth(pair), ['PASS', 'PASS']);
});

/**
 * The second check: the same subject dumped by tsdump and by the reference CRIU (each restored
 * and verified), then the inet and tcp-stream entries compared field by field. `variant` is a
 * shutdown mode or 'synsent'; none for the established connection, where the test also shows
 * CRIU failing without the shim.
 */
async function compareWithCriu(t: ExecutionContext, variant?: Shut | 'synsent'): Promise<void> {
  const dir = await makeWorkDir(t);
  for (const sub of ['tsdump', 'criu']) await mkdir(join(dir, sub), { mode: 0o700 });
  const opts = variant === 'synsent' ? { synsent: true } : variant ? { shut: variant } : {};
  const check = variant === 'synsent' ? checkSynSent : checkConnection;
  /** Restores, lets a SYN_SENT connection's SYNs through, and has both ends verify. */
  const restoreAndVerify = async (p: Awaited<ReturnType<typeof startPair>>, imagesDir: string, who: string) => {
    await criuRestore(imagesDir, ['--tcp-established']);
    if (p.synDrop) await iptables(['-w', '-D', ...p.synDrop]);
    t.deepEqual(await verifyBoth(p), ['PASS', 'PASS'], `${who} images restored`);
  };

  const a = await startPair(t, join(dir, 'tsdump'), opts);
  const ourDir = join(dir, 'tsdump', 'images');
  await tsdumpDump(a.target.pid, ourDir, ['--tcp-established']);
  await waitExited(a.target);
  await restoreAndVerify(a, ourDir, 'tsdump');

  const b = await startPair(t, join(dir, 'criu'), opts);
  const dumpArgs = ['dump', '-t', String(b.target.pid), '--shell-job', '--tcp-established', '-v4', '-o', 'dump.log'];
  if (!variant) {
    // As it is, the reference CRIU stops at the socket's SO_PASSCRED and leaves the tree running.
    const plainDir = join(dir, 'criu', 'plain');
    await mkdir(plainDir, { mode: 0o700 });
    const plain = await run(CRIU, [...dumpArgs, '-D', plainDir]);
    t.not(plain.code, 0);
    t.regex(await readFile(join(plainDir, 'dump.log'), 'utf8'), /Can't get 1:16 opt: Operation not supported/);
    t.is(await settledState(b.target.pid), 'S');
  }
  // With the shim, the same CRIU dumps it, locking the connection with the same two rules.
  const theirDir = join(dir, 'criu', 'images');
  await mkdir(theirDir, { mode: 0o700 });
  const shimmed = await run(CRIU, [...dumpArgs, '-D', theirDir], { env: { ...process.env, LD_PRELOAD: SHIM } });
  const theirLog = await readFile(join(theirDir, 'dump.log'), 'utf8');
  t.is(shimmed.code, 0, summarizeLog(theirLog));
  await waitExited(b.target);
  const locked = await locks(b);
  for (const r of lockRules(b)) t.true(locked.includes(r), `CRIU's rule ${r}`);
  await restoreAndVerify(b, theirDir, 'CRIU');

  const ours = await connectionImages(ourDir);
  const theirs = await connectionImages(theirDir);
  check(t, ours, a);
  check(t, theirs, b);
  // Two connections of the same program: what differs is what each connection drew at random —
  // ports, inodes, file ids, the initial sequence numbers (so every absolute sequence number)
  // and the timestamp clock's offset. CRIU also stamps ns_id (the network namespace's id), which
  // restore reads only for dumps with network namespaces; tsdump leaves it out (see
  // dump-sockets.test.ts). Everything else is the same, field for field: the state, the
  // shutdown bits and the queue lengths with their FINs left out alike.
  const strip = ({ id: _id, ino: _ino, src_port: _s, dst_port: _d, ns_id: _ns, ...rest }: Json) => rest;
  t.deepEqual(strip(ours.isk), strip(theirs.isk));
  t.true('ns_id' in theirs.isk);
  const seqs = ['inq_seq', 'outq_seq', 'snd_wl1', 'rcv_wup', 'timestamp'];
  const fixed = (s: Json) => Object.fromEntries(Object.entries(s).filter(([k]) => !seqs.includes(k)));
  t.deepEqual(Object.keys(ours.stream).sort(), Object.keys(theirs.stream).sort());
  t.deepEqual(fixed(ours.stream), fixed(theirs.stream));
  // The sequence numbers relative to the connection's own: the window's edges sit at rcv_nxt.
  const rel = (s: Json, k: string) => ((s[k] as number) - (s.inq_seq as number)) >>> 0;
  t.is(rel(ours.stream, 'rcv_wup'), rel(theirs.stream, 'rcv_wup'), 'rcv_wup');
  // snd_wl1 is the sequence number of the segment that last updated the send window. Once the
  // peer's FIN is in (CLOSE_WAIT, LAST_ACK, CLOSING) that is the FIN itself (one before rcv_nxt)
  // until the peer answers one of the target's zero-window probes (rcv_nxt): the timing of the
  // dump, not the dumper, decides which one a dump sees.
  const finReceived = [8, 9, 11].includes(ours.isk.state as number);
  if (finReceived) {
    for (const s of [ours.stream, theirs.stream]) t.true([0, 0xffffffff].includes(rel(s, 'snd_wl1')), `snd_wl1 ${rel(s, 'snd_wl1')} from rcv_nxt`);
  } else {
    t.is(rel(ours.stream, 'snd_wl1'), rel(theirs.stream, 'snd_wl1'), 'snd_wl1');
  }
}

test.serial('t_tcp_established: tcp-stream and inet entries match the reference CRIU dump of the same subject', async (t) => {
  await compareWithCriu(t);
});

for (const variant of ['finwait2', 'lastack', 'closing', 'synsent'] as const) {
  const name = variant === 'synsent' ? 'SYN_SENT' : SHUT_STATES[variant].name;
  test.serial(`t_tcp_established ${variant}: the ${name} entries match the reference CRIU dump too`, async (t) => {
    await compareWithCriu(t, variant);
  });
}

test.serial('t_tcp_listen: listening TCP and bound UDP entries match the reference CRIU dump too', async (t) => {
  // The ip_opts/tcp_opts CRIU 4.1.1 writes for every inet socket, not only connections: the TTL
  // of AF_INET sockets, tcp_opts with the keepalive tuning for TCP and empty for UDP.
  const dir = await makeWorkDir(t);
  const dumps: Json[][] = [];
  for (const who of ['tsdump', 'criu'] as const) {
    await mkdir(join(dir, who), { mode: 0o700 });
    const target = await startTarget('t_tcp_listen', { dir: join(dir, who) });
    t.teardown(() => killTree(target.pid, target.ctl));
    const imagesDir = join(dir, who, 'images');
    if (who === 'tsdump') {
      await tsdumpDump(target.pid, imagesDir);
    } else {
      await mkdir(imagesDir, { mode: 0o700 });
      const r = await run(CRIU, ['dump', '-t', String(target.pid), '-D', imagesDir, '--shell-job', '-v4', '-o', 'dump.log'], {
        env: { ...process.env, LD_PRELOAD: SHIM },
      });
      t.is(r.code, 0, summarizeLog(await readFile(join(imagesDir, 'dump.log'), 'utf8')));
    }
    const isks = entriesOf(await critDecodeAll(imagesDir), 'files.img')
      .filter((e) => e.isk)
      .map((e) => e.isk as Json)
      .sort((x, y) => (x.proto as number) - (y.proto as number));
    // Run-specific: ids, inodes, ports; ns_id is CRIU's alone (see the connection test above).
    dumps.push(isks.map(({ id: _id, ino: _ino, src_port: _port, ns_id: _ns, ...rest }) => rest));
  }
  t.is(dumps[0]!.length, 2);
  t.deepEqual(dumps[0], dumps[1]);
});
