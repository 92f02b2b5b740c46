// Cancelling a dump: the caller's AbortSignal, SIGINT and SIGTERM all end it between two steps
// (native work that takes long, the page drain, is interrupted through an onCancel hook); the
// flow then releases the tree untouched. (A signal must not kill tsdump while it holds a
// frozen tree, so the default handlers are replaced for the dump's duration.)
import { TsdumpError } from '../errors.js';

export class Cancellation {
  private reason: string | undefined;
  private readonly hooks: (() => void)[] = [];
  private readonly onSignal = (sig: NodeJS.Signals) => this.cancel(`interrupted by ${sig}`);
  private readonly onAbort = () => {
    // The CLI aborts with the signal's name ("interrupted by SIGTERM"): keep it for the message.
    const why: unknown = this.signal?.reason;
    this.cancel(why instanceof TsdumpError && why.code === 'CANCELLED' ? why.message : 'cancelled by the caller');
  };

  constructor(private readonly signal?: AbortSignal) {
    if (signal?.aborted) this.onAbort();
    signal?.addEventListener('abort', this.onAbort, { once: true });
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
  }

  /** Runs `hook` when the dump is cancelled (at once if it already is): e.g. to interrupt native work. */
  onCancel(hook: () => void): void {
    if (this.reason !== undefined) hook();
    else this.hooks.push(hook);
  }

  private cancel(reason: string): void {
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

  dispose(): void {
    this.signal?.removeEventListener('abort', this.onAbort);
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
  }
}
