// The published shape: `npm run pack:local` writes the main package and this machine's platform
// package as pack/*.tgz; installed into an empty folder with no Rust toolchain on PATH, they
// give a working `npx tsdump` whose native core comes from the platform package.
import test from 'ava';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { arch, tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const PLATFORM = arch() === 'x64' ? 'linux-x64-gnu' : 'linux-arm64-gnu';

/** PATH without any Rust toolchain directory. */
function pathWithoutRust(): string {
  return (process.env.PATH ?? '')
    .split(delimiter)
    .filter((d) => d && !existsSync(join(d, 'cargo')) && !existsSync(join(d, 'rustc')))
    .join(delimiter);
}

function tarList(tgz: string): string[] {
  return execFileSync('tar', ['-tzf', tgz], { encoding: 'utf8' }).trim().split('\n');
}

test('pack:local tarballs install into an empty folder and npx tsdump works without Rust; without the platform package it says what to install', async (t) => {
  execFileSync('npm', ['run', 'pack:local'], { cwd: ROOT, stdio: 'ignore' });
  const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  const main = join(ROOT, 'pack', `tsdump-${version}.tgz`);
  const platform = join(ROOT, 'pack', `tsdump-${PLATFORM}-${version}.tgz`);
  t.deepEqual(readdirSync(join(ROOT, 'pack')).filter((f) => f.endsWith('.tgz')).sort(), [
    `tsdump-${PLATFORM}-${version}.tgz`,
    `tsdump-${version}.tgz`,
  ].sort());

  // the main package carries JavaScript and the loader, never a binary; the platform one the binary
  const mainFiles = tarList(main);
  t.true(mainFiles.includes('package/dist/cli.js'));
  t.true(mainFiles.includes('package/native/index.cjs'));
  t.false(mainFiles.some((f) => f.endsWith('.node')));
  t.deepEqual(tarList(platform).sort(), ['package/README.md', 'package/package.json', `package/tsdump.${PLATFORM}.node`].sort());
  const packedPkg = JSON.parse(execFileSync('tar', ['-xzOf', main, 'package/package.json'], { encoding: 'utf8' })) as {
    optionalDependencies: Record<string, string>;
    scripts: Record<string, string>;
  };
  t.is(packedPkg.optionalDependencies[`tsdump-${PLATFORM}`], version);
  t.is(packedPkg.scripts.prepare, undefined);

  const dir = mkdtempSync(join(tmpdir(), 'tsdump-pack-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'empty-consumer', private: true }));
  const env = { ...process.env, PATH: pathWithoutRust(), npm_config_update_notifier: 'false' };
  await t.throwsAsync(exec('cargo', ['--version'], { env }), undefined, 'a Rust toolchain is still on PATH');

  await exec('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', main, platform], { cwd: dir, env });
  t.true(existsSync(join(dir, 'node_modules', `tsdump-${PLATFORM}`, `tsdump.${PLATFORM}.node`)));
  t.false(readdirSync(join(dir, 'node_modules', 'tsdump', 'native')).some((f) => f.endsWith('.node')));

  const help = await exec('npx', ['--no-install', 'tsdump', '--help'], { cwd: dir, env });
  t.regex(help.stdout, /tsdump dump/);
  t.regex(help.stdout, /tsdump check/);

  // the native core loads from the platform package: a kernel probe answers
  const probe = await exec('npx', ['--no-install', 'tsdump', 'check', '--feature', 'vmsplice', '--json'], {
    cwd: dir,
    env: { ...env, TSDUMP_KERNDAT_CACHE: join(dir, 'kerndat.json') },
  });
  const report = JSON.parse(probe.stdout) as { features: { name: string; supported: boolean }[] };
  t.deepEqual(report.features.map((f) => f.name), ['vmsplice']);

  const refused = await exec('npx', ['--no-install', 'tsdump', 'dump', '-t', '1', '--lazy-pages'], { cwd: dir, env }).catch(
    (e: { code: number; stderr: string }) => e,
  );
  t.is((refused as { code: number }).code, 1);
  t.is((refused as { stderr: string }).stderr, 'tsdump: option --lazy-pages is not supported by tsdump yet\n');

  // Without its platform package (installed with --omit=optional): --help and --version need no
  // native core, and a command that does says in one line which package to install.
  const bare = mkdtempSync(join(tmpdir(), 'tsdump-pack-'));
  t.teardown(() => rmSync(bare, { recursive: true, force: true }));
  writeFileSync(join(bare, 'package.json'), JSON.stringify({ name: 'empty-consumer', private: true }));
  await exec('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--omit=optional', main], { cwd: bare, env });
  t.false(existsSync(join(bare, 'node_modules', `tsdump-${PLATFORM}`)));
  t.regex((await exec('npx', ['--no-install', 'tsdump', '--help'], { cwd: bare, env })).stdout, /tsdump dump/);
  t.is((await exec('npx', ['--no-install', 'tsdump', '--version'], { cwd: bare, env })).stdout, `tsdump ${version}\n`);
  for (const args of [['check'], ['dump', '-t', '1', '-D', join(bare, 'images')]]) {
    const r = (await exec('npx', ['--no-install', 'tsdump', ...args], { cwd: bare, env }).catch((e: unknown) => e)) as { code: number; stderr: string };
    t.is(r.code, 1, args.join(' '));
    t.is(
      r.stderr,
      `tsdump: the native core for ${PLATFORM} is missing: npm install tsdump-${PLATFORM}@${version} (an optional dependency of tsdump, left out by --omit=optional)\n`,
    );
  }
});

test('pack:local --target: the other architecture\'s platform package, cross-compiled, carries a binary for that CPU', async (t) => {
  const other = arch() === 'x64' ? { name: 'aarch64', platform: 'linux-arm64-gnu', machine: 183 } : { name: 'x86_64', platform: 'linux-x64-gnu', machine: 62 };
  await exec('bash', ['scripts/pack-local.sh', '--target', other.name], { cwd: ROOT, maxBuffer: 1 << 24 });
  const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  const tgz = join(ROOT, 'pack', 'cross', `tsdump-${other.platform}-${version}.tgz`);
  const node = `package/tsdump.${other.platform}.node`;
  t.deepEqual(tarList(tgz).sort(), ['package/README.md', 'package/package.json', node].sort());
  const pkg = JSON.parse(execFileSync('tar', ['-xzOf', tgz, 'package/package.json'], { encoding: 'utf8' })) as { cpu: string[]; main: string };
  t.deepEqual(pkg.cpu, [other.platform === 'linux-arm64-gnu' ? 'arm64' : 'x64']);
  t.is(pkg.main, `tsdump.${other.platform}.node`);
  // An ELF shared object for that machine (e_machine 183 = EM_AARCH64, 62 = EM_X86_64), 64-bit,
  // little-endian: it cannot be loaded here, only checked.
  const elf = execFileSync('tar', ['-xzOf', tgz, node], { maxBuffer: 1 << 26 });
  t.deepEqual([...elf.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46]);
  t.is(elf[4], 2, 'ELFCLASS64');
  t.is(elf[5], 1, 'little-endian');
  t.is(elf.readUInt16LE(16), 3, 'ET_DYN');
  t.is(elf.readUInt16LE(18), other.machine);
  t.true(elf.includes(Buffer.from('napi_register_module_v1')), 'an N-API module');
});
