// The command line: every option family mapped onto DumpOptions (the pure argv → options
// function), CRIU command lines copied verbatim, and the built CLI's behaviour on bad input
// (one line on stderr, exit 1, no stack), plus the progress display's TTY-only rule.
import test from 'ava';
import { execFile, execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseCommandLine, extractVerbosity, parseSize, EXAMPLES, UNSUPPORTED_OPTIONS, type Invocation } from '../src/cli/args.js';
import { manPage } from '../src/cli/man.js';
import { ProgressDisplay, renderProgressLine } from '../src/progress.js';
import { formatDumpStats } from '../src/cli/stats.js';
import { openLog, formatLogLine } from '../src/log.js';
import { holdPtys } from './helpers/pty-lock.js';
import { procState, settledState } from './helpers/target.js';

const exec = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const CLI = join(ROOT, 'dist/cli.js');

// No config file of the machine or the user may leak into these tests.
const ctx = { env: {}, globalFile: '/nonexistent/criu-default.conf' };

async function dumpOptions(argv: string[]) {
  const inv = await parseCommandLine(argv, ctx);
  if (inv.command !== 'dump' && inv.command !== 'pre-dump') throw new Error(`not a dump: ${inv.command}`);
  return inv;
}

/**
 * dist/ is built before the suite (scripts/test.sh), never here: other test files run dist/cli.js
 * at the same time and must not load a half-rewritten module.
 */
function ensureBuilt(): void {
  if (!existsSync(join(ROOT, 'dist/cli.js'))) throw new Error('dist/cli.js is missing: run npm run build:ts');
}

async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await exec(process.execPath, [CLI, ...args], {
      env: { PATH: process.env.PATH, HOME: '/nonexistent-home', ...env },
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

test.before(() => {
  try {
    ensureBuilt();
  } catch {
    // type errors elsewhere in the tree still emit JavaScript; the CLI tests below check dist
  }
  if (!existsSync(CLI)) throw new Error('dist/cli.js was not built');
});

// --- CRIU command lines, verbatim -------------------------------------------------------------

test('a CRIU dump command line from criu/scripts parses unchanged', async (t) => {
  // criu's scripts/travis/kexec-dump.sh, with $1 = 4242
  const line = 'dump -D /imgs -o dump.log -t 4242 -j --tcp-established --ext-unix-sk -v4 -l --ghost-limit 10485760';
  const inv = await dumpOptions(line.split(' '));
  t.deepEqual(inv.options, {
    pid: 4242,
    imagesDir: '/imgs',
    logFile: 'dump.log',
    shellJob: true,
    tcpEstablished: true,
    extUnixSk: true,
    verbosity: 4,
    fileLocks: true,
    ghostLimit: 10485760,
  });
});

test('a CRIU migration command line (page server, track-mem, parent images) parses unchanged', async (t) => {
  const line =
    'dump --tree 99 --images-dir /srv/ckpt/2 --work-dir /var/log/criu --prev-images-dir ../1 --track-mem ' +
    '--page-server --address 10.0.0.2 --port 27 --leave-running --shell-job -vvvv --log-file dump.log --display-stats';
  const inv = await dumpOptions(line.split(' '));
  t.deepEqual(inv.options, {
    pid: 99,
    imagesDir: '/srv/ckpt/2',
    workDir: '/var/log/criu',
    prevImagesDir: '../1',
    trackMem: true,
    pageServer: { address: '10.0.0.2', port: 27 },
    leaveRunning: true,
    shellJob: true,
    verbosity: 4,
    logFile: 'dump.log',
    displayStats: true,
  });
});

test('options may come before the command, as getopt permutes them for criu', async (t) => {
  const inv = await dumpOptions(['-D', '/x', '-v3', 'dump', '-t', '5']);
  t.is(inv.options.imagesDir, '/x');
  t.is(inv.options.pid, 5);
  t.is(inv.options.verbosity, 3);
});

// --- option families --------------------------------------------------------------------------

test('tree, images dir, work dir, log file: short and long forms agree', async (t) => {
  const short = await dumpOptions(['dump', '-t', '7', '-D', 'imgs', '-W', 'work', '-o', 'd.log']);
  const long = await dumpOptions(['dump', '--tree', '7', '--images-dir', 'imgs', '--work-dir', 'work', '--log-file', 'd.log']);
  const eq = await dumpOptions(['dump', '--tree=7', '--images-dir=imgs', '--work-dir=work', '--log-file=d.log']);
  t.deepEqual(short.options, long.options);
  t.deepEqual(eq.options, long.options);
  t.like(short.options, { pid: 7, imagesDir: 'imgs', workDir: 'work', logFile: 'd.log' });
});

test('images dir defaults to the current directory, like criu', async (t) => {
  t.is((await dumpOptions(['dump', '-t', '1'])).options.imagesDir, '.');
});

test('verbosity: -v, -vN, -vv..v, --verbosity[=N] fold like criu (default 2, capped at 4)', (t) => {
  const level = (...a: string[]): number => extractVerbosity(a).verbosity;
  t.is(level(), 2);
  t.is(level('-v'), 3);
  t.is(level('-v0'), 0);
  t.is(level('-v1'), 1);
  t.is(level('-v4'), 4);
  t.is(level('-vv'), 4); // criu: +strlen("v")+1
  t.is(level('-vvvv'), 4);
  t.is(level('-v0', '-v'), 1);
  t.is(level('--verbosity=1'), 1);
  t.is(level('--verbosity', '3'), 3);
  t.is(level('--verbosity'), 3);
  t.deepEqual(extractVerbosity(['-t', '1', '-v4', 'x']).argv, ['-t', '1', 'x']);
});

test('leave-running / leave-stopped: the later one wins, as both set criu final_state', async (t) => {
  t.like((await dumpOptions(['dump', '-t', '1', '-R'])).options, { leaveRunning: true });
  t.like((await dumpOptions(['dump', '-t', '1', '-s'])).options, { leaveStopped: true });
  const rs = (await dumpOptions(['dump', '-t', '1', '-R', '-s'])).options;
  t.true(rs.leaveStopped);
  t.is(rs.leaveRunning, undefined);
  const sr = (await dumpOptions(['dump', '-t', '1', '--leave-stopped', '--leave-running'])).options;
  t.true(sr.leaveRunning);
  t.is(sr.leaveStopped, undefined);
  t.like((await dumpOptions(['dump', '-t', '1', '-Rj'])).options, { leaveRunning: true, shellJob: true });
});

test('boolean families: shell job, ext unix sk, tcp established, file locks, and criu --no- forms', async (t) => {
  const on = (await dumpOptions(['dump', '-t', '1', '-j', '-x', '--tcp-established', '-l'])).options;
  t.like(on, { shellJob: true, extUnixSk: true, tcpEstablished: true, fileLocks: true });
  const long = (await dumpOptions(['dump', '-t', '1', '--shell-job', '--ext-unix-sk', '--file-locks'])).options;
  t.like(long, { shellJob: true, extUnixSk: true, fileLocks: true });
  const off = (await dumpOptions(['dump', '-t', '1', '-j', '--no-shell-job', '--no-tcp-established'])).options;
  t.like(off, { shellJob: false, tcpEstablished: false });
});

test('freezer family: --freeze-cgroup and --timeout', async (t) => {
  const o = (await dumpOptions(['dump', '-t', '1', '--freeze-cgroup', '/sys/fs/cgroup/freezer/x', '--timeout', '30'])).options;
  t.like(o, { freezeCgroup: '/sys/fs/cgroup/freezer/x', timeout: 30 });
  await t.throwsAsync(dumpOptions(['dump', '-t', '1', '--timeout', '0']), { message: /--timeout/ });
  await t.throwsAsync(dumpOptions(['dump', '-t', '1', '--timeout', 'soon']), { message: /--timeout/ });
});

test('extension family: --action-script repeats, -L/--libdir', async (t) => {
  const o = (await dumpOptions(['dump', '-t', '1', '--action-script', '/a.sh', '-L', '/plugins', '--action-script', '/b.sh'])).options;
  t.deepEqual(o.actionScripts, ['/a.sh', '/b.sh']);
  t.is(o.libDir, '/plugins');
  t.is((await dumpOptions(['dump', '-t', '1', '--libdir', '/p'])).options.libDir, '/p');
});

test('incremental family: --prev-images-dir, --track-mem, and pre-dump --pre-dump-mode', async (t) => {
  const o = (await dumpOptions(['pre-dump', '-t', '1', '-D', '2', '--prev-images-dir', '../1', '--track-mem', '--pre-dump-mode', 'read'])).options;
  t.like(o, { prevImagesDir: '../1', trackMem: true, preDumpMode: 'read', imagesDir: '2' });
  await t.throwsAsync(dumpOptions(['pre-dump', '-t', '1', '--pre-dump-mode', 'copy']), { message: /pre-dump-mode/ });
  await t.throwsAsync(dumpOptions(['dump', '-t', '1', '--pre-dump-mode', 'read']), { message: /unknown option --pre-dump-mode/ });
});

test('page-server family: --page-server needs --address and --port, and they need it', async (t) => {
  const o = (await dumpOptions(['dump', '-t', '1', '--page-server', '--address', '127.0.0.1', '--port', '9000'])).options;
  t.deepEqual(o.pageServer, { address: '127.0.0.1', port: 9000 });
  await t.throwsAsync(dumpOptions(['dump', '-t', '1', '--page-server', '--port', '9000']), { message: /--address and --port/ });
  await t.throwsAsync(dumpOptions(['dump', '-t', '1', '--address', 'h', '--port', '1']), { message: /only make sense with --page-server/ });
  const ps = await parseCommandLine(['page-server', '-D', '/in', '--port', '9000', '--daemon', '--pidfile', '/run/ps.pid', '--status-fd', '5'], ctx);
  t.like(ps, { command: 'page-server', imagesDir: '/in', port: 9000, daemon: true, pidfile: '/run/ps.pid', statusFd: 5 });
});

test("TLS family: criu's --tls options on both ends, and --idle-timeout for the page server", async (t) => {
  const tls = ['--tls', '--tls-cacert', '/pki/ca.pem', '--tls-cacrl', '/pki/crl.pem', '--tls-cert', '/pki/c.pem', '--tls-key', '/pki/k.pem', '--tls-no-cn-verify'];
  const want = { cacert: '/pki/ca.pem', cacrl: '/pki/crl.pem', cert: '/pki/c.pem', key: '/pki/k.pem', noCnVerify: true };
  const o = (await dumpOptions(['pre-dump', '-t', '1', '--page-server', '--address', 'h', '--port', '9', ...tls])).options;
  t.deepEqual(o.pageServer, { address: 'h', port: 9, tls: want });
  // --tls alone: CRIU's default paths, resolved by the core
  t.deepEqual((await dumpOptions(['dump', '-t', '1', '--page-server', '--address', 'h', '--port', '9', '--tls'])).options.pageServer?.tls, {});
  await t.throwsAsync(dumpOptions(['dump', '-t', '1', '--tls']), { message: /--tls only makes sense with --page-server/ });
  await t.throwsAsync(dumpOptions(['dump', '-t', '1', '--page-server', '--address', 'h', '--port', '9', '--tls-key', '/k']), { message: /--tls-key only makes sense with --tls/ });
  const ps = await parseCommandLine(['page-server', '--port', '9', ...tls, '--idle-timeout', '2.5'], ctx);
  t.like(ps, { command: 'page-server', tls: want, idleTimeout: 2.5 });
  await t.throwsAsync(parseCommandLine(['page-server', '--port', '9', '--idle-timeout', '-1'], ctx), { message: /--idle-timeout/ });
});

test('ghost limit takes criu sizes (bytes, K, M, G)', async (t) => {
  t.is(parseSize('4096', 'x'), 4096);
  t.is(parseSize('64K', 'x'), 65536);
  t.is(parseSize('1M', 'x'), 1048576);
  t.is(parseSize('2G', 'x'), 2 * 1024 ** 3);
  t.is((await dumpOptions(['dump', '-t', '1', '--ghost-limit', '10M'])).options.ghostLimit, 10 * 1024 * 1024);
  await t.throwsAsync(dumpOptions(['dump', '-t', '1', '--ghost-limit', 'lots']), { message: /not a size/ });
});

test('output family: --display-stats, --pidfile, --status-fd, --json', async (t) => {
  const inv = await dumpOptions(['dump', '-t', '1', '--display-stats', '--pidfile', '/run/x.pid', '--status-fd', '3', '--json']);
  t.like(inv.options, { displayStats: true, pidfile: '/run/x.pid', statusFd: 3 });
  t.true(inv.json);
  t.false((await dumpOptions(['dump', '-t', '1'])).json);
});

test('check and show parse their own options', async (t) => {
  t.like(await parseCommandLine(['check'], ctx), { command: 'check', all: false, refresh: false });
  t.like(await parseCommandLine(['check', '--all'], ctx), { command: 'check', all: true });
  t.like(await parseCommandLine(['check', '--extra'], ctx), { command: 'check', all: true });
  t.like(await parseCommandLine(['check', '--feature', 'pagemap_scan', '--json'], ctx), { feature: 'pagemap_scan', json: true });
  t.like(await parseCommandLine(['show', 'a/core-1.img', '--pretty'], ctx), { command: 'show', path: 'a/core-1.img', pretty: true });
  t.like(await parseCommandLine(['show', 'dir', '--mems'], ctx), { command: 'show', path: 'dir', view: 'mems' });
  await t.throwsAsync(parseCommandLine(['show', 'dir', '--mems', '--fds'], ctx), { message: /one of/ });
});

test('dump without -t, or with a bad PID, is a usage error', async (t) => {
  await t.throwsAsync(dumpOptions(['dump', '-D', 'x']), { message: /-t\/--tree/ });
  await t.throwsAsync(dumpOptions(['dump', '-t', '-3']), { message: /not a PID/ });
});

test('every unsupported criu option is refused by name, in long and short form', async (t) => {
  for (const o of UNSUPPORTED_OPTIONS) {
    const value = o.type === 'boolean' ? [] : ['1'];
    const err = await t.throwsAsync(parseCommandLine(['dump', '-t', '1', `--${o.name}`, ...value], ctx));
    t.is((err as { code?: string }).code, 'UNSUPPORTED', o.name);
    t.regex(err!.message, new RegExp(`--${o.name} is not supported`), o.name);
    if (o.short) {
      const e2 = await t.throwsAsync(parseCommandLine(['dump', '-t', '1', `-${o.short}`, ...value], ctx));
      t.regex(e2!.message, new RegExp(`--${o.name} is not supported`), `-${o.short}`);
    }
  }
  const ids = await t.throwsAsync(parseCommandLine(['dump', '-t', '1', '--ext-unix-sk=1234'], ctx));
  t.regex(ids!.message, /socket ids is not supported/);
});

test('unknown options and commands are usage errors naming them', async (t) => {
  const e = await t.throwsAsync(parseCommandLine(['dump', '-t', '1', '--no-such-option'], ctx));
  t.is((e as { code?: string }).code, 'USAGE');
  t.is(e!.message, 'unknown option --no-such-option');
  await t.throwsAsync(parseCommandLine(['check', '--tree', '1'], ctx), { message: 'unknown option --tree' });
  await t.throwsAsync(parseCommandLine(['restore', '-t', '1'], ctx), { message: /unknown command restore/ });
});

test('operands: show takes one path, the other commands none', async (t) => {
  await t.throwsAsync(parseCommandLine(['show'], ctx), { message: 'show needs a FILE or DIR' });
  await t.throwsAsync(parseCommandLine(['show', 'a', 'b'], ctx), { message: 'unexpected argument b' });
  await t.throwsAsync(parseCommandLine(['dump', '-t', '1', 'extra'], ctx), { message: 'unexpected argument extra' });
  await t.throwsAsync(parseCommandLine(['check', 'x'], ctx), { message: 'unexpected argument x' });
  await t.throwsAsync(parseCommandLine(['dump', '-t', '1', '--frob', '--no-bar'], ctx), { message: 'unknown options --frob, --no-bar' });
});

test('--help and --version answer without running anything', async (t) => {
  const help = (await parseCommandLine(['--help'], ctx)) as Extract<Invocation, { command: 'help' }>;
  for (const c of ['dump', 'pre-dump', 'check', 'show', 'page-server', 'report', 'completion']) t.true(help.text.includes(`tsdump ${c}`), c);
  const dumpHelp = (await parseCommandLine(['dump', '--help'], ctx)) as Extract<Invocation, { command: 'help' }>;
  t.regex(dumpHelp.text, /-t, --tree/);
  t.regex(dumpHelp.text, /--action-script/);
  // refused options are not offered as options, but named as refused
  t.notRegex(dumpHelp.text, /^ +--lazy-pages/m);
  t.regex(dumpHelp.text.replace(/\n/g, ' '), /CRIU options tsdump refuses \(not implemented yet; refused rather than ignored\): --root, .*--lazy-pages,/);
  t.is(((await parseCommandLine(['dump', '-h'], ctx)) as Extract<Invocation, { command: 'help' }>).text, dumpHelp.text);
  t.like(await parseCommandLine(['--version'], { ...ctx, version: '9.9.9' }), { command: 'help', text: 'tsdump 9.9.9\n' });
  // check has no images dir: its log goes to the current directory unless -W says otherwise
  const checkHelp = (await parseCommandLine(['check', '--help'], ctx)) as Extract<Invocation, { command: 'help' }>;
  t.regex(checkHelp.text, /-W, --work-dir +directory for the log file \(default: the current directory\)/);
  t.regex(dumpHelp.text, /-W, --work-dir +directory for the log and stats \(default: images dir\)/);
});

test('every command\'s --help has its examples and the refused criu options, and every example parses', async (t) => {
  for (const [name, examples] of Object.entries(EXAMPLES)) {
    const help = (await parseCommandLine([name, '--help'], ctx)) as Extract<Invocation, { command: 'help' }>;
    t.true(examples.length > 0, name);
    for (const [line, what] of examples) {
      t.true(help.text.includes(`  ${line}\n      ${what}\n`), `${name} --help shows ${line}`);
      // the example is a command line tsdump accepts (a shell redirection aside)
      const words = line.replace(/ > \S+$/, '').split(' ').slice(1);
      const inv = await parseCommandLine(words, ctx);
      t.is(inv.command as string, name, line);
    }
    for (const o of UNSUPPORTED_OPTIONS) t.true(help.text.replace(/\n/g, ' ').includes(`--${o.name}`), `${name} --help names --${o.name}`);
  }
});

test('man/tsdump.1 is what the command-line tables give (npm run gen:man), and groff reads it without a warning', (t) => {
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const committed = readFileSync(join(ROOT, 'man', 'tsdump.1'), 'utf8');
  t.is(committed, manPage(version), 'man/tsdump.1 is stale: run npm run gen:man');
  for (const c of Object.keys(EXAMPLES)) t.true(committed.includes(`.SS "tsdump ${c.replace("-", "\\-")} `), c);
  const rendered = execFileSync('groff', ['-man', '-Tutf8', '-ww', '-z', join(ROOT, 'man', 'tsdump.1')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  t.is(rendered, '');
  // (grotty draws bold and underline by overstriking: drop the overstruck characters)
  const text = execFileSync('groff', ['-man', '-Tascii', '-ww', join(ROOT, 'man', 'tsdump.1')], { encoding: 'utf8' }).replace(/.\x08/g, '');
  t.regex(text, /REFUSED CRIU OPTIONS/);
  t.regex(text.replace(/\s+/g, ' '), /tsdump dump -t 1234 -D \/tmp\/ckpt checkpoint the tree rooted at 1234/);
});

test('bash completion from yargs: commands, each command\'s options (never a refused one), the shells', async (t) => {
  const bin = mkdtempSync(join(tmpdir(), 'tsdump-completion-'));
  t.teardown(() => rmSync(bin, { recursive: true, force: true }));
  (await import('node:fs')).writeFileSync(join(bin, 'tsdump'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} "$@"\n`, { mode: 0o755 });
  const script = await cli(['completion', 'bash']);
  t.is(script.code, 0);
  t.regex(script.stdout, /^###-begin-tsdump-completions-###/);
  // bash itself runs the script's function, as it would on TAB
  const complete = (words: string[]): string =>
    execFileSync('bash', ['-c', `source <(tsdump completion bash); COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _tsdump_yargs_completions; echo "\${COMPREPLY[*]}"`, 'bash', ...words], {
      encoding: 'utf8',
      env: { PATH: `${bin}:${process.env.PATH}`, HOME: '/nonexistent-home' },
    }).trim();
  t.is(complete(['tsdump', '']), 'dump pre-dump check show page-server stop-tracking report completion');
  t.is(complete(['tsdump', 'pre']), 'pre-dump');
  t.is(complete(['tsdump', 'dump', '--tr']), '--tree --track-mem');
  t.is(complete(['tsdump', 'dump', '-t', '1', '--leave']), '--leave-running --leave-stopped');
  t.is(complete(['tsdump', 'dump', '--lazy']), '', 'refused options are not offered');
  t.false(complete(['tsdump', 'dump', '-']).split(' ').some((w) => ['-r', '-M', '-J', '-S', '--root'].includes(w)), 'nor their short forms');
  t.is(complete(['tsdump', 'show', '/tmp', '--m']), '--mems');
  t.is(complete(['tsdump', 'completion', 'z']), 'zsh');

  // zsh's script passes COMP_LINE and gets each candidate with its description
  const zsh = await cli(['completion', 'zsh']);
  t.regex(zsh.stdout, /^#compdef tsdump\n/);
  t.regex(zsh.stdout, /_describe 'values' reply/);
  const answers = await cli(['--get-yargs-completions', 'tsdump', 'dump', '--tr'], { COMP_LINE: 'tsdump dump --tr' });
  t.true(answers.stdout.split('\n').includes('--tree:PID of the root of the tree to dump'), answers.stdout);
  t.regex((await cli(['completion', 'fish'])).stderr, /^tsdump: completion: name one shell, bash or zsh/);
});

// --- the built CLI ------------------------------------------------------------------------------

test('CLI: an unsupported option exits 1 with one line naming it', async (t) => {
  const r = await cli(['dump', '-t', '1', '--lazy-pages']);
  t.is(r.code, 1);
  t.is(r.stderr, 'tsdump: option --lazy-pages is not supported by tsdump yet\n');
  t.is(r.stdout, '');
});

test('CLI: an unknown option exits 1 with one line, no help text and no stack', async (t) => {
  const r = await cli(['dump', '-t', '1', '--frobnicate']);
  t.is(r.code, 1);
  t.is(r.stderr, 'tsdump: unknown option --frobnicate\n');
  t.false(r.stderr.includes('    at '));
});

test('CLI: no command, or an unknown one, exits 1', async (t) => {
  const none = await cli([]);
  t.is(none.code, 1);
  t.regex(none.stderr, /^tsdump: name a command: dump, pre-dump, check, show, page-server/);
  const bad = await cli(['restore']);
  t.is(bad.code, 1);
  t.regex(bad.stderr, /^tsdump: unknown command restore/);
});

test('CLI: --help exits 0 on stdout', async (t) => {
  const r = await cli(['--help']);
  t.is(r.code, 0);
  t.regex(r.stdout, /tsdump dump/);
  t.is(r.stderr, '');
});

test('CLI: --help and --version never load the native core; a command that needs it says so in one line', async (t) => {
  // the napi loader tries this path alone: no native core can load
  const env = { NAPI_RS_NATIVE_LIBRARY_PATH: '/nonexistent/tsdump.node' };
  for (const args of [['--version'], ['--help'], ['dump', '--help'], ['show', '--help']]) {
    const r = await cli(args, env);
    t.is(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    t.is(r.stderr, '');
  }
  const r = await cli(['check'], env);
  t.is(r.code, 1);
  t.regex(r.stderr, /^tsdump: the native core for linux-\w+-gnu is missing: npm install tsdump-linux-\w+-gnu@[\d.]+ \(.*\)\n$/);
});

test('CLI: options from CRIU_CONFIG_FILE are applied (an unsupported one is refused by name)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tsdump-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const conf = join(dir, 'criu.conf');
  (await import('node:fs')).writeFileSync(conf, '# from a config file\nlazy-pages\n');
  const r = await cli(['dump', '-t', '1'], { CRIU_CONFIG_FILE: conf });
  t.is(r.code, 1);
  t.is(r.stderr, `tsdump: ${conf}:2: option --lazy-pages is not supported by tsdump yet\n`);
});

test('CLI: show of a missing path is one line and exit 1', async (t) => {
  const r = await cli(['show', '/nonexistent/dir']);
  t.is(r.code, 1);
  t.regex(r.stderr, /^tsdump: .*nonexistent.*\n$/);
});

// --- --display-stats ---------------------------------------------------------------------------

test('--display-stats prints the stats in criu\'s words', (t) => {
  const text = formatDumpStats({
    timings: { freezingTime: 120, frozenTime: 5000, memdumpTime: 300, memwriteTime: 200 },
    counters: { pagesScanned: 300, pagesSkippedParent: 0, pagesWritten: 255, pagesLazy: 0 },
  });
  t.is(
    text,
    [
      'Displaying dump stats:',
      'Freezing time: 120 us',
      'Frozen time: 5000 us',
      'Memory dump time: 300 us',
      'Memory write time: 200 us',
      'IRMAP resolve time: 0 us',
      'Memory pages scanned: 300 (0x12c)',
      'Memory pages skipped from parent: 0 (0x0)',
      'Memory pages written: 255 (0xff)',
      'Lazy memory pages: 0 (0x0)',
      '',
    ].join('\n'),
  );
});

// --- progress display --------------------------------------------------------------------------

function fakeStream(isTTY: boolean) {
  const chunks: string[] = [];
  return { isTTY, columns: 80, chunks, write: (s: string) => chunks.push(s) };
}

test('progress: draws stage, bytes of total, rate and time left on a TTY, overwriting one line', (t) => {
  let now = 0;
  const s = fakeStream(true);
  const d = ProgressDisplay.create(s, { now: () => now, intervalMs: 100 })!;
  t.truthy(d);
  d.update({ stage: 'freezing' });
  now = 50;
  d.update({ stage: 'dump task 7', pid: 7, pagesTotal: 1000, pagesWritten: 0 });
  now = 1050;
  d.update({ pid: 7, pagesWritten: 256 }); // 256 pages = 1 MiB in 1 s; 744 pages left at that rate
  now = 1060;
  d.update({ pid: 7, pagesWritten: 300 }); // throttled: less than 100 ms later
  d.update({ pid: 8, pagesTotal: 10, pagesWritten: 1 }); // the tree's next task, copied ahead: drawn at once, named
  d.update({ stage: 'dump task 8' }); // its own stage keeps its count
  d.update({ stage: 'dump pstree' }); // a later stage does not
  d.finish();
  t.deepEqual(s.chunks, [
    '\r\x1b[2Kfreezing',
    '\r\x1b[2Kdump task 7  0 B of 3.9 MiB (0%)',
    '\r\x1b[2Kdump task 7  1.0 MiB of 3.9 MiB (25%)  1.0 MiB/s  2.9 s left',
    '\r\x1b[2Kdump task 7  task 8: 4.0 KiB of 40.0 KiB (10%)',
    '\r\x1b[2Kdump task 8  4.0 KiB of 40.0 KiB (10%)',
    '\r\x1b[2Kdump pstree',
    '\r\x1b[2K',
  ]);
  t.true(s.chunks.every((c) => !c.includes('\n')));
});

test('progress: nothing at all when the stream is not a TTY, --json is on or --progress none', (t) => {
  t.is(ProgressDisplay.create(fakeStream(false)), undefined);
  t.is(ProgressDisplay.create(fakeStream(true), { json: true }), undefined);
  t.is(ProgressDisplay.create(fakeStream(true), { mode: 'none' }), undefined);
  t.is(ProgressDisplay.create({ write: () => true }), undefined);
});

test('progress json: one object per line, on a pipe too; a task\'s last count is never throttled away', (t) => {
  let now = 0;
  const s = fakeStream(false);
  const d = ProgressDisplay.create(s, { mode: 'json', now: () => now, intervalMs: 100 })!;
  d.update({ stage: 'dump task 7', pid: 7, pagesTotal: 1000, pagesWritten: 0 });
  now = 1000;
  d.update({ pid: 7, pagesWritten: 256 });
  now = 1010;
  d.update({ pid: 7, pagesWritten: 999 }); // throttled
  d.update({ pid: 7, pagesWritten: 1000 }); // the end of the copy: written at once
  d.finish();
  t.deepEqual(
    s.chunks.map((c) => JSON.parse(c) as unknown),
    [
      { time: 0, stage: 'dump task 7', pid: 7, bytes: 0, totalBytes: 4096000 },
      { time: 1, stage: 'dump task 7', pid: 7, bytes: 1048576, totalBytes: 4096000, bytesPerSec: 1048576, secondsLeft: 3 },
      { time: 1.01, stage: 'dump task 7', pid: 7, bytes: 4096000, totalBytes: 4096000, bytesPerSec: 4055446, secondsLeft: 0 },
    ],
  );
  t.true(s.chunks.every((c) => c.endsWith('\n') && !c.slice(0, -1).includes('\n')));
});

test('progress: the line is cut to the terminal width', (t) => {
  const s = { ...fakeStream(true), columns: 20 };
  const d = ProgressDisplay.create(s)!;
  d.update({ stage: 'a very long stage name that does not fit' });
  t.is(s.chunks[0], '\r\x1b[2K' + 'a very long stage name'.slice(0, 19));
  t.is(renderProgressLine('x', 5, undefined, undefined), 'x  20.0 KiB');
});

// --- log --------------------------------------------------------------------------------------

function logLines(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter(Boolean);
}

test('log file: criu levels filter lines, every line is timestamped, the file is owner-only', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tsdump-log-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'logs'));
  for (const [level, expected] of [
    [0, ['m']],
    [1, ['m', 'Error: e']],
    [2, ['m', 'Error: e', 'Warn: w']],
    [3, ['m', 'Error: e', 'Warn: w', 'i']],
    [4, ['m', 'Error: e', 'Warn: w', 'i', 'd']],
  ] as const) {
    const log = openLog({ file: `logs/v${level}.log`, workDir: dir, verbosity: level });
    log.msg('m');
    log.error('e');
    log.warn('w');
    log.info('i');
    log.debug('d');
    log.close();
    const file = join(dir, 'logs', `v${level}.log`);
    t.is(log.file, file);
    const lines = logLines(file);
    t.true(lines.every((l) => /^\(\d{2}\.\d{6}\) /.test(l)), `v${level}: ${lines.join('|')}`);
    t.deepEqual(lines.map((l) => l.slice(12)), [...expected], `v${level}`);
    t.is(statSync(file).mode & 0o777, 0o600);
  }
});

test('log to stderr: timestamps only from -v3 up, as criu does on a terminal', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tsdump-log-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const plain = join(dir, 'plain');
  const fd = openSync(plain, 'w');
  const quiet = openLog({ verbosity: 2, stderrFd: fd });
  quiet.error('bad');
  quiet.info('hidden');
  const verbose = openLog({ verbosity: 3, stderrFd: fd });
  verbose.info('shown');
  closeSync(fd);
  const lines = logLines(plain);
  t.is(lines[0], 'Error: bad');
  t.regex(lines[1]!, /^\(\d{2}\.\d{6}\) shown$/);
  t.is(lines.length, 2);
  t.is(formatLogLine(61_000_042n, 1, 'x\n'), '(61.000042) Error: x\n');
});

test('log file that cannot be created is an IMAGE_IO error naming it', (t) => {
  const err = t.throws(() => openLog({ file: 'x.log', workDir: '/nonexistent-work-dir' }));
  t.is((err as { code?: string }).code, 'IMAGE_IO');
  t.is(err!.message, 'log file /nonexistent-work-dir/x.log: images dir /nonexistent-work-dir: does not exist');
});

// --- show --------------------------------------------------------------------------------------

test('CLI show: an images directory (whole and --tree) and one image (--pretty), from a reference criu dump', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tsdump-show-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const child = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' });
  const pid = child.pid!;
  t.teardown(() => {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  });
  await exec('/opt/criu-ref/bin/criu', ['dump', '-t', String(pid), '-D', dir, '-o', 'dump.log']);

  const whole = await cli(['show', dir]);
  t.is(whole.code, 0);
  t.regex(whole.stdout, new RegExp(`^ +${pid} sleep: running, 1 thread, \\d+ vmas, .* mapped, \\d+ pages dumped, \\d+ fds$`, 'm'));
  t.regex(whole.stdout, /^stats: freezing /m);
  const tree = await cli(['show', dir, '--tree']);
  t.is(tree.code, 0);
  t.is(tree.stdout, `    PID   PGID    SID   COMM\n${String(pid).padStart(7)}${String(pid).padStart(7)}${String(pid).padStart(7)}   sleep\n`);

  const img = await cli(['show', join(dir, 'pstree.img'), '--pretty']);
  t.is(img.code, 0);
  const doc = JSON.parse(img.stdout) as { magic: string; entries: { pid: number }[] };
  t.is(doc.magic, 'PSTREE');
  t.is(doc.entries[0]!.pid, pid);

  const wrong = await cli(['show', join(dir, 'pstree.img'), '--fds']);
  t.is(wrong.code, 1);
  t.is(wrong.stderr, 'tsdump: show --fds needs an images directory, not a file\n');
  const json = await cli(['show', dir, '--json']);
  t.like(JSON.parse(json.stdout), { dir, kind: 'dump', verdict: 'complete', processes: [{ pid, comm: 'sleep' }] });
});

test('progress under a real pseudo-terminal (script -qc) draws; through a pipe or with --json it does not', async (t) => {
  await holdPtys(t);
  const dir = mkdtempSync(join(tmpdir(), 'tsdump-pty-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const demo = join(dir, 'demo.mjs');
  const progressUrl = new URL('../dist/progress.js', import.meta.url).href;
  (await import('node:fs')).writeFileSync(
    demo,
    `import { ProgressDisplay } from ${JSON.stringify(progressUrl)};\n` +
      `const d = ProgressDisplay.create(process.stderr, { json: process.argv.includes('--json'), intervalMs: 0 });\n` +
      `d?.update({ stage: 'dumping memory', pagesTotal: 100, pagesWritten: 0 });\n` +
      `d?.update({ pagesWritten: 50 });\n` +
      `d?.finish();\n` +
      `process.stdout.write('done\\n');\n`,
  );
  const cmd = (extra: string) => `${process.execPath} ${demo} ${extra}`;
  const pty = await exec('script', ['-qc', cmd(''), '/dev/null']);
  t.regex(pty.stdout, /\r\x1b\[2Kdumping memory {2}0 B of 400\.0 KiB \(0%\)/);
  t.regex(pty.stdout, /\r\x1b\[2Kdumping memory {2}200\.0 KiB of 400\.0 KiB \(50%\)/);
  t.regex(pty.stdout, /\r\x1b\[2Kdone\r?\n$/); // erased before the result is printed
  const ptyJson = await exec('script', ['-qc', cmd('--json'), '/dev/null']);
  t.is(ptyJson.stdout.replace(/\r/g, ''), 'done\n');
  const piped = await exec(process.execPath, [demo]);
  t.is(piped.stdout, 'done\n');
  t.is(piped.stderr, '');
});

// --- the CLI over a real dump ---------------------------------------------------------------------

/** A `sleep` in its own session, killed by PID at teardown. */
function sleeper(t: { teardown(fn: () => void): void }): number {
  const child = spawn('sleep', ['600'], { detached: true, stdio: 'ignore' });
  const pid = child.pid!;
  t.teardown(() => {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  });
  return pid;
}

async function waitGoneOrZombie(pid: number): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    const s = procState(pid);
    if (s === undefined || s === 'Z') return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

function scratch(t: { teardown(fn: () => void): void }, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('CLI dump --json: one JSON document with images dir, tasks, pages and timings', async (t) => {
  const pid = sleeper(t);
  const dir = join(scratch(t, 'tsdump-json-'), 'imgs');
  const r = await cli(['dump', '-t', String(pid), '-D', dir, '--json']);
  t.is(r.code, 0, r.stderr);
  t.is(r.stderr, '');
  t.is(r.stdout.split('\n').filter(Boolean).length, 1);
  const doc = JSON.parse(r.stdout) as Record<string, unknown> & {
    tasks: { pid: number; ppid: number; threads: number[] }[];
    pages: Record<string, number>;
    timings: Record<string, number>;
  };
  t.deepEqual(Object.keys(doc), ['command', 'imagesDir', 'tasks', 'pages', 'timings', 'released']);
  t.like(doc, { command: 'dump', imagesDir: dir, released: 'killed' });
  t.deepEqual(doc.tasks, [{ pid, ppid: process.pid, threads: [pid] }]);
  t.deepEqual(Object.keys(doc.pages), ['scanned', 'written', 'zero', 'skippedParent', 'lazy']);
  t.true(doc.pages.written! > 0 && doc.pages.written! <= doc.pages.scanned!);
  for (const k of ['freezingTime', 'frozenTime', 'memdumpTime', 'memwriteTime', 'totalTime']) t.true(Number.isInteger(doc.timings[k]), k);
  t.true(existsSync(join(dir, 'inventory.img')));
  t.true(await waitGoneOrZombie(pid), 'the dumped tree is killed by default');
});

test('CLI dump --display-stats prints the numbers of the stats-dump image, criu\'s way; -R leaves the target running', async (t) => {
  const pid = sleeper(t);
  const dir = scratch(t, 'tsdump-stats-');
  const r = await cli(['dump', '-t', String(pid), '-D', dir, '--display-stats', '-R']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^Displaying dump stats:\nFreezing time: \d+ us\nFrozen time: \d+ us\n/);
  const written = Number(/^Memory pages written: (\d+) \(0x[0-9a-f]+\)$/m.exec(r.stdout)?.[1]);
  const decoded = JSON.parse((await exec('/opt/criu-ref/bin/crit', ['decode', '-i', join(dir, 'stats-dump')])).stdout) as {
    entries: { dump: { pages_written: number; freezing_time: number } }[];
  };
  t.is(written, decoded.entries[0]!.dump.pages_written);
  t.regex(r.stdout, new RegExp(`^Freezing time: ${decoded.entries[0]!.dump.freezing_time} us$`, 'm'));
  t.is(await settledState(pid), 'S', 'left running (sleeping), not stopped');
});

test('CLI dump -o -v4: the log file in the images dir has timestamped stage lines', async (t) => {
  const pid = sleeper(t);
  const dir = join(scratch(t, 'tsdump-dumplog-'), 'imgs');
  const r = await cli(['dump', '-t', String(pid), '-D', dir, '-o', 'dump.log', '-v4', '-R']);
  t.is(r.code, 0, r.stderr);
  const log = join(dir, 'dump.log');
  t.is(statSync(log).mode & 0o777, 0o600);
  const lines = readFileSync(log, 'utf8').trim().split('\n');
  t.true(lines.every((l) => /^\(\d{2}\.\d{6}\) /.test(l)), lines.join('\n'));
  // the header first (dump-log.test.ts checks it), then the run
  t.regex(lines[0]!, /\) tsdump version /);
  t.true(lines.some((l) => new RegExp(`tsdump dump of pid ${pid} into ${dir}$`).test(l)));
  t.true(lines.some((l) => l.endsWith(' collect pstree')));
  t.regex(lines.at(-1)!, /Dumping finished successfully$/);
});

test('CLI dump: an option the flow does not act on yet is refused by name and the target is untouched', async (t) => {
  const pid = sleeper(t);
  const dir = scratch(t, 'tsdump-refuse-');
  const r = await cli(['dump', '-t', String(pid), '-D', dir, '--pidfile', join(dir, 'pid')]);
  t.is(r.code, 1);
  t.is(r.stderr, 'tsdump: option --pidfile is not supported by tsdump dump yet\n');
  t.is(await settledState(pid), 'S');
  t.false(existsSync(join(dir, 'inventory.img')));
  t.is((await cli(['dump', '-t', String(pid), '-D', dir, '-R', '--no-tcp-established'])).code, 0, 'false is the default: accepted');
});

test('CLI dump progress: drawn under a pseudo-terminal, absent in pipes and with --json', async (t) => {
  await holdPtys(t);
  const pid = sleeper(t);
  const base = scratch(t, 'tsdump-ptydump-');
  const cmd = (dir: string, extra: string) => `${process.execPath} ${CLI} dump -t ${pid} -D ${join(base, dir)} -R ${extra}`;
  const pty = await exec('script', ['-qc', cmd('a', ''), '/dev/null']);
  t.regex(pty.stdout, /\r\x1b\[2Kcollect pstree/);
  t.regex(pty.stdout, new RegExp(`\\r\\x1b\\[2Kdump task ${pid}`));
  t.regex(pty.stdout, /\r\x1b\[2K$/, 'the line is erased at the end');
  const ptyJson = await exec('script', ['-qc', cmd('b', '--json'), '/dev/null']);
  t.false(ptyJson.stdout.includes('\x1b'));
  t.is((JSON.parse(ptyJson.stdout) as { released: string }).released, 'running');
  const piped = await cli(['dump', '-t', String(pid), '-D', join(base, 'c'), '-R']);
  t.is(piped.code, 0);
  t.is(piped.stdout, '');
  t.is(piped.stderr, '');
  t.is(await settledState(pid), 'S');
});

test('CLI page-server: --status-fd says ready, criu dump --page-server sends to it, --json reports the images', async (t) => {
  const { createServer } = await import('node:net');
  const port = await new Promise<number>((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    });
  });
  const base = scratch(t, 'tsdump-ps-');
  const pidfile = join(base, 'ps.pid');
  const server = spawn(
    process.execPath,
    [CLI, 'page-server', '-D', join(base, 'recv'), '--address', '127.0.0.1', '--port', String(port), '--status-fd', '3', '--pidfile', pidfile, '--json'],
    { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] },
  );
  t.teardown(() => server.kill('SIGKILL'));
  let stdout = '';
  let stderr = '';
  server.stdout!.on('data', (d: Buffer) => (stdout += d));
  server.stderr!.on('data', (d: Buffer) => (stderr += d));
  const ready = await new Promise<Buffer>((res, rej) => {
    (server.stdio[3] as NodeJS.ReadableStream).once('data', res);
    server.once('exit', () => rej(new Error(`page-server exited: ${stderr}`)));
  });
  t.deepEqual([...ready], [0]);
  t.is(readFileSync(pidfile, 'utf8'), `${server.pid}\n`);

  const pid = sleeper(t);
  mkdirSync(join(base, 'dump'));
  await exec('/opt/criu-ref/bin/criu', ['dump', '-t', String(pid), '-D', join(base, 'dump'), '-o', 'dump.log', '--page-server', '--address', '127.0.0.1', '--port', String(port)]);
  const code = await new Promise<number | null>((res) => (server.exitCode !== null ? res(server.exitCode) : server.once('exit', (c) => res(c))));
  t.is(code, 0, stderr);
  const doc = JSON.parse(stdout) as { command: string; images: { kind: string; id: number; pages: number }[] };
  t.is(doc.command, 'page-server');
  t.true(doc.images.some((i) => i.kind === 'pid' && i.id === pid && i.pages > 0), stdout);
});

test('CLI page-server --daemon is refused by name', async (t) => {
  const r = await cli(['page-server', '-D', '/tmp', '--port', '1', '--daemon']);
  t.is(r.code, 1);
  t.is(r.stderr, 'tsdump: option --daemon is not supported by tsdump yet\n');
});
