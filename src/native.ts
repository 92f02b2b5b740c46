// The one place TypeScript touches the N-API binding: it loads the generated loader (which picks
// the per-platform .node file) and hands out the binding wrapped once, so that every function,
// constructor, static and instance method throws (or rejects with) a TsdumpError carrying the
// core's stable code. No call can bypass the wrapper: there is no other way to the binding.
import { createRequire } from 'node:module';
import type * as Binding from '../native/index.js';
import { TsdumpError, isErrorCode } from './errors.js';

const require = createRequire(import.meta.url);

/** The prebuilt platform packages (package.json napi.targets, as npm/ names them). */
const PLATFORMS = ['linux-x64-gnu', 'linux-arm64-gnu', 'linux-x64-musl', 'linux-arm64-musl'];

function loadBinding(): typeof Binding {
  try {
    return require('../native/index.cjs') as typeof Binding;
  } catch (err) {
    throw missingBinding(err);
  }
}

/**
 * The loader's own error is a page of causes (every file and package it tried); a user needs one
 * line: which package, for which platform, and how to get it.
 */
function missingBinding(err: unknown): TsdumpError {
  const fail = (message: string): TsdumpError => new TsdumpError('NATIVE_BINDING', message, { cause: err });
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  const platform = `${process.platform}-${process.arch}-${report?.header?.glibcVersionRuntime ? 'gnu' : 'musl'}`;
  if (!PLATFORMS.includes(platform)) {
    return fail(`tsdump has no native core for ${platform} (prebuilt: ${PLATFORMS.join(', ')}); build one from a checkout with Rust: npm run build`);
  }
  const pkg = `tsdump-${platform}`;
  // one chained error per file and package tried: "Cannot find" for all of them means none is there
  const reasons: string[] = [];
  for (let e: unknown = err; e instanceof Error && reasons.length < 64; e = e.cause) reasons.push(e.message.split('\n')[0]!);
  const reason = reasons.find((m) => !/^Cannot find (module|native binding)/.test(m));
  if (reason !== undefined) return fail(`the native core ${pkg} did not load: ${reason}`);
  const { version } = require('../package.json') as { version: string };
  return fail(`the native core for ${platform} is missing: npm install ${pkg}@${version} (an optional dependency of tsdump, left out by --omit=optional)`);
}

const raw = loadBinding();

/** The core's "CODE: message" errors as TsdumpErrors; anything else the binding throws (an
 * argument it could not convert) is a bug on our side: INTERNAL. */
export function fromNativeError(err: unknown): TsdumpError {
  if (err instanceof TsdumpError) return err;
  if (!(err instanceof Error)) return new TsdumpError('INTERNAL', `native call: ${String(err)}`);
  const m = /^([A-Z_]+): ([\s\S]*)$/.exec(err.message);
  if (m && isErrorCode(m[1]!)) return new TsdumpError(m[1], m[2]!, { cause: err });
  return new TsdumpError('INTERNAL', `native call: ${err.message}`, { cause: err });
}

/** The binding's classes: their instances are wrapped too. */
const classes = new Set<unknown>(Object.values(raw).filter((v) => typeof v === 'function'));
/** Wrapped instance → the native object (napi methods must get the real one as `this` or argument). */
const targets = new WeakMap<object, object>();

const unwrap = (args: unknown[]): unknown[] => args.map((a) => (typeof a === 'object' && a !== null ? (targets.get(a) ?? a) : a));

const isInstance = (value: unknown): value is object =>
  typeof value === 'object' && value !== null && classes.has(Object.getPrototypeOf(value)?.constructor);

function typed(value: unknown): unknown {
  if (value instanceof Promise) return value.then(typed, (err: unknown) => Promise.reject(fromNativeError(err)));
  return isInstance(value) ? wrapInstance(value) : value;
}

function call(fn: (...a: unknown[]) => unknown, self: unknown, args: unknown[]): unknown {
  let result: unknown;
  try {
    result = fn.apply(self, unwrap(args));
  } catch (err) {
    throw fromNativeError(err);
  }
  return typed(result);
}

// The proxies stand on targets of their own: the binding's properties are read-only and
// non-configurable, which a proxy over them could not answer with wrapped methods.
function wrapInstance(obj: object): object {
  const proxy = new Proxy(Object.create(null) as object, {
    get(_, prop) {
      const v: unknown = Reflect.get(obj, prop, obj);
      return typeof v === 'function' ? (...args: unknown[]) => call(v as (...a: unknown[]) => unknown, obj, args) : v;
    },
    set: (_, prop, value) => Reflect.set(obj, prop, value, obj),
    has: (_, prop) => Reflect.has(obj, prop),
    getPrototypeOf: () => Reflect.getPrototypeOf(obj),
  });
  targets.set(proxy, obj);
  return proxy;
}

function wrapExport(fn: (...a: unknown[]) => unknown): unknown {
  return new Proxy(function () {}, {
    apply: (_, self, args: unknown[]) => call(fn, self, args),
    construct(_, args: unknown[]) {
      let obj: object;
      try {
        obj = Reflect.construct(fn, unwrap(args)) as object;
      } catch (err) {
        throw fromNativeError(err);
      }
      return wrapInstance(obj);
    },
    get(_, prop) {
      const v: unknown = Reflect.get(fn, prop, fn);
      // static methods (factories such as ImagesDir.open); `prototype` stays the real one
      return typeof v === 'function' && prop !== 'prototype' ? (...args: unknown[]) => call(v as (...a: unknown[]) => unknown, fn, args) : v;
    },
  });
}

export const native: typeof Binding = Object.fromEntries(
  Object.entries(raw).map(([k, v]) => [k, typeof v === 'function' ? wrapExport(v as (...a: unknown[]) => unknown) : v]),
) as typeof Binding;
