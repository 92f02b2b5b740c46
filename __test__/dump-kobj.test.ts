// Kernel objects beyond the catalogue's round trips (issue 15): what a dump must leave untouched
// in a tree that runs on, refusals and their options, and image comparisons with the reference
// CRIU's dump of the same target where dump-vs-criu's whole-image comparison does not fit.
import test, { type ExecutionContext } from 'ava';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { makeWorkDir } from './helpers/criu.js';
import { killTree, requestVerify, startTarget, type Target } from './helpers/target.js';
import { TsdumpCliError, tsdumpDump } from './helpers/tsdump.js';

async function started(t: ExecutionContext, name: string, dir: string): Promise<Target> {
  const target = await startTarget(name, { dir });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  return target;
}

test.serial('t_sigtrap: a --leave-running dump leaves the SIGTRAP handler in place', async (t) => {
  // The injected syscalls end in a trap instruction; with SIGTRAP blocked the kernel would reset
  // the task's own handler to SIG_DFL while forcing that trap.
  const work = await makeWorkDir(t);
  const target = await started(t, 't_sigtrap', work);
  await tsdumpDump(target.pid, join(work, 'images'), ['--leave-running']);
  t.is(await requestVerify(target), 'PASS');
});

test.serial('t_sigtrap: a pending SIGTRAP is refused (the trap would consume it) and the tree runs on', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startTarget('t_sigtrap', { dir: work, args: ['pending'] });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const imagesDir = join(work, 'images');
  const err = await t.throwsAsync(tsdumpDump(target.pid, imagesDir), { instanceOf: TsdumpCliError });
  t.is(err?.code, 'UNSUPPORTED', err?.message);
  t.regex(err?.message ?? '', /a SIGTRAP is pending/);
  t.false(existsSync(join(imagesDir, 'inventory.img')));
  t.is(await requestVerify(target), 'PASS');
});
