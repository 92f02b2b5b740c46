// Incremental dumps: what a pre-dump leaves for the next (pre-)dump and how that one uses it.
//
// A pre-dump writes pagemap-PID.img + pages-N.img like a dump and starts tracking writes. With
// uffd-wp tracking the task keeps a userfaultfd between the two runs; its number goes into
// tsdump-track.json in the images dir (CRIU's restore ignores files it does not know). The next
// run reads it back, writes only pages written since (PE_PARENT entries for the rest, where the
// parent images really hold them), closes that userfaultfd in the task and leaves it out of
// the fd table.
import { readFile, readlink, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { TsdumpError } from '../errors.js';
import { readImage } from '../images/index.js';
import { pagemapPages, PE_PARENT, PE_PRESENT } from '../images/pagemap.js';
import { pagemap_entrySchema, type pagemap_entry } from '../images/gen/pagemap_pb.js';
import { native } from '../native.js';
import type { Logger } from '../log.js';
import type { DumpMemoryOptions, MemoryDump, PagemapEntryInfo, Session } from '../../native/index.js';

export type TrackingMethod = 'uffd-wp' | 'soft-dirty';

export const TRACK_FILE = 'tsdump-track.json';
const TRACK_FORMAT = 1;

interface TrackFile {
  format: number;
  method: TrackingMethod;
  /** Per pid: the task's start time (clock ticks since boot, /proc/PID/stat field 22) and fd. */
  tasks: Record<string, { start: string; fd?: number }>;
}

/** A task's start time: a pid reused by another process since the pre-dump has another. */
async function startTime(pid: number): Promise<string | undefined> {
  try {
    const s = await readFile(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** The method this kernel offers (soft-dirty where it tracks, else uffd-wp async). */
export function trackingMethod(): TrackingMethod | undefined {
  const m = native.memoryTrackingMethod();
  return m === 'uffd-wp' || m === 'soft-dirty' ? m : undefined;
}

export interface IncrementalOptions {
  imagesDir: string;
  /** --prev-images-dir, relative to imagesDir as CRIU takes it. */
  prevImagesDir?: string;
  /** Keep (or start) tracking after this run: pre-dump always, dump with --track-mem. */
  arm: boolean;
  /** Use the parent's tracking to skip clean pages (dump --track-mem, pre-dump). */
  useTracking: boolean;
  log?: Logger | undefined;
}

/** One run's view of its parent images and tracking; one per (pre-)dump. */
export class Incremental {
  private readonly recorded = new Map<number, { start: string; fd?: number }>();
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
    const parentDir = resolve(opts.imagesDir, opts.prevImagesDir);
    try {
      await stat(join(parentDir, 'inventory.img'));
    } catch (err) {
      throw new TsdumpError('IMAGE_IO', `--prev-images-dir ${parentDir}: no inventory.img (not a finished (pre-)dump)`, { cause: err });
    }
    let track: TrackFile | undefined;
    try {
      const t = JSON.parse(await readFile(join(parentDir, TRACK_FILE), 'utf8')) as TrackFile;
      if (t.format === TRACK_FORMAT && (t.method === 'uffd-wp' || t.method === 'soft-dirty')) track = t;
    } catch {
      // a parent without tracking (a plain dump or CRIU's pre-dump): every page is written again
    }
    return new Incremental(opts, method, parentDir, track);
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

  /** The pages the parent images hold for `pid` (present there or further up the chain). */
  private async parentEntries(pid: number): Promise<PagemapEntryInfo[]> {
    if (!this.parentDir) return [];
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

  /** Notes what `dumpMemory` armed in `pid`, for the sidecar. */
  async record(pid: number, memory: MemoryDump): Promise<void> {
    const t = memory.tracking;
    const p = memory.pagesInParent;
    if (this.opts.useTracking && this.parentDir) this.opts.log?.info(`pid ${pid}: ${memory.counts.written} pages written, ${p} left in the parent`);
    if (!t) return;
    this.opts.log?.info(`pid ${pid}: tracking writes with ${t.method}${t.fd != null ? ` (fd ${t.fd})` : ''}: ${t.vmas} VMAs armed, ${t.refused} refused`);
    const start = (await startTime(pid)) ?? '';
    this.recorded.set(pid, { start, ...(t.fd != null ? { fd: t.fd } : {}) });
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
    await writeFile(join(this.opts.imagesDir, TRACK_FILE), JSON.stringify(data) + '\n', { mode: 0o600 });
  }

  /** The `parent` symlink CRIU's restore follows (the path as given, relative to the dir). */
  async linkParent(): Promise<void> {
    if (this.opts.prevImagesDir === undefined) return;
    const link = join(this.opts.imagesDir, 'parent');
    try {
      await readlink(link);
      await unlink(link);
    } catch {
      // no old link
    }
    try {
      await symlink(this.opts.prevImagesDir, link);
    } catch (err) {
      throw new TsdumpError('IMAGE_IO', `creating ${link}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
    }
  }
}
