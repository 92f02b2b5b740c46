// Shared by dump and pre-dump: which trees a run in this process may trace, and how a failed run
// gives its tree back.
import type { Session } from '../../native/index.js';
import { TsdumpError } from '../errors.js';
import { isOwnChild } from './own-child.js';
import type { DumpOptions } from './options.js';
import type { LinkRemaps } from './link-remap.js';
import type { NetworkLock } from './network-lock.js';

/** Puts the tree back as it was; the dump's own error is what the caller hears about. */
export async function releaseAfterFailure(session: Session, cause: unknown): Promise<void> {
  try {
    await session.releaseTree({ mode: 'resume' });
  } catch (releaseErr) {
    const msg = releaseErr instanceof Error ? releaseErr.message : String(releaseErr);
    if (cause instanceof Error) cause.message += ` (and releasing the tree failed: ${msg})`;
  }
}

/**
 * Lets a dumped tree run on (-R): it keeps its files (link remaps are only for a restore of a
 * tree that is gone, as CRIU), its connections work again before it does. With --snapshot this
 * comes before the memory is copied, otherwise at the end.
 */
export async function releaseRunning(
  session: Session,
  call: <T>(fn: () => Promise<T> | T) => Promise<T>,
  held: { linkRemaps: LinkRemaps | undefined; networkLock: NetworkLock | undefined; log: DumpOptions['log'] },
): Promise<void> {
  for (const failed of held.linkRemaps?.rollback() ?? []) held.log?.warn(failed);
  try {
    await held.networkLock?.unlock();
  } catch (err) {
    await releaseAfterFailure(session, err);
    throw err;
  }
  await call(() => session.releaseTree({ mode: 'resume' }));
}

/**
 * Node reaps its children on SIGCHLD with waitpid(), which also collects the ptrace stops meant
 * for our tracer thread: libuv then reports a false exit and never reaps the real one. `dump` and
 * `preDump` send a tree rooted at our child to a worker process; the in-process flow refuses it.
 */
export async function refuseOwnChild(pid: number): Promise<void> {
  if (await isOwnChild(pid)) {
    throw new TsdumpError(
      'REFUSED_TARGET',
      `pid ${pid} is a child of this process (${process.pid}); Node's child reaping would steal ptrace stops. ` +
        'Dump it with dump() or preDump(), which use a worker process for it',
    );
  }
}
