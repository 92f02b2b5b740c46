// Pty pairs a tree opened itself (catalogue subjects t_pty and t_pty_session go through dump.test.ts
// and dump-vs-criu.test.ts). Here: the bytes waiting in a pair are read by the dump and queued
// again, so a tree that runs on (--leave-running) still finds them; and a slave whose master is
// in no dumped task is refused after the whole tree was examined, the tree left as it was.
import test from 'ava';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { catalogue } from './helpers/catalogue.js';
import { critDecodeAll, makeWorkDir } from './helpers/criu.js';
import { isAlive } from './helpers/target.js';
import { runTsdump, tsdumpDump } from './helpers/tsdump.js';

const entry = (name: string) => catalogue.find((e) => e.name === name)!;

test.serial('t_pty --leave-running: tty-data.img holds both queues and the running pair still has them', async (t) => {
  const work = await makeWorkDir(t);
  const subject = await entry('t_pty').start(work);
  t.teardown(() => subject.kill());
  const images = join(work, 'images');
  await tsdumpDump(subject.pid, images, ['--leave-running']);
  const decoded = await critDecodeAll(images);
  const data = (decoded.get('tty-data.img') as { entries: { tty_id: number; data: string }[] }).entries;
  // master (tty-info id 2N+1) first: 9 bytes the slave wrote; then the slave (2N): 6 bytes
  t.deepEqual(
    data.map((e) => [e.tty_id % 2, Buffer.from(e.data, 'base64').toString()]),
    [
      [1, 'from-pts!'],
      [0, 'queued'],
    ],
  );
  t.is(await subject.verify(), 'PASS', subject.describe());
});

test.serial("a pty slave whose master is outside the tree: refused without --shell-job, tree unchanged", async (t) => {
  const work = await makeWorkDir(t);
  const subject = await entry('t_pty_session').start(work);
  t.teardown(() => subject.kill());
  // the shell alone: its controlling terminal's master stays in the root, outside the dump
  const shell = subject.pids.find((p) => p !== subject.pid)!;
  const images = join(work, 'images');
  const r = await runTsdump(['dump', '-t', String(shell), '-D', images, '--json']);
  t.not(r.code, 0);
  t.regex(r.stdout, /"code":\s*"UNSUPPORTED_FD"/);
  t.regex(r.stdout, /\/dev\/pts\/\d+\): the process has a terminal open; dump it with --shell-job/);
  t.false(existsSync(join(images, 'inventory.img')));
  t.true(isAlive(shell));
  t.is(await subject.verify(), 'PASS', subject.describe());
});
