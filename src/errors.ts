// Typed errors with stable codes, shared by the CLI and the library. The Rust core uses the same
// codes (crates/core/src/error.rs); never rename a code, only add.

export const ERROR_CODES = [
  'ESRCH_TARGET',
  'EPERM_PTRACE',
  'REFUSED_TARGET',
  'UNSUPPORTED_FD',
  'UNSUPPORTED_VMA',
  'UNSUPPORTED',
  'PROCFS',
  'PTRACE',
  'PARASITE',
  'IMAGE_IO',
  'IMAGE_FORMAT',
  'CANCELLED',
  'TARGET_GONE',
  'KERNEL',
  'USAGE',
  // TypeScript-only codes (no Rust counterpart): extension points that fail
  'ACTION_SCRIPT',
  'PLUGIN',
  // the worker process that dumps a child of the caller died before answering (dump/own-child.ts)
  'DUMP_WORKER',
  // a bug in tsdump (an error nothing above typed); the message says where
  'INTERNAL',
  // the platform package with the native core is not installed, or does not load (native.ts)
  'NATIVE_BINDING',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export function isErrorCode(s: string): s is ErrorCode {
  return (ERROR_CODES as readonly string[]).includes(s);
}

export class TsdumpError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'TsdumpError';
    this.code = code;
  }
}

/**
 * Any error as a TsdumpError, for the library's boundary: ours pass through; a Node system error
 * gets the code its errno and path mean (a /proc/PID path that is gone is the task gone, one
 * denied is a permission the dump lacks); anything else is a bug in tsdump, INTERNAL.
 */
export function asTsdumpError(err: unknown): TsdumpError {
  if (err instanceof TsdumpError) return err;
  if (!(err instanceof Error)) return new TsdumpError('INTERNAL', `internal error: ${String(err)}`);
  const e = err as NodeJS.ErrnoException;
  if (typeof e.code === 'string' && /^E[A-Z0-9]+$/.test(e.code)) {
    const pid = typeof e.path === 'string' ? /^\/proc\/(\d+)(\/|$)/.exec(e.path)?.[1] : undefined;
    if (pid !== undefined) {
      if (e.code === 'ENOENT' || e.code === 'ESRCH') return new TsdumpError('ESRCH_TARGET', `pid ${pid}: ${e.message} (the task is gone)`, { cause: err });
      if (e.code === 'EPERM' || e.code === 'EACCES') {
        return new TsdumpError('EPERM_PTRACE', `pid ${pid}: ${e.message} (dumping needs root, or CAP_CHECKPOINT_RESTORE and ptrace rights)`, { cause: err });
      }
      return new TsdumpError('PROCFS', `pid ${pid}: ${e.message}`, { cause: err });
    }
    return new TsdumpError('KERNEL', e.message, { cause: err });
  }
  return new TsdumpError('INTERNAL', `internal error: ${err.message}`, { cause: err });
}

/** Runs `body`, every error it throws as a TsdumpError (asTsdumpError). */
export async function typedErrors<T>(body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (err) {
    throw asTsdumpError(err);
  }
}
