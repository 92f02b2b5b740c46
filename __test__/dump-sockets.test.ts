// Sockets, beyond "the subject verifies itself" of dump.test.ts:
// - the unix socket entries tsdump writes (files.img UNIXSK, sk-queues.img) next to the reference
//   CRIU's dump of the same subject, decoded by crit, socket by socket (peers compared as the fd
//   they lead to, since inodes and ids differ between two runs);
// - the inet entries of t_tcp_listen, field by field against what criu/sk-inet.c writes (the
//   reference CRIU cannot dump inet sockets on this kernel, so there is no dump to diff with);
// - a unix socket whose peer is outside the dumped tree: refused, naming the peer, unless
//   --ext-unix-sk, and then only a named dgram peer, which restore reconnects to.
import test, { type ExecutionContext } from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { catalogue, liveCheck, roundTrip, type CatalogueEntry, type Subject } from './helpers/catalogue.js';
import { critDecodeAll, criuDump } from './helpers/criu.js';
import { killTree, logTail, requestVerify, spawnWithProtocol } from './helpers/target.js';
import { TsdumpCliError, tsdumpDump } from './helpers/tsdump.js';

const PROGRAMS = resolve(dirname(fileURLToPath(import.meta.url)), 'programs');

type Json = Record<string, unknown>;

function entriesOf(images: Map<string, unknown>, name: string): Json[] {
  const img = images.get(name) as { entries?: Json[] } | undefined;
  return img?.entries ?? [];
}

/**
 * Every unix socket of a dump, by where it sits: "fdinfo-N.img fd F" → its entry without the
 * run-specific numbers (id, ino, ns_id), its peer as the place the peer sits, its queued message
 * lengths, and paths relative to the subject's work directory.
 */
function unixSockets(images: Map<string, unknown>, workDir: string, pid: number): Record<string, Json> {
  const byId = new Map<number, Json>();
  for (const e of entriesOf(images, 'files.img')) if (e.usk) byId.set(e.id as number, e.usk as Json);
  const place = new Map<number, string>(); // ino → fd location
  const rows: [string, Json][] = [];
  for (const [name] of images) {
    if (!name.startsWith('fdinfo-')) continue;
    for (const fd of entriesOf(images, name)) {
      const usk = byId.get(fd.id as number);
      if (!usk) continue;
      const where = `${name} fd ${String(fd.fd)}`;
      place.set(usk.ino as number, where);
      rows.push([where, usk]);
    }
  }
  const queues = new Map<number, number[]>();
  for (const q of entriesOf(images, 'sk-queues.img')) {
    const list = queues.get(q.id_for as number) ?? [];
    list.push(q.length as number);
    queues.set(q.id_for as number, list);
  }
  const out: Record<string, Json> = {};
  for (const [where, usk] of rows) {
    const { id, ino: _ino, ns_id: _ns, peer, name, ...rest } = usk;
    void _ino;
    void _ns;
    out[where] = {
      ...rest,
      name: normalName(String(name), workDir, pid),
      ...(rest.name_dir !== undefined ? { name_dir: String(rest.name_dir).split(workDir).join('<work>') } : {}),
      peer: peer === 0 ? 'none' : (place.get(peer as number) ?? `outside:${String(peer)}`),
      queue: queues.get(id as number) ?? [],
    };
  }
  return out;
}

/**
 * A socket name comparable across runs: the work directory and the subject's pid (in names a
 * program chose) replaced, and autobind names ("\0" + 5 hex digits, the kernel's pick) masked.
 */
function normalName(name: string, workDir: string, pid: number): string {
  if (/^=00[0-9a-f]{5}$/.test(name)) return '<autobind>';
  return name.split(workDir).join('<work>').split(String(pid)).join('<pid>');
}

// Subjects the reference CRIU can dump that hold unix sockets.
// sockets_misc.py unix: an abstract-named listener with a connection still in its accept queue
// (dumped with the listener as its peer, as criu/sk-unix.c does), a dgram socket bound by a
// relative name (name_dir), SO_PASSCRED, send/receive timeouts.
const UNIX_SUBJECTS: readonly CatalogueEntry[] = [
  ...['t_unix_sockets', 't_unix_listen', 'redis-server-unix', 'node-http-unix'].map((n) => catalogue.find((e) => e.name === n)!),
  pythonEntry('sockets_misc.py', 'unix'),
];

for (const entry of UNIX_SUBJECTS) {
  test.serial(`${entry.name}: unix socket entries and queues match the reference CRIU's dump`, async (t) => {
    const ours = await roundTrip(t, entry, tsdumpDump);
    t.is(ours.result, 'PASS', ours.subject.describe());
    const theirs = await roundTrip(t, entry, criuDump);
    t.is(theirs.result, 'PASS', theirs.subject.describe());
    const [a, b] = await Promise.all([critDecodeAll(ours.imagesDir), critDecodeAll(theirs.imagesDir)]);
    const mine = unixSockets(a, ours.workDir, ours.subject.pid);
    const ref = unixSockets(b, theirs.workDir, theirs.subject.pid);
    t.true(Object.keys(ref).length > 0, 'the subject holds unix sockets');
    t.deepEqual(mine, ref);
    // Both stamp each socket with its network namespace's id (ns_id), the tasks' own here.
    for (const images of [a, b]) {
      const ids = entriesOf(images, [...images.keys()].find((k) => k.startsWith('ids-'))!)[0]!;
      for (const e of entriesOf(images, 'files.img').filter((f) => f.usk)) t.is((e.usk as Json).ns_id, ids.net_ns_id);
    }
  });
}

function readyInfo(subject: Subject): Record<string, string> {
  const text = readFileSync(join(subject.marker, 'ready'), 'utf8');
  return Object.fromEntries(text.split('\n').filter(Boolean).map((l) => l.split('=', 2) as [string, string]));
}

test.serial('t_tcp_listen: inet entries are what criu/sk-inet.c writes', async (t) => {
  const entry = catalogue.find((e) => e.name === 't_tcp_listen')!;
  const rt = await roundTrip(t, entry, tsdumpDump);
  t.is(rt.result, 'PASS', rt.subject.describe());
  const info = readyInfo(rt.subject);
  const images = await critDecodeAll(rt.imagesDir);
  const isks = entriesOf(images, 'files.img')
    .filter((e) => e.isk)
    .map((e) => e.isk as Json);
  t.is(isks.length, 2);
  const tcp = isks.find((e) => e.proto === 6)!;
  const udp = isks.find((e) => e.proto === 17)!;
  // do_dump_one_inet_fd: family/type/proto from the socket, state/ports/addresses from
  // inet_diag (addresses as the raw words of the address, one for IPv4), backlog = idiag_wqueue
  // (a listener's max backlog), flags = the file's open flags (O_RDWR), ip_opts always present
  // (freebind and TOS only when set, the TTL of every AF_INET socket), tcp_opts too (empty for
  // UDP) — as CRIU 4.1.1's own dump of such sockets has them (checked in dump-tcp.test.ts) —
  // no v6only for AF_INET, shutdown only when not NONE.
  const common = { family: 2, flags: 2, dst_port: 0, src_addr: [0x0100007f], dst_addr: [0] };
  t.like(tcp, { ...common, type: 1, state: 10, src_port: Number(info.tcp_port), backlog: 16, ip_opts: { ttl: 64 } });
  t.like(udp, { ...common, type: 2, state: 7, src_port: Number(info.udp_port), backlog: 0, ip_opts: { ttl: 64 }, tcp_opts: {} });
  const sysctl = (name: string) => Number(readFileSync(`/proc/sys/net/ipv4/${name}`, 'utf8'));
  t.like(tcp.tcp_opts as Json, { keepcnt: sysctl('tcp_keepalive_probes'), keepidle: sysctl('tcp_keepalive_time'), keepintvl: sysctl('tcp_keepalive_intvl') });
  for (const e of [tcp, udp]) {
    t.false('v6only' in e);
    t.false('shutdown' in e);
    // dump_socket_opts asks SO_PASSCRED/SO_PASSSEC of every socket; this kernel answers
    // EOPNOTSUPP for inet sockets (CRIU 4.1.1 fails right there). They are unix-only options,
    // so tsdump records them as off, which is what restore_socket_opts then leaves alone.
    t.like(e.opts as Json, { so_passcred: false, so_passsec: false, so_rcvlowat: 1, so_keepalive: false });
    t.false('so_mark' in (e.opts as Json), 'so_mark only when non-zero');
    t.false('so_linger' in (e.opts as Json), 'so_linger only when lingering');
  }
  t.is((tcp.opts as Json).reuseaddr, true);
  t.is((udp.opts as Json).reuseaddr, false);
});

test.serial('sockets_misc.py inet6: IPv6 TCP/UDP and a connected IPv4 UDP socket round-trip', async (t) => {
  const rt = await roundTrip(t, pythonEntry('sockets_misc.py', 'inet6'), tsdumpDump);
  t.is(rt.result, 'PASS', rt.subject.describe());
  const isks = entriesOf(await critDecodeAll(rt.imagesDir), 'files.img')
    .filter((e) => e.isk)
    .map((e) => e.isk as Json);
  const loopback6 = [0, 0, 0, 0x01000000]; // ::1 as the address's four words in memory order
  const listener = isks.find((e) => e.family === 10 && e.proto === 6)!;
  // v6only is written for every AF_INET6 socket; binding a specific IPv6 address sets it.
  t.like(listener, { state: 10, backlog: 8, src_addr: loopback6, dst_addr: [0, 0, 0, 0], v6only: true });
  // SO_KEEPALIVE on a TCP socket brings TCP_KEEPCNT/IDLE/INTVL along (restore_socket_opts sets
  // them when present; CRIU itself reads them only for connections, see the report).
  t.like(listener.opts as Json, { so_keepalive: true, tcp_keepidle: 77, so_linger: 5 });
  t.like(isks.find((e) => e.family === 10 && e.proto === 17)!, { state: 7, v6only: true, src_addr: loopback6 });
  const connected = isks.find((e) => e.family === 2 && e.state === 1)!;
  t.like(connected, { proto: 17, src_addr: [0x0100007f], dst_addr: [0x0100007f] });
  t.not(connected.dst_port, 0);
});

/** A Python program of __test__/programs speaking the CTL protocol, as a catalogue-style entry. */
function pythonEntry(script: string, mode: string, dumpArgs: readonly string[] = []): CatalogueEntry {
  const name = `${script.replace(/\.py$/, '')}-${mode}`;
  return {
    name,
    verifies: `${script} ${mode}`,
    reference: { expect: 'pass' },
    criuCanDump: true,
    dumpArgs,
    async start(workDir: string): Promise<Subject> {
      const ctl = join(workDir, `ctl-${name}`);
      await mkdir(ctl, { mode: 0o700 });
      const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
      const target = await spawnWithProtocol(name, python, [join(PROGRAMS, script), ctl, mode], ctl);
      // unix_ext_peer.py's helper holding the far end, outside the tree.
      const outside = target.info.outside !== undefined ? [Number(target.info.outside)] : [];
      return {
        name,
        pid: target.pid,
        pids: target.pids,
        marker: ctl,
        verify: () => requestVerify(target),
        kill: () => killTree(target.pid, ctl, [...target.pids, ...outside]),
        describe: () => `--- ${name} log ---\n${logTail(target)}`,
      };
    },
  };
}

const extPeerEntry = (mode: 'stream' | 'dgram', dumpArgs: readonly string[] = []) => pythonEntry('unix_ext_peer.py', mode, dumpArgs);

async function refusedLive(t: ExecutionContext, entry: CatalogueEntry, match: (info: Record<string, string>) => RegExp): Promise<void> {
  const result = await liveCheck(t, entry, async (subject, workDir) => {
    const imagesDir = join(workDir, 'images');
    const err = await t.throwsAsync(tsdumpDump(subject.pid, imagesDir, entry.dumpArgs ?? []), { instanceOf: TsdumpCliError });
    t.is(err?.code, 'UNSUPPORTED_FD', err?.message);
    t.regex(err?.message ?? '', match(readyInfo(subject)));
    t.false(existsSync(join(imagesDir, 'inventory.img')), 'a refused dump must not look complete');
  });
  t.is(result, 'PASS', 'the subject runs on after the refusal');
}

test.serial('a stream peer outside the tree is refused, naming the peer inode', async (t) => {
  await refusedLive(t, extPeerEntry('stream'), (i) => new RegExp(`peer socket:\\[${i.peer_ino}\\] \\(\\(unbound\\)\\) is outside the dumped tree.*--ext-unix-sk`));
});

test.serial('a dgram peer outside the tree is refused without --ext-unix-sk', async (t) => {
  await refusedLive(t, extPeerEntry('dgram'), (i) => new RegExp(`peer socket:\\[${i.peer_ino}\\] \\(.*/outer\\.sock\\) is outside the dumped tree.*--ext-unix-sk`));
});

test.serial('--ext-unix-sk still refuses half of a stream connection', async (t) => {
  await refusedLive(t, extPeerEntry('stream', ['--ext-unix-sk']), (i) => new RegExp(`peer socket:\\[${i.peer_ino}\\].*only dgram peers can be external`));
});

test.serial('an established TCP connection is refused without --tcp-established', async (t) => {
  await refusedLive(
    t,
    pythonEntry('sockets_misc.py', 'tcp'),
    () => /ESTABLISHED TCP connection 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+; established connections are dumped only with --tcp-established/,
  );
});

test.serial('--ext-unix-sk: a dgram socket connected outside the tree is restored connected to its peer', async (t) => {
  const entry = extPeerEntry('dgram', ['--ext-unix-sk']);
  const ours = await roundTrip(t, entry, tsdumpDump);
  t.is(ours.result, 'PASS', ours.subject.describe());
  // The reference CRIU's dump of the same, for the entries: the socket names the outside peer,
  // and the peer gets an entry of its own marked external (USK_EXTERN, as
  // fix_external_unix_sockets writes it: dgram, "listen" state, the name, zero options).
  const theirs = await roundTrip(t, entry, criuDump);
  t.is(theirs.result, 'PASS', theirs.subject.describe());
  const summary = async (rt: typeof ours) => {
    const images = await critDecodeAll(rt.imagesDir);
    const info = readyInfo(rt.subject);
    const usks = entriesOf(images, 'files.img')
      .filter((e) => e.usk)
      .map((e) => e.usk as Json);
    const own = usks.find((u) => u.ino === Number(info.own_ino))!;
    const ext = usks.find((u) => u.ino === Number(info.peer_ino))!;
    t.truthy(own, 'an entry for the socket');
    t.truthy(ext, 'an entry for the outside peer');
    t.is(own.peer, ext.ino);
    const strip = (u: Json) => {
      const { id: _id, ino: _ino, ns_id: _ns, peer: _peer, ...rest } = u;
      void [_id, _ino, _ns, _peer];
      return { ...rest, name: String(rest.name).split(rt.workDir).join('<work>') };
    };
    return { own: strip(own), ext: strip(ext), extPeer: ext.peer };
  };
  const [a, b] = await Promise.all([summary(ours), summary(theirs)]);
  t.deepEqual(a, b);
  t.is((a.ext as Json).uflags, 1);
});
