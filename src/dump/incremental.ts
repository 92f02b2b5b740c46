// Incremental dumps: what a pre-dump leaves for the next (pre-)dump and how that one uses it.
//
// A pre-dump writes pagemap-PID.img + pages-N.img like a dump and starts tracking writes. With
// uffd-wp tracking the task keeps a userfaultfd between the two runs; its number goes into
// tsdump-track.json in the images dir (CRIU's restore ignores files it does not know). The next
// run reads it back, writes only pages written since (PE_PARENT entries for the rest, where the
// parent images really hold them), closes that userfaultfd in the task and leaves it out of
// the fd table.
//
// The userfaultfd's lifecycle, with uffd-wp: armed by a pre-dump (always) or a dump with
// --track-mem --leave-running, in the same freeze that drains the task; closed by the next run
// that names that (pre-)dump with --prev-images-dir (which arms a new one only if it tracks on);
// closed by `tsdump stop-tracking -t PID -D DIR` (./stop-tracking.ts) to end tracking without
// dumping; and never left behind by a run that fails before its commit point (`disarm`). A task
// holding one is refused by a dump that does not name its parent, with these ways out.
//
// With a page server the parent's pagemap is on the server's side; the run then records, per
// task, the page ranges it sent (coverage in tsdump-track.json), which is what the next run may
// leave in the parent. The server checks every such hole against its parent image.
import { readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { TsdumpError } from '../errors.js';
import { readImage } from '../images/index.js';
import type { ImagesDir } from '../images/dir.js';
import { pagemapPages, PE_PARENT, PE_PRESENT } from '../images/pagemap.js';
import { pagemap_entrySchema, type pagemap_entry } from '../images/gen/pagemap_pb.js';
import { native } from '../native.js';
import type { Logger } from '../log.js';
import type { DumpMemoryOptions, MemoryDump, PagemapEntryInfo, Session, TrackingMethod } from '../../native/index.js';
import { pageBytesN } from '../arch/index.js';

export type { TrackingMethod };

export const TRACK_FILE = 'tsdump-track.json';
const TRACK_FORMAT = 1;

/** A coverage range "START-END" (hex) as a pagemap entry. */
function parseRange(r: string): PagemapEntryInfo {
  const [a, b] = r.split('-').map((x) => BigInt(`0x${x}`)) as [bigint, bigint];
  return { vaddr: a, nrPages: Number((b - a) / pageBytesN()), flags: PE_PRESENT };
}

interface TrackedTask {
  /** The task's start time (clock ticks since boot, /proc/PID/stat field 22). */
  start: string;
  /** uffd-wp: the userfaultfd's number in the task. */
  fd?: number;
  /** Memory sent to a page server: the page ranges the server's image holds, "START-END" in hex. */
  coverage?: string[];
}

interface TrackFile {
  format: number;
  method: TrackingMethod;
  tasks: Record<string, TrackedTask>;
}

/** DIR's tsdump-track.json, if it has one tsdump can use. */
export async function readTrackFile(dir: string): Promise<TrackFile | undefined> {
  try {
    const t = JSON.parse(await readFile(join(dir, TRACK_FILE), 'utf8')) as TrackFile;
    if (t.format === TRACK_FORMAT && (t.method === 'uffd-wp' || t.method === 'soft-dirty')) return t;
  } catch {
    // none, or not ours
  }
  return undefined;
}

/**
 * The userfaultfds a (pre-)dump into DIR left that are still in place: same process (start
 * time), and still an async write-protect userfaultfd at that number.
 */
export async function trackingLeftIn(dir: string): Promise<{ pid: number; fd: number }[]> {
  const track = await readTrackFile(dir);
  const out: { pid: number; fd: number }[] = [];
  for (const [p, t] of Object.entries(track?.tasks ?? {})) {
    const pid = Number(p);
    if (t.fd !== undefined && t.start === (await startTime(pid)) && native.isTrackingFd(pid, t.fd)) out.push({ pid, fd: t.fd });
  }
  return out;
}

/** A task's start time: a pid reused by another process since the pre-dump has another. */
async function startTime(pid: number): Promise<string | undefined> {
  return native.procStat(pid)?.startTime.toString();
}

/** The method this kernel offers (soft-dirty where it tracks, else uffd-wp async). */
export function trackingMethod(): TrackingMethod | undefined {
  return native.memoryTrackingMethod() ?? undefined;
}

export interface IncrementalOptions {
  imagesDir: ImagesDir;
  /** --prev-images-dir, relative to imagesDir as CRIU takes it. */
  prevImagesDir?: string;
  /** Keep (or start) tracking after this run: pre-dump always, dump with --track-mem. */
  arm: boolean;
  /** Use the parent's tracking to skip clean pages (dump --track-mem, pre-dump). */
  useTracking: boolean;
  /** This run sends memory to a page server (--page-server): its parent images are there. */
  pageServer?: boolean;
  log?: Logger | undefined;
}

/** What `record` needs of a task's memory run. */
export type RecordedMemory = Pick<MemoryDump, 'tracking' | 'entries' | 'pagesInParent'> & { counts: Pick<MemoryDump['counts'], 'written'> };

/** One run's view of its parent images and tracking; one per (pre-)dump. */
export class Incremental {
  private readonly recorded = new Map<number, TrackedTask>();
  private readonly valid = new Map<number, number | undefined>();

  private constructor(
    private readonly opts: IncrementalOptions,
    readonly method: TrackingMethod | undefined,
    private readonly parentDir: string | undefined,
    private readonly parentTrack: TrackFile | undefined,
  ) {}

  static async open(opts: IncrementalOptions): Promise<Incremental> {
    const method = opts.arm || opts.useTracking ? trackingMethod() : undefined;
    if ((opts.arm || opts.useTracking) && !method) {
      throw new TsdumpError('UNSUPPORTED', 'memory tracking is not available: the kernel has neither soft-dirty nor userfaultfd WP_ASYNC');
    }
    if (opts.prevImagesDir === undefined) return new Incremental(opts, method, undefined, undefined);
    const parentDir = resolve(opts.imagesDir.path, opts.prevImagesDir);
    try {
      await stat(join(parentDir, 'inventory.img'));
    } catch (err) {
      throw new TsdumpError('IMAGE_IO', `--prev-images-dir ${parentDir}: no inventory.img (not a finished (pre-)dump)`, { cause: err });
    }
    // a parent without tracking (a plain dump or CRIU's pre-dump): every page is written again
    return new Incremental(opts, method, parentDir, await readTrackFile(parentDir));
  }

  /**
   * The parent's userfaultfd in `pid`, if it is still there and still ours (same process, an
   * async write-protect userfaultfd at that number).
   */
  private async parentFd(pid: number): Promise<number | undefined> {
    if (this.valid.has(pid)) return this.valid.get(pid);
    const t = this.parentTrack?.tasks[String(pid)];
    let fd: number | undefined;
    if (t?.fd !== undefined && t.start === (await startTime(pid)) && native.isTrackingFd(pid, t.fd)) fd = t.fd;
    this.valid.set(pid, fd);
    return fd;
  }

  /** Whether the parent's tracking of `pid` is intact (same process, fd still in place). */
  private async parentTracks(pid: number): Promise<boolean> {
    const t = this.parentTrack?.tasks[String(pid)];
    if (!t || t.start !== (await startTime(pid)) || this.parentTrack?.method !== this.method) return false;
    return this.parentTrack.method === 'soft-dirty' || (await this.parentFd(pid)) !== undefined;
  }

  /**
   * The pages the parent images hold for `pid` (present there or further up the chain): its
   * pagemap here, or for a run to a page server the coverage the parent run recorded.
   */
  private async parentEntries(pid: number): Promise<PagemapEntryInfo[]> {
    if (!this.parentDir) return [];
    const coverage = this.parentTrack?.tasks[String(pid)]?.coverage;
    if (this.opts.pageServer && coverage) return coverage.map(parseRange);
    let img;
    try {
      img = await readImage(join(this.parentDir, `pagemap-${pid}.img`));
    } catch {
      return [];
    }
    const out: PagemapEntryInfo[] = [];
    for (const e of img.entries.slice(1)) {
      const pe = e.message as pagemap_entry;
      if (e.schema.typeName !== pagemap_entrySchema.typeName || !(pe.flags & (PE_PRESENT | PE_PARENT))) continue;
      out.push({ vaddr: pe.vaddr, nrPages: Number(pagemapPages(pe)), flags: pe.flags });
    }
    return out.sort((a, b) => (a.vaddr < b.vaddr ? -1 : a.vaddr > b.vaddr ? 1 : 0));
  }

  /** What dumpMemory needs for `pid` on top of the plain options. */
  async memoryOptions(pid: number): Promise<Pick<DumpMemoryOptions, 'parent' | 'closeFd' | 'arm'>> {
    const out: Pick<DumpMemoryOptions, 'parent' | 'closeFd' | 'arm'> = {};
    const fd = await this.parentFd(pid);
    if (fd !== undefined) out.closeFd = fd;
    if (this.opts.useTracking && this.method && (await this.parentTracks(pid))) {
      out.parent = { method: this.method, entries: await this.parentEntries(pid) };
    }
    if (this.opts.arm && this.method) out.arm = this.method;
    return out;
  }

  /** The task's fds that are tsdump's own tracking (left out of the fd table). */
  async hidesFd(pid: number, fd: number): Promise<boolean> {
    return (await this.parentFd(pid)) === fd;
  }

  /** Notes what `dumpMemory` armed in `pid` and what it wrote, for the sidecar. */
  async record(pid: number, memory: RecordedMemory): Promise<void> {
    const p = memory.pagesInParent;
    if (this.opts.useTracking && this.parentDir) this.opts.log?.info(`pid ${pid}: ${memory.counts.written} pages written, ${p} left in the parent`);
    await this.armed(pid, memory.tracking);
    this.covered(pid, memory.entries);
  }

  /** Notes the tracking armed in `pid` (a failed run ends it with `disarm`). */
  async armed(pid: number, t: MemoryDump['tracking']): Promise<void> {
    if (!t) return;
    this.opts.log?.info(`pid ${pid}: tracking writes with ${t.method}${t.fd != null ? ` (fd ${t.fd})` : ''}: ${t.vmas} VMAs armed, ${t.refused} refused`);
    const start = (await startTime(pid)) ?? '';
    this.recorded.set(pid, { start, ...(t.fd != null ? { fd: t.fd } : {}) });
  }

  /**
   * Notes the pages `pid`'s image holds, where a child run cannot read them back: on a page
   * server. Pages left out (unreadable in a read-mode pre-dump) are in no entry, so no later run
   * will point at the parent for them.
   */
  covered(pid: number, entries: readonly PagemapEntryInfo[]): void {
    const t = this.recorded.get(pid);
    if (!t || !this.opts.pageServer) return;
    const ranges: [bigint, bigint][] = [];
    for (const e of entries) {
      if (!(e.flags & (PE_PRESENT | PE_PARENT))) continue;
      const end = e.vaddr + BigInt(e.nrPages) * pageBytesN();
      const last = ranges.at(-1);
      if (last && last[1] === e.vaddr) last[1] = end;
      else ranges.push([e.vaddr, end]);
    }
    t.coverage = ranges.map(([a, b]) => `${a.toString(16)}-${b.toString(16)}`);
  }

  /** Whether this run left a userfaultfd in some task (one `disarm` would close). */
  hasArmed(): boolean {
    return [...this.recorded.values()].some((t) => t.fd !== undefined);
  }

  /** A task that went away during the run: nothing about it is left for the next run. */
  forget(pid: number): void {
    this.recorded.delete(pid);
  }

  /**
   * Ends the tracking this run started (the tree still seized by `session`): a failed run must
   * not leave a userfaultfd behind in the tasks. Best effort; returns the failures.
   */
  async disarm(session: Session): Promise<string[]> {
    const failures: string[] = [];
    for (const [pid, t] of this.recorded) {
      if (t.fd === undefined) continue;
      try {
        await session.dropTracking(pid, t.fd);
      } catch (err) {
        failures.push(`pid ${pid} fd ${t.fd}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    this.recorded.clear();
    return failures;
  }

  /** tsdump-track.json (before the inventory: the inventory is the commit point). */
  async writeTrackFile(): Promise<void> {
    if (!this.method || this.recorded.size === 0) return;
    const data: TrackFile = { format: TRACK_FORMAT, method: this.method, tasks: Object.fromEntries([...this.recorded].map(([p, t]) => [String(p), t])) };
    await this.opts.imagesDir.writeFiles([TRACK_FILE], [Buffer.from(JSON.stringify(data) + '\n')]);
  }

  /** The `parent` symlink CRIU's restore follows (the path as given, relative to the dir). */
  linkParent(): void {
    if (this.opts.prevImagesDir !== undefined) this.opts.imagesDir.symlink(this.opts.prevImagesDir, 'parent');
  }
}
