// Cancelling a dump: the caller's AbortSignal, SIGINT and SIGTERM all end it between two steps;
// the flow then releases the tree untouched. (A signal must not kill tsdump while it holds a
// frozen tree, so the default handlers are replaced for the dump's duration.)
import { TsdumpError } from '../errors.js';

export class Cancellation {
  private reason: string | undefined;
  private readonly onSignal = (sig: NodeJS.Signals) => {
    this.reason ??= `interrupted by ${sig}`;
  };
  private readonly onAbort = () => {
    // The CLI aborts with the signal's name ("interrupted by SIGTERM"): keep it for the message.
    const why: unknown = this.signal?.reason;
    this.reason ??= why instanceof TsdumpError && why.code === 'CANCELLED' ? why.message : 'cancelled by the caller';
  };

  constructor(private readonly signal?: AbortSignal) {
    if (signal?.aborted) this.onAbort();
    signal?.addEventListener('abort', this.onAbort, { once: true });
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
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
