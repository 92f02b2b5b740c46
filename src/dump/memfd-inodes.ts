// The memfd inodes of a task, each dumped once per dump whichever task meets it first and however
// it is held (fds, mappings, both): its memfd.img entry, and its contents as a pages image plus
// pagemap-shmem-INO.img, the format of shared anonymous memory (the Rust core reads the pages
// through the task's fd or mapping and writes them; only the pagemap comes back here). The file
// entries that point at an inode are written elsewhere: fds by ./fds/memfd.ts, mappings by
// ./mm-image.ts; both name the inode by its number, so the order of the stages does not matter.
import { create } from '@bufbuild/protobuf';
import { memfd_inode_entrySchema } from '../images/gen/memfd_pb.js';
import type { ProcessInspection } from '../../native/index.js';
import type { DumpContext } from './context.js';
import { isMemfdFd, isMemfdVma, memfdInodeId, memfdName } from './fds/memfd.js';
import { writeShmemPagemap } from './mm-image.js';
import { pageBytesN } from '../arch/index.js';


interface Holder {
  ino: bigint;
  name: string;
  at: string;
  /** Where the Rust core reaches the inode in the task. */
  via: { fd: number } | { start: bigint; end: bigint };
}

export async function dumpMemfdInodes(ctx: DumpContext, pid: number, proc: ProcessInspection): Promise<void> {
  const holders: Holder[] = [];
  // mappings first, as CRIU meets them (mm before fds): memfd.img lists inodes in the same order
  for (const vma of proc.vmas) {
    if (!isMemfdVma(vma)) continue;
    const range = `${vma.start.toString(16)}-${vma.end.toString(16)}`;
    holders.push({ ino: vma.inode, name: memfdName(vma.path ?? ''), at: `pid ${pid}: VMA ${range}`, via: { start: vma.start, end: vma.end } });
  }
  for (const fd of proc.fds) {
    if (!isMemfdFd(fd)) continue;
    holders.push({ ino: fd.ino, name: memfdName(fd.target), at: `pid ${pid}: fd ${fd.fd}`, via: { fd: fd.fd } });
  }
  for (const h of holders) {
    if (!ctx.firstTime(`memfd:${h.ino}`)) continue;
    const inodeId = memfdInodeId(h.ino, h.at);
    // used up only if there are pages to write (an empty memfd has none, as in CRIU)
    const pagesId = ctx.nextPagesId;
    const info = await ctx.call(() => ctx.session.dumpMemfd(pid, { pagesId, ...h.via }));
    if (info.pagesFile) {
      ctx.nextPagesId++;
      await writeShmemPagemap(ctx.imagesDir, info, pagesId);
    }
    ctx.stats.counters.shpagesScanned += Number((info.size + pageBytesN() - 1n) / pageBytesN());
    ctx.stats.counters.shpagesWritten += info.pagesWritten;
    const inodes = await ctx.files.image('memfd.img');
    await inodes.append(
      memfd_inode_entrySchema,
      create(memfd_inode_entrySchema, {
        name: h.name,
        uid: info.uid,
        gid: info.gid,
        size: info.size,
        shmid: Number(info.shmid),
        seals: info.seals,
        inodeId: BigInt(inodeId),
        mode: info.mode,
      }),
    );
  }
}
