// ELF build-ids in reg_file_entry.build_id. CRIU records them for every regular file whose size
// it records (the executable, mapped libraries, ELF files open as fds) and its restore refuses a
// file whose build-id changed even when the size is the same ("File X has bad build-ID"), unless
// told `--file-validation filesize`. tsdump's images must carry the same words, so that a rebuilt
// binary of equal size is refused at restore, not silently run under a dumped memory image.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { copyFile, readFile, readlink, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CriuError, critDecode, criuDump, criuRestore, makeWorkDir, run } from './helpers/criu.js';
import { isAlive, killTree, waitGone } from './helpers/target.js';
import { tsdumpDump } from './helpers/tsdump.js';
import { elfBuildId } from '../src/dump/elf-build-id.js';

type Json = Record<string, unknown>;

/** The build-id as binutils prints it ("Build ID: <hex>"): the oracle the parser is held to. */
async function readelfBuildId(path: string): Promise<Buffer> {
  const r = await run('readelf', ['-n', path]);
  const hex = /Build ID: ([0-9a-f]+)/.exec(r.stdout)?.[1];
  if (!hex) throw new Error(`readelf -n ${path}: no build-id\n${r.stdout}${r.stderr}`);
  return Buffer.from(hex, 'hex');
}

/** CRIU's packing: the bytes zero-padded to 32-bit words, each read little-endian. */
function words(id: Buffer): number[] {
  const padded = Buffer.alloc((id.length + 3) & ~3);
  id.copy(padded);
  return Array.from({ length: padded.length / 4 }, (_, i) => padded.readUInt32LE(i * 4));
}

/**
 * `BINARY 1000` started from a shell that first opens BINARY as fd 3, so one file is at once the
 * executable, mapped, and an open descriptor. Detached, in its own session, cwd in the work dir.
 */
async function startSelfHolding(t: ExecutionContext, binary: string, work: string): Promise<number> {
  const child = spawn('/bin/sh', ['-c', 'exec 3< "$0"; exec "$0" 1000', binary], { detached: true, stdio: 'ignore', cwd: work });
  child.unref();
  const pid = child.pid!;
  t.teardown(() => killTree(pid, work));
  for (let i = 0; i < 400; i++) {
    const exe = await readlink(`/proc/${pid}/exe`).catch(() => '');
    const fd3 = await readlink(`/proc/${pid}/fd/3`).catch(() => '');
    if (exe === binary && fd3 === binary) return pid;
    await sleep(5);
  }
  throw new Error(`${binary} did not start as pid ${pid}`);
}

test('the ELF parser reads the build-id readelf prints, packed as CRIU packs it', async (t) => {
  for (const path of ['/usr/bin/sleep', '/usr/lib/x86_64-linux-gnu/libc.so.6', process.execPath]) {
    t.deepEqual(await elfBuildId(path, (await stat(path)).size), words(await readelfBuildId(path)), path);
  }
  // not ELF, or too short to tell: no build-id, as CRIU
  t.is(await elfBuildId('/etc/passwd', (await stat('/etc/passwd')).size), undefined);
  t.is(await elfBuildId('/usr/bin/sleep', 4), undefined);
});

/** One ELF note: namesz, descsz, type, then name and description each padded to 4 bytes. */
function note(type: number, name: string, desc: Buffer): Buffer {
  const pad = (b: Buffer) => Buffer.concat([b, Buffer.alloc(((b.length + 3) & ~3) - b.length)]);
  const head = Buffer.alloc(12);
  head.writeUInt32LE(name.length + 1, 0);
  head.writeUInt32LE(desc.length, 4);
  head.writeUInt32LE(type, 8);
  return Buffer.concat([head, pad(Buffer.from(`${name}\0`)), pad(desc)]);
}

/** A minimal ELF of the given class whose program headers are PT_NOTE segments holding `segments`. */
function elfWithNotes(elfClass: 32 | 64, segments: Buffer[]): Buffer {
  const [ehdr, phdr] = elfClass === 64 ? [64, 56] : [52, 32];
  const header = Buffer.alloc(ehdr + phdr * segments.length);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, elfClass === 64 ? 2 : 1, 1, 1]).copy(header);
  let offset = header.length;
  if (elfClass === 64) {
    header.writeBigUInt64LE(BigInt(ehdr), 32);
    header.writeUInt16LE(segments.length, 56);
  } else {
    header.writeUInt32LE(ehdr, 28);
    header.writeUInt16LE(segments.length, 44);
  }
  segments.forEach((seg, i) => {
    const at = ehdr + i * phdr;
    header.writeUInt32LE(4, at); // PT_NOTE
    if (elfClass === 64) {
      header.writeBigUInt64LE(BigInt(offset), at + 8);
      header.writeBigUInt64LE(BigInt(seg.length), at + 32);
    } else {
      header.writeUInt32LE(offset, at + 4);
      header.writeUInt32LE(seg.length, at + 16);
    }
    offset += seg.length;
  });
  return Buffer.concat([header, ...segments]);
}

test.serial('the ELF parser follows CRIU\'s rules on 32- and 64-bit files, and records what CRIU records', async (t) => {
  const work = await makeWorkDir(t);
  const abiTag = note(1, 'GNU', Buffer.alloc(16, 1));
  const odd = Buffer.from([1, 2, 3, 4, 5, 6, 7]);
  const id20 = Buffer.from('00112233445566778899aabbccddeeff01234567', 'hex');
  const hugeName = Buffer.alloc(12);
  hugeName.writeUInt32LE(0x80000001, 0);
  hugeName.writeUInt32LE(1, 8);
  const cases: [string, Buffer, number[] | undefined][] = [
    // the first PT_NOTE has no build-id; in the second one the note's name is not looked at, and
    // a description of 7 bytes becomes two words, the last zero-padded
    ['two-segments-64', elfWithNotes(64, [abiTag, Buffer.concat([abiTag, note(3, 'XYZ', odd)])]), words(odd)],
    ['elf32', elfWithNotes(32, [note(3, 'GNU', id20)]), words(id20)],
    // descriptions of more than 512 bytes, and files without one, have no build-id
    ['huge-desc', elfWithNotes(64, [note(3, 'GNU', Buffer.alloc(513, 7))]), undefined],
    ['no-build-id', elfWithNotes(64, [abiTag]), undefined],
    ['no-phdrs', elfWithNotes(64, []), undefined],
    // a note claiming a 2 GiB name: the walk jumps past the segment (and must not go backwards)
    ['huge-name', elfWithNotes(64, [Buffer.concat([hugeName, note(3, 'GNU', id20)])]), undefined],
  ];
  for (const [name, elf, expected] of cases) {
    await writeFile(join(work, name), elf);
    t.deepEqual(await elfBuildId(join(work, name), elf.length), expected, name);
  }

  // The same files open as fds 3..7 of one process, dumped by tsdump and then by CRIU.
  const opens = cases.map(([name], i) => `exec ${i + 3}< "${name}"`).join('; ');
  const child = spawn('/bin/sh', ['-c', `${opens}; exec sleep 1000`], { detached: true, stdio: 'ignore', cwd: work });
  child.unref();
  const pid = child.pid!;
  t.teardown(() => killTree(pid, work));
  while ((await readlink(`/proc/${pid}/fd/${cases.length + 2}`).catch(() => '')) === '') await sleep(5);
  while ((await readlink(`/proc/${pid}/exe`)) !== '/usr/bin/sleep') await sleep(5);
  await tsdumpDump(pid, join(work, 'tsdump'), ['--leave-running']);
  await criuDump(pid, join(work, 'criu'));
  const recorded = async (dir: string) => {
    const files = ((await critDecode(join(dir, 'files.img'))) as { entries: Json[] }).entries;
    return cases.map(([name]) => (files.find((f) => (f.reg as Json | undefined)?.name === join(work, name))?.reg as Json | undefined)?.build_id);
  };
  const ours = await recorded(join(work, 'tsdump'));
  t.deepEqual(ours, cases.map(([, , expected]) => expected));
  t.deepEqual(ours, await recorded(join(work, 'criu')));
});

test.serial('a binary whose build-id changed at equal size: criu restore refuses tsdump\'s images of it', async (t) => {
  const work = await makeWorkDir(t);
  const binary = join(work, 'sleep-copy');
  await copyFile('/usr/bin/sleep', binary);
  const pid = await startSelfHolding(t, binary, work);
  const images = join(work, 'images');
  await tsdumpDump(pid, images);
  await waitGone([pid]);

  // the executable, its mapping and fd 3 all name the copy, and each entry carries its build-id
  const id = await readelfBuildId(binary);
  const files = ((await critDecode(join(images, 'files.img'))) as { entries: Json[] }).entries;
  const copies = files.map((f) => f.reg as Json | undefined).filter((r) => r?.name === binary);
  t.true(copies.length >= 2, JSON.stringify(copies));
  for (const reg of copies) t.deepEqual(reg!.build_id, words(id), JSON.stringify(reg));

  // Same size, one byte of the note's description flipped: a different build-id.
  const original = await readFile(binary);
  const at = original.indexOf(id);
  t.true(at > 0 && original.indexOf(id, at + 1) === -1, 'the build-id occurs once in the file');
  const patched = Buffer.from(original);
  patched[at + id.length - 1]! ^= 0xff;
  await writeFile(binary, patched);
  t.notDeepEqual(await readelfBuildId(binary), id);

  const err = await t.throwsAsync(criuRestore(images), { instanceOf: CriuError });
  // CRIU names the file by its path relative to the root
  t.true((err?.log ?? '').includes(`File ${binary.slice(1)} has bad build-ID`), err?.message);
  t.false(isAlive(pid) && (await readlink(`/proc/${pid}/exe`).catch(() => '')) === binary, 'nothing restored');

  // The build-id was the only objection: with size-only validation the same images restore.
  await criuRestore(images, ['--file-validation', 'filesize']);
  t.is(await readlink(`/proc/${pid}/exe`), binary);
  t.is(await readlink(`/proc/${pid}/fd/3`), binary);
});
