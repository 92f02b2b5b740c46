// Dumping a child of the calling process (worker mode). ptrace stops are reported to every thread
// of the tracer's thread group, and libuv reaps its children on SIGCHLD with waitpid() (no
// __WNOTHREAD), which would take the stops meant for the tracer thread and report a false exit.
// So a tree rooted at one of our children is dumped by a forked Node process (worker.ts) running
// the same in-process flow: its tracer is outside our thread group, and our own waitpid (no
// WUNTRACED) is not told of ptrace stops — it still reaps the child when the dump kills it.
//
// Over the IPC channel: the options (plain data; `log`, `signal` and `statusFd` translated), the
// events and log lines back, then one answer (the DumpResult or the error, rebuilt here with its
// code and message). The worker cancels itself when our channel closes, so a caller that dies
// never leaves the tree frozen.
import type { StdioOptions } from 'node:child_process';
import { native } from '../native.js';
import { fileURLToPath } from 'node:url';
import { TsdumpError, isErrorCode } from '../errors.js';
import { ActionScriptError, SCRIPT_ACTIONS, type ScriptAction, type ScriptFailure } from '../action-scripts.js';
import type { LogFields } from '../log.js';
import { LOG_LEVEL_NAMES, type LogLevelName } from '../log-levels.js';
import { DUMP_OPTIONS, type DumpOptions } from './options.js';
import type { DumpEvents, DumpResult } from './result.js';
import type { TaskPages } from './page-progress.js';
import { onProcessSignals } from './cancellation.js';

export type FlowKind = 'dump' | 'preDump';

/** DumpOptions as they cross to the worker: plain data only. */
export type WireOptions = Omit<DumpOptions, 'log' | 'signal'>;



export type ToWorker =
  | { type: 'start'; kind: FlowKind; options: WireOptions; log: { level: number; file: string | undefined } | null }
  /** `reason`: the message of a CANCELLED TsdumpError to abort with, null for the caller's default. */
  | { type: 'abort'; reason: string | null };

export interface WireError {
  name: string;
  message: string;
  code: string | null;
  stack: string | null;
  /** ActionScriptError's own fields. */
  action?: string;
  failures?: ScriptFailure[];
}

export type FromWorker =
  | { type: 'stage'; name: string }
  | { type: 'pages'; written: number; task: TaskPages }
  | { type: 'log'; method: LogLevelName; text: string; fields?: LogFields }
  | { type: 'log stage'; name: string }
  | { type: 'result'; result: DumpResult }
  | { type: 'error'; error: WireError };

/** Whether pid's parent is this process (false when pid cannot be read: the flow reports that). */
export async function isOwnChild(pid: number): Promise<boolean> {
  return native.procStat(pid)?.ppid === process.pid;
}

/** The worker module next to this one (worker.ts when running from sources under a TS loader). */
const WORKER_PATH = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url));

/** Node flags that take the next argument as their value. */
const FLAG_WITH_VALUE = new Set(['-e', '--eval', '-p', '--print', '-pe', '--input-type', '--watch-path', '--inspect-port', '--debug-port']);
/** Node flags that would make the worker run something else, or clash with us (an inspector on our port). */
const NOT_FOR_WORKER = /^(--eval|--print|--input-type|--watch|--watch-path|--test[\w-]*|--inspect(-brk|-wait|-port)?|--debug(-brk|-port)?)(=.*)?$|^(-c|--check|-i|--interactive)$/;

/** Our node flags for the worker: loaders such as `--import tsx` stay, the rest as above. */
function workerExecArgv(): string[] {
  const out: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (FLAG_WITH_VALUE.has(a)) i++;
    else if (!NOT_FOR_WORKER.test(a)) out.push(a);
  }
  return out;
}

/** The options as plain data; refuses what cannot be passed on, by name. */
function toWire(options: DumpOptions): WireOptions {
  const wire: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined) continue;
    if (!(key in DUMP_OPTIONS)) throw new TsdumpError('USAGE', `unknown dump option "${key}"`);
    if (DUMP_OPTIONS[key as keyof DumpOptions].worker === 'translated') continue;
    if (typeof value === 'function') throw new TsdumpError('USAGE', `dump option ${key} must be plain data, not a function`);
    wire[key] = value;
  }
  if (options.statusFd !== undefined) {
    if (!Number.isInteger(options.statusFd) || options.statusFd < 0) throw new TsdumpError('USAGE', `statusFd ${options.statusFd} is not a descriptor`);
    wire.statusFd = options.statusFd;
  }
  return wire as WireOptions;
}

/** The worker's descriptors: no stdin, our stdout/stderr, statusFd under its own number, the channel. */
function workerStdio(statusFd: number | undefined): StdioOptions {
  const stdio: (string | number)[] = ['ignore', 'inherit', 'inherit'];
  if (statusFd !== undefined) {
    while (stdio.length < statusFd) stdio.push('ignore');
    stdio[statusFd] = statusFd;
  }
  stdio.push('ipc');
  return stdio as StdioOptions;
}

/** A worker's error, rebuilt here: same class for ours, same code and message. */
function fromWire(w: WireError, workerPid: number): Error {
  let err: Error;
  if (w.name === 'ActionScriptError' && w.failures?.length && (SCRIPT_ACTIONS as readonly string[]).includes(w.action ?? '')) {
    err = new ActionScriptError(w.action as ScriptAction, w.failures);
    err.message = w.message;
  } else if (w.code !== null && isErrorCode(w.code)) {
    err = new TsdumpError(w.code, w.message);
  } else {
    err = new TsdumpError('INTERNAL', w.message);
  }
  if (w.stack !== null) err.stack = `${err.stack ?? ''}\n    --- in dump worker ${workerPid} ---\n${w.stack.split('\n').slice(1).join('\n')}`;
  return err;
}

/** An error as plain data, for the channel. */
export function toWireError(err: unknown): WireError {
  if (!(err instanceof Error)) return { name: 'Error', message: String(err), code: null, stack: null };
  const out: WireError = {
    name: err.name,
    message: err.message,
    code: err instanceof TsdumpError ? err.code : null,
    stack: err.stack ?? null,
  };
  if (err instanceof ActionScriptError) {
    out.action = err.action;
    out.failures = err.failures.map((f) => ({ ...f }));
  }
  return out;
}

function isFromWorker(m: unknown): m is FromWorker {
  return typeof m === 'object' && m !== null && typeof (m as { type?: unknown }).type === 'string';
}

/**
 * Runs the dump (or pre-dump) of our own child in a forked worker; same result, events, log
 * lines, cancellation and errors as the in-process flow.
 */
export async function runInWorker(kind: FlowKind, options: DumpOptions, events: DumpEvents): Promise<DumpResult> {
  const wire = toWire(options);
  const log = options.log;
  // loaded for our own child only: child_process brings net, dgram and streams into every start-up
  const { fork } = await import('node:child_process');
  const child = fork(WORKER_PATH, [], {
    execArgv: workerExecArgv(),
    serialization: 'advanced',
    stdio: workerStdio(options.statusFd),
  });
  const workerPid = child.pid ?? 0;
  const what = `dump worker (pid ${workerPid}) for pid ${options.pid}`;

  return new Promise<DumpResult>((resolve, reject) => {
    let answer: { ok: DumpResult } | { err: Error } | undefined;
    /** A caller's event callback that threw: the dump is abandoned and this is the error, as in-process. */
    let callbackError: unknown;
    let spawnError: Error | undefined;

    const send = (m: ToWorker): void => {
      if (!child.connected) return;
      child.send(m, (err) => {
        // the channel died under us: make sure the worker does not dump on alone
        if (err) child.kill('SIGTERM');
      });
    };
    const abort = (reason: string | null): void => send({ type: 'abort', reason });
    const onAbort = (): void => {
      const why: unknown = options.signal?.reason;
      abort(why instanceof TsdumpError && why.code === 'CANCELLED' ? why.message : null);
    };
    // As in-process: a signal to us cancels the dump rather than killing us with the tree frozen.
    let stopListening = (): void => {};
    const callEvent = (fn: () => void): void => {
      try {
        fn();
      } catch (err) {
        if (callbackError === undefined) callbackError = err;
        abort(null);
      }
    };

    child.on('message', (m: unknown) => {
      if (!isFromWorker(m)) return;
      switch (m.type) {
        case 'stage':
          callEvent(() => events.stage?.(m.name));
          break;
        case 'pages':
          callEvent(() => events.pages?.(m.written, m.task));
          break;
        case 'log':
          if (log && LOG_LEVEL_NAMES.includes(m.method)) log[m.method](m.text, m.fields);
          break;
        case 'log stage':
          log?.setStage?.(m.name);
          break;
        case 'result':
          answer ??= { ok: m.result };
          break;
        case 'error':
          answer ??= { err: fromWire(m.error, workerPid) };
          break;
      }
    });
    const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
      options.signal?.removeEventListener('abort', onAbort);
      stopListening();
      if (callbackError !== undefined) reject(callbackError);
      else if (answer && 'ok' in answer) resolve(answer.ok);
      else if (answer) reject(answer.err);
      else {
        const how = spawnError ? `could not run: ${spawnError.message}` : signal ? `was killed by ${signal}` : `exited with code ${code}`;
        reject(new TsdumpError('DUMP_WORKER', `${what} ${how} before answering; the dump did not complete`, spawnError ? { cause: spawnError } : undefined));
      }
    };
    child.once('error', (err) => {
      spawnError ??= err;
      // never started: no 'close' to wait for
      if (child.pid === undefined) finish(null, null);
    });
    // 'close' comes after every message the worker sent has been delivered.
    child.once('close', finish);

    try {
      child.send({ type: 'start', kind, options: wire, log: log ? { level: log.level, file: log.file } : null } satisfies ToWorker);
    } catch (err) {
      child.kill('SIGKILL');
      callbackError = new TsdumpError('USAGE', `dump options cannot be passed to the ${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      return;
    }
    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener('abort', onAbort, { once: true });
    stopListening = onProcessSignals((sig) => abort(`interrupted by ${sig}`));
  });
}
