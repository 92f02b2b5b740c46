// `tsdump check` on this machine, against independent evidence: every answer of the Rust probes
// is compared with a fact obtained another way (another process, another interface, python's
// own syscalls, the kernel version where a feature's presence follows from it), never with a
// hard-coded yes/no.
import test, { type ExecutionContext } from 'ava';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { arch, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { check, kerndat, FEATURES, type FeatureResult } from '../src/check.js';
import { CAPABILITIES, privileges } from '../src/privileges.js';

const exec = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const CLI = join(ROOT, 'dist/cli.js');

function kernelAtLeast(major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release());
  if (!m) throw new Error(`cannot read kernel version from ${release()}`);
  const [maj, min] = [Number(m[1]), Number(m[2])];
  return maj > major || (maj === major && min >= minor);
}

function capEff(bit: number): boolean {
  const line = readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith('CapEff:'))!;
  return (BigInt('0x' + line.split(/\s+/)[1]) & (1n << BigInt(bit))) !== 0n;
}

// Python's own syscalls, in another process: kcmp, memfd, vmsplice, prctl(PR_SET_MM_MAP_SIZE),
// PTRACE_SEIZE of a forked child.
const PY_FACTS = `
import ctypes, json, os, platform, signal, time
libc = ctypes.CDLL(None, use_errno=True)
nr = {'x86_64': {'kcmp': 312}, 'aarch64': {'kcmp': 272}}[platform.machine()]
out = {}
out['kcmp'] = libc.syscall(nr['kcmp'], os.getpid(), os.getpid(), 1, 0, 0) == 0
try:
    os.close(os.memfd_create('check-test')); out['memfd'] = True
except OSError:
    out['memfd'] = False
class iovec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
buf = ctypes.create_string_buffer(4096)
r, w = os.pipe()
iov = iovec(ctypes.cast(buf, ctypes.c_void_p), 4096)
out['vmsplice'] = libc.vmsplice(w, ctypes.byref(iov), 1, 0) == 4096
size = ctypes.c_uint(0)
out['prctl_mm_map'] = libc.prctl(35, 15, ctypes.byref(size), 0, 0) == 0
pid = os.fork()
if pid == 0:
    time.sleep(30); os._exit(0)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
out['ptrace_seize'] = libc.ptrace(0x4206, pid, None, None) == 0
os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)
print(json.dumps(out))
`;

function pythonFacts(): Record<string, boolean> {
  return JSON.parse(execFileSync('python3', ['-c', PY_FACTS], { encoding: 'utf8' })) as Record<string, boolean>;
}

/** Freezes a real process through a fresh cgroup v2 and reads back "frozen 1". */
async function cgroupV2FreezeWorks(t: { teardown(fn: () => void): void }): Promise<boolean> {
  const mount = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .find((f) => f[2] === 'cgroup2')?.[1];
  if (!mount) return false;
  const dir = join(mount, `tsdump-check-test-${process.pid}`);
  mkdirSync(dir);
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  const pid = child.pid!;
  t.teardown(() => {
    try {
      writeFileSync(join(dir, 'cgroup.freeze'), '0');
    } catch {}
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  });
  try {
    if (!existsSync(join(dir, 'cgroup.freeze'))) return false;
    writeFileSync(join(dir, 'cgroup.procs'), String(pid));
    writeFileSync(join(dir, 'cgroup.freeze'), '1');
    let frozen = false;
    for (let i = 0; i < 100 && !frozen; i++) {
      frozen = /^frozen 1$/m.test(readFileSync(join(dir, 'cgroup.events'), 'utf8'));
      if (!frozen) await new Promise((r) => setTimeout(r, 20));
    }
    writeFileSync(join(dir, 'cgroup.freeze'), '0');
    return frozen;
  } finally {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
    await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r)));
    for (let i = 0; i < 50; i++) {
      try {
        rmdirSync(dir);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }
}

function tempCache(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'tsdump-kerndat-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'sub', 'kerndat.json');
}

async function features(t: { teardown(fn: () => void): void }): Promise<Map<string, FeatureResult>> {
  const kd = await kerndat({ cacheFile: tempCache(t) });
  return new Map(kd.features.map((f) => [f.name, f]));
}

test('every known feature is probed, with a detail and a one-line consequence', async (t) => {
  const kd = await kerndat({ cacheFile: tempCache(t) });
  t.deepEqual(kd.features.map((f) => f.name), Object.keys(FEATURES));
  for (const f of kd.features) {
    t.true(f.detail.length > 0, f.name);
    t.false(f.consequence.includes('\n'), f.name);
    t.is(f.consequence, f.supported ? FEATURES[f.name]!.yes : FEATURES[f.name]!.no);
  }
});

test('soft-dirty agrees with the "sd" VmFlag the kernel shows only when it tracks soft-dirty', async (t) => {
  const smaps = readFileSync('/proc/self/smaps', 'utf8');
  const expected = /^VmFlags:.*\bsd\b/m.test(smaps);
  t.is((await features(t)).get('mem_dirty_track')!.supported, expected);
});

test('PAGEMAP_SCAN and uffd async write-protect agree with the kernel version (both 6.7)', async (t) => {
  const f = await features(t);
  t.is(f.get('pagemap_scan')!.supported, kernelAtLeast(6, 7));
  // userfaultfd itself exists iff its sysctl does; write-protect async needs 6.7 and x86_64
  const uffd = existsSync('/proc/sys/vm/unprivileged_userfaultfd');
  t.is(f.get('uffd')!.supported, uffd);
  t.is(f.get('uffd_wp_async')!.supported, uffd && kernelAtLeast(6, 7) && arch() === 'x64');
});

test('ptrace requests agree with the kernel version that introduced them', async (t) => {
  const f = await features(t);
  t.is(f.get('get_rseq_conf')!.supported, kernelAtLeast(5, 13));
  t.is(f.get('ptrace_syscall_info')!.supported, kernelAtLeast(5, 3));
  t.is(f.get('ptrace_sigmask')!.supported, kernelAtLeast(3, 11));
  t.is(f.get('clone3_set_tid')!.supported, kernelAtLeast(5, 5));
});

test('capability-bound features agree with our effective capabilities', async (t) => {
  const f = await features(t);
  t.is(f.get('tcp_repair')!.supported, capEff(12)); // CAP_NET_ADMIN
  t.is(f.get('seccomp_suspend')!.supported, capEff(21)); // CAP_SYS_ADMIN
});

test('kcmp, memfd, vmsplice, PR_SET_MM_MAP and PTRACE_SEIZE agree with python doing the same syscalls', async (t) => {
  const f = await features(t);
  const py = pythonFacts();
  for (const name of ['kcmp', 'memfd', 'vmsplice', 'prctl_mm_map', 'ptrace_seize']) {
    t.is(f.get(name)!.supported, py[name] === true, name);
  }
});

test('time namespaces agree with unshare(1) creating one', async (t) => {
  let works: boolean;
  try {
    execFileSync('unshare', ['--time', 'true'], { stdio: 'ignore' });
    works = true;
  } catch {
    works = false;
  }
  t.is((await features(t)).get('timens')!.supported, works);
});

test('cgroup freezers: v1 agrees with /proc/mounts, v2 with really freezing a process', async (t) => {
  const f = await features(t);
  const v1 = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((l) => {
      const [, , type, opts] = l.split(' ');
      return type === 'cgroup' && (opts ?? '').split(',').includes('freezer');
    });
  t.is(f.get('cgroup_freezer_v1')!.supported, v1);
  t.is(f.get('cgroup_freezer_v2')!.supported, await cgroupV2FreezeWorks(t));
});

test('loginuid agrees with another process reading /proc/self/loginuid', async (t) => {
  let present: boolean;
  try {
    execFileSync('cat', ['/proc/self/loginuid'], { stdio: 'ignore' });
    present = true;
  } catch {
    present = false;
  }
  t.is((await features(t)).get('loginuid')!.supported, present);
});

test('the cache: written owner-only, reused, and dropped when boot id or kernel differ', async (t) => {
  const cacheFile = tempCache(t);
  const first = await kerndat({ cacheFile });
  t.false(first.fromCache);
  t.is(statSync(cacheFile).mode & 0o777, 0o600);
  t.is(statSync(join(cacheFile, '..')).mode & 0o777, 0o700);
  t.is(first.bootId, readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());

  const second = await kerndat({ cacheFile });
  t.true(second.fromCache);
  t.is(second.probedAt, first.probedAt);
  t.deepEqual(second.features, first.features);

  const stored = JSON.parse(readFileSync(cacheFile, 'utf8')) as { bootId: string; kernel: { release: string } };
  writeFileSync(cacheFile, JSON.stringify({ ...stored, bootId: '00000000-0000-0000-0000-000000000000' }));
  t.false((await kerndat({ cacheFile })).fromCache, 'another boot');
  t.true((await kerndat({ cacheFile })).fromCache);

  const again = JSON.parse(readFileSync(cacheFile, 'utf8')) as typeof stored;
  writeFileSync(cacheFile, JSON.stringify({ ...again, kernel: { ...again.kernel, release: '1.0.0' } }));
  t.false((await kerndat({ cacheFile })).fromCache, 'another kernel');

  writeFileSync(cacheFile, 'garbage');
  t.false((await kerndat({ cacheFile })).fromCache, 'unreadable cache');
  t.false((await kerndat({ cacheFile, refresh: true })).fromCache, 'refresh');
});

test('check(): required features decide ok; --all lists everything; --feature one', async (t) => {
  const cacheFile = tempCache(t);
  const basic = await check({ cacheFile });
  t.true(basic.features.every((f) => f.required));
  t.is(basic.ok, basic.features.every((f) => f.supported));
  const all = await check({ cacheFile, all: true });
  t.deepEqual(all.features.map((f) => f.name), Object.keys(FEATURES));
  const one = await check({ cacheFile, feature: 'pagemap_scan' });
  t.deepEqual(one.features.map((f) => f.name), ['pagemap_scan']);
  t.is(one.ok, kernelAtLeast(6, 7));
  await t.throwsAsync(check({ cacheFile, feature: 'warp_drive' }), { message: /unknown feature warp_drive/ });
});

test('CLI: check --all --json prints one JSON document; --feature exit status follows the answer', async (t) => {
  if (!existsSync(CLI)) throw new Error('dist/cli.js is missing: run npm run build:ts');
  const env = { PATH: process.env.PATH, TSDUMP_KERNDAT_CACHE: tempCache(t) };
  const r = await exec(process.execPath, [CLI, 'check', '--all', '--json'], { env });
  const doc = JSON.parse(r.stdout) as { ok: boolean; kernel: { release: string }; features: FeatureResult[] };
  t.is(doc.kernel.release, release());
  t.deepEqual(doc.features.map((f) => f.name), Object.keys(FEATURES));
  for (const f of doc.features) t.deepEqual(Object.keys(f).sort(), ['consequence', 'detail', 'name', 'required', 'supported']);

  const softDirty = /^VmFlags:.*\bsd\b/m.test(readFileSync('/proc/self/smaps', 'utf8'));
  const sd = await exec(process.execPath, [CLI, 'check', '--feature', 'mem_dirty_track'], { env }).then(
    (x) => ({ code: 0, out: x.stdout }),
    (e: { code: number; stdout: string }) => ({ code: e.code, out: e.stdout }),
  );
  t.is(sd.code, softDirty ? 0 : 1);
  t.regex(sd.out, new RegExp(`^mem_dirty_track\\s+${softDirty ? 'yes' : 'no '}`));

  const text = await exec(process.execPath, [CLI, 'check'], { env });
  t.regex(text.stdout, /Looks good\.\n$/);
  // -o FILE -W DIR: the same report in the log, criu-stamped
  const logDir = mkdtempSync(join(tmpdir(), 'tsdump-check-log-'));
  t.teardown(() => rmSync(logDir, { recursive: true, force: true }));
  await exec(process.execPath, [CLI, 'check', '-o', 'check.log', '-W', logDir], { env });
  const logged = readFileSync(join(logDir, 'check.log'), 'utf8');
  t.is(logged.replace(/^\(\d{2}\.\d{6}\) /gm, ''), text.stdout);

  const bad = await exec(process.execPath, [CLI, 'check', '--feature', 'warp_drive'], { env }).catch((e: { code: number; stderr: string }) => e);
  t.is((bad as { code: number }).code, 1);
  t.regex((bad as { stderr: string }).stderr, /^tsdump: unknown feature warp_drive; known: ptrace_seize, /);
});

// --- what this user may do ----------------------------------------------------------------------

const NOBODY = 65534;
const asNobody = (caps: string[] = []): string[] => [
  `--reuid=${NOBODY}`,
  `--regid=${NOBODY}`,
  '--clear-groups',
  `--inh-caps=${caps.length ? caps.map((c) => `+${c}`).join(',') : '-all'}`,
  ...(caps.length ? [`--ambient-caps=${caps.map((c) => `+${c}`).join(',')}`] : []),
];

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

function runAs(setpriv: string[], args: string[], home: string): Promise<Ran> {
  return exec('setpriv', [...setpriv, process.execPath, CLI, ...args], {
    env: { PATH: process.env.PATH, HOME: home, TSDUMP_KERNDAT_CACHE: join(home, 'kerndat.json') },
  }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: Ran) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

/**
 * A `sleep` running as `setpriv` makes it, holding no descriptor but 0-2 (one inherited from
 * whatever started the tests could belong to root, which the user could not reopen); killed in
 * teardown.
 */
function sleeper(t: ExecutionContext, setpriv: string[]): number {
  const closeAndSleep = "import os; os.closerange(3, 65536); os.execvp('sleep', ['sleep', '300'])";
  const child = spawn('setpriv', [...setpriv, '/usr/bin/python3', '-c', closeAndSleep], { stdio: 'ignore' });
  const pid = child.pid!;
  t.teardown(() => {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  });
  return pid;
}

async function running(pid: number, comm: string): Promise<void> {
  for (const deadline = Date.now() + 5000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 20))) {
    if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm) return;
  }
  throw new Error(`${pid} never became ${comm}`);
}

test('check as a user who cannot dump says so, and what it can do; each claim holds when tried', async (t) => {
  const home = mkdtempSync(join(tmpdir(), 'tsdump-nobody-'));
  execFileSync('chown', [`${NOBODY}:${NOBODY}`, home]);
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  const nobody = asNobody();

  const text = await runAs(nobody, ['check'], home);
  t.is(text.code, 1, 'a user who cannot dump is not told all is well');
  t.notRegex(text.stdout, /Looks good/);
  t.regex(text.stdout, new RegExp(`^this user: uid ${NOBODY}, without CAP_NET_BIND_SERVICE, CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_CHECKPOINT_RESTORE`, 'm'));
  t.regex(text.stdout, /^ {2}dump +no +a dump reads every mapping through \/proc\/PID\/map_files, which needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN$/m);
  t.regex(text.stdout, new RegExp(`^ {2}pre-dump +partly +only processes of uid ${NOBODY} `, 'm'));
  t.regex(text.stdout, /^ {2}show, report +yes /m);
  t.regex(text.stdout, /^This user cannot dump: .*map_files.* Run tsdump as root, or give it CAP_CHECKPOINT_RESTORE/m);
  const json = JSON.parse((await runAs(nobody, ['check', '--json'], home)).stdout) as {
    ok: boolean;
    privileges: { uid: number; canDump: boolean };
    features: { name: string; supported: boolean }[];
    memoryTracking: string;
  };
  t.like(json, { ok: false, privileges: { uid: NOBODY, canDump: false } });
  // the pre-dump below tracks with a user-mode-only userfaultfd, which this user may open
  const all = JSON.parse((await runAs(nobody, ['check', '--all', '--json'], home)).stdout) as typeof json;
  t.true(all.features.find((f) => f.name === 'uffd')?.supported, 'userfaultfd as the tracking opens it');
  t.is(all.memoryTracking, 'uffd-wp');

  // the claims, tried: no dump of its own process; a pre-dump of it; nothing of root's; show works
  // root's SysV segment in the namespace both share is not the user's to read, nor its tree's
  const segment = /(\d+)/.exec(execFileSync('ipcmk', ['-M', '4096', '-p', '0600'], { encoding: 'utf8' }))![1]!;
  t.teardown(() => execFileSync('ipcrm', ['-m', segment]));
  const own = sleeper(t, nobody);
  const roots = sleeper(t, []);
  await Promise.all([running(own, 'sleep'), running(roots, 'sleep')]);
  const dump = await runAs(nobody, ['dump', '-t', String(own), '-D', join(home, 'd'), '-R'], home);
  t.is(dump.code, 1);
  t.regex(dump.stderr, /EPERM.*map_files/);
  const pre = await runAs(nobody, ['pre-dump', '-t', String(own), '-D', join(home, 'p')], home);
  t.is(pre.code, 0, pre.stderr);
  const other = await runAs(nobody, ['pre-dump', '-t', String(roots), '-D', join(home, 'q')], home);
  t.is(other.code, 1);
  t.regex(other.stderr, new RegExp(`${roots}`));
  t.is((await runAs(nobody, ['show', join(home, 'p')], home)).code, 0);

  // with CAP_CHECKPOINT_RESTORE the same user dumps its own processes, and check says so
  const cr = asNobody(['checkpoint_restore']);
  const granted = await runAs(cr, ['check'], home);
  t.is(granted.code, 0, granted.stdout);
  t.regex(granted.stdout, new RegExp(`^ {2}dump +partly +only processes of uid ${NOBODY} \\(another user's need CAP_SYS_PTRACE\\)$`, 'm'));
  t.regex(granted.stdout, /Looks good\.\n$/);
  // (a fresh process: the pre-dump left its tracking userfaultfd in the first one)
  const fresh = sleeper(t, nobody);
  await running(fresh, 'sleep');
  const works = await runAs(cr, ['dump', '-t', String(fresh), '-D', join(home, 'd2'), '-R'], home);
  t.is(works.code, 0, works.stderr);
  const refused = await runAs(cr, ['dump', '-t', String(roots), '-D', join(home, 'd3'), '-R'], home);
  t.is(refused.code, 1);
});

test('privileges(): the answers follow the capabilities and yama, as the kernel decides them', (t) => {
  const status = (capEff: bigint, uid = 1000): string => `Name:\tnode\nUid:\t${uid}\t${uid}\t${uid}\t${uid}\nCapEff:\t${capEff.toString(16).padStart(16, '0')}\n`;
  const bit = (...caps: (keyof typeof CAPABILITIES)[]): bigint => caps.reduce((s, c) => s | (1n << BigInt(CAPABILITIES[c])), 0n);
  const answers = (p: ReturnType<typeof privileges>): Record<string, string> => Object.fromEntries(p.abilities.map((a) => [a.what, a.answer]));

  const none = privileges({ status: status(0n), yama: '0\n' });
  t.false(none.canDump);
  t.like(answers(none), { dump: 'no', 'pre-dump': 'partly', 'processes under seccomp': 'no', '--tcp-established': 'no', 'show, report': 'yes', 'page-server': 'partly' });
  t.regex(none.remedy, /CAP_CHECKPOINT_RESTORE/);

  const cr = privileges({ status: status(bit('CAP_CHECKPOINT_RESTORE')) });
  t.true(cr.canDump);
  t.like(answers(cr), { dump: 'partly', 'pre-dump': 'partly' });
  t.like(answers(privileges({ status: status(bit('CAP_SYS_ADMIN')) })), { dump: 'partly', 'processes under seccomp': 'yes' });

  const root = privileges({ status: status(bit('CAP_CHECKPOINT_RESTORE', 'CAP_SYS_PTRACE', 'CAP_SYS_ADMIN', 'CAP_NET_ADMIN', 'CAP_NET_BIND_SERVICE'), 0), yama: '1' });
  t.true(root.canDump);
  t.true(Object.values(answers(root)).every((a) => a === 'yes'));
  t.is(root.remedy, '');

  // yama: 1 narrows ptrace to descendants, 2 to CAP_SYS_PTRACE, 3 to nobody at all
  t.like(answers(privileges({ status: status(bit('CAP_CHECKPOINT_RESTORE')), yama: '1' })), { dump: 'partly' });
  t.regex(privileges({ status: status(bit('CAP_CHECKPOINT_RESTORE')), yama: '1' }).abilities[0]!.why, /PR_SET_PTRACER/);
  t.false(privileges({ status: status(bit('CAP_CHECKPOINT_RESTORE')), yama: '2' }).canDump);
  const three = privileges({ status: status(bit('CAP_CHECKPOINT_RESTORE', 'CAP_SYS_PTRACE', 'CAP_SYS_ADMIN'), 0), yama: '3' });
  t.false(three.canDump);
  t.regex(three.remedy, /reboot/);
  t.like(answers(privileges({ status: status(0n), unprivilegedPortStart: '0' })), { 'page-server': 'yes' });
});
