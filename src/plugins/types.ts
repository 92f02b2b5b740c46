// The plugin contract: CRIU's plugin points (criu/include/criu-plugin.h) as typed, async hooks.
//
// A hook answers `true` when it handled the object, and `false`/nothing when the object is not
// its business (CRIU's -ENOTSUP): the next plugin is then asked. Throwing fails the dump with a
// PLUGIN error naming the plugin and the hook. As in CRIU, the first plugin that handles an
// object ends the search.

/** Which run is loading the plugins. */
export type PluginStage = 'dump' | 'pre-dump' | 'restore';

export interface PluginLog {
  error(text: string): void;
  warn(text: string): void;
  info(text: string): void;
  debug(text: string): void;
}

/** What every hook gets besides its own arguments. */
export interface PluginContext {
  stage: PluginStage;
  /**
   * Where the plugin may write images of its own (CRIU's criu_get_image_dir()): where this run
   * writes its images, which is a directory beside -D, swapped in at the commit, when
   * --replace-images replaces a checkpoint.
   */
  imagesDir: string;
  log: PluginLog;
}

/** A file descriptor of a dumped task. `procPath` opens the same file from outside. */
export interface TaskFd {
  pid: number;
  fd: number;
  /** /proc/PID/fd/FD */
  procPath: string;
  /** Image id the plugin's own image should carry. */
  id: number;
}

export interface PluginHooks {
  /** A file tsdump cannot dump itself (CR_PLUGIN_HOOK__DUMP_EXT_FILE). */
  dumpExtFile?(file: TaskFd & { path: string }, ctx: PluginContext): HookResult;
  /** A unix socket whose peer is outside the tree (CR_PLUGIN_HOOK__DUMP_UNIX_SK). */
  dumpUnixSk?(socket: TaskFd & { inode: number }, ctx: PluginContext): HookResult;
  /** A mount tsdump does not know how to dump (CR_PLUGIN_HOOK__DUMP_EXT_MOUNT). */
  dumpExtMount?(mount: { mountpoint: string; id: number }, ctx: PluginContext): HookResult;
  /** A network link outside the known kinds (CR_PLUGIN_HOOK__DUMP_EXT_LINK). */
  dumpExtLink?(link: { index: number; type: number; kind: string }, ctx: PluginContext): HookResult;
  /** A device mapping (e.g. a GPU's) in a task's memory (CR_PLUGIN_HOOK__HANDLE_DEVICE_VMA). */
  handleDeviceVma?(
    vma: { pid: number; start: bigint; end: bigint; path: string; dev: number; ino: number },
    ctx: PluginContext,
  ): HookResult;
  /** Quiesce a task's devices before it is frozen (CR_PLUGIN_HOOK__PAUSE_DEVICES). */
  pauseDevices?(task: { pid: number }, ctx: PluginContext): HookResult;
  /** Save a task's device state while it is frozen (CR_PLUGIN_HOOK__CHECKPOINT_DEVICES). */
  checkpointDevices?(task: { pid: number }, ctx: PluginContext): HookResult;
  /** Devices dumped after every task (CR_PLUGIN_HOOK__DUMP_DEVICES_LATE). */
  dumpDevicesLate?(item: { id: number }, ctx: PluginContext): HookResult;
  /** Let devices run again for a task left running (CR_PLUGIN_HOOK__RESUME_DEVICES_LATE). */
  resumeDevicesLate?(task: { pid: number }, ctx: PluginContext): HookResult;
  /** The dump is over, successfully or not (CR_PLUGIN_HOOK__DUMP_FINISH). */
  dumpFinish?(result: { ok: boolean }, ctx: PluginContext): HookResult;
}

export type HookName = keyof PluginHooks;
export type HookResult = boolean | void | Promise<boolean | void>;
export type HookArgs<H extends HookName> = Parameters<NonNullable<PluginHooks[H]>>[0];

export const HOOK_NAMES: readonly HookName[] = [
  'dumpExtFile',
  'dumpUnixSk',
  'dumpExtMount',
  'dumpExtLink',
  'handleDeviceVma',
  'pauseDevices',
  'checkpointDevices',
  'dumpDevicesLate',
  'resumeDevicesLate',
  'dumpFinish',
];

export interface PluginDefinition {
  /** Shown in logs and errors. */
  name: string;
  /** The plugin API the plugin was written for; default the current one. */
  apiVersion?: number;
  /** Called once before any hook; throwing aborts the run (like CRIU's init returning < 0). */
  init?(ctx: PluginContext): void | Promise<void>;
  /** Called once at the end of the run, also after failures. */
  exit?(ctx: PluginContext, result: { ok: boolean }): void | Promise<void>;
  hooks?: PluginHooks;
}
