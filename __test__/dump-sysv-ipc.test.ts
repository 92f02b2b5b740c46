// SysV IPC (shared memory, semaphores, message queues), end to end: `criu restore` recreates SysV
// objects only inside an IPC namespace it creates for the restored root (criu/ipc_ns.c), so
// tsdump writes the tree's objects as that namespace (src/dump/sysv-ipc.ts).
//
// The subject, __test__/targets/t_sysv_ipc: a root and its child sharing a segment (the child's
// attachment split in three VMAs by an mprotect), a read-only attachment, a segment nobody
// attaches, a semaphore set and a message queue with two messages.
//  - In our IPC namespace (the host's): exactly the tree's objects are dumped, as a namespace of
//    its own, and the restored tree finds them in a fresh IPC namespace; a second, unrelated tree
//    with objects of its own in the same namespace is left out. An object a process outside the
//    tree also uses is refused, naming it and that process, and the tree runs on.
//  - In an IPC namespace of its own (unshare): the whole namespace, as the reference CRIU dumps
//    it (CRIU dumps that one, and refuses the host-namespace case: "doesn't live in IPC ns");
//    both dumps are compared image by image.
import test, { type ExecutionContext } from 'ava';
import { existsSync } from 'node:fs';
import { copyFile, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CriuError, critDecodeAll, criuDump, criuRestore, makeWorkDir, run } from './helpers/criu.js';
import { killTree, publish, requestVerify, startTarget, type Target } from './helpers/target.js';
import { TsdumpCliError, tsdumpDump } from './helpers/tsdump.js';
import { readImage } from '../src/images/index.js';
import { tsdumpPageServer } from './helpers/page-server.js';
import type { ipc_shm_entry } from '../src/images/gen/ipc-shm_pb.js';

type Json = Record<string, unknown>;

/**
 * Starts t_sysv_ipc; in teardown, after the tree is killed, removes what it left in our IPC
 * namespace (SysV objects outlive their processes): its keyed objects and the segment it created
 * without a key.
 */
async function startSysv(t: ExecutionContext, dir: string, args: readonly string[] = []): Promise<Target & { ids: Ids }> {
  const target = await startTarget('t_sysv_ipc', { dir, args });
  t.teardown(async () => {
    await killTree(target.pid, target.ctl);
    await removeLeftovers(target);
  });
  const [a, b, c] = target.info.shm!.split(' ').map(Number) as [number, number, number];
  return { ...target, ids: { keyBase: Number(target.info.key_base), shm: [a, b, c], sem: Number(target.info.sem), msg: Number(target.info.msg) } };
}

interface Ids {
  keyBase: number;
  shm: [number, number, number];
  sem: number;
  msg: number;
}

/** ipcrm of the target's objects still in our namespace, each only if its key (or creator) matches. */
async function removeLeftovers(target: Target): Promise<void> {
  const base = Number(target.info.key_base);
  for (const [kind, flag] of [['shm', '-m'], ['sem', '-s'], ['msg', '-q']] as const) {
    const lines = (await readFile(`/proc/sysvipc/${kind}`, 'utf8')).split('\n').slice(1);
    for (const line of lines) {
      const f = line.trim().split(/\s+/);
      if (f.length < 5) continue;
      const key = Number(f[0]);
      // shm: cpid is the 5th column
      const ours = (key >= base && key < base + 16) || (kind === 'shm' && key === 0 && Number(f[4]) === target.pid);
      if (ours) await run('ipcrm', [flag, f[1]!]);
    }
  }
}

async function verify(target: Target, expect: 'live' | 'restored'): Promise<string> {
  await publish(join(target.ctl, 'expect'), `${expect}\n`);
  return requestVerify(target, { timeoutMs: 30_000 });
}

function entries(images: Map<string, unknown>, name: string): Json[] {
  return ((images.get(name) as { entries?: Json[] } | undefined)?.entries ?? []) as Json[];
}

/** The ipc_ns_id of the inventory (the dumper's) and of the root's ids image. */
function ipcIds(images: Map<string, unknown>, root: number): { dumper: number; tree: number } {
  const inv = entries(images, 'inventory.img')[0]!;
  const ids = entries(images, `ids-${root}.img`)[0]!;
  return { dumper: (inv.root_ids as Json).ipc_ns_id as number, tree: ids.ipc_ns_id as number };
}

/**
 * ipcns-shm's entries as [id, key, size, mode, in_pagemaps], read with tsdump's own reader: crit
 * reads a segment's bytes after every entry even when they are in pagemaps (so it garbles an
 * image of several segments, CRIU's own included).
 */
/**
 * The segments of an ipcns-shm image, by id: the image lists them in the kernel's slot order
 * (/proc/sysvipc/shm, as CRIU), which follows creation order only while no other test frees a
 * lower slot.
 */
async function shmEntries(dir: string, nsId: number): Promise<unknown[][]> {
  const img = await readImage(join(dir, `ipcns-shm-${nsId}.img`));
  return img.entries
    .map((e) => {
      const m = e.message as ipc_shm_entry;
      return [m.desc!.id, m.desc!.key, Number(m.size), m.desc!.mode & 0o777, m.inPagemaps];
    })
    .sort((x, y) => (x[0] as number) - (y[0] as number));
}

test.serial('t_sysv_ipc: the tree\'s SysV objects become its own IPC namespace, restored by criu restore', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await startSysv(t, join(dir, 'a'));
  // another tree in the same namespace, with objects of its own: not the dumped tree's
  const other = await startSysv(t, join(dir, 'b'));
  const imagesDir = join(dir, 'images');
  await tsdumpDump(target.pid, imagesDir);
  await target.exited;

  const images = await critDecodeAll(imagesDir);
  const { dumper, tree } = ipcIds(images, target.pid);
  t.not(tree, dumper, 'the root gets an IPC namespace id of its own');
  const child = Number(target.info.child);
  t.is(ipcIds(images, child).tree, tree, 'the child shares it');
  for (const kind of ['var', 'shm', 'msg', 'sem']) t.true(images.has(`ipcns-${kind}-${tree}.img`), kind);

  const sems = entries(images, `ipcns-sem-${tree}.img`);
  t.deepEqual(
    sems.map((e) => [(e.desc as Json).id, (e.desc as Json).key, e.nsems, e.extra]),
    [[target.ids.sem, target.ids.keyBase + 4, 3, [1, 2, 3]]],
  );
  const msgs = entries(images, `ipcns-msg-${tree}.img`);
  t.deepEqual(
    msgs.map((e) => [(e.desc as Json).id, (e.desc as Json).key, e.qnum]),
    [[target.ids.msg, target.ids.keyBase + 5, 2]],
  );
  t.like(msgs[0]!.extra as unknown[], [{ mtype: 7, msize: 13 }, `${Buffer.from('first message').toString('base64')}\n`, { mtype: 9, msize: 22 }]);
  // The segments (exactly the tree's three: keys, sizes, modes), their contents in
  // pagemap-shmem-SHMID.img: every page written, the one past A's end of data too.
  const [a, b, c] = target.ids.shm;
  const expected: unknown[][] = [
    [a, target.ids.keyBase + 1, 3 * 4096 + 100, 0o640, true],
    [b, 0, 2 * 4096, 0o600, true],
    [c, target.ids.keyBase + 3, 4096, 0o600, true],
  ];
  t.deepEqual(await shmEntries(imagesDir, tree), expected.sort((x, y) => (x[0] as number) - (y[0] as number)));
  for (const id of other.ids.shm) t.false(images.has(`pagemap-shmem-${id}.img`), `the other tree's segment ${id} is left out`);
  const pages = (id: number) => entries(images, `pagemap-shmem-${id}.img`).slice(1);
  t.deepEqual(pages(a), [{ vaddr: 0, nr_pages: 4, flags: 4 }]);
  t.deepEqual(pages(b), [{ vaddr: 0, nr_pages: 2, flags: 4 }]);
  t.deepEqual(pages(c), [{ vaddr: 0, nr_pages: 1, flags: 4 }]);
  // The VMAs: MAP_SHARED|MAP_ANONYMOUS, shmid the segment's id, O_RDWR only where writable; the
  // child's attachment of A is three VMAs of one chain.
  const sysv = (pid: number) =>
    (entries(images, `mm-${pid}.img`)[0]!.vmas as Json[])
      .filter((v) => ((v.status as number) & (1 << 10)) !== 0)
      .map((v) => [v.shmid, v.pgoff, v.prot, v.flags, v.fdflags ?? 0]);
  t.deepEqual(sysv(target.pid), [
    [b, 0, 1, 0x21, 0],
    [a, 0, 3, 0x21, 2],
  ]);
  t.deepEqual(sysv(child), [
    [b, 0, 1, 0x21, 0],
    [a, 0, 3, 0x21, 2],
    [a, 4096, 1, 0x21, 2],
    [a, 8192, 3, 0x21, 2],
  ]);

  await criuRestore(imagesDir);
  t.is(await verify(target, 'restored'), 'PASS');
  t.is(await verify(other, 'live'), 'PASS', 'the other tree kept its objects');
});

test.serial('t_sysv_ipc: with --page-server the segments\' contents go to the page server, and restore from there', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await startSysv(t, join(dir, 'a'));
  const serverDir = join(dir, 'server');
  const server = await tsdumpPageServer(t, serverDir);
  const imagesDir = join(dir, 'images');
  await tsdumpDump(target.pid, imagesDir, ['--page-server', '--address', '127.0.0.1', '--port', String(server.port)]);
  const received = await server.done;
  await target.exited;
  t.deepEqual(
    received.images.filter((i) => i.kind === 'shmem').map((i) => i.id).sort((x, y) => x - y),
    [...target.ids.shm].sort((x, y) => x - y),
    'one pagemap-shmem per segment, on the server',
  );
  // as a migration does: the server's page images join the local ones
  for (const f of await readdir(serverDir)) if (/^(pagemap-.*|pages-\d+)\.img$/.test(f)) await copyFile(join(serverDir, f), join(imagesDir, f));
  await criuRestore(imagesDir);
  t.is(await verify(target, 'restored'), 'PASS');
});

for (const what of ['shm', 'sem'] as const) {
  test.serial(`t_sysv_ipc: ${what === 'shm' ? 'a segment' : 'a semaphore set'} also used outside the tree is refused by key and pid, the tree runs on`, async (t) => {
    const dir = await makeWorkDir(t);
    const target = await startSysv(t, join(dir, 'a'));
    const outsider = await startTarget('t_sysv_ipc', { dir: join(dir, 'outsider'), args: ['outsider', String(target.ids.keyBase), what] });
    t.teardown(() => killTree(outsider.pid, outsider.ctl));
    const imagesDir = join(dir, 'images');
    const err = await t.throwsAsync(tsdumpDump(target.pid, imagesDir), { instanceOf: TsdumpCliError });
    t.is(err?.code, 'UNSUPPORTED', err?.message);
    const key = `0x${(target.ids.keyBase + (what === 'shm' ? 1 : 4)).toString(16).padStart(8, '0')}`;
    const object = what === 'shm' ? `SysV shared memory segment key ${key} \\(shmid ${target.ids.shm[0]}\\) is also attached by` : `SysV semaphore set key ${key} \\(semid ${target.ids.sem}\\) is used by the dumped tree and by`;
    t.regex(err?.message ?? '', new RegExp(`${object} pid ${outsider.pid} \\(t_sysv_ipc\\), outside`));
    t.regex(err?.message ?? '', /IPC namespace of its own.*dump the tree together with that process/);
    t.false(existsSync(join(imagesDir, 'inventory.img')));
    // (the outsider's attachment would count in the target's nattch check)
    await killTree(outsider.pid, outsider.ctl);
    t.is(await verify(target, 'live'), 'PASS');
  });
}

test.serial('t_sysv_ipc own: a tree in its own IPC namespace is dumped whole, as the reference CRIU dumps it', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await startSysv(t, join(dir, 'a'), ['own']);
  // the reference first (it attaches each segment to read it, and leaves the tree running)
  const theirDir = join(dir, 'criu');
  await criuDump(target.pid, theirDir, ['-R', '-v4', '-o', 'dump.log']);
  const ourDir = join(dir, 'tsdump');
  await tsdumpDump(target.pid, ourDir);
  await target.exited;

  const ours = await critDecodeAll(ourDir);
  const theirs = await critDecodeAll(theirDir);
  const ns = ipcIds(ours, target.pid);
  const theirNs = ipcIds(theirs, target.pid);
  t.not(ns.tree, ns.dumper);
  for (const kind of ['var', 'msg', 'sem']) {
    t.deepEqual(entries(ours, `ipcns-${kind}-${ns.tree}.img`), entries(theirs, `ipcns-${kind}-${theirNs.tree}.img`), kind);
  }
  t.deepEqual(await readFile(join(ourDir, `ipcns-shm-${ns.tree}.img`)), await readFile(join(theirDir, `ipcns-shm-${theirNs.tree}.img`)), 'ipcns-shm, byte for byte');
  t.is((await shmEntries(ourDir, ns.tree)).length, 3);
  // Contents: the same pages at the same offsets (CRIU may cut the runs differently).
  for (const id of target.ids.shm) {
    t.deepEqual(await shmemPages(ourDir, ours, id), await shmemPages(theirDir, theirs, id), `segment ${id}`);
  }
  // The SysV VMAs of both processes, field for field.
  for (const pid of [target.pid, Number(target.info.child)]) {
    const sysv = (images: Map<string, unknown>) => (entries(images, `mm-${pid}.img`)[0]!.vmas as Json[]).filter((v) => ((v.status as number) & (1 << 10)) !== 0);
    t.deepEqual(sysv(ours), sysv(theirs), `pid ${pid}'s SysV VMAs`);
    t.true(sysv(ours).length > 0);
  }
  await criuRestore(ourDir);
  t.is(await verify(target, 'restored'), 'PASS');
});

test.serial('t_sysv_ipc: the reference CRIU refuses SysV memory of a tree in our IPC namespace', async (t) => {
  const dir = await makeWorkDir(t);
  const target = await startSysv(t, join(dir, 'a'));
  const err = await t.throwsAsync(criuDump(target.pid, join(dir, 'criu')), { instanceOf: CriuError });
  t.regex(err?.log ?? '', /with SysVIPC shmem map @\w+ doesn't live in IPC ns/);
  t.is(await verify(target, 'live'), 'PASS');
});

/** Page offset → page bytes (base64) of pagemap-shmem-ID.img and its pages image. */
async function shmemPages(dir: string, images: Map<string, unknown>, id: number): Promise<Record<number, string>> {
  const [head, ...runs] = entries(images, `pagemap-shmem-${id}.img`);
  const data = await readFile(join(dir, `pages-${(head as Json).pages_id as number}.img`));
  const out: Record<number, string> = {};
  let at = 0;
  for (const r of runs) {
    for (let i = 0; i < (r.nr_pages as number); i++) {
      out[(r.vaddr as number) + i * 4096] = data.subarray(at, at + 4096).toString('base64');
      at += 4096;
    }
  }
  return out;
}
