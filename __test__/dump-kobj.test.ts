// Kernel objects beyond the catalogue's round trips (issue 15): what a dump must leave untouched
// in a tree that runs on, refusals and their options, and image comparisons with the reference
// CRIU's dump of the same target where dump-vs-criu's whole-image comparison does not fit.
import test, { type ExecutionContext } from 'ava';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { criuDump, criuRestore, makeWorkDir } from './helpers/criu.js';
import { isAlive, killTree, requestVerify, startTarget, waitGone, type Target } from './helpers/target.js';
import { TsdumpCliError, runTsdump, tsdumpDump } from './helpers/tsdump.js';

async function started(t: ExecutionContext, name: string, dir: string, args: readonly string[] = []): Promise<Target> {
  const target = await startTarget(name, { dir, args });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  return target;
}

/**
 * Starts `name` (with `args`), has tsdump refuse it with `code` and a message matching `match`,
 * and checks nothing looks dumped and the target still verifies itself. The target, for more.
 */
async function refusedAndRunsOn(t: ExecutionContext, name: string, args: readonly string[], code: string, match: RegExp): Promise<Target> {
  const work = await makeWorkDir(t);
  const target = await started(t, name, work, args);
  const imagesDir = join(work, 'images');
  const err = await t.throwsAsync(tsdumpDump(target.pid, imagesDir), { instanceOf: TsdumpCliError });
  t.is(err?.code, code, err?.message);
  t.regex(err?.message ?? '', match);
  t.false(existsSync(join(imagesDir, 'inventory.img')), 'a refused dump must not look complete');
  t.is(await requestVerify(target), 'PASS');
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
  await refusedAndRunsOn(t, 't_sigtrap', ['pending'], 'UNSUPPORTED', /a SIGTRAP is pending/);
});

/**
 * Unread inotify/fanotify events: CRIU's images cannot carry them. tsdump refuses by default
 * (naming --drop-notify-events); with the option it dumps the group without them, as CRIU does,
 * and warns with the count. The restored target then fails exactly as after CRIU's own dump.
 */
const NOTIFY_CASES = [
  {
    name: 't_inotify',
    args: [] as string[],
    events: /dropping 1 to 2 unread events \(32 bytes\) of inotify events/,
    restored: /^FAIL: queued IN_CREATE 'before' lost$/,
  },
  {
    name: 't_fanotify',
    args: ['queued'],
    events: /dropping 1 unread event \(24 bytes\) of fanotify events/,
    restored: /^FAIL: queued FAN_OPEN on file2 lost$/,
  },
];

for (const c of NOTIFY_CASES) {
  test.serial(`${c.name}: unread events are refused, naming --drop-notify-events; the tree runs on`, async (t) => {
    await refusedAndRunsOn(t, c.name, c.args, 'UNSUPPORTED_FD', /with unread events .*pass --drop-notify-events/);
  });

  test.serial(`${c.name}: --drop-notify-events dumps without the events, warns with their count, and restores as CRIU's dump does`, async (t) => {
    const work = await makeWorkDir(t);
    const target = await started(t, c.name, work, c.args);
    const imagesDir = join(work, 'images');
    const r = await runTsdump(['dump', '-t', String(target.pid), '-D', imagesDir, '--shell-job', '--drop-notify-events']);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stderr, c.events);
    await waitGone(target.pids);
    await criuRestore(imagesDir);
    t.true(isAlive(target.pid));
    // the watches came back, the queue did not: the one check that fails is the queued event's
    t.regex(await requestVerify(target), c.restored);
    // and that is what the reference CRIU's own dump of the same state restores to
    const ref = await started(t, c.name, join(work, 'ref'), c.args);
    const refImages = join(work, 'ref', 'images');
    await criuDump(ref.pid, refImages);
    await waitGone(ref.pids);
    await criuRestore(refImages);
    t.regex(await requestVerify(ref), c.restored);
  });
}

test.serial('t_unix_scm: a file in flight tsdump cannot dump (an epoll) is refused naming the queue, and the tree runs on', async (t) => {
  // the verification after the refusal proves the peeks left every message and descriptor in place
  await refusedAndRunsOn(
    t,
    't_unix_scm',
    ['epoll'],
    'UNSUPPORTED_FD',
    /pid \d+: fd \d+ \(socket:\[\d+\]\): a queued message carries anon_inode:\[eventpoll\] \(SCM_RIGHTS\): .*eventpolls in flight/,
  );
});

/** The link_remap.* files in a directory. */
const linkRemapsIn = (dir: string) => readdirSync(dir).filter((n) => n.startsWith('link_remap.'));

test.serial('t_link_remap: without --link-remap the files are refused naming the option, and the tree runs on', async (t) => {
  const target = await refusedAndRunsOn(t, 't_link_remap', [], 'UNSUPPORTED_FD', /unlinked under this name but keeps 1 other hard link\(s\); dump with --link-remap/);
  t.deepEqual(linkRemapsIn(target.ctl), []);
});

test.serial('t_link_remap: the links go again when the tree runs on (--leave-running) and when the dump fails', async (t) => {
  const work = await makeWorkDir(t);
  const target = await started(t, 't_link_remap', work);
  const kept = await runTsdump(['dump', '-t', String(target.pid), '-D', join(work, 'kept'), '--shell-job', '--link-remap', '--leave-running']);
  t.is(kept.code, 0, kept.stderr);
  t.true(existsSync(join(work, 'kept', 'inventory.img')));
  t.deepEqual(linkRemapsIn(target.ctl), []);
  // a post-dump script that fails makes the dump fail after the links were made
  const script = join(work, 'fail-post-dump.sh');
  writeFileSync(script, '#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" != post-dump ]\n', { mode: 0o700 });
  const failed = await runTsdump(['dump', '-t', String(target.pid), '-D', join(work, 'failed'), '--shell-job', '--link-remap', '--action-script', script]);
  t.not(failed.code, 0, failed.stderr);
  t.regex(failed.stderr, /post-dump/);
  t.deepEqual(linkRemapsIn(target.ctl), []);
  t.is(await requestVerify(target), 'PASS');
});

test.serial('t_link_remap: a dump that kills the tree leaves the links for the restore, which removes them', async (t) => {
  const work = await makeWorkDir(t);
  const target = await started(t, 't_link_remap', work);
  const imagesDir = join(work, 'images');
  await tsdumpDump(target.pid, imagesDir, ['--link-remap']);
  await waitGone(target.pids);
  t.is(linkRemapsIn(target.ctl).length, 2, 'one link per file');
  await criuRestore(imagesDir);
  // the target checks that none is left
  t.is(await requestVerify(target), 'PASS');
});

test.serial('t_pidfd: a pidfd of a process outside the tree is refused, and the tree runs on', async (t) => {
  await refusedAndRunsOn(t, 't_pidfd', ['outside'], 'UNSUPPORTED_FD', /fd 13 \(anon_inode:\[pidfd\]\): a pidfd of pid \d+, which is not in the dumped tree/);
});

for (const [dev, path, what] of [
  ['fuse', '/dev/fuse', /fd 24 \(\/dev\/fuse\): tsdump cannot dump character device 10:229/],
  ['tun', '/dev/net/tun', /fd 24 \(\/dev\/net\/tun\): tsdump cannot dump a tun\/tap device/],
] as const) {
  test.serial(`t_devices: ${path} (state a reopen cannot bring back) is refused, and the tree runs on`, async (t) => {
    await refusedAndRunsOn(t, 't_devices', [dev], 'UNSUPPORTED_FD', what);
  });
}

test.serial('t_netlink: a netlink socket with an unread answer is refused, and the tree runs on', async (t) => {
  await refusedAndRunsOn(t, 't_netlink', ['unread'], 'UNSUPPORTED_FD', /fd 10 \(socket:\[\d+\]\): a netlink socket with unread messages/);
});

for (const mode of ['named', 'unlinked']) {
  test.serial(`t_mqueue: a POSIX message queue (${mode}) is refused, naming it, and the tree runs on`, async (t) => {
    await refusedAndRunsOn(t, 't_mqueue', [mode], 'UNSUPPORTED_FD', /fd 20: a POSIX message queue \(mq_open "\/tsdump-test-\d+(, unlinked)?"\)/);
  });
}
