// Action scripts (--action-script): user programs run at fixed points of a dump, as CRIU runs
// them. Each gets CRTOOLS_SCRIPT_ACTION (the point's name), CRTOOLS_IMAGE_DIR (the images
// directory) and, once the root task is known, CRTOOLS_INIT_PID. Like CRIU, every script runs
// even after one fails, the last one given runs first (CRIU prepends to its list), and any
// failure makes the point fail; the dump decides what that means (a failing pre-dump aborts
// before the tree is touched; a failing post-dump leaves the tree running).
import { resolve } from 'node:path';
import { TsdumpError } from './errors.js';
import type { Logger } from './log.js';

/** CRIU's action points (criu/action-scripts.c); the dump runs the dump-side ones. */
export const SCRIPT_ACTIONS = [
  'pre-stream',
  'pre-dump',
  'post-dump',
  'pre-restore',
  'post-restore',
  'network-lock',
  'network-unlock',
  'setup-namespaces',
  'post-setup-namespaces',
  'pre-resume',
  'post-resume',
  'orphan-pts-master',
  'status-ready',
  'query-ext-files',
] as const;
export type ScriptAction = (typeof SCRIPT_ACTIONS)[number];

export interface ScriptFailure {
  script: string;
  /** Exit status, or null when killed by a signal. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the script could not be started at all (ENOENT, EACCES...). */
  spawnError?: string;
}

export class ActionScriptError extends TsdumpError {
  readonly action: ScriptAction;
  readonly failures: ScriptFailure[];
  constructor(action: ScriptAction, failures: ScriptFailure[]) {
    const first = failures[0]!;
    const how = first.spawnError ?? (first.signal ? `was killed by ${first.signal}` : `exited with ${first.exitCode}`);
    const more = failures.length > 1 ? ` (and ${failures.length - 1} more)` : '';
    super('ACTION_SCRIPT', `${action} action script ${first.script} ${how}${more}`);
    this.name = 'ActionScriptError';
    this.action = action;
    this.failures = failures;
  }
}

export interface ActionScriptsOptions {
  /** The images directory, exported as CRTOOLS_IMAGE_DIR. */
  imagesDir: string;
  /** Root PID of the tree, exported as CRTOOLS_INIT_PID (can be set later with setInitPid). */
  initPid?: number;
  /** Where scripts' stdout and stderr go; default our stderr (stdout stays clean for --json). */
  outputFd?: number;
  /** Extra environment on top of ours. */
  env?: NodeJS.ProcessEnv;
  log?: Logger;
}

export class ActionScripts {
  private readonly scripts: string[];
  private initPid: number | undefined;

  /** `scripts` in command-line order. */
  constructor(
    scripts: readonly string[],
    private readonly opts: ActionScriptsOptions,
  ) {
    this.scripts = [...scripts].reverse();
    this.initPid = opts.initPid;
  }

  get count(): number {
    return this.scripts.length;
  }

  setInitPid(pid: number): void {
    this.initPid = pid;
  }

  /** Runs every script for `action`; throws ActionScriptError if any of them failed. */
  async run(action: ScriptAction): Promise<void> {
    this.opts.log?.debug(`Running ${action} scripts`);
    if (this.scripts.length === 0) return;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      ...this.opts.env,
      CRTOOLS_SCRIPT_ACTION: action,
      CRTOOLS_IMAGE_DIR: resolve(this.opts.imagesDir),
    };
    if (this.initPid !== undefined) env.CRTOOLS_INIT_PID = String(this.initPid);
    const failures: ScriptFailure[] = [];
    for (const script of this.scripts) {
      this.opts.log?.debug(`\t[${script}]`);
      const failure = await runOne(script, env, this.opts.outputFd ?? 2);
      if (failure) {
        this.opts.log?.error(`Script ${script} ${failure.spawnError ?? `exited with ${failure.exitCode ?? failure.signal}`}`);
        failures.push(failure);
      }
    }
    if (failures.length) throw new ActionScriptError(action, failures);
  }
}

async function runOne(script: string, env: NodeJS.ProcessEnv, outFd: number): Promise<ScriptFailure | undefined> {
  // loaded when a script runs: child_process brings net, dgram and streams into every start-up
  const { spawn } = await import('node:child_process');
  return new Promise((done) => {
    const child = spawn(script, [], { env, stdio: ['ignore', outFd, outFd] });
    child.once('error', (err: NodeJS.ErrnoException) =>
      done({ script, exitCode: null, signal: null, spawnError: `could not be run: ${err.code ?? err.message}` }),
    );
    child.once('exit', (exitCode, signal) =>
      done(exitCode === 0 ? undefined : { script, exitCode, signal }),
    );
  });
}
