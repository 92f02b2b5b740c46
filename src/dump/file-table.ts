// The dump-wide table of open files (files.img). CRIU gives every open file description one id,
// shared by all fds (in any task) that refer to it, and by the mappings, exe link, cwd and root
// that name the same file; fdinfo-N.img then maps each task's fd numbers to those ids. What each
// kind of file records lives in ./fds/.
import { create } from '@bufbuild/protobuf';
import { closeSync, statSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { ImageWriter } from '../images/index.js';
import type { ImagesDir } from '../images/dir.js';
import { file_entrySchema, fdinfo_entrySchema, fd_types, type fdinfo_entry } from '../images/gen/fdinfo_pb.js';
import { remap_file_path_entrySchema, remap_type } from '../images/gen/remap-file-path_pb.js';
import { native } from '../native.js';
import { TsdumpError } from '../errors.js';
import type { FdInfoEntry } from '../../native/index.js';
import { AFTER_TASK_FILES, S_IFMT, S_IFREG, type FdDumpState, type FdKind, type FdKindContext, type FileEntryInit, type FileTableAccess } from './fds/kind.js';
import type { SocketDumpSettings } from './fds/socket-diag.js';
import { FIRST_EXTERN_ID } from './fds/unix-socket.js';
import { FD_KINDS } from './fds/index.js';
import { ghostFileEntry, type GhostContext } from './fds/ghost.js';
import { fdOwner } from './fds/owner.js';
import { buildIdField } from './elf-build-id.js';
import type { Logger } from '../log.js';
import { logSocket } from './log-facts.js';
import type { LinkRemaps } from './link-remap.js';

const O_CLOEXEC = 0o2000000;
const FD_CLOEXEC = 1;

/** CRIU's default --ghost-limit. */
const DEFAULT_GHOST_LIMIT = 1 << 20;

const noOwner = () => ({ uid: 0, euid: 0, signum: 0, pidType: 0, pid: 0 });

/** Asks plugins to take over a file; true if one did. */
export type ExternalFileHandler = (file: { pid: number; fd: number; procPath: string; id: number; path: string }) => Promise<boolean>;

/** What a path-named file entry records: mode, and size for the files restore validates. */
export interface PathFileStat {
  mode: number;
  size?: bigint;
  /**
   * The task's own link to the file (/proc/PID/exe, /proc/PID/map_files/...): the build-id is
   * read there, and the path must still name that file.
   */
  source?: string;
}

/** Where a description's entry goes in files.img (FdKindContext.announce and writeAfter). */
interface EntryOrder {
  announces?: string;
  after?: { key: string; strict: boolean };
}

export interface FileTableOptions {
  /** --ghost-limit (default 1 MiB). */
  ghostLimit?: number;
  /**
   * Asked about files no kind handles (CRIU's dump_ext_file plugin point); when a plugin takes
   * one, the file is recorded as EXT and the plugin keeps its own data.
   */
  external?: ExternalFileHandler;
  shellJob?: boolean;
  /** The id of the net namespace the dumped sockets live in. */
  netNsId?: () => number;
  /** --drop-notify-events: inotify/fanotify groups with unread events are dumped without them. */
  dropNotifyEvents?: boolean;
  /** Where warnings go. */
  log?: Logger;
  /** --link-remap: files whose name is gone but that keep other links get a link remap. */
  linkRemaps?: LinkRemaps;
  /** What the socket kinds need from DumpOptions and the seized tree. */
  sockets?: SocketDumpSettings;
}

interface OpenDescription {
  pid: number;
  fd: number;
  id: number;
  type: fd_types;
}

export class FileTable implements FileTableAccess {
  private nextId = 1;
  private readonly byPath = new Map<string, number>();
  private readonly byObject = new Map<string, number>();
  /** Open descriptions seen so far, by (dev, ino), to find shared ones with kcmp. */
  private readonly descriptions = new Map<string, OpenDescription[]>();
  private readonly extraImages = new Map<string, Promise<ImageWriter>>();
  private readonly seenKeys = new Set<string>();
  /** Keys announced so far, and those whose entries files.img holds (FdKindContext.announce). */
  private readonly announcedKeys = new Set<string>();
  private readonly writtenKeys = new Set<string>();
  /** Descriptors of files in flight, held open here until close(). */
  private readonly ownFds = new Set<number>();
  /** Entries held back until the entry of a key is written, by that key. */
  private readonly held = new Map<string, { entry: FileEntryInit; announces: string | undefined }[]>();

  private constructor(
    private readonly dir: ImagesDir,
    private readonly files: ImageWriter,
    private readonly opts: FileTableOptions,
  ) {
    this.state = { sockets: opts.sockets ?? {}, ghostIds: new Map(), ptyEnds: [], ptyCttys: [], nextExternId: FIRST_EXTERN_ID };
  }

  /** What the fd kinds keep for this dump (kind.ts): never module globals, two dumps may run at once. */
  readonly state: FdDumpState;

  static async create(dir: ImagesDir, opts: FileTableOptions = {}): Promise<FileTable> {
    return new FileTable(dir, await ImageWriter.create(dir, 'files.img'), opts);
  }



  /**
   * The id of a file opened by path (exe, mappings): one per (path, flags) in the dump. A regular
   * file given with its size also gets its ELF build-id, read from `st.source` (a /proc link to
   * the task's own file) or else from `path`.
   */
  async pathFile(path: string, flags: number, st: PathFileStat): Promise<number> {
    const key = `${flags}\0${path}`;
    const known = this.byPath.get(key);
    if (known !== undefined) return known;
    const id = await this.newPathFile(path, flags, st);
    this.byPath.set(key, id);
    return id;
  }

  /**
   * The id of a deleted regular file a task runs or maps (a binary or library replaced on disk),
   * read through `source` — /proc/PID/exe or /proc/PID/map_files/START-END — and kept as a ghost
   * file under the path it had, as CRIU keeps it: one per (file, flags) in the dump, so the
   * executable and its mappings share one entry. `what` names the user for messages.
   */
  async deletedPathFile(source: string, path: string, flags: number, what: string): Promise<number> {
    const st = await stat(source, { bigint: true });
    const key = `${flags}\0ghost:${st.dev}:${st.ino}`;
    const known = this.byPath.get(key);
    if (known !== undefined) return known;
    const id = this.nextId++;
    const entry = await ghostFileEntry(this.ghostContext(), source, path, { id, flags, pos: 0n, fown: noOwner() }, what);
    await this.files.append(file_entrySchema, create(file_entrySchema, entry));
    this.byPath.set(key, id);
    return id;
  }

  /** A file entry of its own for a path (a task's cwd and root each get one, as in CRIU). */
  async newPathFile(path: string, flags: number, st: PathFileStat): Promise<number> {
    const gone = st.source !== undefined && this.checkPath(path, st.source) === 'gone';
    const id = this.nextId++;
    if (gone) await this.remapLinked(id, st.source!, path);
    const reg = { id, flags, pos: 0n, fown: noOwner(), name: path, mode: st.mode };
    // A " (deleted)" name has nothing behind it to read (deleted files a task maps or runs are
    // ghosts, see deletedPathFile).
    const readable = st.source !== undefined || !path.endsWith(' (deleted)');
    const sized =
      (st.mode & S_IFMT) === S_IFREG && st.size !== undefined
        ? { size: st.size, ...(readable ? buildIdField(st.source ?? path, st.size, path) : {}) }
        : {};
    await this.files.append(file_entrySchema, create(file_entrySchema, { type: fd_types.REG, id, reg: { ...reg, ...sized } }));
    return id;
  }

  /**
   * The id of a file entry that stands for an object rather than for an open description (a
   * memfd some task only maps): built by `entry` under a new id the first time `key` is asked
   * for in this dump, the same id afterwards.
   */
  async objectFile(key: string, entry: (id: number) => FileEntryInit): Promise<number> {
    const known = this.byObject.get(key);
    if (known !== undefined) return known;
    const id = this.nextId++;
    this.byObject.set(key, id);
    await this.files.append(file_entrySchema, create(file_entrySchema, entry(id)));
    return id;
  }

  /**
   * Whether `path` still names the file behind `source` (a /proc link of the task's): 'ok', or
   * 'gone' when no file has that name any more and --link-remap may link it back (else refused);
   * refused when the name now belongs to another file (see checkPathNamesSource). Two stats,
   * synchronous: the tree is frozen meanwhile.
   */
  checkPath(path: string, source: string): 'ok' | 'gone' {
    return checkPathNamesSource(path, source, this.opts.linkRemaps !== undefined);
  }

  /**
   * Points file entry `origId` at a link remap of the file behind `source`, once named `path`:
   * a REG entry for the new link (one per file in the dump) and a LINKED remap-fpath entry.
   */
  async remapLinked(origId: number, source: string, path: string): Promise<void> {
    const remaps = this.opts.linkRemaps;
    if (!remaps) throw new TsdumpError('UNSUPPORTED_FD', `${source}: ${path} is gone while the file keeps other links; dump with --link-remap`);
    const st = await stat(source, { bigint: true });
    const key = `linked:${st.dev}:${st.ino}`;
    let remapId = this.byObject.get(key);
    if (remapId === undefined) {
      remapId = this.nextId++;
      this.byObject.set(key, remapId);
      const name = await remaps.create(source, path, remapId);
      // what CRIU writes for the link: its name, nothing about the opener
      await this.files.append(file_entrySchema, create(file_entrySchema, { type: fd_types.REG, id: remapId, reg: { id: remapId, flags: 0, pos: 0n, fown: noOwner(), name } }));
    }
    const remap = await this.image('remap-fpath.img');
    await remap.append(remap_file_path_entrySchema, create(remap_file_path_entrySchema, { origId, remapId, remapType: remap_type.LINKED }));
  }

  /** A dump-wide extra image (pipes-data.img, memfd.img, ...), created on first use. */
  image(fileName: string): Promise<ImageWriter> {
    let w = this.extraImages.get(fileName);
    if (!w) this.extraImages.set(fileName, (w = ImageWriter.create(this.dir, fileName)));
    return w;
  }

  /** Dumps the open file behind `fd` of `pid` (once per open description); its fdinfo entry. */
  async fd(pid: number, fd: FdInfoEntry): Promise<fdinfo_entry> {
    const kind = FD_KINDS.find((k) => k.matches(fd)) ?? this.externalKind(pid, fd);
    if (!kind) throw unsupported(pid, fd);
    const { id, type } = await this.description(pid, fd, kind);
    return create(fdinfo_entrySchema, { id, flags: fd.flags & O_CLOEXEC ? FD_CLOEXEC : 0, type, fd: fd.fd });
  }

  /** Takes `fds` (tsdump's own) to close at close(). */
  adoptInFlight(fds: readonly number[]): void {
    for (const fd of fds) this.ownFds.add(fd);
  }

  /**
   * Files in flight (CRIU's dump_my_file): descriptors a socket queue carries, peeked into this
   * process as `fds`. They stay open until close(), so later kcmp comparisons with the tree's
   * fds still see them; each description gets a file entry (no fdinfo: restore hands the file
   * to the queue's sender) and its id is answered.
   */
  async inFlightFiles(fds: readonly number[], where: string): Promise<number[]> {
    this.adoptInFlight(fds);
    const ids: number[] = [];
    for (const fd of fds) {
      const info = native.inspectFd(process.pid, fd);
      const what = `${where}: a queued message carries ${info.target} (SCM_RIGHTS)`;
      const kind = FD_KINDS.find((k) => k.matches(info));
      if (!kind) throw new TsdumpError('UNSUPPORTED_FD', `${what}; tsdump cannot dump ${describeTarget(info.target)} in flight yet`);
      try {
        ids.push((await this.description(process.pid, info, kind)).id);
      } catch (err) {
        // the kinds name the file as an fd of tsdump's own: say where it really is
        if (err instanceof TsdumpError && !err.message.startsWith(where)) err.message = `${what}: ${err.message}`;
        throw err;
      }
    }
    return ids;
  }

  /** The current task's fds are all dumped: writes the entries held for that (AFTER_TASK_FILES). */
  async taskFilesDone(): Promise<void> {
    const waiting = this.held.get(AFTER_TASK_FILES) ?? [];
    this.held.delete(AFTER_TASK_FILES);
    for (const w of waiting) await this.writeEntry(w.entry, w.announces);
  }

  async close(): Promise<void> {
    // Nothing should be left waiting (every peer a socket names is dumped); if something is,
    // its entry still belongs in the images.
    for (const [key, waiting] of this.held) {
      this.held.delete(key);
      for (const w of waiting) await this.writeEntry(w.entry, w.announces);
    }
    for (const fd of this.ownFds) closeSync(fd);
    this.ownFds.clear();
    await this.files.close();
    for (const w of this.extraImages.values()) await (await w).close();
  }

  /** The id of the open description behind (pid, fd): an earlier one if kcmp says shared. */
  private async description(pid: number, fd: FdInfoEntry, kind: FdKind): Promise<{ id: number; type: fd_types }> {
    const key = `${fd.dev}:${fd.ino}`;
    const seen = this.descriptions.get(key) ?? [];
    for (const d of seen) {
      if (native.kcmp(d.pid, pid, 'file', d.fd, fd.fd)) return d;
    }
    const id = this.nextId++;
    // known before its entry is made: a socket whose queue carries the socket itself finds it
    const description = { pid, fd: fd.fd, id, type: fd_types.UND };
    seen.push(description);
    this.descriptions.set(key, seen);
    const order: EntryOrder = {};
    const entry = await kind.entry(this.kindContext(pid, fd, id, order));
    logSocket(this.opts.log, pid, fd, entry);
    description.type = entry.type ?? fd_types.UND;
    const after = order.after;
    if (order.announces !== undefined) this.announcedKeys.add(order.announces);
    if (after && !this.writtenKeys.has(after.key) && (after.strict || !this.announcedKeys.has(after.key))) {
      const waiting = this.held.get(after.key) ?? [];
      waiting.push({ entry, announces: order.announces });
      this.held.set(after.key, waiting);
    } else {
      await this.writeEntry(entry, order.announces);
    }
    return description;
  }

  /** Appends one entry to files.img, then the entries that were waiting for it. */
  private async writeEntry(entry: FileEntryInit, announces: string | undefined): Promise<void> {
    await this.files.append(file_entrySchema, create(file_entrySchema, entry));
    if (announces === undefined) return;
    this.writtenKeys.add(announces);
    const waiting = this.held.get(announces) ?? [];
    this.held.delete(announces);
    // latest first, the order CRIU's dump writes them in (it stacks them on the peer)
    for (const w of waiting.reverse()) await this.writeEntry(w.entry, w.announces);
  }

  /** A kind for one file a plugin takes over, or undefined if there is no plugin to ask. */
  private externalKind(pid: number, fd: FdInfoEntry): FdKind | undefined {
    const external = this.opts.external;
    if (!external) return undefined;
    return {
      name: 'external files',
      matches: () => true,
      async entry(c) {
        if (!(await external({ pid, fd: fd.fd, procPath: `/proc/${pid}/fd/${fd.fd}`, id: c.id, path: fd.target }))) {
          throw unsupported(pid, fd);
        }
        return { type: fd_types.EXT, id: c.id, ext: { id: c.id, fown: c.fown } };
      },
    };
  }

  private ghostContext(): GhostContext {
    return {
      image: (fileName) => this.image(fileName),
      firstTime: (key) => !this.seenKeys.has(key) && !!this.seenKeys.add(key),
      ghostLimit: this.opts.ghostLimit ?? DEFAULT_GHOST_LIMIT,
      remapLinked: (origId, source, path) => this.remapLinked(origId, source, path),
      linkRemap: this.opts.linkRemaps !== undefined,
      dump: this.state,
    };
  }

  private kindContext(pid: number, fd: FdInfoEntry, id: number, order: EntryOrder): FdKindContext {
    return {
      announce: (key) => void (order.announces = key),
      writeAfter: (key, strict) => void (order.after = { key, strict }),
      ...this.ghostContext(),
      pid,
      fd,
      id,
      fileFlags: fd.flags & ~O_CLOEXEC,
      fown: fdOwner(pid, fd.fd),
      pathFile: (path, flags, st) => this.pathFile(path, flags, st),
      checkPath: (path, source) => this.checkPath(path, source),
      fileEntry: (entry) => this.files.append(file_entrySchema, create(file_entrySchema, entry)),
      shellJob: !!this.opts.shellJob,
      netNsId: this.opts.netNsId,
      dropNotifyEvents: !!this.opts.dropNotifyEvents,
      inFlight: pid === process.pid,
      adoptInFlight: (fds) => this.adoptInFlight(fds),
      inFlightFiles: (fds) => this.inFlightFiles(fds, `pid ${pid}: fd ${fd.fd} (${fd.target})`),
      warn: (text) => this.opts.log?.warn(text),
    };
  }
}

/**
 * Restore opens a path-named file by its path, so the path must still name the file the task has
 * (`source`, a /proc link): CRIU's dump checks the same (check_path_remap) and refuses a path
 * that names another file ("Unaccessible path opened"), or needs --link-remap for a linked file
 * whose path is gone. A deleted file (no links left) is a ghost instead, see deletedPathFile.
 */
function checkPathNamesSource(path: string, source: string, linkRemap: boolean): 'ok' | 'gone' {
  const had = statSync(source, { bigint: true });
  let now;
  try {
    now = statSync(path, { bigint: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && linkRemap) return 'gone';
    const why =
      code === 'ENOENT'
        ? 'no longer exists, though the file still has links elsewhere; restoring it needs a link remap: dump with --link-remap'
        : `cannot be looked at: ${(err as Error).message}`;
    throw new TsdumpError('UNSUPPORTED', `${source}: ${path} ${why}`, { cause: err });
  }
  if (now.dev !== had.dev || now.ino !== had.ino) {
    throw new TsdumpError(
      'UNSUPPORTED',
      `${source}: ${path} now names another file (inode ${now.ino} on device ${now.dev}) than the one the task has ` +
        `(inode ${had.ino} on device ${had.dev}); restore would open that one instead, so tsdump refuses it, as CRIU does`,
    );
  }
  return 'ok';
}

function describeTarget(target: string): string {
  if (target.endsWith(' (deleted)')) return 'deleted files';
  const anon = /^anon_inode:\[?([^\]]+)\]?$/.exec(target);
  if (anon) return `${anon[1]} descriptors`;
  const m = /^(\w+):\[/.exec(target);
  if (m) return `${m[1]}s`;
  return 'this kind of file';
}

function unsupported(pid: number, fd: FdInfoEntry): TsdumpError {
  if (/^anon_inode:\[?userfaultfd\]?$/.test(fd.target) && native.isTrackingFd(pid, fd.fd)) {
    return new TsdumpError(
      'UNSUPPORTED_FD',
      `pid ${pid}: fd ${fd.fd} is the memory-tracking userfaultfd a tsdump pre-dump left: name that pre-dump with --prev-images-dir (this dump then ends it), or end it with \`tsdump stop-tracking -t ROOT -D PRE-DUMP-DIR\``,
    );
  }
  return new TsdumpError(
    'UNSUPPORTED_FD',
    `pid ${pid}: fd ${fd.fd} (${fd.target}): tsdump cannot dump ${describeTarget(fd.target)} yet; close it or leave the process out of the tree`,
  );
}
