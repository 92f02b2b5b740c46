// CRIU configuration files: the syntax (one option a line, # comments, quotes) and the
// precedence (global < user < CRIU_CONFIG_FILE < --config < command line), with --config and
// --no-default-config switching the default files off as criu does.
import test from 'ava';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfigText, loadConfig, configDirectives } from '../src/config.js';
import { parseCommandLine } from '../src/cli/args.js';

function setup(t: { teardown(fn: () => void): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'tsdump-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const home = join(dir, 'home');
  mkdirSync(join(home, '.criu'), { recursive: true });
  const globalFile = join(dir, 'etc-criu-default.conf');
  const userFile = join(home, '.criu', 'default.conf');
  const envFile = join(dir, 'env.conf');
  const cmdFile = join(dir, 'cmd.conf');
  return { dir, home, globalFile, userFile, envFile, cmdFile };
}

async function dumpOpts(argv: string[], ctx: Parameters<typeof parseCommandLine>[1]) {
  const inv = await parseCommandLine(argv, ctx);
  if (inv.command !== 'dump') throw new Error('not a dump');
  return inv;
}

test('syntax: one option a line, "--" implied, comments, blank lines, arguments', (t) => {
  const text = [
    '# tsdump / criu configuration',
    '',
    'tcp-established',
    '  images-dir   /srv/ckpt   # trailing comment',
    'log-file dump.log',
    '\tghost-limit 1M',
    'action-script /a.sh',
    'action-script /b.sh',
  ].join('\n');
  t.deepEqual(parseConfigText(text), [
    '--tcp-established',
    '--images-dir',
    '/srv/ckpt',
    '--log-file',
    'dump.log',
    '--ghost-limit',
    '1M',
    '--action-script',
    '/a.sh',
    '--action-script',
    '/b.sh',
  ]);
});

test('syntax: double quotes keep blanks, \\" escapes a quote, "" is an empty argument', (t) => {
  t.deepEqual(parseConfigText('action-script "/opt/my scripts/a.sh"'), ['--action-script', '/opt/my scripts/a.sh']);
  t.deepEqual(parseConfigText('log-file "say \\"hi\\".log"'), ['--log-file', 'say "hi".log']);
  t.deepEqual(parseConfigText('freeze-cgroup ""'), ['--freeze-cgroup', '']);
  t.throws(() => parseConfigText('log-file "open', 'x.conf'), { message: /x.conf:1: unterminated/ });
});

test('directives: --config FILE and --config=FILE turn the default files off', (t) => {
  t.deepEqual(configDirectives(['dump', '-t', '1']), { noDefault: false });
  t.deepEqual(configDirectives(['--config', 'a.conf', 'dump']), { configFile: 'a.conf', noDefault: true });
  t.deepEqual(configDirectives(['dump', '--config=b.conf']), { configFile: 'b.conf', noDefault: true });
  t.deepEqual(configDirectives(['dump', '--no-default-config']), { noDefault: true });
});

test('files are read global, user, CRIU_CONFIG_FILE, --config, in that order', (t) => {
  const f = setup(t);
  writeFileSync(f.globalFile, 'log-file global.log\n');
  writeFileSync(f.userFile, 'log-file user.log\n');
  writeFileSync(f.envFile, 'log-file env.log\n');
  writeFileSync(f.cmdFile, 'log-file cmd.log\n');
  const env = { HOME: f.home, CRIU_CONFIG_FILE: f.envFile };
  const all = loadConfig(['dump'], { env, globalFile: f.globalFile });
  t.deepEqual(all.files, [f.globalFile, f.userFile, f.envFile]);
  const withCmd = loadConfig(['dump', '--config', f.cmdFile], { env, globalFile: f.globalFile });
  t.deepEqual(withCmd.files, [f.envFile, f.cmdFile]); // --config: no default files
  const noDefault = loadConfig(['dump', '--no-default-config'], { env, globalFile: f.globalFile });
  t.deepEqual(noDefault.files, [f.envFile]);
});

test('precedence: each later source overrides the earlier, the command line wins', async (t) => {
  const f = setup(t);
  writeFileSync(f.globalFile, 'log-file global.log\nimages-dir /from-global\ntimeout 10\nshell-job\n');
  writeFileSync(f.userFile, 'log-file user.log\ntimeout 20\n');
  writeFileSync(f.envFile, 'log-file env.log\n');
  const ctx = { env: { HOME: f.home, CRIU_CONFIG_FILE: f.envFile }, globalFile: f.globalFile };

  const fromFiles = await dumpOpts(['dump', '-t', '1'], ctx);
  t.like(fromFiles.options, { logFile: 'env.log', imagesDir: '/from-global', timeout: 20, shellJob: true });
  t.deepEqual(fromFiles.configFiles, [f.globalFile, f.userFile, f.envFile]);

  const cmdLine = await dumpOpts(['dump', '-t', '1', '-o', 'cli.log', '--timeout', '5', '--no-shell-job'], ctx);
  t.like(cmdLine.options, { logFile: 'cli.log', timeout: 5, shellJob: false, imagesDir: '/from-global' });
});

test('precedence: --config replaces the default files but not CRIU_CONFIG_FILE, and loses to argv', async (t) => {
  const f = setup(t);
  writeFileSync(f.globalFile, 'images-dir /from-global\n');
  writeFileSync(f.envFile, 'log-file env.log\ntimeout 7\n');
  writeFileSync(f.cmdFile, 'log-file cmd.log\n');
  const ctx = { env: { HOME: f.home, CRIU_CONFIG_FILE: f.envFile }, globalFile: f.globalFile };
  const inv = await dumpOpts(['dump', '-t', '1', '--config', f.cmdFile], ctx);
  t.like(inv.options, { logFile: 'cmd.log', timeout: 7, imagesDir: '.' });
  const cli = await dumpOpts(['dump', '-t', '1', '--config', f.cmdFile, '--log-file', 'argv.log'], ctx);
  t.is(cli.options.logFile, 'argv.log');
});

test('repeatable options accumulate across files and the command line', async (t) => {
  const f = setup(t);
  writeFileSync(f.globalFile, 'action-script /from-global.sh\n');
  writeFileSync(f.userFile, 'action-script /from-user.sh\n');
  const inv = await dumpOpts(['dump', '-t', '1', '--action-script', '/from-argv.sh'], {
    env: { HOME: f.home },
    globalFile: f.globalFile,
  });
  t.deepEqual(inv.options.actionScripts, ['/from-global.sh', '/from-user.sh', '/from-argv.sh']);
});

test('verbosity set in a file is overridden by -v on the command line', async (t) => {
  const f = setup(t);
  writeFileSync(f.globalFile, 'verbosity=1\n');
  const ctx = { env: {}, globalFile: f.globalFile };
  t.is((await dumpOpts(['dump', '-t', '1'], ctx)).options.verbosity, 1);
  t.is((await dumpOpts(['dump', '-t', '1', '-v4'], ctx)).options.verbosity, 4);
});

test('missing default files are skipped; a missing --config or CRIU_CONFIG_FILE is an error', async (t) => {
  const f = setup(t);
  t.deepEqual(loadConfig(['dump'], { env: { HOME: f.home }, globalFile: f.globalFile }).files, []);
  const e = await t.throwsAsync(parseCommandLine(['dump', '-t', '1', '--config', join(f.dir, 'nope.conf')], { env: {} }));
  t.is((e as { code?: string }).code, 'USAGE');
  t.regex(e!.message, /nope\.conf: ENOENT/);
  t.throws(() => loadConfig(['dump'], { env: { CRIU_CONFIG_FILE: join(f.dir, 'gone.conf') } }), { message: /gone\.conf: ENOENT/ });
});

test('an unknown option in a config file is refused like one on the command line', async (t) => {
  const f = setup(t);
  writeFileSync(f.cmdFile, '# mine\nno-such-thing\n');
  for (const command of ['dump', 'show']) {
    await t.throwsAsync(parseCommandLine([command, command === 'dump' ? '-t1' : 'x.img', '--config', f.cmdFile], { env: {} }), {
      message: `${f.cmdFile}:2: unknown option --no-such-thing`,
    });
  }
});
