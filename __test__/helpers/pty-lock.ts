// The test run's pseudo-terminals are numbered within one private devpts instance
// (scripts/private-devpts.sh), and CRIU restores a pty pair only at the index it was dumped with:
// a terminal another test file opens between a dump and its restore takes that index and the
// restore fails ("Unable to open dev/ptmx with specified index 0"). Test files run in parallel
// worker processes, so every test that opens a pty holds this one lock, across processes, from
// before its first pty until its last one is closed. flock(1) holds it: the kernel drops it when
// the holder exits, so a crashed worker never leaves it behind.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const LOCK_FILE = join(tmpdir(), 'tsdump-test-ptys.lock');

/** Waits for the pty lock; resolves to its release (idempotent). */
export async function lockPtys(): Promise<() => Promise<void>> {
  // The holder keeps the lock while its stdin is open: ending stdin (or our exit) releases it.
  const holder = spawn('flock', [LOCK_FILE, 'sh', '-c', 'echo held; exec cat >/dev/null'], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const exited = once(holder, 'exit');
  const [first] = (await Promise.race([once(holder.stdout, 'data'), exited.then(() => [undefined])])) as [Buffer | undefined];
  if (first?.toString() !== 'held\n') throw new Error(`pty lock ${LOCK_FILE}: flock(1) exited before holding it`);
  let released: Promise<void> | undefined;
  return () => {
    released ??= (async () => {
      holder.stdin.end();
      await exited;
    })();
    return released;
  };
}

/** Holds the pty lock for the rest of test t: taken now, released by its teardown. */
export async function holdPtys(t: { teardown(fn: () => Promise<void>): void }): Promise<void> {
  t.teardown(await lockPtys());
}
