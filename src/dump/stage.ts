// The stages of a dump, named as ../shared/DESIGN.md names CRIU's cr_dump_tasks steps, so that a
// reader can lay src/dump/index.ts beside criu/cr-dump.c, and a user can follow a dump in its
// events and its -v3 log.
import type { Logger } from '../log.js';

export interface StageEvents {
  /** A stage begins. */
  stage?(name: string): void;
}

/** Runs one named stage: announced to the caller and the log, then run. */
export type Stage = <T>(name: string, fn: () => T | Promise<T>) => Promise<T>;

export function stager(events: StageEvents, log: Logger | undefined): Stage {
  return async (name, fn) => {
    announceStage(events, log, name);
    return fn();
  };
}

/** The stage of one task's visit and images: a `pages` event of its pid belongs to it (progress.ts). */
export const taskStage = (pid: number): string => `dump task ${pid}`;

/** A stage begins: the caller's event, and the log's line (the JSON log's `stage` until the next). */
export function announceStage(events: StageEvents, log: Logger | undefined, name: string): void {
  events.stage?.(name);
  log?.setStage?.(name);
  log?.info(`stage: ${name}`);
}

/** CRIU's stages a tsdump dump has no step for, by DESIGN.md's number, each with why. */
export const STAGES_NOT_TAKEN: readonly { readonly criu: string; readonly why: string }[] = [
  { criu: '3 kerndat_init', why: 'nothing is probed ahead: each kernel feature is used where needed and its absence refused there; `tsdump check` probes them all' },
  { criu: '4 irmap_load_cache', why: 'inotify/fanotify watches are recorded by the file handles fdinfo shows; no inode-to-path cache is needed' },
  { criu: '5 cpu_init', why: "each thread's register sets, FPU/xstate included, come from ptrace in the task visit (arch module)" },
  { criu: '6 vdso_init', why: "each task's [vdso] and [vvar*] are found in its own maps during the task visit" },
  { criu: '10 cpu_dump_cpuinfo', why: 'cpuinfo.img is written by CRIU only with --cpu-cap=img, which tsdump refuses' },
  { criu: '20 dead_pid_conflict', why: 'not checked: CRIU refuses a tree where a dead task\'s pid now names a live thread' },
  { criu: '21 dump_mnt_namespaces', why: "mount namespaces are not dumped: the tree is restored into the restorer's (as CRIU without a namespace of its own)" },
  { criu: '27 cr_dump_shmem', why: 'shared anonymous memory is dumped during the task stage, by the first task that maps each object (dump-task.ts)' },
];
