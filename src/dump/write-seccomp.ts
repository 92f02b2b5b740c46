// seccomp.img and where each thread's filters sit in it (CRIU's collect_seccomp_filters stage,
// run after the seize and before any task is dumped: core images carry indexes into this image).
//
// The layout is CRIU 4.1's, so that its restore and tsdump's images agree entry for entry:
// - every thread in filter mode gets its own copy of its whole chain (chains are not shared
//   between threads or processes; the kernel offers no way to tell a shared filter from a copy);
// - threads are laid out in ascending TID order over the whole tree, each chain newest filter
//   first; every filter but the newest names the next-newer one as `prev`, and the thread's
//   thread_core.seccomp_filter is the index of its oldest filter, which restore installs first;
// - when every thread of a process is in filter mode with identical programs, only the leader
//   keeps the chain, flagged SECCOMP_FILTER_FLAG_TSYNC, and the other threads record no seccomp
//   at all: restore then syncs the leader's chain to them, and the program can go on using
//   TSYNC (which the kernel refuses when threads hold unrelated copies of a chain);
// - flags are what PTRACE_SECCOMP_GET_METADATA reports (only SECCOMP_FILTER_FLAG_LOG survives
//   in the kernel), and the image is written even when no thread has a filter.
import { create } from '@bufbuild/protobuf';
import { writeImage } from '../images/index.js';
import type { ImagesDir } from '../images/dir.js';
import { seccomp_entrySchema } from '../images/gen/seccomp_pb.js';
import type { SeccompStateInfo, SeizedProcessInfo, Session } from '../../native/index.js';

export const SECCOMP_MODE_DISABLED = 0;
export const SECCOMP_MODE_STRICT = 1;
export const SECCOMP_MODE_FILTER = 2;
const SECCOMP_FILTER_FLAG_TSYNC = 1;

/** What one thread's core image records: its mode and, in filter mode, its oldest filter's index. */
export interface ThreadSeccomp {
  readonly mode: number;
  readonly filter?: number;
}

/** Per TID; threads absent from it are recorded without seccomp. */
export type SeccompTable = ReadonlyMap<number, ThreadSeccomp>;

interface Chain {
  tid: number;
  mode: number;
  /** Oldest first. */
  filters: { program: Uint8Array; flags: number }[];
}

const sameProgram = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((v, i) => v === b[i]);

function chainOf(s: SeccompStateInfo): Chain {
  return {
    tid: s.tid,
    mode: s.mode,
    filters: s.filters.map((f) => ({ program: new Uint8Array(f.program), flags: Number(f.flags ?? 0n) })),
  };
}

/** Leader first. Collapses identical per-thread chains into one TSYNC chain on the leader. */
function collapseTsync(threads: Chain[]): void {
  const [leader, ...others] = threads;
  if (!leader || leader.mode !== SECCOMP_MODE_FILTER) return;
  for (const t of others) {
    if (t.mode !== leader.mode || t.filters.length !== leader.filters.length) return;
    if (!t.filters.every((f, i) => sameProgram(f.program, leader.filters[i]!.program))) return;
  }
  for (const f of leader.filters) f.flags |= SECCOMP_FILTER_FLAG_TSYNC;
  for (const t of others) {
    t.mode = SECCOMP_MODE_DISABLED;
    t.filters = [];
  }
}

/**
 * Reads every thread's seccomp state (the tree must be seized with suspendSeccomp), writes
 * seccomp.img and returns what each thread's core image must say.
 */
export async function dumpSeccomp(
  imagesDir: ImagesDir,
  session: Session,
  call: <T>(fn: () => Promise<T> | T) => Promise<T>,
  processes: readonly SeizedProcessInfo[],
): Promise<SeccompTable> {
  const chains: Chain[] = [];
  for (const p of processes) {
    const threads: Chain[] = [];
    for (const t of p.threads) {
      // the seize read each thread's mode: only filter mode has filters to fetch
      threads.push(t.seccompMode === SECCOMP_MODE_FILTER ? chainOf(await call(() => session.seccompState(t.tid))) : { tid: t.tid, mode: t.seccompMode, filters: [] });
    }
    collapseTsync(threads);
    chains.push(...threads);
  }
  chains.sort((a, b) => a.tid - b.tid);

  const table = new Map<number, ThreadSeccomp>();
  const filters: { filter: Uint8Array; prev?: number; flags: number }[] = [];
  for (const c of chains) {
    if (c.mode === SECCOMP_MODE_DISABLED) continue;
    if (c.mode !== SECCOMP_MODE_FILTER || c.filters.length === 0) {
      table.set(c.tid, { mode: c.mode });
      continue;
    }
    const newest = filters.length;
    for (const f of [...c.filters].reverse()) {
      const at = filters.length;
      filters.push({ filter: f.program, flags: f.flags, ...(at === newest ? {} : { prev: at - 1 }) });
    }
    table.set(c.tid, { mode: c.mode, filter: filters.length - 1 });
  }
  await writeImage(imagesDir, 'seccomp.img', seccomp_entrySchema, [create(seccomp_entrySchema, { seccompFilters: filters })]);
  return table;
}
