// What the user running tsdump may do, from its effective capabilities and yama's ptrace scope:
// `check` reports it next to the kernel's features, so that a user who cannot dump is told so
// (and why, and what would fix it) instead of reading "Looks good.".
//
// The facts behind each answer: a dump reads every file mapping through /proc/PID/map_files,
// which the kernel opens only to CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN (a pre-dump does not);
// ptrace reaches another user's processes only with CAP_SYS_PTRACE, and yama narrows it further;
// PTRACE_O_SUSPEND_SECCOMP (tasks under seccomp filters) needs CAP_SYS_ADMIN; TCP_REPAIR
// (--tcp-established) needs CAP_NET_ADMIN; ports below ip_unprivileged_port_start need
// CAP_NET_BIND_SERVICE.

import { readFileSync } from 'node:fs';

export const CAPABILITIES = {
  CAP_NET_BIND_SERVICE: 10,
  CAP_NET_ADMIN: 12,
  CAP_SYS_PTRACE: 19,
  CAP_SYS_ADMIN: 21,
  CAP_CHECKPOINT_RESTORE: 40,
} as const;
export type Capability = keyof typeof CAPABILITIES;

export interface Ability {
  /** The command or option this is about. */
  readonly what: string;
  readonly answer: 'yes' | 'partly' | 'no';
  /** One line: the reach, or what is missing. */
  readonly why: string;
}

export interface Privileges {
  readonly uid: number;
  readonly capabilities: Readonly<Record<Capability, boolean>>;
  /** /proc/sys/kernel/yama/ptrace_scope; absent without yama. */
  readonly yamaPtraceScope?: number;
  /** Whether `dump` can work for at least some process. */
  readonly canDump: boolean;
  readonly abilities: readonly Ability[];
  /** What would let this user dump, when it cannot (empty otherwise). */
  readonly remedy: string;
}

export interface PrivilegeSources {
  /** The text of /proc/self/status. */
  readonly status: string;
  /** The text of /proc/sys/kernel/yama/ptrace_scope (undefined: no yama). */
  readonly yama?: string;
  /** The text of /proc/sys/net/ipv4/ip_unprivileged_port_start (default 1024). */
  readonly unprivilegedPortStart?: string;
}

function readOptional(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** This process's sources. */
export function ownPrivilegeSources(): PrivilegeSources {
  const yama = readOptional('/proc/sys/kernel/yama/ptrace_scope');
  const port = readOptional('/proc/sys/net/ipv4/ip_unprivileged_port_start');
  return {
    status: readFileSync('/proc/self/status', 'utf8'),
    ...(yama !== undefined ? { yama } : {}),
    ...(port !== undefined ? { unprivilegedPortStart: port } : {}),
  };
}

/** Reads what this user may do (from `sources`, by default this process's own). */
export function privileges(sources: PrivilegeSources = ownPrivilegeSources()): Privileges {
  const field = (name: string): string | undefined => new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(sources.status)?.[1];
  const uid = Number(field('Uid')?.split(/\s+/)[1] ?? NaN);
  const eff = BigInt(`0x${field('CapEff') ?? '0'}`);
  const has = (c: Capability): boolean => ((eff >> BigInt(CAPABILITIES[c])) & 1n) === 1n;
  const capabilities = Object.fromEntries((Object.keys(CAPABILITIES) as Capability[]).map((c) => [c, has(c)])) as Record<Capability, boolean>;
  const scope = sources.yama !== undefined ? Number(sources.yama.trim()) : undefined;
  const portStart = Number(sources.unprivilegedPortStart?.trim() ?? 1024);

  // whose processes ptrace reaches
  let reach: { answer: Ability['answer']; why: string };
  if (scope === 3) reach = { answer: 'no', why: 'yama ptrace_scope is 3: ptrace is disabled for everyone until reboot' };
  else if (capabilities.CAP_SYS_PTRACE) reach = { answer: 'yes', why: 'any process (CAP_SYS_PTRACE)' };
  else if (scope === 2) reach = { answer: 'no', why: 'yama ptrace_scope is 2: ptrace needs CAP_SYS_PTRACE' };
  else if (scope === 1) {
    reach = { answer: 'partly', why: `only tsdump's own descendants, or processes that named it with PR_SET_PTRACER (yama ptrace_scope 1; CAP_SYS_PTRACE reaches all)` };
  }
  else reach = { answer: 'partly', why: `only processes of uid ${uid} (another user's need CAP_SYS_PTRACE)` };

  const mapFiles = capabilities.CAP_CHECKPOINT_RESTORE || capabilities.CAP_SYS_ADMIN;
  const dump: Ability = !mapFiles
    ? { what: 'dump', answer: 'no', why: 'a dump reads every mapping through /proc/PID/map_files, which needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN' }
    : { what: 'dump', ...reach };
  const abilities: Ability[] = [
    dump,
    { what: 'pre-dump', ...reach },
    {
      what: 'processes under seccomp',
      answer: capabilities.CAP_SYS_ADMIN && reach.answer !== 'no' ? 'yes' : 'no',
      why: capabilities.CAP_SYS_ADMIN ? 'seized with PTRACE_O_SUSPEND_SECCOMP' : 'PTRACE_O_SUSPEND_SECCOMP needs CAP_SYS_ADMIN',
    },
    {
      what: '--tcp-established',
      answer: capabilities.CAP_NET_ADMIN && dump.answer !== 'no' ? 'yes' : 'no',
      why: capabilities.CAP_NET_ADMIN ? 'TCP_REPAIR and the iptables lock (CAP_NET_ADMIN)' : 'TCP_REPAIR and the iptables network lock need CAP_NET_ADMIN',
    },
    { what: 'show, report', answer: 'yes', why: 'reading images needs no privilege, only read access to the files' },
    {
      what: 'page-server',
      answer: capabilities.CAP_NET_BIND_SERVICE || portStart === 0 ? 'yes' : 'partly',
      why: capabilities.CAP_NET_BIND_SERVICE || portStart === 0 ? 'any port' : `ports from ${portStart} up (lower ones need CAP_NET_BIND_SERVICE)`,
    },
  ];
  const canDump = dump.answer !== 'no';
  const remedy = canDump
    ? ''
    : scope === 3
      ? 'Nothing can dump until reboot (yama ptrace_scope 3).'
      : !mapFiles
        ? 'Run tsdump as root, or give it CAP_CHECKPOINT_RESTORE (for your own processes) and CAP_SYS_PTRACE (for any process), e.g. through sudo or capsh --addamb.'
        : 'Give tsdump CAP_SYS_PTRACE, or run it as root.';
  return { uid, capabilities, ...(scope !== undefined ? { yamaPtraceScope: scope } : {}), canDump, abilities, remedy };
}
