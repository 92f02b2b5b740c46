// --display-stats: the dump statistics printed the way criu prints them (criu/stats.c), so
// scripts that scrape criu's output read tsdump's unchanged.
import type { DumpCounters, DumpTimings } from '../dump/stats.js';
import type { SnapshotReport } from '../dump/snapshot.js';

export interface StatsLike {
  timings: Pick<DumpTimings, 'freezingTime' | 'frozenTime' | 'memdumpTime' | 'memwriteTime'> & { irmapResolveTime?: number };
  counters: Pick<DumpCounters, 'pagesScanned' | 'pagesSkippedParent' | 'pagesWritten' | 'pagesLazy'>;
}

const count = (n: number): string => `${n} (0x${n.toString(16)})`;

/** --snapshot's own lines, after criu's. */
export function formatSnapshotStats(s: SnapshotReport): string {
  return [
    `Snapshot processes: ${s.held}`,
    `Snapshot pages copied while frozen: ${count(s.pagesFrozen)}`,
    `Snapshot pages copied after release: ${count(s.pagesAfterRelease)}`,
    `Snapshot copy time: ${s.copyTime} us`,
    `Snapshot extra memory: ${s.extraBytes} bytes`,
    '',
  ].join('\n');
}

export function formatDumpStats(s: StatsLike): string {
  const t = s.timings;
  const c = s.counters;
  return [
    'Displaying dump stats:',
    `Freezing time: ${t.freezingTime} us`,
    `Frozen time: ${t.frozenTime} us`,
    `Memory dump time: ${t.memdumpTime} us`,
    `Memory write time: ${t.memwriteTime} us`,
    `IRMAP resolve time: ${t.irmapResolveTime ?? 0} us`,
    `Memory pages scanned: ${count(c.pagesScanned)}`,
    `Memory pages skipped from parent: ${count(c.pagesSkippedParent)}`,
    `Memory pages written: ${count(c.pagesWritten)}`,
    `Lazy memory pages: ${count(c.pagesLazy)}`,
    '',
  ].join('\n');
}
