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

/** The dynamic symbols of an ELF object (readelf reads any architecture's). */
function dynamicSymbols(file: string): { name: string; version?: string; bind: string; undefined: boolean }[] {
  const out = execFileSync('readelf', ['-W', '--dyn-syms', file], { encoding: 'utf8' });
  return out
    .split('\n')
    .map((l) => /^\s*\d+: [0-9a-f]+\s+\d+\s+\S+\s+(\S+)\s+\S+\s+(\S+)\s+(\S+)/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null && m[3] !== '')
    .map((m) => {
      // name@VERSION (a reference) or name@@VERSION (a definition's default version)
      const [name, version] = m[3]!.split(/@@?/);
      return { name: name!, version, bind: m[1]!, undefined: m[2] === 'UND' };
    });
}

function needed(file: string): string[] {
  const out = execFileSync('readelf', ['-W', '-d', file], { encoding: 'utf8' });
  return [...out.matchAll(/\(NEEDED\)\s+Shared library: \[(.+)\]/g)].map((m) => m[1]!);
}

const glibcVersion = (v: string): number[] => v.replace('GLIBC_', '').split('.').map(Number);
const newerThan = (a: number[], b: number[]): boolean => (a[0]! - b[0]! || a[1]! - (b[1] ?? 0)) > 0;

/** musl's exports, from Debian's musl package (.ci/run installs it). */
const MUSL_LIBC = '/usr/lib/x86_64-linux-musl/libc.so';
const MUSL_LDSO = '/lib/ld-musl-x86_64.so.1';

/**
 * Every published platform package, built as pack:local publishes it (cargo-zigbuild, glibc 2.17
 * or musl): the package carries one .node for its CPU, and the .node needs nothing newer than
 * its C library baseline. glibc: every undefined symbol is N-API's (Node provides it), weak (the
 * Rust standard library probes those at run time), or versioned GLIBC_2.17 or older, so the file
 * loads on RHEL 7+, Debian 8+, Ubuntu 14.04+. musl: it links only musl's libc and needs nothing
 * musl does not export; the x86_64 one is also loaded by musl's own dynamic linker, which must
 * find everything but N-API.
 */
const RELEASES = [
  { target: 'x86_64', platform: 'linux-x64-gnu', cpu: 'x64', machine: 62, libc: 'glibc' },
  { target: 'aarch64', platform: 'linux-arm64-gnu', cpu: 'arm64', machine: 183, libc: 'glibc' },
  { target: 'x86_64-musl', platform: 'linux-x64-musl', cpu: 'x64', machine: 62, libc: 'musl' },
  { target: 'aarch64-musl', platform: 'linux-arm64-musl', cpu: 'arm64', machine: 183, libc: 'musl' },
] as const;

for (const r of RELEASES) {
  test.serial(`pack:local --target ${r.target}: ${r.platform} carries a ${r.cpu} binary that needs only ${r.libc === 'glibc' ? 'glibc 2.17' : "musl's libc"}`, async (t) => {
    t.timeout(20 * 60_000, 'a release build from scratch');
    await exec('bash', ['scripts/pack-local.sh', '--target', r.target], { cwd: ROOT, maxBuffer: 1 << 24 });
    const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    const tgz = join(ROOT, 'pack', 'cross', `tsdump-${r.platform}-${version}.tgz`);
    const node = `package/tsdump.${r.platform}.node`;
    t.deepEqual(tarList(tgz).sort(), ['package/README.md', 'package/package.json', node].sort());
    const pkg = JSON.parse(execFileSync('tar', ['-xzOf', tgz, 'package/package.json'], { encoding: 'utf8' })) as { cpu: string[]; libc: string[]; main: string };
    t.deepEqual(pkg.cpu, [r.cpu]);
    t.deepEqual(pkg.libc, [r.libc]);
    t.is(pkg.main, `tsdump.${r.platform}.node`);

    const dir = mkdtempSync(join(tmpdir(), 'tsdump-release-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    execFileSync('tar', ['-xzf', tgz, '-C', dir]);
    const file = join(dir, node);
    // An ELF shared object for that machine (e_machine 183 = EM_AARCH64, 62 = EM_X86_64), 64-bit,
    // little-endian, N-API.
    const elf = readFileSync(file);
    t.deepEqual([...elf.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46]);
    t.is(elf[4], 2, 'ELFCLASS64');
    t.is(elf[5], 1, 'little-endian');
    t.is(elf.readUInt16LE(16), 3, 'ET_DYN');
    t.is(elf.readUInt16LE(18), r.machine);
    const syms = dynamicSymbols(file);
    t.true(syms.some((s) => s.name === 'napi_register_module_v1' && !s.undefined), 'an N-API module');
    const wanted = syms.filter((s) => s.undefined && s.bind !== 'WEAK' && !s.name.startsWith('napi_'));
    t.true(wanted.length > 20, `${wanted.length} C library symbols`);

    if (r.libc === 'glibc') {
      const unversioned = wanted.filter((s) => !s.version).map((s) => s.name);
      t.deepEqual(unversioned, [], 'symbols the 2.17 stubs lack stay unversioned and fail to load on older glibc');
      const versions = [...new Set(wanted.map((s) => s.version!))].sort();
      const tooNew = versions.filter((v) => !v.startsWith('GLIBC_') || newerThan(glibcVersion(v), [2, 17]));
      t.deepEqual(tooNew, [], `symbol versions: ${versions.join(' ')}`);
      t.true(versions.includes('GLIBC_2.17') || versions.includes('GLIBC_2.2.5'), versions.join(' '));
      // ld-linux: glibc's dynamic loader itself (__tls_get_addr), wherever glibc is
      t.deepEqual(needed(file).filter((n) => !/^lib(c|m|dl|pthread|rt)\.so\.\d$|^libgcc_s\.so\.1$|^ld-linux-(x86-64|aarch64)\.so\.\d$/.test(n)), []);
    } else {
      t.deepEqual(needed(file), ['libc.so']);
      t.false(syms.some((s) => s.version?.startsWith('GLIBC')), 'no glibc symbol versions');
      const exported = new Set(dynamicSymbols(MUSL_LIBC).filter((s) => !s.undefined).map((s) => s.name));
      t.deepEqual(wanted.map((s) => s.name).filter((n) => !exported.has(n)), [], 'symbols musl does not export');
      if (r.cpu === 'x64') {
        // musl's dynamic linker resolves everything but N-API (which Node itself provides)
        const list = await exec(MUSL_LDSO, ['--list', file]).catch((e: { stdout: string; stderr: string }) => e);
        const missing = [...`${list.stdout}${list.stderr}`.matchAll(/Error relocating [^:]+: (\S+): symbol not found/g)].map((m) => m[1]!);
        t.true(missing.length > 20, 'N-API symbols are reported missing outside Node');
        t.deepEqual(missing.filter((n) => !n.startsWith('napi_')), []);
      }
    }
  });
}
