// The one place TypeScript touches the N-API binding: it loads the generated loader (which picks
// the per-platform .node file) and turns the core's "CODE: message" errors into typed errors.
import { createRequire } from 'node:module';
import type * as Binding from '../native/index.js';
import { TsdumpError, isErrorCode } from './errors.js';

const require = createRequire(import.meta.url);
export const native: typeof Binding = require('../native/index.cjs');

/** Runs a native call, rethrowing its error as a TsdumpError with the core's stable code. */
export async function callNative<T>(fn: () => Promise<T> | T): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw fromNativeError(err);
  }
}

export function fromNativeError(err: unknown): Error {
  if (!(err instanceof Error)) return new Error(String(err));
  const m = /^([A-Z_]+): ([\s\S]*)$/.exec(err.message);
  if (m && isErrorCode(m[1]!)) return new TsdumpError(m[1], m[2]!, { cause: err });
  return err;
}
