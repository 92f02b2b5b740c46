// One module per kind of open file (regular file, pipe, eventfd, socket, ...). The file table
// (../file-table.ts) finds the kind of each fd, gives every open file description one id, and
// writes the file_entry the kind builds; kinds write their extra images (pipe data, socket
// queues, ...) through the context.
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { file_entrySchema } from '../../images/gen/fdinfo_pb.js';
import type { ImageWriter } from '../../images/index.js';
import type { FdInfoEntry } from '../../../native/index.js';
import type { SocketDumpSettings, SocketTables } from './socket-diag.js';
import type { CttyUser, PtyEnd } from './pty.js';

export type FileEntryInit = MessageInitShape<typeof file_entrySchema>;

/**
 * What the kinds keep for the whole dump. It lives in the dump's file table, never in module
 * globals: two dumps may run in one process at once.
 */
export interface FdDumpState {
  /** From DumpOptions and the seized tree (socket-diag.ts). */
  readonly sockets: SocketDumpSettings;
  /** The sock_diag tables, read on the dump's first socket (socket-diag.ts). */
  socketTables?: Promise<SocketTables>;
  /** The ghost image id of every deleted file stored so far, by (dev, ino) (ghost.ts). */
  readonly ghostIds: Map<string, number>;
  /** The pty ends met so far, in dump order (pty.ts). */
  readonly ptyEnds: PtyEnd[];
  /** The fds on /dev/tty met so far (pty.ts). */
  readonly ptyCttys: CttyUser[];
  /** The next id for an external unix peer's entry (unix-socket.ts). */
  nextExternId: number;
}

export interface FdKindContext {
  readonly pid: number;
  readonly fd: FdInfoEntry;
  /** The id this open file description gets in files.img. */
  readonly id: number;
  /** open(2) flags of the description, O_CLOEXEC (a per-fd flag) removed. */
  readonly fileFlags: number;
  /** The file owner (F_SETOWN) as CRIU's fown_entry wants it. */
  readonly fown: { uid: number; euid: number; signum: number; pidType: number; pid: number };
  /** A dump-wide extra image (pipes-data.img, sk-queues.img, ...), created on first use. */
  image(fileName: string): Promise<ImageWriter>;
  /** True the first time `key` is asked about in this dump (for per-object data, e.g. a pipe's bytes). */
  firstTime(key: string): boolean;
  /** Appends one more file_entry to files.img (a FIFO's path entry shares the FIFO's id). */
  fileEntry(entry: FileEntryInit): Promise<void>;
  /** Largest deleted-but-open file kept as a ghost file (--ghost-limit), bytes. */
  readonly ghostLimit: number;
  /** --shell-job: the tree's inherited terminal may be dumped (restore re-attaches its own). */
  readonly shellJob: boolean;
  /** The id of the net namespace the dumped sockets live in (socket entries' ns_id), if known. */
  readonly netNsId: (() => number) | undefined;
  /** --drop-notify-events: dump inotify/fanotify groups without their unread events. */
  readonly dropNotifyEvents: boolean;
  /** A warning for the dump's log. */
  warn(text: string): void;
  /**
   * Names this description's entry `key` for `writeAfter`: entries waiting on it are written
   * right after it.
   */
  announce(key: string): void;
  /**
   * Holds this description's entry back until the entry announced as `key` is written: always
   * when `strict` (restore resolves a unix socket's peer only among the sockets listed before
   * it), else only if that entry has not been made yet (CRIU's order for a connected pair).
   */
  writeAfter(key: string, strict: boolean): void;
  /**
   * The file is in flight (an SCM_RIGHTS descriptor of a socket queue, now an fd of tsdump's own:
   * `pid` is tsdump's): kinds that need the task it belongs to refuse it.
   */
  readonly inFlight: boolean;
  /** Hands tsdump's own `fds` (from a socket queue) to the table, which closes them at the end. */
  adoptInFlight(fds: readonly number[]): void;
  /** The ids of files in flight (adopted `fds`), dumping each description once. */
  inFlightFiles(fds: readonly number[]): Promise<number[]>;
  /**
   * Whether `path` still names the file behind `source` ('ok'), or is gone while the file keeps
   * other links and --link-remap lets remapLinked bring it back ('gone'); refuses otherwise.
   */
  checkPath(path: string, source: string): 'ok' | 'gone';
  /** Points this file entry (`origId`) at a link remap of the file behind `source` (--link-remap). */
  remapLinked(origId: number, source: string, path: string): Promise<void>;
  /** --link-remap was given. */
  readonly linkRemap: boolean;
  /** Registers a file opened by path (for kinds that refer to one) and answers its id. */
  pathFile(path: string, flags: number, st: { mode: number; size?: bigint }): Promise<number>;
  /** This dump's state shared by the kinds. */
  readonly dump: FdDumpState;
}

/**
 * A writeAfter key that is written when the task's fd table is done (FileTable.taskFilesDone):
 * where CRIU puts the entries it had to queue while it dumped the table.
 */
export const AFTER_TASK_FILES = 'task files done';

/** What the dump-wide steps of the kinds (ptys, memfd mappings) use of the dump's file table. */
export interface FileTableAccess {
  readonly state: FdDumpState;
  image(fileName: string): Promise<ImageWriter>;
  objectFile(key: string, entry: (id: number) => FileEntryInit): Promise<number>;
}

export interface FdKind {
  /** Plural, for messages: "eventfds", "unix sockets". */
  readonly name: string;
  matches(fd: FdInfoEntry): boolean;
  /** The file_entry of a new open description; called once per description. */
  entry(c: FdKindContext): Promise<FileEntryInit>;
}

/** The inode behind a `pipe:[N]` / `socket:[N]` link target, if it is one of those. */
export function linkInode(target: string, prefix: string): bigint | undefined {
  const m = new RegExp(`^${prefix}:\\[(\\d+)\\]$`).exec(target);
  return m ? BigInt(m[1]!) : undefined;
}

export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const S_IFIFO = 0o010000;
export const S_IFCHR = 0o020000;
