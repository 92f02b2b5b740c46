// One task's private memory into pages-N.img + pagemap-PID.img: shared by the dump (dump-task.ts)
// and the pre-dump (pre-dump.ts). With an incremental run only pages written since the parent are
// drained, and tracking is ended or started in the same freeze.
import type { DumpMemoryOptions, MemoryDump } from '../../native/index.js';
import type { DumpContext } from './context.js';
import type { Incremental } from './incremental.js';

export type MemoryContext = Pick<DumpContext, 'session' | 'imagesDir' | 'stats' | 'call' | 'nextPagesId'> & {
  incremental?: Incremental | undefined;
};

export interface TaskMemory {
  memory: MemoryDump;
  pagesId: number;
}

export interface DrainOptions {
  /**
   * Send the pages to this page server instead of pages-N.img: the server writes the task's
   * pagemap and pages images on its side (the session keeps one connection for the whole dump;
   * `session.closePageServer()` finishes it), so nothing of the task's memory is written here.
   */
  readonly pageServer?: { readonly address: string; readonly port: number } | undefined;
}

/**
 * What the native drain of `pid` is asked: the pages image's id (used up here) and the options.
 * With a page server the server numbers its own pages images; no local id is used up.
 */
export async function memoryRequest(ctx: MemoryContext, pid: number, opts: DrainOptions = {}): Promise<{ pagesId: number; options: DumpMemoryOptions }> {
  const pagesId = opts.pageServer ? 0 : ctx.nextPagesId++;
  const extra = (await ctx.incremental?.memoryOptions(pid)) ?? {};
  const pageServer = opts.pageServer ? { pageServer: { address: opts.pageServer.address, port: opts.pageServer.port } } : {};
  return { pagesId, options: { pagesId, mode: 'vmsplice', ...extra, ...pageServer } };
}

/** Counts a drained task's pages into the stats and notes its tracking. */
export async function recordMemory(ctx: MemoryContext, pid: number, memory: MemoryDump): Promise<void> {
  countMemory(ctx.stats, memory);
  await ctx.incremental?.record(pid, memory);
}

/** A task's pages and the time they took, into the dump's stats (also a snapshot's, after the release). */
export function countMemory(stats: MemoryContext['stats'], memory: Pick<MemoryDump, 'counts' | 'pagesInParent' | 'timings'>): void {
  stats.counters.pagesScanned += memory.counts.scanned;
  stats.counters.pagesWritten += memory.counts.written;
  stats.counters.pagesZero += memory.counts.zero;
  stats.counters.pagesSkippedParent += memory.pagesInParent;
  stats.timings.memdumpTime += Math.round(memory.timings.totalNs / 1000);
  stats.timings.memwriteTime += Math.round(memory.timings.drainNs / 1000);
}

/** Drains `pid`'s memory (the pagemap is written separately: the dump adds lazy flags from mm). */
export async function drainTaskMemory(ctx: MemoryContext, pid: number, opts: DrainOptions = {}): Promise<TaskMemory> {
  const { pagesId, options } = await memoryRequest(ctx, pid, opts);
  const memory = await ctx.call(() => ctx.session.dumpMemory(pid, options));
  await recordMemory(ctx, pid, memory);
  return { memory, pagesId };
}
