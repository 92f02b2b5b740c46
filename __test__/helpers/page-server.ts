// tsdump's own page server (src/page-server.ts) as the tests run it.
import type { ExecutionContext } from 'ava';
import { runPageServer, type PageServerResult } from '../../src/page-server.js';

/**
 * tsdump's page server on a free loopback port, writing into `dir` (`prev`, relative to it: the
 * parent images), stopped in teardown. `done` settles once its one session has ended.
 */
export async function tsdumpPageServer(t: ExecutionContext, dir: string, prev?: string): Promise<{ port: number; done: Promise<PageServerResult> }> {
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  let bound!: (port: number) => void;
  const port = new Promise<number>((res) => (bound = res));
  const done = runPageServer({ imagesDir: dir, address: '127.0.0.1', port: 0, signal: ac.signal, onListening: (l) => bound(l.port), ...(prev ? { prevImagesDir: prev } : {}) });
  done.catch(() => undefined); // awaited by the caller; a failed dump aborts it in teardown
  const p = await Promise.race([port, done.then(() => Promise.reject(new Error('page server ended before listening')))]);
  return { port: p, done };
}
