// The second check for memfds: one live t_memfd tree is dumped by tsdump (--leave-running) and
// then by the reference CRIU (--leave-running), so both dumps see the same inodes, addresses and
// descriptors; the tree then still verifies itself live. Both image sets are decoded with crit's
// own decoder (pycriu) and compared where memfds show: memfd.img, the MEMFD file entries behind
// every fd, the memfd VMAs and the file entries they name, the contents (pagemap-shmem-*.img and
// the page bytes) and the private copy-on-write page. Every difference left is one this file
// normalises away, with the reason next to it. Plus the one memfd tsdump refuses: a hugetlb one.
import test from 'ava';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { criuDump, critDecodeAll, makeWorkDir } from './helpers/criu.js';
import { killTree, requestVerify, startTarget } from './helpers/target.js';
import { TsdumpCliError, tsdumpDump } from './helpers/tsdump.js';

type Json = Record<string, unknown>;
type Decoded = Map<string, unknown>;

const PAGE = 4096;
const VMA_FILE_PRIVATE = 1 << 6;
const VMA_AREA_MEMFD = 1 << 14;

function entries(d: Decoded, file: string): Json[] {
  const img = d.get(file) as { entries?: Json[] } | undefined;
  return img?.entries ?? [];
}

/** The memfd.img entries by inode_id. */
function inodes(d: Decoded): Map<number, Json> {
  return new Map(entries(d, 'memfd.img').map((e) => [Number(e.inode_id), e]));
}

/** A MEMFD file entry with its inode named (by memfd name) instead of numbered. */
function memfdFile(d: Decoded, id: number): Json {
  const file = entries(d, 'files.img').find((f) => f.type === 'MEMFD' && f.id === id);
  if (!file) throw new Error(`no MEMFD file entry ${id}`);
  const { id: _id, inode_id: inodeId, ...rest } = file.memfd as Json;
  const inode = inodes(d).get(Number(inodeId));
  if (!inode) throw new Error(`MEMFD file entry ${id} names inode ${String(inodeId)}, which memfd.img lacks`);
  return { ...rest, inode: inode.name };
}

/**
 * Per process (pstree order), its memfd fds: fd number, fd flags, the file entry behind it with
 * the inode named, and which open description it is (`desc`: the order in which descriptions
 * first appear, so sharing between fds and tasks is compared without the ids themselves, which
 * each dumper numbers its own way).
 */
function memfdFds(d: Decoded): Json[][] {
  const descs = new Map<number, number>();
  return entries(d, 'pstree.img').map((task) => {
    const ids = entries(d, `ids-${String(task.pid)}.img`)[0]!;
    return entries(d, `fdinfo-${String(ids.files_id)}.img`)
      .filter((fi) => fi.type === 'MEMFD')
      .map((fi) => {
        const id = fi.id as number;
        if (!descs.has(id)) descs.set(id, descs.size);
        return { fd: fi.fd, flags: fi.flags, desc: descs.get(id), file: memfdFile(d, id) };
      });
  });
}

/**
 * Per process, its memfd VMAs with `shmid` (a files.img id) replaced by the inode the entry
 * opens. The entry itself differs by design: CRIU lets a mapping reuse the file entry of a
 * descriptor of the same inode it dumped before (the child's mappings point at the parent's fds,
 * flags O_RDWR and position 1234 included), where tsdump gives every inode's mappings one entry of
 * their own without flags, position or owner. Restore uses neither: it opens the inode with the
 * VMA's fdflags and maps it at pgoff. Only the inode is compared.
 */
function memfdVmas(d: Decoded): Json[][] {
  return entries(d, 'pstree.img').map((task) => {
    const mm = entries(d, `mm-${String(task.pid)}.img`)[0]!;
    return (mm.vmas as Json[])
      .filter((v) => ((v.status as number) & VMA_AREA_MEMFD) !== 0)
      .map(({ shmid, ...v }) => ({ ...v, inode: memfdFile(d, Number(shmid)).inode }));
  });
}

/** A memfd inode's contents: its pagemap-shmem entries and the page bytes they stand for. */
async function contents(dir: string, d: Decoded, shmid: number): Promise<{ pagemap: Json[]; bytes: Buffer }> {
  const [head, ...pagemap] = entries(d, `pagemap-shmem-${shmid}.img`);
  const bytes = await readFile(join(dir, `pages-${String(head!.pages_id)}.img`));
  return { pagemap, bytes };
}

test.serial('t_memfd: memfd.img, MEMFD file entries, memfd VMAs and contents match CRIU (same live tree)', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startTarget('t_memfd', { dir: work });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const oursDir = join(work, 'tsdump');
  const criuDir = join(work, 'criu');
  await tsdumpDump(target.pid, oursDir, ['--leave-running']);
  await criuDump(target.pid, criuDir, ['--leave-running']);
  // both dumps left the memfds as they were: the tree still checks out, live
  t.is(await requestVerify(target), 'PASS');
  const [ours, criu] = await Promise.all([critDecodeAll(oursDir), critDecodeAll(criuDir)]);

  // memfd.img: one entry per inode, the same inodes in the same order (mappings first, then fds,
  // task by task). inode_id is the dumper's own name for the inode: CRIU counts from 1, tsdump
  // uses the inode number (also the shmid) so that fds and mappings need no shared table; it is
  // compared through the entries that use it (below), not by value.
  const names = (d: Decoded) => entries(d, 'memfd.img').map((e) => e.name);
  t.deepEqual(names(ours), ['tsd-memfd', 'tsd-shared', 'tsd-maponly', 'tsd-sealed', 'tsd-empty']);
  t.deepEqual(names(ours), names(criu));
  const withoutId = (d: Decoded) => entries(d, 'memfd.img').map(({ inode_id: _id, ...e }) => e);
  t.deepEqual(withoutId(ours), withoutId(criu));
  for (const e of entries(ours, 'memfd.img')) t.is(Number(e.inode_id), e.shmid as number, `${String(e.name)}: inode_id is the inode`);

  // The fds: same numbers, flags, positions, owners, inodes and the same sharing of descriptions
  // (parent and child share fd 6's; the child's read-only reopen is a description of its own).
  const fds = memfdFds(ours);
  t.deepEqual(fds, memfdFds(criu));
  t.deepEqual(
    fds.map((task) => task.map((f) => [f.fd, (f.file as Json).inode, f.desc])),
    [
      [
        [3, 'tsd-memfd', 0],
        [4, 'tsd-sealed', 1],
        [5, 'tsd-empty', 2],
        [6, 'tsd-shared', 3],
      ],
      [
        [3, 'tsd-shared', 4],
        [6, 'tsd-shared', 3],
      ],
    ],
  );

  // The mappings: same ranges, offsets, protections, flags, status (VMA_AREA_MEMFD with
  // VMA_FILE_SHARED/PRIVATE), fdflags, and inode.
  const vmas = memfdVmas(ours);
  t.deepEqual(vmas, memfdVmas(criu));
  t.deepEqual(
    vmas[0]!.map((v) => v.inode),
    ['tsd-memfd', 'tsd-shared', 'tsd-maponly', 'tsd-maponly'],
  );
  // tsdump: all mappings of an inode name one entry (per inode, in any task)
  const entryOf = (v: Json) => v.shmid as number;
  const oursMm = (i: number) => (entries(ours, `mm-${String(entries(ours, 'pstree.img')[i]!.pid)}.img`)[0]!.vmas as Json[]).filter((v) => ((v.status as number) & VMA_AREA_MEMFD) !== 0);
  t.deepEqual(oursMm(0).map(entryOf), oursMm(1).map(entryOf));

  // Contents, stored like shared anonymous memory under the inode number: the same pagemap
  // (holes left out alike) and the same bytes. pages_id is each dumper's own counter (CRIU drains
  // the task's private pages after its memfds, tsdump before), so the pages file is found
  // through the head.
  for (const inode of entries(ours, 'memfd.img')) {
    const shmid = inode.shmid as number;
    if (inode.size === 0) {
      // an empty memfd has no contents: neither dumper writes a pagemap or pages for it
      t.false(ours.has(`pagemap-shmem-${shmid}.img`) || criu.has(`pagemap-shmem-${shmid}.img`), `${String(inode.name)} has a pagemap`);
      continue;
    }
    const a = await contents(oursDir, ours, shmid);
    const b = await contents(criuDir, criu, shmid);
    t.deepEqual(a.pagemap, b.pagemap, `pagemap-shmem-${shmid}.img (${String(inode.name)})`);
    t.true(a.bytes.equals(b.bytes), `${String(inode.name)}: page bytes differ`);
  }
  const sparse = entries(ours, 'memfd.img').find((e) => e.name === 'tsd-memfd')!;
  t.deepEqual(entries(ours, `pagemap-shmem-${String(sparse.shmid)}.img`).slice(1), [{ vaddr: 0, nr_pages: 16, flags: 4 }], 'the hole is not written');

  // The private mapping's copy-on-write page is the task's own memory, in its pagemap (not
  // lazy: it is not anonymous memory), with the same bytes in both dumps.
  const privatePage = async (dir: string, d: Decoded) => {
    const pid = String(entries(d, 'pstree.img')[0]!.pid);
    const vma = (entries(d, `mm-${pid}.img`)[0]!.vmas as Json[]).find((v) => ((v.status as number) & (VMA_AREA_MEMFD | VMA_FILE_PRIVATE)) === (VMA_AREA_MEMFD | VMA_FILE_PRIVATE))!;
    const [head, ...pm] = entries(d, `pagemap-${pid}.img`);
    let offset = 0;
    for (const e of pm) {
      const [vaddr, n] = [Number(e.vaddr), e.nr_pages as number];
      if (vaddr <= Number(vma.start) && Number(vma.start) < vaddr + n * PAGE) {
        const pages = await readFile(join(dir, `pages-${String(head!.pages_id)}.img`));
        const at = offset + (Number(vma.start) - vaddr);
        return { flags: e.flags, bytes: pages.subarray(at, at + PAGE) };
      }
      if (((e.flags as number) & 4) !== 0) offset += n * PAGE;
    }
    return undefined;
  };
  const [op, cp] = [await privatePage(oursDir, ours), await privatePage(criuDir, criu)];
  t.truthy(op, 'the copy-on-write page is in tsdump pagemap');
  t.is(op?.flags, cp?.flags);
  t.true(!!op && !!cp && op.bytes.equals(cp.bytes), 'copy-on-write page bytes differ');
});

test.serial('t_memfd_hugetlb: a MFD_HUGETLB memfd is refused cleanly and the target runs on', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startTarget('t_memfd_hugetlb', { dir: work });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const imagesDir = join(work, 'images');
  const err = await t.throwsAsync(tsdumpDump(target.pid, imagesDir), { instanceOf: TsdumpCliError });
  t.is(err?.code, 'UNSUPPORTED_FD', err?.message);
  t.regex(err?.message ?? '', /memfd:tsd-huge.*not a shmem memfd \(a MFD_HUGETLB one\?\)/);
  t.false(existsSync(join(imagesDir, 'inventory.img')), 'a refused dump must not look complete');
  t.is(await requestVerify(target), 'PASS');
});
