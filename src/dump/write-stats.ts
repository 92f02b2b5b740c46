// stats-dump: CRIU's record of how long the dump took and how many pages it moved.
import { create } from '@bufbuild/protobuf';
import { writeImage } from '../images/index.js';
import type { ImagesDir } from '../images/dir.js';
import { stats_entrySchema } from '../images/gen/stats_pb.js';
import type { DumpStats } from './stats.js';

export async function writeStats(dir: ImagesDir, stats: DumpStats): Promise<void> {
  const { timings: t, counters: c } = stats;
  const entry = create(stats_entrySchema, {
    dump: {
      freezingTime: t.freezingTime,
      frozenTime: t.frozenTime,
      memdumpTime: t.memdumpTime,
      memwriteTime: t.memwriteTime,
      pagesScanned: BigInt(c.pagesScanned),
      pagesSkippedParent: BigInt(c.pagesSkippedParent),
      pagesWritten: BigInt(c.pagesWritten),
      irmapResolve: 0,
      pagesLazy: BigInt(c.pagesLazy),
      pagePipes: BigInt(c.pagePipes),
      pagePipeBufs: BigInt(c.pagePipeBufs),
      shpagesScanned: BigInt(c.shpagesScanned),
      shpagesSkippedParent: BigInt(c.shpagesSkippedParent),
      shpagesWritten: BigInt(c.shpagesWritten),
    },
  });
  await writeImage(dir, 'stats-dump', stats_entrySchema, [entry]);
}
