// `tsdump check`: what this kernel offers a dumper. The probes run in Rust (crates/core/src/
// kerndat) against the real syscalls; their answers are cached like CRIU's criu.kdat, in a file
// under /run (tmpfs, so gone at reboot) that is also keyed by boot id, kernel release and the
// prober's capabilities, so a stale answer can never outlive the kernel (or privileges) it describes.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { release, version } from 'node:os';
import { dirname } from 'node:path';
import { TsdumpError, typedErrors } from './errors.js';
import { native } from './native.js';
import { privileges, type Privileges } from './privileges.js';

export const DEFAULT_KERNDAT_CACHE = '/run/tsdump/kerndat.json';
const CACHE_FORMAT = 2; // bump when a probe changes what it answers

interface FeatureInfo {
  /** Needed by every dump: `check` fails without it. */
  required: boolean;
  /** What it means when present. */
  yes: string;
  /** What it means when missing. */
  no: string;
}

/** Every probe, with the one-line consequence of its answer. */
export const FEATURES: Readonly<Record<string, FeatureInfo>> = {
  ptrace_seize: {
    required: true,
    yes: 'tasks are seized without signals the target could notice',
    no: 'cannot dump: tasks cannot be seized (ptrace disabled, e.g. yama ptrace_scope 3)',
  },
  get_rseq_conf: {
    required: false,
    yes: 'restartable-sequence state of each thread is dumped',
    no: 'threads inside an rseq critical section cannot be dumped safely',
  },
  ptrace_sigmask: {
    required: true,
    yes: 'blocked signal masks are read without the parasite',
    no: 'cannot dump: blocked signal masks cannot be read (PTRACE_GETSIGMASK)',
  },
  ptrace_syscall_info: {
    required: false,
    yes: 'interrupted system calls are recognised and restarted on restore',
    no: 'a task stopped inside a system call may see EINTR after restore',
  },
  seccomp_suspend: {
    required: false,
    yes: 'tasks under seccomp filters can be dumped',
    no: 'tasks with seccomp filters cannot be dumped (needs CAP_SYS_ADMIN)',
  },
  mem_dirty_track: {
    required: false,
    yes: 'soft-dirty bits can track memory changes between pre-dumps',
    no: 'no soft-dirty tracking: incremental dumps rely on PAGEMAP_SCAN/uffd-wp instead',
  },
  pagemap_scan: {
    required: false,
    yes: 'present and written pages are found with one ioctl per range',
    no: 'memory is scanned page by page through /proc/PID/pagemap (slower)',
  },
  uffd: {
    required: false,
    yes: 'userfaultfd available (lazy pages, write-protect tracking)',
    no: 'no lazy pages and no userfaultfd-based dirty tracking',
  },
  uffd_wp_async: {
    required: false,
    yes: 'asynchronous write-protect tracks dirty pages for --track-mem',
    no: '--track-mem needs soft-dirty instead of userfaultfd write-protect',
  },
  vmsplice: {
    required: true,
    yes: 'pages move to the images through pipes without copies',
    no: 'cannot dump memory: vmsplice into pipes fails',
  },
  memfd: {
    required: false,
    yes: 'memfd-backed memory and files can be dumped',
    no: 'memfd files and mappings cannot be dumped',
  },
  kcmp: {
    required: true,
    yes: 'shared files, mm and fs structs are found across tasks',
    no: 'cannot dump: resources shared between tasks cannot be told apart (kcmp)',
  },
  cgroup_freezer_v1: {
    required: false,
    yes: '--freeze-cgroup works on the v1 freezer hierarchy',
    no: '--freeze-cgroup cannot use a v1 freezer (none mounted)',
  },
  cgroup_freezer_v2: {
    required: false,
    yes: '--freeze-cgroup works through cgroup.freeze on cgroup v2',
    no: '--freeze-cgroup cannot use cgroup v2 cgroup.freeze',
  },
  timens: {
    required: false,
    yes: 'time namespaces exist: monotonic/boottime offsets are restorable',
    no: 'tasks in time namespaces cannot be dumped',
  },
  tcp_repair: {
    required: false,
    yes: '--tcp-established can dump live TCP connections',
    no: '--tcp-established cannot work (no TCP_REPAIR or no CAP_NET_ADMIN)',
  },
  clone3_set_tid: {
    required: false,
    yes: 'restore can recreate tasks with their original PIDs via clone3',
    no: 'restore falls back to ns_last_pid to pick PIDs (racy)',
  },
  prctl_mm_map: {
    required: true,
    yes: 'restore can set the memory layout (PR_SET_MM_MAP)',
    no: 'images could not be restored on this kernel (no PR_SET_MM_MAP)',
  },
  loginuid: {
    required: false,
    yes: 'audit login uids are dumped and restored',
    no: 'audit login uids are not preserved',
  },
};

export interface FeatureResult {
  name: string;
  supported: boolean;
  required: boolean;
  /** What the probe saw. */
  detail: string;
  /** One line: what the answer means for a dump. */
  consequence: string;
}

export interface Kerndat {
  kernel: { release: string; version: string };
  bootId: string;
  /** ISO time of the probe run that produced these answers. */
  probedAt: string;
  /** True when read from the cache file rather than probed now. */
  fromCache: boolean;
  features: FeatureResult[];
}

export interface KerndatOptions {
  /** Cache file; default $TSDUMP_KERNDAT_CACHE or /run/tsdump/kerndat.json. */
  cacheFile?: string;
  /** Probe again even if the cache is valid. */
  refresh?: boolean;
}

interface CacheFile {
  format: number;
  kernel: { release: string; version: string };
  bootId: string;
  /** The prober's effective capabilities: a probe's answer can depend on them (seccomp, TCP repair). */
  capEff: string;
  probedAt: string;
  probes: { name: string; supported: boolean; detail: string }[];
}

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

function cachePath(opts: KerndatOptions): string {
  return opts.cacheFile ?? process.env.TSDUMP_KERNDAT_CACHE ?? DEFAULT_KERNDAT_CACHE;
}

function readCache(file: string, key: Pick<CacheFile, 'kernel' | 'bootId' | 'capEff'>): CacheFile | undefined {
  let parsed: CacheFile;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8')) as CacheFile;
  } catch {
    return undefined;
  }
  const names = Object.keys(FEATURES);
  const valid =
    parsed.format === CACHE_FORMAT &&
    parsed.bootId === key.bootId &&
    parsed.capEff === key.capEff &&
    parsed.kernel?.release === key.kernel.release &&
    parsed.kernel?.version === key.kernel.version &&
    Array.isArray(parsed.probes) &&
    parsed.probes.length === names.length &&
    parsed.probes.every((p, i) => p.name === names[i]);
  return valid ? parsed : undefined;
}

function writeCache(file: string, data: CacheFile): void {
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(data) + '\n', { mode: 0o600 });
    renameSync(tmp, file);
  } catch {
    // an unwritable cache only costs the next run a few milliseconds of probing
  }
}

function describe(p: { name: string; supported: boolean; detail: string }): FeatureResult {
  const info = FEATURES[p.name];
  if (!info) throw new TsdumpError('KERNEL', `kerndat: unknown probe ${p.name}`);
  return { ...p, required: info.required, consequence: p.supported ? info.yes : info.no };
}

/** The kernel's features for dumping: from the cache when it still describes this boot. */
export async function kerndat(opts: KerndatOptions = {}): Promise<Kerndat> {
  const key = { kernel: { release: release(), version: version() }, bootId: bootId() };
  const file = cachePath(opts);
  const capEff = /^CapEff:\s*(\S+)/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 'unknown';
  const cached = opts.refresh ? undefined : readCache(file, { ...key, capEff });
  if (cached) {
    return { ...key, probedAt: cached.probedAt, fromCache: true, features: cached.probes.map(describe) };
  }
  const probes = await native.kerndatProbe();
  const data: CacheFile = { format: CACHE_FORMAT, ...key, capEff, probedAt: new Date().toISOString(), probes };
  writeCache(file, data);
  return { ...key, probedAt: data.probedAt, fromCache: false, features: probes.map(describe) };
}

export interface CheckOptions extends KerndatOptions {
  /** Every feature, not only the ones a dump requires. */
  all?: boolean;
  /** Only this feature (CRIU's --feature NAME). */
  feature?: string;
}

export interface CheckReport {
  kernel: Kerndat['kernel'];
  fromCache: boolean;
  features: FeatureResult[];
  /** Every feature listed is present (for --feature), or every required one (otherwise). */
  ok: boolean;
  /** Required features that are missing. */
  missingRequired: string[];
  /** How pre-dump and --track-mem find changed pages on this kernel. */
  memoryTracking: MemoryTracking;
  /** What the user running the check may do; `ok` also needs `canDump` (unless --feature). */
  privileges: Privileges;
}

export type MemoryTracking = 'soft-dirty' | 'uffd-wp' | 'none';

/** soft-dirty where the kernel tracks it (CRIU's method), else userfaultfd async write-protect
 *  read back with PAGEMAP_SCAN (what tsdump adds), as src/dump/incremental.ts picks. */
export function memoryTracking(features: readonly Pick<FeatureResult, 'name' | 'supported'>[]): MemoryTracking {
  const has = (n: string) => features.some((f) => f.name === n && f.supported);
  if (has('mem_dirty_track')) return 'soft-dirty';
  if (has('uffd_wp_async') && has('pagemap_scan')) return 'uffd-wp';
  return 'none';
}

const TRACKING_TEXT: Readonly<Record<MemoryTracking, string>> = {
  'soft-dirty': 'soft-dirty bits (clear_refs)',
  'uffd-wp': 'userfaultfd async write-protect + PAGEMAP_SCAN (no soft-dirty on this kernel)',
  none: 'none: pre-dump and --track-mem are unavailable',
};

export function check(opts: CheckOptions = {}): Promise<CheckReport> {
  return typedErrors(() => checkKernel(opts));
}

async function checkKernel(opts: CheckOptions): Promise<CheckReport> {
  if (opts.feature !== undefined && !(opts.feature in FEATURES)) {
    throw new TsdumpError(
      'USAGE',
      `unknown feature ${opts.feature}; known: ${Object.keys(FEATURES).join(', ')}`,
    );
  }
  const kd = await kerndat(opts);
  const features = kd.features.filter((f) =>
    opts.feature !== undefined ? f.name === opts.feature : opts.all || f.required,
  );
  const missingRequired = kd.features.filter((f) => f.required && !f.supported).map((f) => f.name);
  const privs = privileges();
  const ok = opts.feature !== undefined ? features.every((f) => f.supported) : missingRequired.length === 0 && privs.canDump;
  return { kernel: kd.kernel, fromCache: kd.fromCache, features, ok, missingRequired, memoryTracking: memoryTracking(kd.features), privileges: privs };
}

/** The human-readable report `tsdump check` prints. */
export function formatCheckReport(r: CheckReport): string {
  const width = Math.max(...r.features.map((f) => f.name.length), 8);
  const lines = r.features.map(
    (f) => `${f.name.padEnd(width)}  ${f.supported ? 'yes' : 'no '}  ${f.consequence}`,
  );
  if (r.features.length > 1) lines.push(`memory tracking: ${TRACKING_TEXT[r.memoryTracking]}`);
  const p = r.privileges;
  if (r.features.length > 1) {
    const caps = Object.entries(p.capabilities);
    const held = caps.filter(([, v]) => v).map(([k]) => k);
    const lacking = caps.filter(([, v]) => !v).map(([k]) => k);
    lines.push(
      `this user: uid ${p.uid}${held.length ? `, with ${held.join(', ')}` : ''}${lacking.length ? `, without ${lacking.join(', ')}` : ''}` +
        `${p.yamaPtraceScope !== undefined ? `; yama ptrace_scope ${p.yamaPtraceScope}` : ''}`,
    );
    const w = Math.max(...p.abilities.map((a) => a.what.length));
    for (const a of p.abilities) lines.push(`  ${a.what.padEnd(w)}  ${a.answer.padEnd(6)}  ${a.why}`);
  }
  if (r.ok) lines.push('Looks good.');
  else if (r.missingRequired.length) lines.push(`Missing required features: ${r.missingRequired.join(', ')}`);
  else if (r.features.length > 1 && !p.canDump) lines.push(`This user cannot dump: ${p.abilities[0]!.why}. ${p.remedy}`);
  else lines.push('Feature missing.');
  return lines.join('\n') + '\n';
}
