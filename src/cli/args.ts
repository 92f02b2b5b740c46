// The command line, CRIU's way: the same option names, short forms and configuration files, so
// a criu command line works unchanged. This module is pure: argv (plus the configuration files
// it names) in, a typed invocation out. Nothing here runs a dump.
import type { Argv } from 'yargs';
import type { DumpOptions } from '../dump/options.js';
import { TsdumpError } from '../errors.js';
import { loadConfig, type ConfigLine, type ConfigSources } from '../config.js';
import { DUMP_OPTIONS, type DumpCommand } from '../dump/options.js';
import { DEFAULT_VERBOSITY } from '../log-levels.js';
import type { PageServerTls } from '../page-server.js';
import type { ProgressMode } from '../progress.js';

export const COMMANDS = ['dump', 'pre-dump', 'check', 'show', 'page-server', 'stop-tracking', 'report'] as const;
export type CommandName = (typeof COMMANDS)[number];

type OptType = 'boolean' | 'string' | 'number' | 'array';

interface OptDef {
  name: string;
  short?: string;
  type: OptType;
  desc: string;
  /** A string option that may also be given bare (`--snapshot` or `--snapshot=strict`). */
  bare?: true;
}

// Options every command shares.
const COMMON: OptDef[] = [
  { name: 'log-file', short: 'o', type: 'string', desc: 'write the log to FILE (relative to the work dir)' },
  { name: 'work-dir', short: 'W', type: 'string', desc: 'directory for the log and stats (default: images dir)' },
  { name: 'config', type: 'string', desc: 'read options from FILE (skips the default config files)' },
  // yargs reads --no-default-config as default-config=false; config.ts acts on the raw word
  { name: 'default-config', type: 'boolean', desc: 'read /etc/criu/default.conf and ~/.criu/default.conf (--no-default-config: skip them)' },
  { name: 'json', type: 'boolean', desc: 'print one machine-readable JSON result on stdout' },
];

// CRIU's TLS for the page server, on both ends (criu/tls.c); paths default to /etc/pki/...
const TLS: OptDef[] = [
  { name: 'tls', type: 'boolean', desc: 'secure the page-server connection with TLS (certificates on both ends)' },
  { name: 'tls-cacert', type: 'string', desc: 'trust only this CA (PEM; default: system CAs and /etc/pki/CA/cacert.pem)' },
  { name: 'tls-cacrl', type: 'string', desc: 'certificate revocation list (PEM; default /etc/pki/CA/cacrl.pem if present)' },
  { name: 'tls-cert', type: 'string', desc: 'our certificate (PEM; default /etc/pki/criu/cert.pem)' },
  { name: 'tls-key', type: 'string', desc: 'our private key (PEM; default /etc/pki/criu/private/key.pem)' },
  { name: 'tls-no-cn-verify', type: 'boolean', desc: "do not require the peer's certificate to name the address" },
];

const DUMP: OptDef[] = [
  { name: 'tree', short: 't', type: 'number', desc: 'PID of the root of the tree to dump' },
  { name: 'images-dir', short: 'D', type: 'string', desc: 'directory for the images (default: .; created owner-only if missing)' },
  { name: 'replace-images', type: 'boolean', desc: 'replace the checkpoint the images dir holds, once the new one is complete' },
  { name: 'leave-running', short: 'R', type: 'boolean', desc: 'leave the tree running after the dump' },
  { name: 'leave-stopped', short: 's', type: 'boolean', desc: 'leave the tree stopped after the dump' },
  { name: 'shell-job', short: 'j', type: 'boolean', desc: 'the tree was started from a shell (session/tty outside)' },
  { name: 'ext-unix-sk', short: 'x', type: 'boolean', desc: 'allow unix sockets connected outside the tree' },
  { name: 'tcp-established', type: 'boolean', desc: 'dump established TCP connections' },
  { name: 'tcp-close', type: 'boolean', desc: 'dump connected TCP/MPTCP sockets for criu restore --tcp-close (restored closed)' },
  { name: 'file-locks', short: 'l', type: 'boolean', desc: 'dump file locks' },
  { name: 'freeze-cgroup', type: 'string', desc: 'freeze the tree through this cgroup' },
  { name: 'timeout', type: 'number', desc: 'seconds to wait for the tree to freeze' },
  { name: 'action-script', type: 'array', desc: 'run SCRIPT at each action point (repeatable)' },
  { name: 'libdir', short: 'L', type: 'string', desc: 'load plugins (ES modules) from DIR' },
  { name: 'prev-images-dir', type: 'string', desc: 'parent images of an incremental dump (relative to -D)' },
  { name: 'track-mem', type: 'boolean', desc: 'track memory changes for a later incremental dump' },
  { name: 'snapshot', type: 'string', bare: true, desc: 'release the tree before copying its memory, from a copy-on-write snapshot (needs -R; =strict: fail where none can be taken)' },
  { name: 'page-server', type: 'boolean', desc: 'send pages to a page server (--address, --port)' },
  { name: 'address', type: 'string', desc: 'page server address' },
  { name: 'port', type: 'number', desc: 'page server port' },
  ...TLS,
  { name: 'ghost-limit', type: 'string', desc: 'largest deleted file kept in the images (bytes, K/M/G)' },
  { name: 'drop-notify-events', type: 'boolean', desc: 'dump inotify/fanotify groups with unread events, losing the events (as CRIU)' },
  { name: 'link-remap', type: 'boolean', desc: 'hard-link files whose name is gone but that keep other links (restore removes the link)' },
  { name: 'display-stats', type: 'boolean', desc: 'print the dump statistics when done' },
  { name: 'log-format', type: 'string', desc: 'log lines as text (default, as CRIU) or json (one object per line)' },
  { name: 'progress', type: 'string', desc: 'auto (a line on a terminal, the default), none, or json (one object per line on stderr)' },
  { name: 'pidfile', type: 'string', desc: 'write the PID of a daemonised helper to FILE' },
  { name: 'status-fd', type: 'number', desc: "write '\\0' to this descriptor when ready" },
];

const PRE_DUMP: OptDef[] = [
  ...DUMP,
  { name: 'pre-dump-mode', type: 'string', desc: 'how memory is read: splice (default) or read' },
];

const CHECK: OptDef[] = [
  { name: 'all', type: 'boolean', desc: 'every feature, not only the ones a dump needs' },
  { name: 'extra', type: 'boolean', desc: 'same as --all' },
  { name: 'experimental', type: 'boolean', desc: 'same as --all' },
  { name: 'feature', type: 'string', desc: 'check one feature by name' },
  { name: 'refresh', type: 'boolean', desc: 'probe again instead of reading the cached answers' },
];

const SHOW: OptDef[] = [
  { name: 'pretty', type: 'boolean', desc: 'decode fields into readable values (FILE)' },
  { name: 'ps', type: 'boolean', desc: 'the process tree, as crit x DIR ps (DIR)' },
  { name: 'tree', type: 'boolean', desc: 'same as --ps' },
  { name: 'fds', type: 'boolean', desc: 'open files, cwd and root per process, as crit x DIR fds (DIR)' },
  { name: 'mems', type: 'boolean', desc: 'every mapping per process, as crit x DIR mems (DIR)' },
  { name: 'rss', type: 'boolean', desc: 'dumped pages beside the mappings they belong to, as crit x DIR rss (DIR)' },
];

const REPORT: OptDef[] = [
  { name: 'output', short: 'o', type: 'string', desc: 'write the HTML to FILE (owner-only) instead of stdout' },
  { name: 'json', type: 'boolean', desc: 'print one machine-readable JSON result on stdout' },
];

const PAGE_SERVER: OptDef[] = [
  { name: 'images-dir', short: 'D', type: 'string', desc: 'directory for the received images' },
  { name: 'address', type: 'string', desc: 'address to listen on (default 0.0.0.0, every address, as criu; warns without --tls)' },
  { name: 'port', type: 'number', desc: 'port to listen on' },
  ...TLS,
  { name: 'idle-timeout', type: 'number', desc: 'seconds a client may stay silent before it is dropped (default 60, 0: no limit)' },
  { name: 'daemon', short: 'd', type: 'boolean', desc: 'run in the background' },
  { name: 'pidfile', type: 'string', desc: 'write the daemon PID to FILE' },
  { name: 'status-fd', type: 'number', desc: "write '\\0' to this descriptor when listening" },
  { name: 'prev-images-dir', type: 'string', desc: 'images of the previous (pre-)dump, the parent of what is received (relative to -D)' },
];

/**
 * CRIU options tsdump knows but does not implement yet. They are accepted by the parser only to
 * be refused by name: silently ignoring, say, --lazy-pages would produce a different dump than
 * the user asked for.
 */
export const UNSUPPORTED_OPTIONS: readonly OptDef[] = [
  { name: 'root', short: 'r', type: 'string', desc: '' },
  { name: 'ext-mount-map', short: 'M', type: 'string', desc: '' },
  { name: 'external', type: 'string', desc: '' },
  { name: 'join-ns', short: 'J', type: 'string', desc: '' },
  { name: 'inherit-fd', type: 'string', desc: '' },
  { name: 'manage-cgroups', type: 'string', desc: '' },
  { name: 'cgroup-root', type: 'string', desc: '' },
  { name: 'cgroup-props', type: 'string', desc: '' },
  { name: 'cgroup-props-file', type: 'string', desc: '' },
  { name: 'cgroup-dump-controller', type: 'string', desc: '' },
  { name: 'cgroup-yard', type: 'string', desc: '' },
  { name: 'cpu-cap', type: 'string', desc: '' },
  { name: 'evasive-devices', type: 'boolean', desc: '' },
  { name: 'force-irmap', type: 'boolean', desc: '' },
  { name: 'irmap-scan-path', type: 'string', desc: '' },
  { name: 'lazy-pages', type: 'boolean', desc: '' },
  { name: 'auto-dedup', type: 'boolean', desc: '' },
  { name: 'ms', type: 'boolean', desc: '' },
  { name: 'skip-mnt', type: 'string', desc: '' },
  { name: 'enable-fs', type: 'string', desc: '' },
  { name: 'enable-external-sharing', type: 'boolean', desc: '' },
  { name: 'enable-external-masters', type: 'boolean', desc: '' },
  { name: 'empty-ns', type: 'string', desc: '' },
  { name: 'lsm-profile', type: 'string', desc: '' },
  { name: 'lsm-mount-context', type: 'string', desc: '' },
  { name: 'network-lock', type: 'string', desc: '' },
  { name: 'skip-in-flight', type: 'boolean', desc: '' },
  { name: 'weak-sysctls', type: 'boolean', desc: '' },
  { name: 'remote', type: 'boolean', desc: '' },
  { name: 'stream', type: 'boolean', desc: '' },
  { name: 'log-pid', type: 'boolean', desc: '' },
  { name: 'relative-timestamps', type: 'boolean', desc: '' },
  { name: 'ps-socket', type: 'number', desc: '' },
  { name: 'deprecated', type: 'boolean', desc: '' },
  { name: 'file-validation', type: 'string', desc: '' },
  { name: 'mntns-compat-mode', type: 'boolean', desc: '' },
  { name: 'allow-uprobes', type: 'boolean', desc: '' },
  { name: 'skip-file-rwx-check', type: 'boolean', desc: '' },
  { name: 'ghost-fiemap', type: 'boolean', desc: '' },
  { name: 'unprivileged', type: 'boolean', desc: '' },
  { name: 'veth-pair', type: 'string', desc: '' },
  { name: 'exec-cmd', type: 'boolean', desc: '' },
  { name: 'restore-detached', type: 'boolean', desc: '' },
  { name: 'restore-sibling', short: 'S', type: 'boolean', desc: '' },
];

/** COMMON for a command without an images dir: the work dir defaults to the current directory. */
const COMMON_NO_IMAGES: OptDef[] = COMMON.map((o) =>
  o.name === 'work-dir' ? { ...o, desc: 'directory for the log file (default: the current directory)' } : o,
);
const STOP_TRACKING: OptDef[] = [
  { name: 'tree', short: 't', type: 'number', desc: 'PID of the root of the tracked tree' },
  { name: 'images-dir', short: 'D', type: 'string', desc: 'the (pre-)dump that started the tracking' },
];

const OPTIONS_BY_COMMAND: Record<CommandName, OptDef[]> = {
  dump: [...DUMP, ...COMMON],
  'pre-dump': [...PRE_DUMP, ...COMMON],
  check: [...CHECK, ...COMMON_NO_IMAGES],
  show: [...SHOW, ...COMMON_NO_IMAGES],
  'page-server': [...PAGE_SERVER, ...COMMON],
  'stop-tracking': [...STOP_TRACKING, ...COMMON],
  // not a criu command: no criu log, work dir or configuration files
  report: REPORT,
};

const DESCRIPTIONS: Record<CommandName, string> = {
  dump: 'checkpoint a process tree into CRIU images',
  'pre-dump': 'copy memory ahead of a dump (incremental), leaving the tree running',
  check: 'report which kernel features a dump can use, and what this user may do',
  show: 'print an image file (FILE) or summarise an images directory (DIR)',
  'page-server': 'receive pages of a dump over the network',
  'stop-tracking': 'end the memory tracking a pre-dump (-D) left in a tree (-t), without dumping',
  report: 'draw an images directory as one self-contained HTML page',
};

/** What each command's --help (and the man page) shows as examples: [command line, what it does]. */
export const EXAMPLES: Readonly<Record<CommandName, readonly (readonly [string, string])[]>> = {
  dump: [
    ['tsdump dump -t 1234 -D /tmp/ckpt', 'checkpoint the tree rooted at 1234 into /tmp/ckpt, then kill it'],
    ['tsdump dump -t 1234 -D /tmp/ckpt -R --shell-job', 'leave it running; it was started from a shell'],
    ['tsdump dump -t 1234 -D /tmp/ckpt -o dump.log -v4', 'with a full log in /tmp/ckpt/dump.log'],
    ['tsdump dump -t 1234 -D /tmp/ckpt -o dump.log -v4 --log-format json --progress json', 'the log as JSON lines, and the progress as JSON lines on stderr'],
    ['tsdump dump -t 1234 -D d2 --prev-images-dir ../d1 --track-mem', 'after a pre-dump into d1: only the pages written since'],
    ['tsdump dump -t 1234 -D d --page-server --address 10.0.0.2 --port 27', 'send the pages to a page server'],
    ['tsdump dump -t 1234 -D d --page-server --address 10.0.0.2 --port 27 --tls', 'the same over TLS, the certificates in /etc/pki or named by --tls-*'],
  ],
  'pre-dump': [
    ['tsdump pre-dump -t 1234 -D d1', "copy memory while the tree runs on, tracking later writes"],
    ['tsdump pre-dump -t 1234 -D d1 --pre-dump-mode read', 'freeze only for the scan; read the pages after the release'],
  ],
  check: [
    ['tsdump check', 'the features a dump needs, and what this user may do'],
    ['tsdump check --all', 'every feature, each with what it means for a dump'],
    ['tsdump check --feature uffd_wp_async', 'one feature; the exit status is the answer'],
  ],
  show: [
    ['tsdump show /tmp/ckpt', 'each process, its memory and fds, the timings; exit 1 if not a finished dump'],
    ['tsdump show /tmp/ckpt --mems', 'every mapping, as crit x /tmp/ckpt mems prints it (also --ps, --fds, --rss)'],
    ['tsdump show /tmp/ckpt --fds --json', 'the open files and the peers at their other ends, as JSON'],
    ['tsdump show /tmp/ckpt/core-1234.img --pretty', 'one image, as crit decode --pretty prints it'],
  ],
  'page-server': [
    ['tsdump page-server -D /srv/ckpt --port 27', 'receive the pages of one dump, then exit'],
    ['tsdump page-server -D /srv/d2 --port 27 --prev-images-dir ../d1', 'receive an incremental dump on top of d1'],
    ['tsdump page-server -D /srv/ckpt --address 10.0.0.2 --port 27 --tls', 'take only dumps whose certificate a trusted CA signed, on one address'],
  ],
  'stop-tracking': [['tsdump stop-tracking -t 1234 -D d1', 'end the memory tracking the pre-dump into d1 left in the tree, without dumping']],
  report: [
    ['tsdump report /tmp/ckpt -o ckpt.html', 'the dump as one HTML page: tree, address spaces, files, timeline'],
    ['tsdump report /tmp/ckpt > ckpt.html', 'the same, on stdout'],
  ],
};

/** A command's examples, each line over what it does (yargs' two columns would fold long lines). */
export function examplesText(name: CommandName): string {
  return ['Examples:', ...EXAMPLES[name].map(([line, what]) => `  ${line}\n      ${what}`)].join('\n');
}

/** The epilogue of every command's --help: criu's options that tsdump refuses by name. */
export function refusedOptionsText(): string {
  return `CRIU options tsdump refuses (not implemented yet; refused rather than ignored): ${UNSUPPORTED_OPTIONS.map((o) => `--${o.name}`).join(', ')}`;
}

export interface HelpOption {
  /** "-t, --tree N" */
  readonly flags: string;
  readonly desc: string;
}

export interface HelpCommand {
  readonly name: CommandName;
  /** "tsdump show <path> [options]" */
  readonly usage: string;
  readonly description: string;
  /** The command's own options (COMMON ones are in HelpModel.common). */
  readonly options: readonly HelpOption[];
  readonly examples: readonly (readonly [string, string])[];
}

/** Everything --help says, as data: the man page (src/cli/man.ts) is written from it. */
export interface HelpModel {
  readonly commands: readonly HelpCommand[];
  /** Options of every criu command (all but report), and -v. */
  readonly common: readonly HelpOption[];
  /** criu's options that tsdump refuses by name. */
  readonly refused: readonly string[];
}

function helpOption(d: OptDef): HelpOption {
  const value = d.type === 'number' ? ' N' : d.type === 'string' || d.type === 'array' ? ' ARG' : '';
  return { flags: `${d.short ? `-${d.short}, ` : ''}--${d.name}${value}`, desc: d.desc };
}

export function helpModel(): HelpModel {
  const commonNames = new Set(COMMON.map((o) => o.name));
  return {
    commands: COMMANDS.map((name) => ({
      name,
      usage: `tsdump ${name}${name === 'show' ? ' <path>' : name === 'report' ? ' <dir>' : ''} [options]`,
      description: DESCRIPTIONS[name],
      options: OPTIONS_BY_COMMAND[name].filter((o) => !commonNames.has(o.name) || name === 'report').map(helpOption),
      examples: EXAMPLES[name],
    })),
    common: [
      ...COMMON.map((o) => helpOption(o.name === 'work-dir' ? { ...o, desc: 'directory for the log and stats (default: the images dir; for check and show, the current directory)' } : o)),
      helpOption(VERBOSITY),
    ],
    refused: UNSUPPORTED_OPTIONS.map((o) => `--${o.name}`),
  };
}

export interface OutputOptions {
  /** One JSON document on stdout instead of text. */
  json: boolean;
  /** Configuration files that were read, in order. */
  configFiles: string[];
}

export type Invocation =
  | ({ command: 'dump' | 'pre-dump'; options: DumpOptions; progress: ProgressMode } & OutputOptions)
  | ({
      command: 'check';
      all: boolean;
      feature?: string;
      refresh: boolean;
      logFile?: string;
      workDir?: string;
      verbosity: number;
    } & OutputOptions)
  | ({ command: 'show'; path: string; pretty: boolean; view?: 'ps' | 'fds' | 'mems' | 'rss' } & OutputOptions)
  | ({
      command: 'page-server';
      imagesDir: string;
      prevImagesDir?: string;
      address?: string;
      port: number;
      tls?: PageServerTls;
      idleTimeout?: number;
      daemon: boolean;
      pidfile?: string;
      statusFd?: number;
      logFile?: string;
      workDir?: string;
      verbosity: number;
    } & OutputOptions)
  | ({ command: 'stop-tracking'; pid: number; imagesDir: string; logFile?: string; workDir?: string; verbosity: number } & OutputOptions)
  | ({ command: 'report'; dir: string; output?: string } & OutputOptions)
  /** A shell asking what may come next (the completion scripts' --get-yargs-completions WORDS). */
  | { command: 'complete'; words: string[] }
  | { command: 'help'; text: string };

const VALUE_TYPES: ReadonlySet<OptType> = new Set(['string', 'number', 'array']);

/** Long and short names of every option that takes a value (so its value is not a command). */
function valueOptions(): Set<string> {
  const all = [...Object.values(OPTIONS_BY_COMMAND).flat(), ...UNSUPPORTED_OPTIONS];
  const s = new Set<string>();
  for (const o of all) {
    if (!VALUE_TYPES.has(o.type)) continue;
    s.add(`--${o.name}`);
    if (o.short) s.add(`-${o.short}`);
  }
  return s;
}

/** Finds the command word, wherever getopt-style permutation put it. */
function findCommand(argv: readonly string[]): { index: number; name?: CommandName } {
  const takesValue = valueOptions();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') return { index: -1 };
    if (a.startsWith('-')) {
      if (takesValue.has(a)) i++;
      continue;
    }
    return (COMMANDS as readonly string[]).includes(a)
      ? { index: i, name: a as CommandName }
      : { index: i };
  }
  return { index: -1 };
}

/**
 * Takes CRIU's verbosity forms out of argv and folds them into one level, in order:
 * -v (one more), -vN and --verbosity=N (exactly N), -vv..v (one more per v beyond the first,
 * plus one, as CRIU counts them).
 */
export function extractVerbosity(argv: readonly string[]): { argv: string[]; verbosity: number } {
  let level = DEFAULT_VERBOSITY;
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    let m: RegExpExecArray | null;
    if (a === '--') {
      rest.push(...argv.slice(i));
      break;
    } else if (a === '-v' || a === '--verbosity') {
      const next = argv[i + 1];
      if (a === '--verbosity' && next !== undefined && /^\d+$/.test(next)) {
        level = Number(next);
        i++;
      } else level += 1;
    } else if ((m = /^-v(\d+)$/.exec(a)) || (m = /^--verbosity=(\d+)$/.exec(a))) {
      level = Number(m[1]);
    } else if ((m = /^-v(v+)$/.exec(a))) {
      level += m[1]!.length + 1;
    } else rest.push(a);
  }
  return { argv: rest, verbosity: Math.min(level, 4) };
}

/** CRIU's size syntax: a number with an optional K, M or G. */
export function parseSize(text: string, option: string): number {
  const m = /^(\d+)\s*([KMG]?)$/i.exec(text.trim());
  if (!m) throw new TsdumpError('USAGE', `option --${option}: ${JSON.stringify(text)} is not a size (N, NK, NM, NG)`);
  const unit = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
  return Number(m[1]) * unit;
}

function defineOptions(y: Argv, defs: readonly OptDef[], hidden = false): Argv {
  for (const d of defs) {
    const type = d.type === 'array' ? 'string' : d.type;
    y = y.option(d.name, {
      type,
      ...(d.type === 'array' ? { array: true } : {}),
      // a hidden option's alias would still be offered by shell completion: define it apart
      ...(d.short && !hidden ? { alias: d.short } : {}),
      describe: d.desc,
      hidden,
    });
    if (d.short && hidden) y = y.option(d.short, { type, hidden });
  }
  return y;
}

/** How both parsers read argv (yargs-parser's configuration, which yargs passes on). */
const PARSER_CONFIGURATION = { 'camel-case-expansion': false, 'strip-aliased': true } as const;

/** CRIU's -v, in every command; extractVerbosity() reads its forms before the parse. */
const VERBOSITY: OptDef = { name: 'verbosity', short: 'v', type: 'number', desc: 'log level 0..4 (-v0..-v4, -vvvv); default 2' };

/** A command's options, the refused ones hidden, and CRIU's -v. */
function commandOptions(y: Argv, name: CommandName): Argv {
  const withOpts = defineOptions(y, [...OPTIONS_BY_COMMAND[name], VERBOSITY]);
  return defineOptions(withOpts, UNSUPPORTED_OPTIONS, true);
}

export type Shell = 'bash' | 'zsh';

/**
 * yargs decides between its bash and zsh forms (script, and candidates with or without their
 * descriptions) from $SHELL when the parser is built; build it with the shell we mean.
 */
async function forShell<T>(shell: Shell, build: () => Promise<T>): Promise<T> {
  const saved = { SHELL: process.env.SHELL, ZSH_NAME: process.env.ZSH_NAME };
  process.env.SHELL = `/bin/${shell}`;
  delete process.env.ZSH_NAME;
  try {
    return await build();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** Runs fn, returning what it printed with console.log (where yargs prints completions). */
async function printedBy(fn: () => unknown): Promise<string[]> {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...args: unknown[]) => void lines.push(args.map(String).join(' '));
  try {
    await fn();
  } finally {
    console.log = log;
  }
  return lines;
}

/** `tsdump completion [bash|zsh]`: yargs' completion script for tsdump. */
export async function completionScript(shell: Shell): Promise<string> {
  const { default: yargs } = await import('yargs');
  const y = await forShell(shell, async () => yargs().scriptName('tsdump'));
  return (await printedBy(() => y.showCompletionScript())).join('\n') + '\n';
}

/**
 * The candidates for the word being completed, as yargs finds them in tsdump's commands and
 * options (hidden, i.e. refused, options are never offered). WORDS start with "tsdump". The
 * zsh script passes COMP_LINE in the environment; candidates then carry their descriptions.
 */
export async function completions(words: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  const parser = await forShell(env.COMP_LINE !== undefined ? 'zsh' : 'bash', helpParser);
  return printedBy(() => parser.parseAsync(['--get-yargs-completions', ...words]));
}

/**
 * Every command, for --help, `tsdump COMMAND --help` and shell completion. yargs is loaded here
 * only: its help renderer makes it a good part of the CLI's start-up, and running a command
 * needs its parser alone (parseOptions()).
 */
async function helpParser(): Promise<Argv> {
  const { default: yargs } = await import('yargs');
  let y = yargs()
    .scriptName('tsdump')
    .strict()
    .exitProcess(false)
    .detectLocale(false)
    .parserConfiguration(PARSER_CONFIGURATION)
    .usage('$0 <command> [options]\n\nCheckpoint live Linux process trees into CRIU-format images.')
    .help()
    .alias('help', 'h')
    .version(false)
    .option('version', { alias: 'V', type: 'boolean', describe: 'print the version' })
    .epilogue('tsdump COMMAND --help shows a command\'s options and examples; man tsdump shows them all.')
    .wrap(100);
  for (const name of COMMANDS) {
    const cmd = name === 'show' ? 'show <path>' : name === 'report' ? 'report <dir>' : name;
    y = y.command(cmd, DESCRIPTIONS[name], (b) => {
      const withOpts = commandOptions(b, name).epilogue(`${examplesText(name)}\n\n${refusedOptionsText()}`);
      if (name === 'report') return withOpts.positional('dir', { type: 'string', describe: 'an images directory' });
      return name === 'show'
        ? withOpts.positional('path', { type: 'string', describe: 'an image file or an images directory' })
        : withOpts;
    });
  }
  // answered before yargs parses (parseCommandLine); declared for --help and for completion
  return y.command('completion [shell]', 'print the shell completion script: tsdump completion bash >> ~/.bashrc', (b) =>
    b.positional('shell', { type: 'string', choices: ['bash', 'zsh'], describe: 'default: from $SHELL' }),
  );
}

type Parsed = Record<string, unknown> & { _: (string | number)[] };

/** yargs keeps every repetition of an option; like getopt, the last one counts. */
function last<T>(v: unknown): T | undefined {
  return (Array.isArray(v) ? v[v.length - 1] : v) as T | undefined;
}
function str(p: Parsed, k: string): string | undefined {
  const v = last<string | number>(p[k]);
  return v === undefined ? undefined : String(v);
}
function num(p: Parsed, k: string): number | undefined {
  const v = last<number>(p[k]);
  if (v === undefined) return undefined;
  if (!Number.isFinite(v)) throw new TsdumpError('USAGE', `option --${k} needs a number`);
  return v;
}
function bool(p: Parsed, k: string): boolean | undefined {
  return last<boolean>(p[k]);
}
function strArray(p: Parsed, k: string): string[] | undefined {
  const v = p[k];
  if (v === undefined) return undefined;
  return (Array.isArray(v) ? v : [v]).map(String);
}

/** The later of two opposite flags wins, as with getopt writing one variable. */
function lastGiven(argv: readonly string[], a: readonly string[], b: readonly string[]): 'a' | 'b' | undefined {
  let winner: 'a' | 'b' | undefined;
  for (const t of argv) {
    if (a.includes(t)) winner = 'a';
    else if (b.includes(t)) winner = 'b';
  }
  return winner;
}

function refuseUnsupported(p: Parsed, argv: readonly string[]): void {
  for (const o of UNSUPPORTED_OPTIONS) {
    if (p[o.name] !== undefined || (o.short !== undefined && p[o.short] !== undefined)) {
      throw new TsdumpError('UNSUPPORTED', `option --${o.name} is not supported by tsdump yet`);
    }
  }
  const withIds = argv.find((a) => /^--ext-unix-sk=/.test(a) || /^-x\S+$/.test(a));
  if (withIds) throw new TsdumpError('UNSUPPORTED', `option ${withIds}: --ext-unix-sk with socket ids is not supported by tsdump yet`);
}

/**
 * The words of the configuration files that apply to `command`. Config files serve every command
 * (as CRIU's do): an option of another command, or one this command's flow does not act on, is
 * left out, so `show` does not care about dump options; an option tsdump does not support yet is
 * refused by a command that dumps, and an unknown one by any, naming the file and line.
 */
function configWords(command: CommandName, lines: readonly ConfigLine[]): string[] {
  const own = new Set(['verbosity', ...OPTIONS_BY_COMMAND[command].map((o) => o.name)]);
  const known = new Set(Object.values(OPTIONS_BY_COMMAND).flatMap((defs) => defs.map((o) => o.name)));
  const unsupported = new Set(UNSUPPORTED_OPTIONS.map((o) => o.name));
  const dumps = command === 'dump' || command === 'pre-dump';
  const out: string[] = [];
  for (const l of lines) {
    const word = l.words[0]!.slice(2).split('=')[0]!;
    const name = !known.has(word) && !unsupported.has(word) && word.startsWith('no-') ? word.slice(3) : word;
    const where = `${l.file}:${l.line}`;
    if (unsupported.has(name)) {
      if (dumps) throw new TsdumpError('UNSUPPORTED', `${where}: option --${name} is not supported by tsdump yet`);
      continue;
    }
    if (!own.has(name)) {
      if (!known.has(name)) throw new TsdumpError('USAGE', `${where}: unknown option --${word}`);
      continue;
    }
    const field = Object.values(DUMP_OPTIONS).find((f) => f.flag === `--${name}`);
    if (dumps && field && !field.acts.includes(command as DumpCommand)) continue;
    out.push(...l.words);
  }
  return out;
}

/** An option that takes a value given none (`-D` last, or followed by another option), as getopt's "option requires an argument". */
function refuseEmptyValues(p: Parsed, defs: readonly OptDef[]): void {
  for (const d of defs) {
    if ((d.type !== 'string' && d.type !== 'array') || d.bare) continue;
    const v = p[d.name];
    if (v === '' || (Array.isArray(v) && v.includes(''))) {
      throw new TsdumpError('USAGE', `option ${d.short ? `-${d.short}/` : ''}--${d.name} requires an argument`);
    }
  }
}

/** yargs' strict-mode complaint, with each name spelled as the user wrote it. */
function unknownOptions(names: readonly string[], tokens: readonly string[]): string {
  // yargs-parser reads --no-foo as foo=false; name the option as the user wrote it
  const spelled = (n: string): string =>
    n.length === 1 ? `-${n}` : tokens.some((a) => a === `--no-${n}` || a.startsWith(`--no-${n}=`)) ? `--no-${n}` : `--${n}`;
  return `unknown option${names.length > 1 ? 's' : ''} ${names.map(spelled).join(', ')}`;
}

/**
 * One command's options, read by yargs' own parser (yargs-parser) with yargs' strict check for
 * unknown options, without loading yargs.
 */
async function parseOptions(name: CommandName, tokens: readonly string[]): Promise<Parsed> {
  const { default: parser } = await import('yargs-parser');
  const defs = [...OPTIONS_BY_COMMAND[name], VERBOSITY, ...UNSUPPORTED_OPTIONS];
  const byType: Record<'boolean' | 'string' | 'number' | 'array', string[]> = { boolean: [], string: [], number: [], array: [] };
  const alias: Record<string, string> = {};
  const known = new Set(['_', '--']);
  for (const d of defs) {
    byType[d.type].push(d.name);
    if (d.type === 'array') byType.string.push(d.name);
    known.add(d.name);
    if (d.short) {
      alias[d.name] = d.short;
      known.add(d.short);
    }
  }
  const r = parser.detailed([...tokens], {
    ...byType,
    alias,
    configuration: { ...PARSER_CONFIGURATION, 'parse-positional-numbers': false, 'populate--': true },
  });
  if (r.error) throw new TsdumpError('USAGE', r.error.message);
  const unknown = Object.keys(r.argv).filter((k) => !known.has(k));
  if (unknown.length > 0) throw new TsdumpError('USAGE', unknownOptions(unknown, tokens));
  return r.argv as Parsed;
}

/**
 * The help texts, rendered by yargs when the CLI is bundled (scripts/build-cli.mjs defines this
 * constant), keyed by command ('' for tsdump --help): yargs' help renderer is most of --help's
 * start-up. Unbundled (the library, the tests), yargs renders them on demand, the same way.
 */
declare const TSDUMP_HELP_TEXTS: Readonly<Record<string, string>> | undefined;

/** What `tsdump --help` (no command) or `tsdump COMMAND ... --help` prints; other words do not change it. */
export async function helpText(name: CommandName | undefined): Promise<string> {
  const prebuilt = typeof TSDUMP_HELP_TEXTS === 'undefined' ? undefined : TSDUMP_HELP_TEXTS[name ?? ''];
  if (prebuilt !== undefined) return prebuilt;
  const parser = await helpParser();
  if (name === undefined) return (await parser.getHelp()) + '\n';
  return new Promise((resolve, reject) => {
    parser.parse([name, '--help'], {}, (err, _args, output) => {
      if (err) reject(new TsdumpError('USAGE', err.message));
      else resolve(output + '\n');
    });
  });
}

export interface ParseContext extends ConfigSources {
  /** Version printed by --version. */
  version?: string;
}

/** Turns a command line (without "node cli.js") into what to run. */
export async function parseCommandLine(argv: readonly string[], ctx: ParseContext = {}): Promise<Invocation> {
  const helpRequested = argv.some((a) => a === '--help' || a === '-h');
  if (argv.includes('--version') || argv.includes('-V')) {
    return { command: 'help', text: `tsdump ${ctx.version ?? 'unknown'}\n` };
  }
  if (argv[0] === '--get-yargs-completions') return { command: 'complete', words: argv.slice(1) };
  const found = findCommand(argv);
  if (found.index >= 0 && argv[found.index] === 'completion') {
    const rest = argv.filter((a, i) => i !== found.index && !a.startsWith('-'));
    const shell = rest[0] ?? (/zsh$/.test((ctx.env ?? process.env).SHELL ?? '') ? 'zsh' : 'bash');
    if (rest.length > 1 || (shell !== 'bash' && shell !== 'zsh')) throw new TsdumpError('USAGE', `completion: name one shell, bash or zsh (not ${rest.join(' ')})`);
    if (helpRequested) return { command: 'help', text: 'tsdump completion [bash|zsh]\n\nprint a completion script: tsdump completion bash >> ~/.bashrc, tsdump completion zsh > "${fpath[1]}/_tsdump"\n' };
    return { command: 'help', text: await completionScript(shell) };
  }
  if (!found.name) {
    if (helpRequested) return { command: 'help', text: await helpText(undefined) };
    if (argv.length === 0) throw new TsdumpError('USAGE', `name a command: ${COMMANDS.join(', ')} (see tsdump --help)`);
    const what = found.index >= 0 ? `unknown command ${argv[found.index]}` : 'no command given';
    throw new TsdumpError('USAGE', `${what}; commands: ${COMMANDS.join(', ')}`);
  }
  const command = found.name;
  if (helpRequested) return { command: 'help', text: await helpText(command) };
  // Config files go first so that the command line, read later, wins.
  const config = command === 'report' ? { files: [], lines: [] } : loadConfig(argv, ctx);
  const rest = argv.filter((_, i) => i !== found.index);
  const { argv: tokens, verbosity } = extractVerbosity([...configWords(command, config.lines), ...rest]);
  const p = await parseOptions(command, tokens);
  refuseUnsupported(p, tokens);
  refuseEmptyValues(p, OPTIONS_BY_COMMAND[command]);
  // show takes one path, report one directory; the others no operand at all
  const operands = p._.map(String);
  const wanted = command === 'show' || command === 'report' ? 1 : 0;
  if (operands.length < wanted) throw new TsdumpError('USAGE', command === 'show' ? 'show needs a FILE or DIR' : 'report needs an images DIR');
  if (operands.length > wanted) throw new TsdumpError('USAGE', `unexpected argument ${operands[wanted]}`);
  const out: OutputOptions = { json: bool(p, 'json') ?? false, configFiles: config.files };

  switch (command) {
    case 'dump':
    case 'pre-dump':
      return { command, options: toDumpOptions(command, p, tokens, verbosity), progress: progressMode(p), ...out };
    case 'check': {
      const feature = str(p, 'feature');
      return {
        command,
        all: Boolean(bool(p, 'all') || bool(p, 'extra') || bool(p, 'experimental')),
        ...(feature !== undefined ? { feature } : {}),
        refresh: bool(p, 'refresh') ?? false,
        ...optional('logFile', str(p, 'log-file')),
        ...optional('workDir', str(p, 'work-dir')),
        verbosity,
        ...out,
      };
    }
    case 'show': {
      const views = (['ps', 'fds', 'mems', 'rss'] as const).filter((v) => bool(p, v) || (v === 'ps' && bool(p, 'tree')));
      if (views.length > 1) throw new TsdumpError('USAGE', `show: choose one of --ps, --fds, --mems, --rss`);
      const view = views[0];
      return {
        command,
        path: operands[0]!,
        pretty: bool(p, 'pretty') ?? false,
        ...(view ? { view } : {}),
        ...out,
      };
    }
    case 'stop-tracking': {
      const pid = num(p, 'tree');
      if (pid === undefined || !Number.isInteger(pid) || pid <= 0) throw new TsdumpError('USAGE', 'stop-tracking needs -t/--tree PID');
      return {
        command,
        pid,
        imagesDir: str(p, 'images-dir') ?? '.',
        ...optional('logFile', str(p, 'log-file')),
        ...optional('workDir', str(p, 'work-dir')),
        verbosity,
        ...out,
      };
    }
    case 'report':
      return { command, dir: operands[0]!, ...optional('output', str(p, 'output')), ...out };
    case 'page-server': {
      const port = num(p, 'port');
      if (port === undefined) throw new TsdumpError('USAGE', 'page-server needs --port');
      const idle = num(p, 'idle-timeout');
      if (idle !== undefined && !(idle >= 0)) throw new TsdumpError('USAGE', `option --idle-timeout: ${idle} is not a number of seconds`);
      return {
        command,
        imagesDir: str(p, 'images-dir') ?? '.',
        ...optional('prevImagesDir', str(p, 'prev-images-dir')),
        ...optional('address', str(p, 'address')),
        port,
        ...optional('tls', tlsOptions(p)),
        ...optional('idleTimeout', idle),
        daemon: bool(p, 'daemon') ?? false,
        ...optional('pidfile', str(p, 'pidfile')),
        ...optional('statusFd', num(p, 'status-fd')),
        ...optional('logFile', str(p, 'log-file')),
        ...optional('workDir', str(p, 'work-dir')),
        verbosity,
        ...out,
      };
    }
  }
}

/** --tls and its --tls-* options (which make no sense without it). */
function tlsOptions(p: Parsed): PageServerTls | undefined {
  const paths = { cacert: str(p, 'tls-cacert'), cacrl: str(p, 'tls-cacrl'), cert: str(p, 'tls-cert'), key: str(p, 'tls-key') };
  const noCnVerify = bool(p, 'tls-no-cn-verify');
  if (!bool(p, 'tls')) {
    const given = Object.entries(paths).find(([, v]) => v !== undefined)?.[0];
    if (given !== undefined || noCnVerify) throw new TsdumpError('USAGE', `--tls-${given ?? 'no-cn-verify'} only makes sense with --tls`);
    return undefined;
  }
  return {
    ...optional('cacert', paths.cacert),
    ...optional('cacrl', paths.cacrl),
    ...optional('cert', paths.cert),
    ...optional('key', paths.key),
    ...optional('noCnVerify', noCnVerify),
  };
}

/** --snapshot (taken, with a fallback) or --snapshot=strict. */
function snapshotMode(v: string | undefined): DumpOptions['snapshot'] {
  if (v === undefined) return undefined;
  if (v === '' || v === 'true') return true;
  if (v === 'strict') return 'strict';
  throw new TsdumpError('USAGE', `option --snapshot: ${v} is not "strict" (--snapshot or --snapshot=strict)`);
}

function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}

function progressMode(p: Parsed): ProgressMode {
  const mode = str(p, 'progress') ?? 'auto';
  if (mode !== 'auto' && mode !== 'none' && mode !== 'json') throw new TsdumpError('USAGE', `option --progress: ${mode} is none of auto, none, json`);
  return mode;
}

function toDumpOptions(command: 'dump' | 'pre-dump', p: Parsed, tokens: readonly string[], verbosity: number): DumpOptions {
  const pid = num(p, 'tree');
  if (pid === undefined) throw new TsdumpError('USAGE', `${command} needs -t/--tree PID`);
  if (!Number.isInteger(pid) || pid <= 0) throw new TsdumpError('USAGE', `option --tree: ${pid} is not a PID`);

  // grouped short flags (-Rj) escape the token scan; the parsed values still say which was given
  const final =
    lastGiven(tokens, ['-R', '--leave-running'], ['-s', '--leave-stopped']) ??
    (bool(p, 'leave-running') ? 'a' : bool(p, 'leave-stopped') ? 'b' : undefined);
  const usePageServer = bool(p, 'page-server') ?? false;
  const address = str(p, 'address');
  const port = num(p, 'port');
  if (usePageServer && (address === undefined || port === undefined)) {
    throw new TsdumpError('USAGE', '--page-server needs --address and --port');
  }
  if (!usePageServer && (address !== undefined || port !== undefined)) {
    throw new TsdumpError('USAGE', '--address/--port only make sense with --page-server');
  }
  const tls = tlsOptions(p);
  if (tls && !usePageServer) throw new TsdumpError('USAGE', '--tls only makes sense with --page-server');
  const ghost = str(p, 'ghost-limit');
  const timeout = num(p, 'timeout');
  if (timeout !== undefined && !(timeout > 0)) throw new TsdumpError('USAGE', `option --timeout: ${timeout} is not a positive number of seconds`);
  const mode = str(p, 'pre-dump-mode');
  if (mode !== undefined && mode !== 'splice' && mode !== 'read') {
    throw new TsdumpError('USAGE', `option --pre-dump-mode: ${mode} is neither splice nor read`);
  }

  const logFormat = str(p, 'log-format');
  if (logFormat !== undefined && logFormat !== 'text' && logFormat !== 'json') {
    throw new TsdumpError('USAGE', `option --log-format: ${logFormat} is neither text nor json`);
  }

  const o: DumpOptions = {
    pid,
    imagesDir: str(p, 'images-dir') ?? '.',
    ...optional('replaceImages', bool(p, 'replace-images')),
    verbosity,
    ...optional('workDir', str(p, 'work-dir')),
    ...optional('logFile', str(p, 'log-file')),
    ...optional('logFormat', logFormat as 'text' | 'json' | undefined),
    ...(final === 'a' ? { leaveRunning: true } : {}),
    ...(final === 'b' ? { leaveStopped: true } : {}),
    ...optional('shellJob', bool(p, 'shell-job')),
    ...optional('extUnixSk', bool(p, 'ext-unix-sk')),
    ...optional('tcpEstablished', bool(p, 'tcp-established')),
    ...optional('tcpClose', bool(p, 'tcp-close')),
    ...optional('fileLocks', bool(p, 'file-locks')),
    ...optional('freezeCgroup', str(p, 'freeze-cgroup')),
    ...optional('timeout', timeout),
    ...optional('actionScripts', strArray(p, 'action-script')),
    ...optional('libDir', str(p, 'libdir')),
    ...optional('ghostLimit', ghost === undefined ? undefined : parseSize(ghost, 'ghost-limit')),
    ...optional('dropNotifyEvents', bool(p, 'drop-notify-events')),
    ...optional('linkRemap', bool(p, 'link-remap')),
    ...optional('prevImagesDir', str(p, 'prev-images-dir')),
    ...optional('trackMem', bool(p, 'track-mem')),
    ...optional('snapshot', snapshotMode(str(p, 'snapshot'))),
    ...(usePageServer ? { pageServer: { address: address!, port: port!, ...optional('tls', tls) } } : {}),
    ...optional('displayStats', bool(p, 'display-stats')),
    ...optional('pidfile', str(p, 'pidfile')),
    ...optional('statusFd', num(p, 'status-fd')),
    ...optional('preDumpMode', mode as 'splice' | 'read' | undefined),
  };
  return o;
}
