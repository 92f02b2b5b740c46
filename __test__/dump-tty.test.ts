// --shell-job: a job started from an interactive shell has fds 0/1/2 on its controlling terminal
// (/dev/pts/N). tsdump records it as CRIU's TTY file (files.img + tty-info.img) and the reference
// `criu restore --shell-job` re-attaches the restorer's own terminal, so both ends run under
// `script`, each with a pty of its own, and the restored target verifies itself.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CRIU, critDecode, makeWorkDir, run } from './helpers/criu.js';
import { TARGETS_DIR, isAlive, requestVerify } from './helpers/target.js';
import { holdPtys } from './helpers/pty-lock.js';
import { runTsdump } from './helpers/tsdump.js';

/** crit's JSON, read field by field in the assertions. */
type Json = Record<string, any>;

/** Runs `sh -c CMD` under `script -qfc` (a new session on a fresh pty) detached; its PID. */
function underScript(cmd: string): number {
  const child = spawn('script', ['-qfc', cmd, '/dev/null'], { detached: true, stdio: 'ignore' });
  child.unref();
  return child.pid!;
}

async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const readIfExists = (p: string) => (existsSync(p) ? readFileSync(p, 'utf8') : undefined);

/** t_counter started on a pty of its own (script), its stdio on /dev/pts/N; its pid. */
async function counterOnPty(t: { teardown(fn: () => void): void }, dir: string): Promise<{ pid: number; ctl: string }> {
  const ctl = join(dir, 'ctl-t_counter');
  await mkdir(ctl, { recursive: true, mode: 0o700 });
  const scriptPid = underScript(`exec ${join(TARGETS_DIR, 't_counter')} ${ctl}`);
  t.teardown(() => killPid(scriptPid));
  const ready = await waitFor('t_counter ready', () => readIfExists(join(ctl, 'ready')));
  const pid = Number(/^pid=(\d+)$/m.exec(ready)![1]);
  t.teardown(() => killPid(pid));
  return { pid, ctl };
}

function killPid(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

const entriesOf = (img: unknown) => (img as { entries: Json[] }).entries;

/** The TTY file entry, the REG entry it points at and the tty-info entry, from a dump dir. */
async function ttyEntries(dir: string): Promise<{ tty: Json; reg: Json; info: Json }> {
  const files = entriesOf(await critDecode(join(dir, 'files.img')));
  const tty = files.find((e) => e.type === 'TTY')!;
  const reg = files.find((e) => e.id === tty.tty.regf_id)!;
  const infos = entriesOf(await critDecode(join(dir, 'tty-info.img')));
  return { tty: tty.tty, reg: reg.reg, info: infos.find((i) => i.id === tty.tty.tty_info_id)! };
}

/** The control characters CRIU packs four to a uint32, back as bytes (the first 19 are real). */
const ccBytes = (words: number[]) => words.flatMap((w) => [w & 0xff, (w >> 8) & 0xff, (w >> 16) & 0xff, w >>> 24]).slice(0, 17);

type Teardown = { teardown(fn: () => void): void };

/**
 * The target on its pty: refused without --shell-job (it runs on), dumped by tsdump with it;
 * then a second instance from `start`, dumped by CRIU, for the entry-by-entry comparison.
 */
async function dumpBothOnPty(
  t: ExecutionContext,
  dir: string,
  pid: number,
  start: (t: Teardown, dir: string) => Promise<{ pid: number; ctl: string }>,
): Promise<{ imagesDir: string; refDir: string; ref: { pid: number; ctl: string } }> {
  const refused = await runTsdump(['dump', '-t', String(pid), '-D', join(dir, 'refused'), '--json']);
  t.not(refused.code, 0);
  t.regex(refused.stdout + refused.stderr, /UNSUPPORTED_FD[\s\S]*--shell-job/);
  t.true(isAlive(pid));
  const imagesDir = join(dir, 'images');
  const dumped = await runTsdump(['dump', '-t', String(pid), '-D', imagesDir, '--shell-job']);
  t.is(dumped.code, 0, dumped.stderr);
  await waitFor('the dumped target to go', () => (isAlive(pid) ? undefined : true));
  const ref = await start(t, join(dir, 'ref'));
  const refDir = join(dir, 'criu');
  await mkdir(refDir, { recursive: true, mode: 0o700 });
  const criuDump = await run(CRIU, ['dump', '-t', String(ref.pid), '-D', refDir, '--shell-job', '-o', 'dump.log']);
  t.is(criuDump.code, 0, readIfExists(join(refDir, 'dump.log')));
  return { imagesDir, refDir, ref };
}

/** criu restore --shell-job under a pty of its own (the shell stays, so the pty is not hung up). */
async function restoreOnPty(t: ExecutionContext, dir: string, imagesDir: string, pid: number): Promise<void> {
  const restoreRc = join(dir, 'restore.rc');
  const restorePid = underScript(`${CRIU} restore -D ${imagesDir} --shell-job -d -o restore.log; echo $? > ${restoreRc}; exec sleep 60`);
  t.teardown(() => killPid(restorePid));
  const rc = await waitFor('criu restore', () => readIfExists(restoreRc), 30_000);
  t.is(rc.trim(), '0', readIfExists(join(imagesDir, 'restore.log'))?.split('\n').slice(-20).join('\n'));
  t.true(isAlive(pid), 'restored under the same pid');
}

test.serial('the inherited terminal: tsdump dump --shell-job → criu restore --shell-job → verify', async (t) => {
  await holdPtys(t);
  const dir = await makeWorkDir(t);
  const { pid, ctl } = await counterOnPty(t, dir);
  const pts = readlinkSync(`/proc/${pid}/fd/1`);
  t.regex(pts, /^\/dev\/pts\/\d+$/, 'the target must be on a pty');

  const { imagesDir, refDir, ref } = await dumpBothOnPty(t, dir, pid, counterOnPty);

  const ours = await ttyEntries(imagesDir);
  const theirs = await ttyEntries(refDir);
  // File entries: same open flags (O_RDWR), the slave named by path in a REG entry with the
  // character-device mode and no size.
  t.is(ours.tty.flags, theirs.tty.flags);
  t.is(ours.reg.name, pts);
  t.is(ours.reg.flags, theirs.reg.flags);
  t.is(ours.reg.mode, theirs.reg.mode);
  t.is(ours.reg.size, undefined);
  // tty-info: a PTY slave of the session the target leads (script made it the leader), its
  // foreground group; rdev is (136, N) in the kernel's encoding; dev is the devpts st_dev.
  for (const k of ['type', 'locked', 'exclusive', 'packet_mode', 'dev', 'uid', 'gid'] as const) t.deepEqual(ours.info[k], theirs.info[k], k);
  t.is(ours.info.sid, pid);
  t.is(ours.info.pgrp, pid);
  t.is(theirs.info.sid, ref.pid);
  t.is(ours.info.rdev, (136 << 8) | Number(pts.slice('/dev/pts/'.length)));
  t.is(ours.info.pty.index, Number(pts.slice('/dev/pts/'.length)));
  // Both ptys come from script with the same settings, so the termios flags agree. Differences,
  // by design: CRIU fills c_cc's 19 words from a memcpy of the bytes and leaves the words past
  // the fifth as whatever its stack held; tsdump packs the same bytes and zeroes the rest, so
  // only the packed control characters are compared. winsize is 0x0 under script here for both.
  for (const which of ['termios', 'termios_locked'] as const) {
    for (const k of ['c_iflag', 'c_oflag', 'c_cflag', 'c_lflag', 'c_line'] as const) t.is(ours.info[which][k], theirs.info[which][k], `${which}.${k}`);
    t.deepEqual(ccBytes(ours.info[which].c_cc), ccBytes(theirs.info[which].c_cc), `${which}.c_cc`);
    t.deepEqual(ours.info[which].c_cc.slice(5), new Array(14).fill(0));
  }
  t.deepEqual(ours.info.winsize, theirs.info.winsize);
  // Ids differ in value only (tsdump numbers tty-info by pty index, CRIU from 0).

  await restoreOnPty(t, dir, imagesDir, pid);
  t.regex(readlinkSync(`/proc/${pid}/fd/1`), /^\/dev\/pts\/\d+$/, 'the restored target is on the restorer\'s pty');
  t.is(await requestVerify({ name: 't_counter', pid, ctl }), 'PASS');
});

test.serial('a pty that is not the controlling terminal is refused even with --shell-job', async (t) => {
  await holdPtys(t);
  const dir = await makeWorkDir(t);
  const first = await counterOnPty(t, dir);
  const pts = readlinkSync(`/proc/${first.pid}/fd/1`);
  // A second target in a session of its own with its output on the first one's pty: that pty is
  // already another session's controlling terminal, so this session gets none.
  const ctl = join(dir, 'ctl-second');
  await mkdir(ctl, { recursive: true, mode: 0o700 });
  const launcher = spawn('setsid', ['-f', 'sh', '-c', `exec ${join(TARGETS_DIR, 't_counter')} ${ctl} >${pts} 2>&1`], { stdio: 'ignore' });
  await new Promise((res) => launcher.once('exit', res));
  const ready = await waitFor('second t_counter ready', () => readIfExists(join(ctl, 'ready')));
  const pid = Number(/^pid=(\d+)$/m.exec(ready)![1]);
  t.teardown(() => killPid(pid));
  const r = await runTsdump(['dump', '-t', String(pid), '-D', join(dir, 'images'), '--shell-job', '--json']);
  t.not(r.code, 0);
  t.regex(r.stdout + r.stderr, /UNSUPPORTED_FD[\s\S]*not the process's controlling terminal/);
  t.false(existsSync(join(dir, 'images', 'inventory.img')));
  t.is(await requestVerify({ name: 't_counter', pid, ctl }), 'PASS');
});

/** t_dev_tty as a job of a shell on a pty of its own (`leader`: exec'd, leading the session). */
async function devTtyOnPty(t: { teardown(fn: () => void): void }, dir: string, leader = false): Promise<{ pid: number; ctl: string }> {
  const ctl = join(dir, 'ctl-t_dev_tty');
  await mkdir(ctl, { recursive: true, mode: 0o700 });
  const exe = `${join(TARGETS_DIR, 't_dev_tty')} ${ctl}`;
  const scriptPid = underScript(leader ? `exec ${exe}` : `${exe}; exec sleep 600`);
  t.teardown(() => killPid(scriptPid));
  const ready = await waitFor('t_dev_tty ready', () => readIfExists(join(ctl, 'ready')) ?? readIfExists(join(ctl, 'result')));
  const pid = Number(/^pid=(\d+)$/m.exec(ready)?.[1]);
  if (!pid) throw new Error(`t_dev_tty: ${ready}`);
  t.teardown(() => killPid(pid));
  return { pid, ctl };
}

/** The CTTY file entry of a dump, with its REG entry and tty-info. */
async function cttyEntries(dir: string): Promise<{ tty: Json; reg: Json; info: Json }> {
  const files = entriesOf(await critDecode(join(dir, 'files.img')));
  const infos = entriesOf(await critDecode(join(dir, 'tty-info.img')));
  const info = infos.find((i) => i.type === 'CTTY')!;
  const tty = files.find((e) => e.type === 'TTY' && e.tty.tty_info_id === info.id)!;
  return { tty: tty.tty, reg: files.find((e) => e.id === tty.tty.regf_id)!.reg, info };
}

test.serial('/dev/tty of a shell job: tsdump dump --shell-job → criu restore --shell-job → verify; entries as CRIU\'s', async (t) => {
  await holdPtys(t);
  const dir = await makeWorkDir(t);
  const { pid, ctl } = await devTtyOnPty(t, dir);
  t.is(readlinkSync(`/proc/${pid}/fd/10`), '/dev/tty');

  const { imagesDir, refDir, ref } = await dumpBothOnPty(t, dir, pid, (tt, d) => devTtyOnPty(tt, d));
  const ours = await cttyEntries(imagesDir);
  const theirs = await cttyEntries(refDir);
  t.is(ours.tty.flags, theirs.tty.flags);
  t.is(ours.tty.tty_info_id, theirs.tty.tty_info_id);
  t.deepEqual({ ...ours.reg, id: 0 }, { ...theirs.reg, id: 0 });
  // the session and foreground group are each instance's shell's; the rest is the same terminal kind
  const { id: _a, sid: oursSid, pgrp: oursPgrp, ...oursInfo } = ours.info;
  const { id: _b, sid: theirSid, pgrp: theirPgrp, ...theirInfo } = theirs.info;
  for (const which of ['termios', 'termios_locked'] as const) {
    // c_cc as in the pts comparison above: the packed bytes only
    for (const info of [oursInfo, theirInfo]) info[which] = { ...info[which], c_cc: ccBytes(info[which].c_cc) };
  }
  t.deepEqual(oursInfo, theirInfo);
  // a job of `sh -c`, which does no job control: session and foreground group are the shell's
  t.true(oursSid > 0 && oursSid !== pid && oursPgrp === oursSid, `sid ${oursSid} pgrp ${oursPgrp}`);
  t.true(theirSid > 0 && theirSid !== ref.pid && theirPgrp === theirSid, `sid ${theirSid} pgrp ${theirPgrp}`);

  await restoreOnPty(t, dir, imagesDir, pid);
  t.is(await requestVerify({ name: 't_dev_tty', pid, ctl }), 'PASS');
});

test.serial('/dev/tty of a session leader whose terminal is outside the tree is refused, and it runs on', async (t) => {
  await holdPtys(t);
  const dir = await makeWorkDir(t);
  const { pid, ctl } = await devTtyOnPty(t, dir, true);
  const r = await runTsdump(['dump', '-t', String(pid), '-D', join(dir, 'images'), '--shell-job', '--json']);
  t.not(r.code, 0);
  t.regex(r.stdout + r.stderr, /UNSUPPORTED_FD[\s\S]*leads its session/);
  t.false(existsSync(join(dir, 'images', 'inventory.img')));
  t.is(await requestVerify({ name: 't_dev_tty', pid, ctl }), 'PASS');
});
