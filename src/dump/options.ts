// Options of a dump, shared by the CLI (src/cli.ts maps CRIU-style flags onto this) and the
// library (`dump(options)`). Names follow CRIU's long options in camelCase.
import type { Logger } from '../log.js';
import type { PageServerTls } from '../page-server.js';
import { TsdumpError } from '../errors.js';

export interface DumpOptions {
  /** Root PID of the tree to dump (-t/--tree). */
  pid: number;
  /** Directory the images go to (-D/--images-dir); created owner-only if missing. */
  imagesDir: string;
  /**
   * Replace the checkpoint imagesDir holds (--replace-images): the new one is written beside it
   * and swapped in once complete. Without it, a directory holding a checkpoint is refused.
   */
  replaceImages?: boolean;
  /** Directory for logs, stats and the kerndat cache (-W/--work-dir); defaults to imagesDir. */
  workDir?: string;
  /** Leave the tree running after the dump (-R/--leave-running). */
  leaveRunning?: boolean;
  /** Leave the tree stopped after the dump (-s/--leave-stopped). */
  leaveStopped?: boolean;
  /** The tree's session and terminal are inherited from outside (-j/--shell-job). */
  shellJob?: boolean;
  /** Allow unix sockets whose peer is outside the tree (-x/--ext-unix-sk). */
  extUnixSk?: boolean;
  /** Dump established TCP connections through TCP_REPAIR (--tcp-established). */
  tcpEstablished?: boolean;
  /**
   * Dump connected TCP (and MPTCP) sockets without their state, for `criu restore --tcp-close` to
   * bring back closed; neither locked nor read in repair mode (--tcp-close).
   */
  tcpClose?: boolean;
  /** Dump file locks (-l/--file-locks). */
  fileLocks?: boolean;
  /** Freeze this cgroup (v1 freezer or v2 cgroup.freeze) before seizing (--freeze-cgroup). */
  freezeCgroup?: string;
  /** Seconds to wait for the tree to freeze (--timeout). */
  timeout?: number;
  /** Action scripts run at CRIU's points (--action-script, repeatable). */
  actionScripts?: string[];
  /** Plugin directory (-L/--libdir). */
  libDir?: string;
  /** Largest deleted-but-open file kept as a ghost file, bytes (--ghost-limit). */
  ghostLimit?: number;
  /**
   * Dump inotify instances and fanotify groups that have unread events, dropping the events, as
   * CRIU does (its images cannot carry them); a warning says how many (--drop-notify-events).
   * Without it such a group is refused.
   */
  dropNotifyEvents?: boolean;
  /**
   * Files held under a name that is gone while they keep other hard links get a hard link
   * link_remap.ID beside them, which restore links back and removes (--link-remap, as CRIU).
   * Removed again if the dump fails or the tree runs on.
   */
  linkRemap?: boolean;
  /** Parent images of an incremental dump (--prev-images-dir), relative to imagesDir. */
  prevImagesDir?: string;
  /** Track memory changes for later incremental dumps (--track-mem). */
  trackMem?: boolean;
  /**
   * Release the tree before its memory is copied (--snapshot): each process's private memory is
   * held by a copy-on-write snapshot taken while frozen and copied while the tree runs on; needs
   * leaveRunning. Where a process's snapshot cannot be taken its memory is copied while frozen
   * (a warning says why), or with 'strict' the dump fails (--snapshot=strict).
   */
  snapshot?: boolean | 'strict';
  /**
   * Send pages to a page server instead of pages-N.img (--page-server --address --port), with
   * CRIU's TLS if `tls` is set (--tls and --tls-*). The dump connects before it freezes the tree.
   */
  pageServer?: { address: string; port: number; tls?: PageServerTls };
  /** Log file (-o/--log-file), relative to workDir; without it, warnings and errors go to stderr. */
  logFile?: string;
  /** How log lines are written: "text" (CRIU's, the default) or "json", one object per line (--log-format). */
  logFormat?: 'text' | 'json';
  /** CRIU log level 0..4 (-v0..-v4, -vvvv): 0 messages, 1 errors, 2 warnings (default), 3 info, 4 debug. */
  verbosity?: number;
  /** Print the dump statistics (stats-dump) when done (--display-stats). */
  displayStats?: boolean;
  /** Write the PID of a daemonised helper (page server) to this file (--pidfile). */
  pidfile?: string;
  /** Write one '\0' byte to this descriptor when ready, then close it (--status-fd). */
  statusFd?: number;
  /** How pre-dump reads memory: "splice" (default: vmsplice into pipes) or "read" (process_vm_readv) (--pre-dump-mode). */
  preDumpMode?: 'splice' | 'read';
  /** Where the flow writes its log lines (src/log.ts); the CLI opens it from logFile/verbosity. */
  log?: Logger;
  /** Cancels the dump; the tree is released untouched. */
  signal?: AbortSignal;
}

/** The commands that run a dump flow. */
export type DumpCommand = 'dump' | 'pre-dump';

interface OptionFacts {
  /** The CRIU flag that sets it, for messages ("(log)" for what only the library passes). */
  readonly flag: string;
  /** The commands whose flow acts on it; the others refuse it rather than ignore it. */
  readonly acts: readonly DumpCommand[];
  /** How worker mode (own-child.ts) passes it to the worker process. */
  readonly worker: 'copied' | 'translated';
  /** Why the commands not in `acts` refuse it, where a reason helps the user more than "not supported". */
  readonly refusedBecause?: string;
}

const BOTH: readonly DumpCommand[] = ['dump', 'pre-dump'];
const DUMP: readonly DumpCommand[] = ['dump'];

/**
 * Every DumpOptions field, once: its flag, which flows act on it, how a worker gets it (a new
 * field fails to compile until listed). A pre-dump copies memory only: the options about files,
 * sockets, scripts and plugins are not its business.
 */
export const DUMP_OPTIONS: { readonly [K in keyof Required<DumpOptions>]: OptionFacts } = {
  pid: { flag: '--tree', acts: BOTH, worker: 'copied' },
  imagesDir: { flag: '--images-dir', acts: BOTH, worker: 'copied' }, // relative paths: the worker runs in our cwd
  replaceImages: { flag: '--replace-images', acts: BOTH, worker: 'copied' },
  workDir: { flag: '--work-dir', acts: BOTH, worker: 'copied' },
  leaveRunning: { flag: '--leave-running', acts: BOTH, worker: 'copied' }, // a pre-dump always does
  leaveStopped: { flag: '--leave-stopped', acts: DUMP, worker: 'copied' },
  shellJob: { flag: '--shell-job', acts: BOTH, worker: 'copied' }, // nothing for a pre-dump to check
  extUnixSk: { flag: '--ext-unix-sk', acts: DUMP, worker: 'copied' },
  tcpEstablished: { flag: '--tcp-established', acts: DUMP, worker: 'copied' },
  tcpClose: { flag: '--tcp-close', acts: DUMP, worker: 'copied' },
  fileLocks: { flag: '--file-locks', acts: DUMP, worker: 'copied' },
  freezeCgroup: { flag: '--freeze-cgroup', acts: BOTH, worker: 'copied' },
  timeout: { flag: '--timeout', acts: BOTH, worker: 'copied' },
  actionScripts: { flag: '--action-script', acts: DUMP, worker: 'copied' }, // run by the worker, with our environment
  libDir: { flag: '--libdir', acts: DUMP, worker: 'copied' }, // plugins are loaded and called in the worker
  ghostLimit: { flag: '--ghost-limit', acts: DUMP, worker: 'copied' },
  dropNotifyEvents: { flag: '--drop-notify-events', acts: DUMP, worker: 'copied' },
  linkRemap: { flag: '--link-remap', acts: DUMP, worker: 'copied' },
  prevImagesDir: { flag: '--prev-images-dir', acts: BOTH, worker: 'copied' },
  trackMem: { flag: '--track-mem', acts: BOTH, worker: 'copied' },
  snapshot: {
    flag: '--snapshot',
    acts: DUMP,
    worker: 'copied',
    refusedBecause: 'not needed: --pre-dump-mode read already freezes only for the scan and copies the pages after the release, and its tracking makes the next dump rewrite what changed meanwhile',
  },
  pageServer: { flag: '--page-server', acts: BOTH, worker: 'copied' },
  logFile: { flag: '--log-file', acts: BOTH, worker: 'copied' },
  verbosity: { flag: '--verbosity', acts: BOTH, worker: 'copied' },
  logFormat: { flag: '--log-format', acts: BOTH, worker: 'copied' }, // the caller's log writes the lines
  displayStats: { flag: '--display-stats', acts: BOTH, worker: 'copied' },
  pidfile: { flag: '--pidfile', acts: [], worker: 'copied' },
  statusFd: { flag: '--status-fd', acts: [], worker: 'translated' }, // our descriptor, given to the worker under the same number
  preDumpMode: { flag: '--pre-dump-mode', acts: ['pre-dump'], worker: 'copied' },
  log: { flag: '(log)', acts: BOTH, worker: 'translated' }, // a Logger whose lines come back over IPC
  signal: { flag: '(signal)', acts: BOTH, worker: 'translated' }, // an 'abort' message
};

/** The DumpOptions fields `command`'s flow acts on. */
export function optionsActedOnBy(command: DumpCommand): (keyof DumpOptions)[] {
  return (Object.keys(DUMP_OPTIONS) as (keyof DumpOptions)[]).filter((k) => DUMP_OPTIONS[k].acts.includes(command));
}

/** Refuses options `command` would not act on (false booleans are the default, so they pass). */
export function refuseUnactedOptions(command: DumpCommand, o: DumpOptions): void {
  for (const [key, value] of Object.entries(o)) {
    if (value === undefined || value === false) continue;
    if (!(key in DUMP_OPTIONS)) throw new TsdumpError('USAGE', `unknown dump option "${key}"`);
    const facts = DUMP_OPTIONS[key as keyof DumpOptions];
    if (facts.acts.includes(command)) continue;
    const because = facts.refusedBecause ? `: ${facts.refusedBecause}` : '';
    throw new TsdumpError('UNSUPPORTED', `option ${facts.flag} is not supported by tsdump ${command}${facts.acts.length ? '' : ' yet'}${because}`);
  }
}
