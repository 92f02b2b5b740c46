// ELF build-ids in reg_file_entry.build_id. CRIU records them for every regular file whose size
// it records (the executable, mapped libraries, ELF files open as fds) and its restore refuses a
// file whose build-id changed even when the size is the same ("File X has bad build-ID"), unless
// told `--file-validation filesize`. tsdump's images must carry the same words, so that a rebuilt
// binary of equal size is refused at restore, not silently run under a dumped memory image.
//
// The words, like the size, are the file the task has — read through /proc/PID/exe,
// /proc/PID/map_files and /proc/PID/fd, as CRIU reads them — not whatever the path names by the
// time of the dump. A path that names another file than the task's (a binary overmounted by
// another) is refused at dump, as CRIU refuses it; a binary or a mapped file replaced on disk
// (renamed over, as upgrades do) is kept as a ghost file, as CRIU keeps it, and restored with its
// old contents beside the new file.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, readFile, readlink, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CriuError, critDecode, critDecodeAll, criuDump, criuRestore, makeWorkDir, run } from './helpers/criu.js';
import { isAlive, killTree, procState, requestVerify, startTarget, waitGone } from './helpers/target.js';
import { TsdumpCliError, tsdumpDump } from './helpers/tsdump.js';
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
    t.deepEqual(elfBuildId(path, (await stat(path)).size), words(await readelfBuildId(path)), path);
  }
  // not ELF, or too short to tell: no build-id, as CRIU
  t.is(elfBuildId('/etc/passwd', (await stat('/etc/passwd')).size), undefined);
  t.is(elfBuildId('/usr/bin/sleep', 4), undefined);
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

/**
 * A minimal ELF of the given class whose program headers are PT_NOTE segments holding `segments`,
 * placed `gap` zero bytes after the headers.
 */
function elfWithNotes(elfClass: 32 | 64, segments: Buffer[], gap = 0): Buffer {
  const [ehdr, phdr] = elfClass === 64 ? [64, 56] : [52, 32];
  const header = Buffer.alloc(ehdr + phdr * segments.length + gap);
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
    t.deepEqual(elfBuildId(join(work, name), elf.length), expected, name);
  }
  // the parser reads the first 16 KiB at once: a note across that edge, and one past it
  for (const [name, gap] of [['note-across-16k', 16 * 1024 - 64 - 56 - 20], ['note-past-16k', 40 * 1024]] as const) {
    const elf = elfWithNotes(64, [abiTag, note(3, 'GNU', id20)], gap);
    await writeFile(join(work, name), elf);
    t.deepEqual(elfBuildId(join(work, name), elf.length), words(id20), name);
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

type Decoded = Map<string, unknown>;

function entriesOf(d: Decoded, name: string): Json[] {
  return ((d.get(name) as { entries?: Json[] } | undefined)?.entries ?? []) as Json[];
}

/** The file entry `id`'s reg_file_entry. */
function regOf(d: Decoded, id: number): Json {
  const reg = entriesOf(d, 'files.img').find((f) => f.id === id)?.reg as Json | undefined;
  if (!reg) throw new Error(`no REG file entry ${id}`);
  return reg;
}

/**
 * How file entry `id` is restored if it is remapped to a ghost: the remap type and the ghost's
 * image entries (the head with the metadata, and its contents reassembled from the chunks).
 */
function ghostOf(d: Decoded, id: number): { type: unknown; head: Json; bytes: Buffer } | undefined {
  const remap = entriesOf(d, 'remap-fpath.img').find((r) => r.orig_id === id);
  if (!remap) return undefined;
  const [head, ...chunks] = entriesOf(d, `ghost-file-${(remap.remap_id as number).toString(16)}.img`);
  if (!head) throw new Error(`remap of ${id} to a missing ghost ${String(remap.remap_id)}`);
  const { extra, ...meta } = head as Json & { extra?: string };
  // small ghosts carry their bytes after the head; bigger ones in chunks (holes left as zeros)
  if (extra !== undefined) return { type: remap.remap_type, head: meta, bytes: Buffer.from(extra, 'base64') };
  const bytes = Buffer.alloc(Number(meta.size));
  for (const c of chunks) Buffer.from(String(c.extra), 'base64').copy(bytes, Number(c.off));
  return { type: remap.remap_type, head: meta, bytes };
}

/** The root task's mm entry. */
function mmOf(d: Decoded): { exe_file_id: number; vmas: Json[] } {
  const pid = entriesOf(d, 'pstree.img')[0]!.pid as number;
  return entriesOf(d, `mm-${pid}.img`)[0] as { exe_file_id: number; vmas: Json[] };
}

test.serial('a binary overmounted by another of its size: tsdump refuses the path that names another file, as CRIU does', async (t) => {
  const work = await makeWorkDir(t);
  const binary = join(work, 'sleep-copy');
  await copyFile('/usr/bin/sleep', binary);
  const id = await readelfBuildId(binary);
  const pid = await startSelfHolding(t, binary, work);
  // Another binary of the same size (the build-id's last byte flipped), bind-mounted over the
  // path: /proc/PID/exe and maps still name `binary`, not deleted, but the path opens the other,
  // which restore would open (and, without a build-id to tell them apart, run) in its place.
  const other = join(work, 'other');
  const original = await readFile(binary);
  const at = original.indexOf(id);
  const patched = Buffer.from(original);
  patched[at + id.length - 1]! ^= 0xff;
  await writeFile(other, patched, { mode: 0o755 });
  const mount = await run('mount', ['--bind', other, binary]);
  t.is(mount.code, 0, mount.stderr);
  let mounted = true;
  const unmount = async () => {
    if (mounted) t.is((await run('umount', [binary])).code, 0);
    mounted = false;
  };
  t.teardown(unmount);
  t.deepEqual(await readelfBuildId(binary), await readelfBuildId(other));
  t.is(await readlink(`/proc/${pid}/exe`), binary);

  // The executable is read through /proc/PID/exe and its path checked against it: refused.
  const refusedDir = join(work, 'refused');
  const err = await t.throwsAsync(tsdumpDump(pid, refusedDir), { instanceOf: TsdumpCliError });
  t.is(err?.code, 'UNSUPPORTED', err?.message);
  t.regex(err?.message ?? '', new RegExp(`/proc/${pid}/exe: ${binary} now names another file \\(inode \\d+ on device \\d+\\) than the one the task has`));
  t.false(existsSync(join(refusedDir, 'inventory.img')));
  t.is(procState(pid), 'S', 'left running');
  // CRIU's dump refuses the same process (check_path_remap).
  const criuErr = await t.throwsAsync(criuDump(pid, join(work, 'criu-refused')), { instanceOf: CriuError });
  t.regex(criuErr?.log ?? '', /Unaccessible path opened \d+:\d+, need \d+:\d+/);
  t.is(procState(pid), 'S');

  // Once the path names the running binary again, the dump goes through, with its build-id.
  await unmount();
  await tsdumpDump(pid, join(work, 'tsdump'));
  await waitGone([pid]);
  const d = await critDecodeAll(join(work, 'tsdump'));
  t.deepEqual(regOf(d, mmOf(d).exe_file_id).build_id, words(id));
  await criuRestore(join(work, 'tsdump'));
  t.is(await readlink(`/proc/${pid}/exe`), binary);
});

test.serial('a running binary replaced on disk (renamed over): tsdump keeps the old one as a ghost, as CRIU does, and criu restore runs it', async (t) => {
  const work = await makeWorkDir(t);
  const binary = join(work, 'sleep-copy');
  await copyFile('/usr/bin/sleep', binary);
  const original = await readFile(binary);
  const id = await readelfBuildId(binary);
  const pid = await startSelfHolding(t, binary, work);
  // the upgrade: a new file written beside it and renamed over the path
  const replacement = join(work, 'sleep-copy.new');
  await copyFile('/usr/bin/true', replacement);
  await rename(replacement, binary);
  const replaced = await readFile(binary);
  t.false(replaced.equals(original));
  t.is(await readlink(`/proc/${pid}/exe`), `${binary} (deleted)`);

  await tsdumpDump(pid, join(work, 'tsdump'), ['--leave-running']);
  await criuDump(pid, join(work, 'criu'));
  await waitGone([pid]);

  const views = [];
  for (const dir of ['tsdump', 'criu']) {
    const d = await critDecodeAll(join(work, dir));
    const mm = mmOf(d);
    const exe = regOf(d, mm.exe_file_id);
    // the executable's entry: the path it had, the old file's size, mode and build-id ...
    t.like(exe, { name: binary, size: original.length, mode: 0o100755, build_id: words(id) }, dir);
    // ... remapped to a ghost holding the old file, byte for byte
    const ghost = ghostOf(d, mm.exe_file_id);
    t.is(ghost?.type, 'GHOST', dir);
    t.true(ghost?.bytes.equals(original), `${dir}: the ghost holds the old binary`);
    // every mapping of the binary: one entry, remapped to the same ghost
    const VMA_FILE_PRIVATE = 1 << 6;
    const named = (id: unknown) => (entriesOf(d, 'files.img').find((f) => f.id === id)?.reg as Json | undefined)?.name;
    const mapped = mm.vmas.filter((v) => (v.status as number) & VMA_FILE_PRIVATE && named(v.shmid) === binary);
    t.true(mapped.length >= 3, `${dir}: ${mapped.length} mappings of the executable`);
    t.is(new Set(mapped.map((v) => v.shmid)).size, 1, dir);
    const mappedRemap = entriesOf(d, 'remap-fpath.img').find((r) => r.orig_id === mapped[0]!.shmid)!;
    // fd 3: an entry of its own (an open description), remapped to the same ghost
    const ids = entriesOf(d, `ids-${String(entriesOf(d, 'pstree.img')[0]!.pid)}.img`)[0]!;
    const fd3 = entriesOf(d, `fdinfo-${String(ids.files_id)}.img`).find((f) => f.fd === 3)!;
    const fd3Reg = regOf(d, fd3.id as number);
    t.like(fd3Reg, { name: binary, size: original.length, build_id: words(id) }, dir);
    const fd3Remap = entriesOf(d, 'remap-fpath.img').find((r) => r.orig_id === fd3.id)!;
    const exeRemap = entriesOf(d, 'remap-fpath.img').find((r) => r.orig_id === mm.exe_file_id)!;
    t.is(fd3Remap.remap_id, exeRemap.remap_id, `${dir}: one ghost for the executable and fd 3`);
    t.is(mappedRemap.remap_id, exeRemap.remap_id, `${dir}: one ghost for the executable and its mappings`);
    // two entries, the mappings' and fd 3's, which the executable shares with one of them
    t.is(entriesOf(d, 'remap-fpath.img').length, 2, dir);
    views.push({
      // The executable's entry is the mappings' in tsdump's dump (flags 0) and fd 3's in CRIU's
      // (O_RDONLY|O_LARGEFILE: its exe link finds the file among those already dumped): the
      // same file, validated and remapped to the same ghost either way.
      exe: { ...exe, id: 'exe', flags: 'either' },
      fd3: { ...fd3Reg, id: 'fd3' },
      // Both dumps are of the same process, so even the inode is the same; the access time is
      // each dumper's own reading of the file.
      ghost: { ...ghost!.head, atim: undefined },
      mappings: mapped.map(({ shmid: _s, ...v }) => v),
    });
  }
  t.deepEqual(views[0], views[1]);

  // criu restore recreates the ghost beside the new file (whose name it cannot take), runs the
  // old binary from it, and deletes it again; the new file is left as it was.
  await criuRestore(join(work, 'tsdump'));
  t.true(isAlive(pid));
  t.regex(await readlink(`/proc/${pid}/exe`), / \(deleted\)$/);
  t.true((await readFile(`/proc/${pid}/exe`)).equals(original), 'the restored task runs the old binary');
  t.true((await readFile(`/proc/${pid}/fd/3`)).equals(original), 'fd 3 is the old binary');
  t.true((await readFile(binary)).equals(replaced), 'the new binary untouched');
});

test.serial('t_replaced_map: a mapped file replaced on disk is kept as a ghost and mapped again with its contents and sharing', async (t) => {
  const work = await makeWorkDir(t);
  const dumps: Json[] = [];
  for (const who of ['tsdump', 'criu'] as const) {
    const target = await startTarget('t_replaced_map', { dir: join(work, who) });
    t.teardown(() => killTree(target.pid, target.ctl, target.pids));
    const images = join(work, who, 'images');
    if (who === 'tsdump') await tsdumpDump(target.pid, images);
    else await criuDump(target.pid, images);
    await waitGone(target.pids);
    const d = await critDecodeAll(images);
    const path = join(target.ctl, 'mapped.bin');
    const shared = BigInt(`0x${target.info.shared}`);
    const vmas = mmOf(d).vmas.filter((v) => BigInt(v.start as string) === shared || BigInt(v.end as string) === shared);
    t.is(vmas.length, 2, `${who}: the shared mapping and the private one below it`);
    const ghosts = vmas.map((v) => {
      const reg = regOf(d, v.shmid as number);
      // a data file: size and mode recorded, no build-id
      t.like(reg, { name: path, size: 3 * 4096, mode: 0o100640 }, who);
      t.false('build_id' in reg, who);
      return ghostOf(d, v.shmid as number)!;
    });
    // The old file's contents as the task last wrote them through the shared mapping (the
    // private mapping's copy-on-write page is in the pages images, not in the file).
    const expected = Buffer.alloc(3 * 4096);
    for (let i = 0; i < expected.length; i++) expected[i] = patternByte(i < 100 ? 82 : 81, i);
    for (const g of ghosts) {
      t.is(g.type, 'GHOST');
      t.true(g.bytes.equals(expected), `${who}: the ghost holds the old file as written`);
    }
    // Restored by criu restore, both mappings read what they read before and share one file.
    await criuRestore(images);
    t.is(await requestVerify(target), 'PASS', who);
    // Compared per mapping, the entry ids and the instance's own path, inode and times aside.
    // Two differences, neither of which changes what restore does:
    //  - CRIU gives the mapped file one entry with flags 0 and opens it for each mapping with
    //    the VMA's fdflags (open_filemap); tsdump gives every (file, open flags) its own entry,
    //    as for any file mapping — here two, O_RDONLY and O_RDWR, remapped to the one ghost;
    //  - the private mapping's fdflags: CRIU 4.1 records the mode the file was opened with
    //    (the map_files link's owner bits: O_RDWR here), tsdump O_RDONLY for any private file
    //    mapping, which is all a private mapping needs.
    dumps.push({
      vmas: vmas.map(({ shmid: _s, start: _a, end: _b, ...v }) => ({ ...v, fdflags: v.flags === 2 ? 'private' : v.fdflags })),
      regs: vmas.map((v) => ({ ...regOf(d, v.shmid as number), id: 0, flags: 0, name: 'CTL/mapped.bin' })),
      ghosts: ghosts.map((g) => ({ ...g.head, ino: 0, atim: 0, mtim: 0 })),
    });
  }
  t.deepEqual(dumps[0], dumps[1]);
});

test.serial('t_replaced_map: a replaced mapped file over --ghost-limit is refused and the target runs on', async (t) => {
  const work = await makeWorkDir(t);
  const target = await startTarget('t_replaced_map', { dir: work });
  t.teardown(() => killTree(target.pid, target.ctl, target.pids));
  const images = join(work, 'images');
  const err = await t.throwsAsync(tsdumpDump(target.pid, images, ['--ghost-limit', '4K']), { instanceOf: TsdumpCliError });
  t.is(err?.code, 'UNSUPPORTED_FD', err?.message);
  t.regex(err?.message ?? '', /VMA [0-9a-f]+-[0-9a-f]+ \(.*\/mapped\.bin \(deleted\)\): deleted file holding 12288 bytes \(size 12288\) is larger than the ghost limit \(4096 bytes\)/);
  t.false(existsSync(join(images, 'inventory.img')));
  t.is(await requestVerify(target), 'PASS');
});

/** tgt_pattern_byte of __test__/targets/common.h. */
function patternByte(seed: number, off: number): number {
  let x = (Math.imul(Math.floor(off / 8), 2654435761) ^ Math.imul(seed, 40503)) >>> 0;
  x = (x ^ (x >>> 13)) >>> 0;
  x = Math.imul(x, 0x5bd1e995) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  return ((x >>> ((off % 4) * 8)) & 0xff) | (off % 8 === 0 ? 1 : 0);
}
