// MPTCP sockets (IPPROTO_MPTCP, 262: Go >= 1.24 listens with them) and --tcp-close, end to end.
//
// What the reference `criu restore` 4.1.1 can recreate from an inet entry (criu/sk-inet.c
// open_inet_sk): it passes the image's protocol to socket(), so an unconnected or bound MPTCP
// socket comes back as one; it listen()s only on IPPROTO_TCP entries ("Wrong socket in listen
// state 262" otherwise); and it rebuilds a connection only through TCP_REPAIR, which MPTCP has
// not — or, with --tcp-close, as a shut-down TCP socket. So tsdump records an MPTCP listener as a
// TCP listener (same address, same options) and an MPTCP connection only with --tcp-close.
//
// The subject, __test__/targets/t_mptcp: an MPTCP listener, a bound and an unbound MPTCP socket,
// an in-tree MPTCP connection (both ends) and a plain TCP client outside the tree (this test's)
// that the MPTCP listener accepted. The reference CRIU cannot dump it at all ("Unsupported proto
// 262", even with the SO_PASSCRED shim of dump-tcp.test.ts); tsdump's --tcp-close for plain TCP
// is compared with CRIU's on t_tcp_established.
import test, { type ExecutionContext } from 'ava';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CRIU, CriuError, critDecodeAll, criuRestore, makeWorkDir, run, summarizeLog } from './helpers/criu.js';
import { REPO_ROOT, killTree, publish, requestVerify, settledState, startTarget, type Target } from './helpers/target.js';
import { TsdumpCliError, tsdumpDump } from './helpers/tsdump.js';
import { lockRulesNaming } from './helpers/iptables.js';

type Json = Record<string, unknown>;

const SHIM = join(REPO_ROOT, 'build/passcred_off.so');

interface Subject {
  readonly target: Target;
  readonly port: number;
  readonly boundPort: number;
  /** This test's plain TCP client of the target's MPTCP listener. */
  readonly client: Socket;
  /** Settles when the client sees the target's end of stream (or its connection fail). */
  readonly clientEnded: Promise<string>;
  /** What the client received, in order. */
  readonly received: () => string;
}

async function startSubject(t: ExecutionContext, dir: string): Promise<Subject> {
  const target = await startTarget('t_mptcp', { dir });
  t.teardown(() => killTree(target.pid, target.ctl));
  const port = Number(target.info.port);
  const client = createConnection({ host: '127.0.0.1', port });
  t.teardown(() => void client.destroy());
  let data = '';
  client.on('data', (b: Buffer) => (data += b.toString()));
  const clientEnded = new Promise<string>((resolve) => {
    client.on('end', () => resolve('end'));
    client.on('error', (e) => resolve(`error ${e.message}`));
  });
  client.write('hello\n');
  const deadline = Date.now() + 20_000;
  while (!existsSync(join(target.ctl, 'accepted'))) {
    if (Date.now() > deadline) throw new Error(`the target never accepted the outside client\n${target.log()}`);
    await sleep(5);
  }
  return { target, port, boundPort: Number(target.info.bound_port), client, clientEnded, received: () => data };
}

async function verify(s: Subject, expect: 'live' | 'closed'): Promise<string> {
  await publish(join(s.target.ctl, 'expect'), `${expect}\n`);
  return requestVerify(s.target, { timeoutMs: 30_000 });
}


function entriesOf(images: Map<string, unknown>, name: string): Json[] {
  return ((images.get(name) as { entries?: Json[] } | undefined)?.entries ?? []) as Json[];
}

/** The inet entries of an images dir, by source port and then destination port. */
async function inetEntries(dir: string): Promise<{ images: Map<string, unknown>; isks: Json[] }> {
  const images = await critDecodeAll(dir);
  const isks = entriesOf(images, 'files.img')
    .filter((e) => e.isk)
    .map((e) => e.isk as Json);
  return { images, isks };
}

test.serial('t_mptcp: without --tcp-close the MPTCP connection is refused by name and the target runs on', async (t) => {
  const dir = await makeWorkDir(t);
  const s = await startSubject(t, dir);
  for (const args of [[], ['--tcp-established']]) {
    const imagesDir = join(dir, `images${args.length}`);
    const err = await t.throwsAsync(tsdumpDump(s.target.pid, imagesDir, args), { instanceOf: TsdumpCliError });
    t.is(err?.code, 'UNSUPPORTED_FD', err?.message);
    // fd 6: the in-tree MPTCP client (the MPTCP listener, fd 3, would be dumped as TCP)
    t.regex(
      err?.message ?? '',
      new RegExp(`fd 6 \\(socket:\\[\\d+\\]\\): ESTABLISHED MPTCP connection 127\\.0\\.0\\.1:\\d+ -> 127\\.0\\.0\\.1:${s.port}: MPTCP \\(IPPROTO_MPTCP\\) has no repair mode.*--tcp-close`),
    );
    t.false(existsSync(join(imagesDir, 'inventory.img')));
    // --tcp-established locked the outside client's TCP connection first: unlocked again
    t.deepEqual(await lockRulesNaming([s.port]), [], 'no lock rule left');
    t.is(await settledState(s.target.pid), 'S');
  }
  t.is(await verify(s, 'live'), 'PASS');
  t.is(s.received(), 'live\n', 'the outside connection still carries bytes');
});

test.serial('t_mptcp: dump --tcp-close → criu restore --tcp-close: listener back as TCP, MPTCP sockets as MPTCP, connections closed', async (t) => {
  const dir = await makeWorkDir(t);
  const s = await startSubject(t, dir);
  const imagesDir = join(dir, 'images');
  await tsdumpDump(s.target.pid, imagesDir, ['--tcp-close']);
  await s.target.exited;
  // Not locked: the killed target's kernel closed the outside connection the ordinary way.
  t.is(await s.clientEnded, 'end');
  t.deepEqual(await lockRulesNaming([s.port]), [], 'no lock rule');

  const { images, isks } = await inetEntries(imagesDir);
  t.true((entriesOf(images, 'inventory.img')[0] as Json).tcp_close as boolean, 'inventory.img says tcp_close');
  t.deepEqual([...images.keys()].filter((k) => k.startsWith('tcp-stream-')), [], 'no connection state');
  const byKind = (proto: number, state: number) => isks.filter((e) => e.proto === proto && e.state === state);
  const [listener] = byKind(6, 10);
  t.like(listener, { family: 2, type: 1, src_port: s.port, src_addr: [0x0100007f], backlog: 8 });
  t.like(listener?.opts as Json, { reuseaddr: true });
  t.like(listener?.tcp_opts as Json, { nodelay: true });
  t.deepEqual(
    byKind(262, 7).map((e) => e.src_port).sort(),
    [0, s.boundPort].sort(),
    'the bound and the unbound MPTCP socket keep their protocol',
  );
  const connections = byKind(6, 1);
  t.is(connections.length, 3, 'the in-tree MPTCP pair and the outside TCP client, recorded as TCP connections');
  t.is(isks.length, 6);

  const refused = await t.throwsAsync(criuRestore(imagesDir), { instanceOf: CriuError });
  t.regex(refused?.log ?? '', /Need to set the --tcp-close options/);
  await criuRestore(imagesDir, ['--tcp-close']);
  t.is(await verify(s, 'closed'), 'PASS');
});

test.serial('t_mptcp: the reference CRIU cannot dump an MPTCP socket at all', async (t) => {
  const dir = await makeWorkDir(t);
  const s = await startSubject(t, dir);
  const imagesDir = join(dir, 'criu');
  await mkdir(imagesDir, { mode: 0o700 });
  // with the shim that gets it past SO_PASSCRED on inet sockets (dump-tcp.test.ts)
  const r = await run(CRIU, ['dump', '-t', String(s.target.pid), '-D', imagesDir, '--shell-job', '--tcp-close', '-v4', '-o', 'dump.log'], {
    env: { ...process.env, LD_PRELOAD: SHIM },
  });
  t.not(r.code, 0);
  t.regex(await readFile(join(imagesDir, 'dump.log'), 'utf8'), /Unsupported proto 262/);
  t.is(await verify(s, 'live'), 'PASS');
});

// Plain TCP: tsdump's --tcp-close writes what CRIU's does. Both dump the same live connection
// with --leave-running (CRIU first, with the shim): neither locks nor repairs it, so it carries
// on, and the inet entries match field by field.
test.serial('t_tcp_established: --tcp-close writes the inet entry and inventory flag CRIU writes, and leaves the connection alone', async (t) => {
  const dir = await makeWorkDir(t);
  const peer = await startTarget('t_tcp_established', { dir: await subdir(dir, 'peer'), args: ['peer'] });
  t.teardown(() => killTree(peer.pid, peer.ctl));
  const target = await startTarget('t_tcp_established', { dir: await subdir(dir, 'target'), args: ['target', peer.info.port!] });
  t.teardown(() => killTree(target.pid, target.ctl));

  const theirDir = await subdir(dir, 'criu');
  const r = await run(CRIU, ['dump', '-t', String(target.pid), '-D', theirDir, '--shell-job', '--tcp-close', '-R', '-v4', '-o', 'dump.log'], {
    env: { ...process.env, LD_PRELOAD: SHIM },
  });
  t.is(r.code, 0, summarizeLog(await readFile(join(theirDir, 'dump.log'), 'utf8')));
  const ourDir = join(dir, 'tsdump');
  await tsdumpDump(target.pid, ourDir, ['--tcp-close', '--leave-running']);
  t.deepEqual(await lockRulesNaming([Number(peer.info.port)]), []);

  const ours = await inetEntries(ourDir);
  const theirs = await inetEntries(theirDir);
  t.is(ours.isks.length, 1);
  t.is(theirs.isks.length, 1);
  // the same socket: only the file id and CRIU's own ns_id differ (see dump-tcp.test.ts)
  const comparable = ({ id: _id, ns_id: _ns, ...rest }: Json) => rest;
  t.deepEqual(comparable(ours.isks[0]!), comparable(theirs.isks[0]!));
  t.like(ours.isks[0]!, { proto: 6, state: 1, dst_port: Number(peer.info.port) });
  for (const d of [ours, theirs]) {
    t.true((entriesOf(d.images, 'inventory.img')[0] as Json).tcp_close as boolean);
    t.deepEqual([...d.images.keys()].filter((k) => k.startsWith('tcp-stream-')), []);
  }
  const [a, b] = await Promise.all([requestVerify(target, { timeoutMs: 60_000 }), requestVerify(peer, { timeoutMs: 60_000 })]);
  t.deepEqual([a, b], ['PASS', 'PASS']);
});

async function subdir(dir: string, name: string): Promise<string> {
  const d = join(dir, name);
  await mkdir(d, { mode: 0o700 });
  return d;
}
