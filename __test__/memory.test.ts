// Page dump against a real target: tsdump's pagemap + pages reproduce the target's memory byte
// for byte (checked against the checksums the target computed itself), zero and untouched pages
// are not written, and the dump leaves the target's memory map and behaviour unchanged.
import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../src/native.js';
import { openImagesDir } from '../src/images/dir.js';
import { makeWorkDir } from './helpers/criu.js';
import { killTree, requestVerify, startDetachedTarget } from './helpers/target.js';

const PAGE = 4096;


/** The target's checksum: FNV-1a (32-bit) over little-endian u32 words, and their 32-bit sum. */
function checksum(buf: Buffer): string {
  const w = new Uint32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  let fnv = 0x811c9dc5;
  let sum = 0;
  for (let i = 0; i < w.length; i++) {
    fnv = Math.imul(fnv ^ w[i]!, 0x01000193) >>> 0;
    sum = (sum + w[i]!) >>> 0;
  }
  return `${fnv.toString(16).padStart(8, '0')}:${sum.toString(16).padStart(8, '0')}`;
}

type MemoryDump = Awaited<ReturnType<InstanceType<typeof native.Session>['dumpMemory']>>;

/** vaddr -> offset in the pages file, for every dumped page. */
function pageIndex(dump: MemoryDump): Map<bigint, number> {
  const index = new Map<bigint, number>();
  let off = 0;
  for (const e of dump.entries) {
    for (let i = 0; i < e.nrPages; i++) {
      index.set(e.vaddr + BigInt(i * PAGE), off);
      off += PAGE;
    }
  }
  return index;
}

/** Rebuilds a region the way a restore would: dumped pages, else the file's page, else zeros. */
function rebuild(pages: Buffer, index: Map<bigint, number>, addr: bigint, len: number, file?: Buffer): Buffer {
  const out = Buffer.alloc(len);
  for (let o = 0; o < len; o += PAGE) {
    const at = index.get(addr + BigInt(o));
    if (at !== undefined) pages.copy(out, o, at, at + PAGE);
    else if (file) file.copy(out, o, o, o + PAGE);
  }
  return out;
}

for (const mode of ['read', 'vmsplice'] as const) {
  test.serial(`dumpMemory(${mode}) reproduces the target's memory and skips zero pages`, async (t) => {
    const target = await startDetachedTarget('mem_layout', { dir: await makeWorkDir(t) });
    const images = mkdtempSync(join(tmpdir(), 'tsdump-memimg-'));
    const session = new native.Session();
    session.useImagesDir(openImagesDir(images));
    t.teardown(async () => {
      await killTree(target.pid, target.ctl, target.pids);
      session.close();
      rmSync(images, { recursive: true, force: true });
    });
    const pid = target.pid;
    await session.seizeTree(pid);
    const mapsBefore = readFileSync(`/proc/${pid}/maps`, 'utf8');
    let dump: MemoryDump;
    let shmem: Awaited<ReturnType<typeof session.dumpShmem>>[] = [];
    try {
      dump = await session.dumpMemory(pid, { pagesId: 1, mode });
      t.is(readFileSync(`/proc/${pid}/maps`, 'utf8'), mapsBefore, 'memory map unchanged');
      // The shared object, through the parent's mapping and through the child's.
      const child = Number(target.info['child']!);
      const sharedAddr = BigInt('0x' + target.info['shared_addr']!);
      const v = dump.vmas.find((x) => x.start <= sharedAddr && sharedAddr < x.end)!;
      shmem = [
        await session.dumpShmem(pid, { pagesId: 2, start: v.start, end: v.end }),
        await session.dumpShmem(child, { pagesId: 3, start: v.start, end: v.end }),
      ];
    } finally {
      await session.releaseTree({ mode: 'resume' });
    }

    const pagesFile = join(images, 'pages-1.img');
    t.is(dump.pagesFile, pagesFile);
    t.is(statSync(pagesFile).mode & 0o777, 0o600);
    const pages = readFileSync(pagesFile);
    t.is(pages.length, dump.bytesWritten);
    t.is(dump.counts.written * PAGE, pages.length);
    const index = pageIndex(dump);
    t.is(index.size, dump.counts.written);
    t.true(dump.entries.every((e) => e.flags === 4), 'PE_PRESENT');

    const region = (name: string): { addr: bigint; len: number; sum: string } => ({
      addr: BigInt('0x' + target.info[`${name}_addr`]!),
      len: Number(target.info[`${name}_len`]!),
      sum: target.info[`${name}_sum`]!,
    });
    const memFile = readFileSync(join(target.ctl, 'mem_file'));
    for (const name of ['anon', 'untouched', 'zero', 'dontneed', 'filecow', 'protnone']) {
      const r = region(name);
      const rebuilt = rebuild(pages, index, r.addr, r.len, name === 'filecow' ? memFile : undefined);
      t.is(checksum(rebuilt), r.sum, `${name} reproduced byte for byte`);
    }

    const pagesIn = (name: string, from = 0, to?: number): number => {
      const r = region(name);
      let n = 0;
      for (let o = from; o < (to ?? r.len); o += PAGE) if (index.has(r.addr + BigInt(o))) n++;
      return n;
    };
    t.is(pagesIn('anon'), 64 * 256, 'every patterned page dumped');
    t.is(pagesIn('untouched'), 0, 'untouched pages not written');
    t.is(pagesIn('zero'), 0, 'zero pages not written');
    t.is(pagesIn('dontneed', 2 << 20), 0, 'MADV_DONTNEED pages not written');
    t.is(pagesIn('dontneed', 0, 2 << 20), 512);
    t.is(pagesIn('filecow'), 64, "only the COW'd pages of the private file mapping");
    t.is(pagesIn('protnone'), 256, 'PROT_NONE pages dumped');
    t.true(dump.counts.zero >= 1024, `zero pages counted (${dump.counts.zero})`);

    const vmaAt = (addr: bigint) => dump.vmas.find((v) => v.start <= addr && addr < v.end)!;
    t.is(vmaAt(region('shared').addr).decision, 'shmem');
    t.is(shmem[0]!.shmid, vmaAt(region('shared').addr).inode, 'shmid is the inode of the object');
    t.is(shmem[1]!.shmid, shmem[0]!.shmid, 'one object for parent and child');
    const shared = region('shared');
    const shPages = readFileSync(shmem[0]!.pagesFile);
    t.is(shPages.length, shmem[0]!.pagesWritten * PAGE);
    t.is(checksum(rebuild(shPages, pageIndex({ entries: shmem[0]!.entries } as MemoryDump), 0n, shared.len)), shared.sum,
      'shared anonymous memory reproduced from its own pagemap');
    t.is(pagesIn('shared'), 0, 'shared anonymous memory is not in the private pages');
    t.is(vmaAt(region('filecow').addr).decision, 'file-cow');
    const vdso = dump.vmas.find((v) => v.path === '[vdso]')!;
    t.is(vdso.decision, 'whole');
    t.is(vdso.pagesDumped, Number(vdso.end - vdso.start) / PAGE);
    for (const v of dump.vmas.filter((x) => x.path === '[vvar]' || x.path === '[vvar_vclock]')) t.is(v.decision, 'skip');
    if (mode === 'vmsplice') t.true(dump.vmspliceCalls >= 64, `${dump.vmspliceCalls} vmsplice calls`);
    t.log(
      `${mode}: ${dump.counts.written} pages written, ${dump.counts.zero} zero, scan ${(dump.timings.scanNs / 1e6).toFixed(1)} ms, ` +
        `drain ${(dump.timings.drainNs / 1e6).toFixed(1)} ms`,
    );

    t.is(await requestVerify(target), 'PASS', 'the target finds its memory unchanged and keeps running');
    t.regex(readFileSync(`/proc/${pid}/status`, 'utf8'), /TracerPid:\s+0\n/);
  });
}

test.serial('dumpMemory refuses a task this session has not seized', async (t) => {
  const target = await startDetachedTarget('mem_info', { dir: await makeWorkDir(t) });
  const session = new native.Session();
  session.useImagesDir(openImagesDir(target.ctl));
  t.teardown(async () => {
    await killTree(target.pid, target.ctl, target.pids);
    session.close();
  });
  const err = await t.throwsAsync(() =>
    session.dumpMemory(target.pid, { pagesId: 9, mode: 'read' }),
  );
  t.regex(err!.message, /not seized by this session/);
  t.false(existsSync(join(target.ctl, 'pages-9.img')));
});

test.serial('dumpMemory refuses an io_uring mapping by name and leaves the task as it was', async (t) => {
  const target = await startDetachedTarget('mem_uring', { dir: await makeWorkDir(t) });
  const images = mkdtempSync(join(tmpdir(), 'tsdump-memimg-'));
  const session = new native.Session();
  session.useImagesDir(openImagesDir(images));
  t.teardown(async () => {
    await killTree(target.pid, target.ctl, target.pids);
    session.close();
    rmSync(images, { recursive: true, force: true });
  });
  await session.seizeTree(target.pid);
  const mapsBefore = readFileSync(`/proc/${target.pid}/maps`, 'utf8');
  try {
    for (const mode of ['read', 'vmsplice'] as const) {
      const err = await t.throwsAsync(() =>
        session.dumpMemory(target.pid, { pagesId: 1, mode }),
      );
      t.is((err as { code?: string }).code, 'UNSUPPORTED_VMA');
      t.regex(err!.message, new RegExp(`io_uring ring mapping at 0x${target.info['ring']!}-0x[0-9a-f]+ \\(anon_inode:\\[io_uring\\]\\); .*UV_USE_IO_URING=0`));
      t.false(existsSync(join(images, 'pages-1.img')), 'no pages image left behind');
      t.is(readFileSync(`/proc/${target.pid}/maps`, 'utf8'), mapsBefore);
    }
  } finally {
    await session.releaseTree({ mode: 'resume' });
  }
  t.is(await requestVerify(target), 'PASS');
});
