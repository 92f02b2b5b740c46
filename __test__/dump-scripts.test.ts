// Action scripts around a real dump: they run at CRIU's points with CRIU's environment, and a
// failing pre-dump script aborts before the tree is touched.
import test from 'ava';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { catalogue, roundTrip } from './helpers/catalogue.js';
import { makeWorkDir } from './helpers/criu.js';
import { killTree, procState, requestVerify, startTarget } from './helpers/target.js';
import { runTsdump } from './helpers/tsdump.js';

async function script(dir: string, body: string): Promise<string> {
  const path = join(dir, 'action.sh');
  await writeFile(path, `#!/bin/sh\n${body}\n`, { mode: 0o700 });
  return path;
}

test.serial('action scripts run at pre-dump and post-dump with CRTOOLS_* set, and the dump restores', async (t) => {
  const entry = catalogue.find((e) => e.name === 't_counter')!;
  let log = '';
  let pid = 0;
  const rt = await roundTrip(t, entry, async (p, imagesDir) => {
    pid = p;
    log = join(imagesDir, '..', 'actions.log');
    const s = await script(join(imagesDir, '..'), `echo "$CRTOOLS_SCRIPT_ACTION $CRTOOLS_INIT_PID $CRTOOLS_IMAGE_DIR" >> ${log}`);
    const r = await runTsdump(['dump', '-t', String(p), '-D', imagesDir, '--shell-job', '--action-script', s]);
    if (r.code !== 0) throw new Error(r.stderr);
  });
  t.is(rt.result, 'PASS');
  const lines = (await readFile(log, 'utf8')).trim().split('\n');
  t.deepEqual(
    lines.map((l) => l.split(' ').slice(0, 2).join(' ')),
    [`pre-dump ${pid}`, `post-dump ${pid}`],
  );
  t.true(lines.every((l) => l.endsWith(rt.imagesDir)), lines.join('\n'));
});

test.serial('a failing pre-dump script aborts the dump; the target is untouched and no image is complete', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startTarget('t_counter', { dir: work });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const imagesDir = join(work, 'images');
  const s = await script(work, '[ "$CRTOOLS_SCRIPT_ACTION" = pre-dump ] && exit 3; exit 0');
  const r = await runTsdump(['dump', '-t', String(target.pid), '-D', imagesDir, '--shell-job', '--action-script', s, '--json']);
  t.is(r.code, 1);
  t.regex(r.stdout, /"code":"ACTION_SCRIPT"/);
  t.false(existsSync(join(imagesDir, 'inventory.img')));
  t.notRegex(procState(target.pid) ?? '', /^[tT]/);
  t.is(await requestVerify(target), 'PASS');
});

test.serial("plugins from --libdir are called at CRIU's plugin points of a real dump, in order", async (t) => {
  const entry = catalogue.find((e) => e.name === 't_counter')!;
  let journalPath = '';
  const rt = await roundTrip(t, entry, async (pid, imagesDir) => {
    journalPath = join(imagesDir, 'hook-journal.jsonl');
    const r = await runTsdump(['dump', '-t', String(pid), '-D', imagesDir, '--shell-job', '-L', 'examples/plugins']);
    if (r.code !== 0) throw new Error(r.stderr);
  });
  t.is(rt.result, 'PASS');
  const hooks = (await readFile(journalPath, 'utf8'))
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { hook: string }).hook);
  t.deepEqual(
    hooks.filter((h) => h !== 'dumpExtFile'),
    ['init', 'pauseDevices', 'checkpointDevices', 'dumpDevicesLate', 'dumpFinish', 'exit'],
  );
});
