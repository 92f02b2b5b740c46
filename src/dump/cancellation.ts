// Cancelling a run: the caller's AbortSignal, and SIGINT, SIGTERM and SIGHUP sent to this
// process, end it between two steps (native work that takes long, the page drain, is interrupted
// through an onCancel hook); the flow then releases the tree untouched. A signal must not kill
// tsdump while it holds a frozen tree, so while runs are in progress the default handlers are
// replaced: one set of process handlers (signals belong to the process) passes each signal to
// every run in progress, and each run keeps its own state here.
//
// Past the commit point (`commit`, once the checkpoint is complete) nothing cancels any more: the
// run finishes as asked (post-dump scripts, killing or resuming the tree) and reports success.
import { TsdumpError } from '../errors.js';
import type { Logger } from '../log.js';

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

type SignalListener = (sig: NodeJS.Signals) => void;
const listeners = new Set<SignalListener>();
const dispatch = (sig: NodeJS.Signals): void => {
  for (const l of [...listeners]) l(sig);
};

/**
 * Calls `fn` for SIGINT, SIGTERM and SIGHUP until the returned function is called; meanwhile
 * those signals do not terminate the process.
 */
export function onProcessSignals(fn: SignalListener): () => void {
  if (listeners.size === 0) for (const s of SIGNALS) process.on(s, dispatch);
  listeners.add(fn);
  return () => {
    if (!listeners.delete(fn)) return;
    if (listeners.size === 0) for (const s of SIGNALS) process.off(s, dispatch);
  };
}

export class Cancellation {
  private reason: string | undefined;
  private committed = false;
  private readonly hooks: (() => void)[] = [];
  private readonly stopListening = onProcessSignals((sig) => this.cancel(`interrupted by ${sig}`));
  private readonly onAbort = () => {
    // The CLI aborts with the signal's name ("interrupted by SIGTERM"): keep it for the message.
    const why: unknown = this.signal?.reason;
    this.cancel(why instanceof TsdumpError && why.code === 'CANCELLED' ? why.message : 'cancelled by the caller');
  };

  constructor(
    private readonly signal?: AbortSignal,
    private readonly log?: Logger,
  ) {
    if (signal?.aborted) this.onAbort();
    signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /** Runs `hook` when the run is cancelled (at once if it already is): e.g. to interrupt native work. */
  onCancel(hook: () => void): void {
    if (this.reason !== undefined) hook();
    else this.hooks.push(hook);
  }

  private cancel(reason: string): void {
    if (this.committed) {
      this.log?.warn(`${reason} after the checkpoint was complete: finishing as asked`);
      return;
    }
    if (this.reason !== undefined) return;
    this.reason = reason;
    for (const hook of this.hooks.splice(0)) hook();
  }

  get cancelled(): boolean {
    return this.reason !== undefined;
  }

  throwIfCancelled(): void {
    if (this.reason !== undefined) throw new TsdumpError('CANCELLED', `dump ${this.reason}; the tree was released untouched`);
  }

  /**
   * The commit point: throws if the run was cancelled before it; from here on nothing cancels
   * (signals and aborts are logged and the run finishes as asked).
   */
  commit(): void {
    this.throwIfCancelled();
    this.committed = true;
  }

  dispose(): void {
    this.signal?.removeEventListener('abort', this.onAbort);
    this.stopListening();
  }
}
