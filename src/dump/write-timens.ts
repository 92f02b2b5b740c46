// timens-N.img: CLOCK_MONOTONIC and CLOCK_BOOTTIME as the tree sees them at the end of the dump.
// CRIU writes it for every dump (criu/timens.c). Restore, on a kernel with time namespaces, puts
// the restored tree into a new one whose offsets make both clocks carry on from these values, so
// a restored program sees no jump in its monotonic time however long the images waited:
//  - a tree in tsdump's own time namespace (the usual case) gets timens-0.img, read by restore
//    whenever the inventory's and the root's time namespace ids are equal (a missing image only
//    earns a warning there, and the clocks then jump);
//  - a tree whose root lives in a time namespace of its own gets timens-ID.img, ID its
//    time_ns_id in ids-PID.img, with the clocks of that namespace (ours shifted by its offsets);
//  - a task in yet another time namespace, or one that unshared a time namespace for its future
//    children (time_for_children differs from time), is refused, as CRIU refuses it ("Can't dump
//    nested time namespace"): restore creates a single time namespace, for the root.
import { readFile } from 'node:fs/promises';
import { create } from '@bufbuild/protobuf';
import { writeImage } from '../images/index.js';
import type { ImagesDir } from '../images/dir.js';
import { timens_entrySchema } from '../images/gen/timens_pb.js';
import { native } from '../native.js';
import { TsdumpError } from '../errors.js';
import { nsInode } from './proc-ns.js';

const NSEC_PER_SEC = 1_000_000_000n;

interface ClockOffsets {
  monotonic: bigint;
  boottime: bigint;
}

export class TimeNamespace {
  private constructor(
    /** The root's time namespace when it is not ours (its pid, to read its offsets). */
    private readonly ownRoot: number | undefined,
  ) {}

  /**
   * Checks the tree's time namespaces while nothing is written yet: `pids` are the tree's live
   * processes, root first.
   */
  static async collect(pids: readonly number[]): Promise<TimeNamespace> {
    const [root] = pids;
    if (root === undefined) throw new TsdumpError('USAGE', 'no process to dump');
    const ours = nsInode('self', 'time');
    const rootNs = nsInode(root, 'time');
    for (const pid of pids) {
      const [time, forChildren] = [nsInode(pid, 'time'), nsInode(pid, 'time_for_children')];
      if (time !== rootNs) {
        throw new TsdumpError(
          'UNSUPPORTED',
          `pid ${pid}: lives in another time namespace than the tree's root ${root}; nested time namespaces cannot be ` +
            'dumped (CRIU refuses them too: restore recreates one time namespace, for the root)',
        );
      }
      if (forChildren !== time) {
        throw new TsdumpError(
          'UNSUPPORTED',
          `pid ${pid}: has unshared a time namespace for its future children (ns/time_for_children differs from ns/time); ` +
            'nested time namespaces cannot be dumped (CRIU refuses them too)',
        );
      }
    }
    return new TimeNamespace(rootNs === ours ? undefined : root);
  }

  /** The image's name: timens-0.img for our own namespace, else timens-ID.img for the root's. */
  private imageName(rootTimeNsId: number | undefined): string {
    if (this.ownRoot === undefined) return 'timens-0.img';
    if (rootTimeNsId === undefined) {
      throw new TsdumpError('PROCFS', `pid ${this.ownRoot}: its own time namespace has no time_ns_id (no /proc/${this.ownRoot}/ns/time?)`);
    }
    return `timens-${rootTimeNsId}.img`;
  }

  /** Reads the clocks (the tree is still frozen) and writes the image. */
  async write(imagesDir: ImagesDir, rootTimeNsId: number | undefined): Promise<void> {
    const name = this.imageName(rootTimeNsId);
    // Both offsets are read first, the clocks last and back to back: the values are "now".
    const shift = this.ownRoot === undefined ? undefined : await Promise.all([offsets('self'), offsets(this.ownRoot)]);
    const clocks = await native.timeNamespaceClocks();
    let monotonic = BigInt(clocks.monotonic.sec) * NSEC_PER_SEC + BigInt(clocks.monotonic.nsec);
    let boottime = BigInt(clocks.boottime.sec) * NSEC_PER_SEC + BigInt(clocks.boottime.nsec);
    if (shift) {
      // /proc/PID/timens_offsets are relative to the initial time namespace, ours included
      const [mine, theirs] = shift;
      monotonic += theirs.monotonic - mine.monotonic;
      boottime += theirs.boottime - mine.boottime;
    }
    const entry = create(timens_entrySchema, { monotonic: timespec(monotonic), boottime: timespec(boottime) });
    await writeImage(imagesDir, name, timens_entrySchema, [entry]);
  }
}

function timespec(ns: bigint): { tvSec: bigint; tvNsec: bigint } {
  // the kernel keeps every namespace's clocks non-negative; the image's fields are unsigned
  const t = ns < 0n ? 0n : ns;
  return { tvSec: t / NSEC_PER_SEC, tvNsec: t % NSEC_PER_SEC };
}


/** /proc/PID/timens_offsets: "monotonic SEC NSEC" and "boottime SEC NSEC" (SEC may be negative). */
async function offsets(pid: number | 'self'): Promise<ClockOffsets> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/timens_offsets`, 'utf8');
  } catch (err) {
    throw new TsdumpError('PROCFS', `pid ${pid}: cannot read /proc/${pid}/timens_offsets: ${(err as Error).message}`, { cause: err });
  }
  const out: ClockOffsets = { monotonic: 0n, boottime: 0n };
  for (const line of text.split('\n')) {
    const m = /^\s*(monotonic|boottime)\s+(-?\d+)\s+(\d+)\s*$/.exec(line);
    if (m) out[m[1] as keyof ClockOffsets] = BigInt(m[2]!) * NSEC_PER_SEC + BigInt(m[3]!);
  }
  return out;
}
