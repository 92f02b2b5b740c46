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
