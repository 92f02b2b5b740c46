// Action scripts: real executables run with CRIU's environment, in CRIU's order, every one of
// them even after a failure, and a failure surfacing as a typed error.
import test from 'ava';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ActionScripts, ActionScriptError, SCRIPT_ACTIONS } from '../src/action-scripts.js';
import { TsdumpError } from '../src/errors.js';

interface Env {
  dir: string;
  record: string;
  script(name: string, body: string): string;
}

function setup(t: { teardown(fn: () => void): void }): Env {
  const dir = mkdtempSync(join(tmpdir(), 'tsdump-scripts-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const record = join(dir, 'record.txt');
  return {
    dir,
    record,
    script(name, body) {
      const path = join(dir, name);
      writeFileSync(path, `#!/bin/sh\n${body}\n`);
      chmodSync(path, 0o755);
      return path;
    },
  };
}

/** A script that appends "name action imgdir initpid" to the record file. */
function recorder(e: Env, name: string, exitCode = 0): string {
  return e.script(
    name,
    `echo "${name} $CRTOOLS_SCRIPT_ACTION $CRTOOLS_IMAGE_DIR \${CRTOOLS_INIT_PID:-none}" >> ${e.record}\nexit ${exitCode}`,
  );
}

const lines = (file: string): string[] => readFileSync(file, 'utf8').trim().split('\n');

test('the action names are criu\'s', (t) => {
  for (const a of ['pre-dump', 'post-dump', 'network-lock', 'network-unlock', 'pre-resume', 'post-resume', 'pre-restore', 'post-restore']) {
    t.true((SCRIPT_ACTIONS as readonly string[]).includes(a), a);
  }
});

test('scripts run at each point with CRTOOLS_SCRIPT_ACTION, CRTOOLS_IMAGE_DIR and CRTOOLS_INIT_PID', async (t) => {
  const e = setup(t);
  const a = recorder(e, 'a');
  const scripts = new ActionScripts([a], { imagesDir: e.dir });
  await scripts.run('pre-dump');
  scripts.setInitPid(4242);
  await scripts.run('network-lock');
  await scripts.run('post-dump');
  await scripts.run('network-unlock');
  t.deepEqual(lines(e.record), [
    `a pre-dump ${e.dir} none`,
    `a network-lock ${e.dir} 4242`,
    `a post-dump ${e.dir} 4242`,
    `a network-unlock ${e.dir} 4242`,
  ]);
});

// Serial, and back in its directory before its own ends: the working directory is the whole
// worker's, and a concurrent test's script started in a directory removed meanwhile prints
// "getcwd() failed" into that test's output.
test.serial('the images dir is exported absolute, and the init pid from the start when known', async (t) => {
  const e = setup(t);
  const a = recorder(e, 'a');
  const cwd = process.cwd();
  process.chdir(e.dir);
  try {
    await new ActionScripts([a], { imagesDir: '.', initPid: 77 }).run('pre-dump');
  } finally {
    process.chdir(cwd);
  }
  t.deepEqual(lines(e.record), [`a pre-dump ${e.dir} 77`]);
});

test('several scripts run in criu\'s order: the last one given first', async (t) => {
  const e = setup(t);
  const scripts = new ActionScripts([recorder(e, 'first'), recorder(e, 'second'), recorder(e, 'third')], { imagesDir: e.dir });
  await scripts.run('post-dump');
  t.deepEqual(
    lines(e.record).map((l) => l.split(' ')[0]),
    ['third', 'second', 'first'],
  );
});

test('a failing pre-dump script gives a typed ACTION_SCRIPT error after every script ran', async (t) => {
  const e = setup(t);
  const ok1 = recorder(e, 'ok1');
  const bad = recorder(e, 'bad', 3);
  const ok2 = recorder(e, 'ok2');
  const scripts = new ActionScripts([ok1, bad, ok2], { imagesDir: e.dir, initPid: 1 });
  const err = await t.throwsAsync(scripts.run('pre-dump'));
  t.true(err instanceof ActionScriptError);
  t.true(err instanceof TsdumpError);
  const ae = err as ActionScriptError;
  t.is(ae.code, 'ACTION_SCRIPT');
  t.is(ae.action, 'pre-dump');
  t.deepEqual(ae.failures, [{ script: bad, exitCode: 3, signal: null }]);
  t.is(ae.message, `pre-dump action script ${bad} exited with 3`);
  t.deepEqual(lines(e.record).map((l) => l.split(' ')[0]), ['ok2', 'bad', 'ok1']);
});

test('a script killed by a signal, or impossible to run, is a failure too', async (t) => {
  const e = setup(t);
  const killed = e.script('killed', 'kill -TERM $$');
  const missing = join(e.dir, 'does-not-exist');
  const err = (await t.throwsAsync(new ActionScripts([missing, killed], { imagesDir: e.dir }).run('post-dump'))) as ActionScriptError;
  t.is(err.failures.length, 2);
  t.like(err.failures[0], { script: killed, exitCode: null, signal: 'SIGTERM' });
  t.like(err.failures[1], { script: missing, exitCode: null });
  t.regex(err.failures[1]!.spawnError!, /ENOENT/);
  t.regex(err.message, /killed by SIGTERM \(and 1 more\)/);
});

test('script output goes to the given descriptor, never to our stdout', async (t) => {
  const e = setup(t);
  const noisy = e.script('noisy', 'echo out-line; echo err-line >&2');
  const out = join(e.dir, 'out.txt');
  const fs = await import('node:fs');
  const fd = fs.openSync(out, 'w');
  t.teardown(() => fs.closeSync(fd));
  await new ActionScripts([noisy], { imagesDir: e.dir, outputFd: fd }).run('pre-dump');
  t.deepEqual(lines(out), ['out-line', 'err-line']);
});

test('no scripts: nothing runs and nothing fails', async (t) => {
  const e = setup(t);
  const s = new ActionScripts([], { imagesDir: e.dir });
  t.is(s.count, 0);
  await t.notThrowsAsync(s.run('pre-dump'));
});
