// Plugins: the example plugin in examples/plugins/ loaded through the loader API and its hooks
// called on a real process's file descriptor; CRIU's dispatch rules (first handler wins,
// "not mine" passes on); and the errors a broken plugin gives.
import test from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { definePlugin, loadPlugins, loadPluginsFrom, PluginHost, type PluginContext } from '../src/plugins/index.js';
import { TsdumpError } from '../src/errors.js';

const ROOT = new URL('..', import.meta.url).pathname;
const EXAMPLES = join(ROOT, 'examples/plugins');

test.before(() => {
  // the example imports 'tsdump/plugin', which resolves (package self-reference) to dist/, built
  // before the suite by scripts/test.sh
  if (!existsSync(join(ROOT, 'dist/plugins/define.js'))) throw new Error('dist/plugins/define.js was not built');
});

function tmp(t: { teardown(fn: () => void): void }, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

interface Journal {
  hook: string;
  stage: string;
  args: Record<string, unknown>;
}
const journal = (imagesDir: string): Journal[] =>
  readFileSync(join(imagesDir, 'hook-journal.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Journal);

/** A real process holding `file` open as its stdout. */
function holder(t: { teardown(fn: () => void): void }, file: string): number {
  const fd = openSync(file, 'a');
  const child = spawn('sleep', ['60'], { stdio: ['ignore', fd, 'ignore'] });
  closeSync(fd);
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  return child.pid!;
}

test('the example plugin loads from --libdir and its hooks run on a real process\'s file', async (t) => {
  const imagesDir = tmp(t, 'tsdump-plugin-imgs-');
  const dataDir = tmp(t, 'tsdump-plugin-data-');
  const claimed = join(dataDir, 'claimed.dat');
  writeFileSync(claimed, 'payload the plugin must copy\n');
  const pid = holder(t, claimed);

  process.env.TSDUMP_EXAMPLE_PREFIX = dataDir;
  t.teardown(() => delete process.env.TSDUMP_EXAMPLE_PREFIX);

  const host = await loadPlugins(EXAMPLES, { stage: 'dump', imagesDir });
  t.deepEqual(host.plugins.map((p) => p.name), ['ext-file-copy']);
  t.true(host.has('dumpExtFile'));
  t.false(host.has('dumpUnixSk'));

  const mine = await host.run('dumpExtFile', { pid, fd: 1, procPath: `/proc/${pid}/fd/1`, id: 7, path: claimed });
  t.deepEqual(mine, { handled: true, plugin: 'ext-file-copy' });
  t.is(readFileSync(join(imagesDir, 'ext-file-7.bin'), 'utf8'), 'payload the plugin must copy\n');
  t.is(statSync(join(imagesDir, 'hook-journal.jsonl')).mode & 0o777, 0o600);

  const notMine = await host.run('dumpExtFile', { pid, fd: 0, procPath: `/proc/${pid}/fd/0`, id: 8, path: '/dev/null' });
  t.deepEqual(notMine, { handled: false });

  t.deepEqual(await host.run('pauseDevices', { pid }), { handled: false });
  t.deepEqual(await host.run('checkpointDevices', { pid }), { handled: false });
  t.deepEqual(await host.run('dumpDevicesLate', { id: 1 }), { handled: false });
  t.deepEqual(await host.run('dumpUnixSk', { pid, fd: 3, procPath: '', id: 2, inode: 1 }), { handled: false });
  t.deepEqual(await host.run('dumpFinish', { ok: true }), { handled: true, plugin: 'ext-file-copy' });
  await host.exit(true);

  t.deepEqual(
    journal(imagesDir).map((j) => j.hook),
    ['init', 'dumpExtFile', 'dumpExtFile', 'pauseDevices', 'checkpointDevices', 'dumpDevicesLate', 'dumpFinish', 'exit'],
  );
  t.true(journal(imagesDir).every((j) => j.stage === 'dump'));
  t.like(journal(imagesDir)[1]!.args, { pid, fd: 1, id: 7, path: claimed });
  t.like(journal(imagesDir)[3]!.args, { pid });
});

test('dispatch: plugins in file-name order, the first that handles wins, "not mine" passes on', async (t) => {
  const dir = tmp(t, 'tsdump-plugin-order-');
  const define = new URL('../dist/plugins/define.js', import.meta.url).href;
  const plugin = (name: string, answer: boolean) =>
    `import { definePlugin } from ${JSON.stringify(define)};\n` +
    `globalThis.__calls ??= [];\n` +
    `export default definePlugin({ name: '${name}', hooks: { pauseDevices({ pid }) { globalThis.__calls.push('${name}:' + pid); return ${answer}; } } });\n`;
  writeFileSync(join(dir, '10-declines.mjs'), plugin('declines', false));
  writeFileSync(join(dir, '20-takes.js'), plugin('takes', true));
  writeFileSync(join(dir, '30-never.mjs'), plugin('never', true));
  writeFileSync(join(dir, 'README.txt'), 'not a plugin');
  mkdirSync(join(dir, 'a-directory.js')); // only files are plugins
  const g = globalThis as { __calls?: string[] };
  g.__calls = [];
  const host = await loadPlugins(dir, { stage: 'pre-dump', imagesDir: dir });
  t.deepEqual(host.plugins.map((p) => p.name), ['declines', 'takes', 'never']);
  t.deepEqual(await host.run('pauseDevices', { pid: 5 }), { handled: true, plugin: 'takes' });
  t.deepEqual(g.__calls, ['declines:5', 'takes:5']);
});

test('a hook that throws fails with a PLUGIN error naming plugin and hook', async (t) => {
  const bad = definePlugin({
    name: 'broken',
    hooks: {
      checkpointDevices() {
        throw new Error('device busy');
      },
    },
  });
  const ctx: PluginContext = { stage: 'dump', imagesDir: '/tmp', log: { error() {}, warn() {}, info() {}, debug() {} } };
  const host = new PluginHost([bad], ctx);
  const err = await t.throwsAsync(host.run('checkpointDevices', { pid: 1 }));
  t.true(err instanceof TsdumpError);
  t.is((err as TsdumpError).code, 'PLUGIN');
  t.is(err!.message, 'plugin broken: checkpointDevices: device busy');
});

test('init failure aborts loading and exits the plugins already initialised', async (t) => {
  const order: string[] = [];
  const ok = definePlugin({ name: 'ok', init: () => void order.push('ok:init'), exit: (_c, r) => void order.push(`ok:exit:${r.ok}`) });
  const failing = definePlugin({
    name: 'failing',
    init: () => {
      throw new Error('no device');
    },
    exit: () => void order.push('failing:exit'),
  });
  const ctx: PluginContext = { stage: 'dump', imagesDir: '/tmp', log: { error() {}, warn() {}, info() {}, debug() {} } };
  const err = await t.throwsAsync(new PluginHost([ok, failing], ctx).init());
  t.is(err!.message, 'plugin failing: init: no device');
  t.deepEqual(order, ['ok:init', 'ok:exit:false']);
});

test('definePlugin rejects what the loader could not call', (t) => {
  t.throws(() => definePlugin({ name: '' }), { message: /needs a name/ });
  t.throws(() => definePlugin({ name: 'x', hooks: { dumpEverything: () => true } as never }), { message: /unknown hook dumpEverything/ });
  t.throws(() => definePlugin({ name: 'x', hooks: { pauseDevices: 3 } as never }), { message: /not a function/ });
  t.throws(() => definePlugin({ name: 'x', apiVersion: 99 }), { message: /needs plugin API 99/ });
});

test('modules that are not definePlugin() plugins, duplicates and missing dirs are refused', async (t) => {
  const dir = tmp(t, 'tsdump-plugin-bad-');
  writeFileSync(join(dir, 'plain.mjs'), 'export default { name: "plain", hooks: {} };\n');
  await t.throwsAsync(loadPluginsFrom(dir), { message: /plain\.mjs: the default export is not made by definePlugin/ });

  const dup = tmp(t, 'tsdump-plugin-dup-');
  const define = new URL('../dist/plugins/define.js', import.meta.url).href;
  const src = `import { definePlugin } from ${JSON.stringify(define)};\nexport default definePlugin({ name: 'twin' });\n`;
  writeFileSync(join(dup, 'a.mjs'), src);
  writeFileSync(join(dup, 'b.mjs'), src);
  await t.throwsAsync(loadPluginsFrom(dup), { message: /b\.mjs: another plugin is already named twin/ });

  const syntax = tmp(t, 'tsdump-plugin-syntax-');
  writeFileSync(join(syntax, 'x.mjs'), 'export default definePlugin(;\n');
  await t.throwsAsync(loadPluginsFrom(syntax), { message: /x\.mjs: cannot load/ });

  const err = await t.throwsAsync(loadPluginsFrom(join(dir, 'missing')));
  t.is((err as TsdumpError).code, 'PLUGIN');
  t.regex(err!.message, /ENOENT/);
});

test('no --libdir: no plugins, and every hook answers "not handled"', async (t) => {
  const host = await loadPlugins(undefined, { stage: 'dump', imagesDir: '/tmp' });
  t.is(host.plugins.length, 0);
  t.deepEqual(await host.run('dumpExtMount', { mountpoint: '/mnt', id: 1 }), { handled: false });
});
