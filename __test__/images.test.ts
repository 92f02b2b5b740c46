// The image layer against the reference CRIU 4.1.1. Every subject of the acceptance catalogue
// that CRIU can dump here is dumped by `criu dump`; each image must print exactly as `crit decode`
// prints it (plain and --pretty) and re-encode to the same bytes; the images are then rewritten
// entry by entry through ImageWriter and `criu restore` brings the subject back from them, where
// it verifies its own state. Then: our schemas against pycriu's descriptors, our writer's output
// read by crit, payload sizing, crit's formatting rules, and malformed input.

import test from 'ava';
import { readdirSync } from 'node:fs';
import { copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { create, createRegistry, getOption, isFieldSet, toBinary, type DescFile, type DescMessage, type Message } from '@bufbuild/protobuf';
import { TsdumpError, type ErrorCode } from '../src/errors.js';
import { core_entrySchema, core_entry_march } from '../src/images/gen/core_pb.js';
import { ghost_chunk_entrySchema, ghost_file_entrySchema } from '../src/images/gen/ghost-file_pb.js';
import { ipc_msgSchema, ipc_msg_entrySchema } from '../src/images/gen/ipc-msg_pb.js';
import { ipc_sem_entrySchema } from '../src/images/gen/ipc-sem_pb.js';
import { ipc_shm_entrySchema } from '../src/images/gen/ipc-shm_pb.js';
import { criu } from '../src/images/gen/opts_pb.js';
import { pagemap_entrySchema, pagemap_headSchema } from '../src/images/gen/pagemap_pb.js';
import { pipe_data_entrySchema } from '../src/images/gen/pipe-data_pb.js';
import { type pstree_entry } from '../src/images/gen/pstree_pb.js';
import { reg_file_entrySchema } from '../src/images/gen/regfile_pb.js';
import { inet_sk_entrySchema } from '../src/images/gen/sk-inet_pb.js';
import { unix_sk_entrySchema } from '../src/images/gen/sk-unix_pb.js';
import { tcp_stream_entrySchema } from '../src/images/gen/tcp-stream_pb.js';
import { ImageBatch, ImageWriter, encodeImage, openImagesDir, pagemapEntry, pagemapPages, readImage, readImagesDir, writeImage, PE_PRESENT } from '../src/images/index.js';
import { encodeMessage } from '../src/images/encode.js';
import { SHOW_DIR_VIEWS, showDir, showImage } from '../src/show.js';
import { catalogue, roundTrip } from './helpers/catalogue.js';
import { critEncode, critExplore, critText, critTexts, pycriuFacts, type FieldFacts } from './helpers/crit.js';
import { criuDump, makeWorkDir } from './helpers/criu.js';

/**
 * The init object create() would make `message` from, as the dump builds its hot images: plain
 * objects, no $typeName, what is unset left out (empty lists and oneofs too).
 */
function initOf(schema: DescMessage, message: Message): Record<string, unknown> {
  const m = message as unknown as Record<string, unknown>;
  const init: Record<string, unknown> = {};
  const value = (f: DescMessage['fields'][number], v: unknown): unknown => (f.message && v ? initOf(f.message, v as Message) : v);
  for (const f of schema.fields) {
    if (f.oneof) {
      const o = m[f.oneof.localName] as { case?: string; value?: unknown };
      if (o.case === f.localName) init[f.oneof.localName] = { case: o.case, value: value(f, o.value) };
    } else if (f.fieldKind === 'list') {
      const list = m[f.localName] as unknown[];
      if (list.length) init[f.localName] = list.map((v) => value(f, v));
    } else if (isFieldSet(message, f)) {
      init[f.localName] = value(f, m[f.localName]);
    }
  }
  return init;
}

for (const entry of catalogue.filter((e) => e.criuCanDump)) {
  test(`${entry.name}: every image of criu dump prints as crit does, re-encodes to the same bytes, and restores after a rewrite through ImageWriter`, async (t) => {
    // Dumps with the reference CRIU into DIR/../reference, checks every image there, and writes
    // the images the restore will use into DIR through ImageWriter (raw page files copied).
    const dumpAndRewrite = async (pid: number, dir: string, args: readonly string[]): Promise<void> => {
      const reference = join(dir, '..', 'reference');
      await criuDump(pid, reference, args);
      const images = await readImagesDir(reference);
      const crit = await critTexts(images.map((i) => i.path));
      const tree = images.find((i) => i.type === 'PSTREE')?.entries.map((e) => e.message as pstree_entry) ?? [];
      t.true(tree.length > 0, 'no pstree.img');
      // A core image per thread of a live process (CRIU 4.1.1 leaves a zombie's thread id
      // uninitialised, and writes only core-PID for it).
      const has = (name: string): boolean => images.some((i) => basename(i.path) === name);
      for (const p of tree) {
        const tids = has(`mm-${p.pid}.img`) ? p.threads : [p.pid];
        for (const tid of tids) t.true(has(`core-${tid}.img`), `no core image for ${p.pid}/${tid}`);
      }
      for (const img of images) {
        const name = basename(img.path);
        const theirs = crit.get(img.path);
        if (img.magic === 0) {
          t.is(img.type, 'PAGES', name);
          t.regex(theirs && 'error' in theirs ? theirs.error : '', /MagicException/, `${name}: crit decodes a raw image?`);
          await copyFile(img.path, join(dir, name));
          continue;
        }
        if (!theirs || 'error' in theirs) {
          t.fail(`${name}: crit cannot decode it: ${theirs && 'error' in theirs ? theirs.error : 'no output'}`);
          continue;
        }
        t.is(await showImage(img.path), theirs.plain, `${name}: JSON differs from crit decode`);
        t.is(await showImage(img.path, { pretty: true }), theirs.pretty, `${name}: JSON differs from crit decode --pretty`);
        const bytes = await readFile(img.path);
        t.true(Buffer.from(encodeImage(img)).equals(bytes), `${name}: decode→encode changed the bytes`);
        for (const e of img.entries) {
          t.true(Buffer.from(encodeMessage(e.schema, e.message)).equals(toBinary(e.schema, e.message)), `${name}: the compiled encoder differs from toBinary`);
          t.true(Buffer.from(encodeMessage(e.schema, initOf(e.schema, e.message))).equals(toBinary(e.schema, e.message)), `${name}: its init object encodes otherwise`);
        }
        const w = await ImageWriter.create(dir, name);
        for (const e of img.entries) await w.append(e.schema, e.message, e.extra);
        await w.close();
        t.true((await readFile(join(dir, name))).equals(bytes), `${name}: ImageWriter wrote other bytes`);
        t.is((await stat(join(dir, name))).mode & 0o777, 0o600, name);
      }
      const summary = await showDir(reference);
      t.deepEqual(summary.problems, [], 'a finished criu dump has no problems');
      t.is(summary.verdict, 'complete');
      for (const p of tree) t.regex(summary.output, new RegExp(`^ +${p.pid} .*: (running|stopped), .*\\d+ vmas?, .* mapped, \\d+ pages dumped, \\d+ fds?$|^ +${p.pid} .*: zombie, 1 thread$`, 'm'), summary.output);
      // crit x's four views, character for character (where crit itself gets through the dump:
      // it dies on a zombie, which has no ids, fs or mm image)
      const explored = await critExplore(reference);
      for (const view of SHOW_DIR_VIEWS) {
        const ours = (await showDir(reference, { view })).output;
        const theirs = explored[view];
        if ('text' in theirs) t.is(ours, theirs.text, `show --${view} differs from crit x ${view}`);
        else {
          t.regex(theirs.error, /FileNotFoundError/, `crit x ${view}`);
          for (const p of tree) t.regex(ours, new RegExp(`^ *${p.pid}\\b`, 'm'), `show --${view}`);
        }
      }
    };
    const rt = await roundTrip(t, entry, dumpAndRewrite);
    const ref = entry.reference;
    if (ref.expect === 'fail') t.regex(rt.result, ref.match, `the known CRIU failure (${ref.reason})\n${rt.subject.describe()}`);
    else t.is(rt.result, 'PASS', rt.subject.describe());
  });
}

test('schemas carry the field facts of CRIU 4.1.1 (pycriu descriptors), plus pagemap_entry.nr_pages from 4.2', async (t) => {
  const facts = await pycriuFacts();
  const dir = join(import.meta.dirname, '..', 'src', 'images', 'gen');
  const files: DescFile[] = [];
  for (const f of readdirSync(dir)) {
    const mod = (await import(join(dir, f))) as Record<string, unknown>;
    for (const [k, v] of Object.entries(mod)) if (k.startsWith('file_')) files.push(v as DescFile);
  }
  const registry = createRegistry(...files);
  const ours: Record<string, FieldFacts[]> = {};
  const enums: Record<string, [string, number][]> = {};
  for (const type of registry) {
    if (type.kind === 'enum') enums[type.typeName] = type.values.map((v) => [v.name, v.number]);
    if (type.kind !== 'message') continue;
    ours[type.typeName] = (type as DescMessage).fields
      .map((f) => {
        const o = getOption(f, criu);
        const c: Record<string, string | boolean> = {};
        for (const k of ['hex', 'ipadd', 'flags', 'dev', 'odev', 'dict', 'conv'] as const) if (o[k]) c[k] = o[k];
        return {
          name: f.name,
          number: f.number,
          label: f.proto.label,
          type: f.proto.type,
          typeName: f.proto.typeName.replace(/^\./, ''),
          default: f.proto.defaultValue,
          packed: f.proto.options?.packed ?? false,
          criu: c,
        };
      })
      .sort((a, b) => a.number - b.number);
  }
  const want = structuredClone(facts.messages);
  const pagemap = want['pagemap_entry']!;
  pagemap[1]!.name = 'compat_nr_pages';
  pagemap.push({ name: 'nr_pages', number: 5, label: 1, type: 4, typeName: '', default: '', packed: false, criu: {} });
  t.deepEqual(Object.keys(ours).sort(), Object.keys(want).sort());
  for (const name of Object.keys(want)) t.deepEqual(ours[name], want[name], name);
  t.deepEqual(enums, facts.enums);
});

test('ImageWriter: pagemap entries carry the page count in both fields; crit 4.1.1 reads the count', async (t) => {
  const dir = await makeWorkDir(t);
  const w = await ImageWriter.create(dir, 'pagemap-42.img');
  await w.append(pagemap_headSchema, create(pagemap_headSchema, { pagesId: 7 }));
  await w.append(pagemap_entrySchema, pagemapEntry(0x7f0000000000n, 3, PE_PRESENT));
  await w.append(pagemap_entrySchema, pagemapEntry(0x7f0000010000n, 1, PE_PRESENT));
  await w.close();
  const path = join(dir, 'pagemap-42.img');
  t.is((await stat(path)).mode & 0o777, 0o600);

  const img = await readImage(path);
  t.is(img.type, 'PAGEMAP');
  t.deepEqual(img.entries.slice(1).map((e) => pagemapPages(e.message as never)), [3n, 1n]);
  const crit = JSON.parse(await critText(path, true));
  t.deepEqual(crit.entries, [
    { pages_id: 7 },
    { vaddr: '0x7f0000000000', nr_pages: 3, flags: 'PE_PRESENT' },
    { vaddr: '0x7f0000010000', nr_pages: 1, flags: 'PE_PRESENT' },
  ]);
  // Field 5 (tag 0x28) is on the wire after field 4, as protobuf-c orders fields.
  const bytes = await readFile(path);
  t.true(bytes.includes(Buffer.from([0x20, 0x04, 0x28, 0x03])), 'flags then nr_pages=3');

  await t.throwsAsync(ImageWriter.create(dir, 'pagemap-42.img'), {
    instanceOf: TsdumpError,
    message: /pagemap-42\.img: byte 0: cannot create image: EEXIST/,
  });
});

test('writeImage: an aarch64 core entry and pipe data with its payload match what crit encodes from our JSON', async (t) => {
  const dir = await makeWorkDir(t);
  const core = create(core_entrySchema, {
    mtype: core_entry_march.AARCH64,
    tiAarch64: {
      clearTidAddr: 0x400000n,
      tls: 0xffff8000n,
      gpregs: { regs: Array.from({ length: 31 }, (_, i) => BigInt(i) * 0x1111n), sp: 0xfffff000n, pc: 0x401000n, pstate: 0x60000000n },
      fpsimd: { vregs: Array.from({ length: 64 }, (_, i) => BigInt(i)), fpsr: 0, fpcr: 0 },
    },
    tc: { taskState: 1, exitCode: 0, personality: 0, flags: 0, blkSigset: 0n, comm: 'arm-task' },
  });
  await writeImage(dir, 'core-1.img', core_entrySchema, [core]);
  const data = new TextEncoder().encode('pipe payload');
  await writeImage(dir, 'pipes-data.img', pipe_data_entrySchema, [create(pipe_data_entrySchema, { pipeId: 9, bytes: data.length })], [data]);
  // a complete image is created when written: over an existing one it fails, naming the file
  await t.throwsAsync(writeImage(dir, 'pipes-data.img', pipe_data_entrySchema, [create(pipe_data_entrySchema, { pipeId: 1, bytes: data.length })], [data]), {
    instanceOf: TsdumpError,
    message: /pipes-data\.img: byte 0: .*EEXIST/,
  });
  const w0 = await ImageWriter.create(dir, 'core-2.img');
  await t.throwsAsync(w0.append(core_entrySchema, create(core_entrySchema, { mtype: core_entry_march.AARCH64, tiAarch64: { tls: 1n } })), {
    instanceOf: TsdumpError,
    message: /core-2\.img: byte 8: core_entry lacks required field ti_aarch64\.clear_tid_addr/,
  });
  await w0.close();
  await t.throwsAsync(
    writeImage(dir, 'fifo-data.img', pipe_data_entrySchema, [create(pipe_data_entrySchema, { pipeId: 9, bytes: 5 })], [data]),
    { instanceOf: TsdumpError, message: /needs a 5-byte payload, got 12/ },
  );
  t.false(readdirSync(dir).includes('fifo-data.img'), 'a small image that fails to build is never created');
  // Payloads larger than the writer's buffer go through the same streaming path.
  const big = Buffer.alloc(1 << 20, 0x5a);
  const bigDir = join(dir, 'big');
  await mkdir(bigDir, { mode: 0o700 });
  const w = await ImageWriter.create(bigDir, 'fifo-data.img');
  for (let i = 0; i < 3; i++) await w.append(pipe_data_entrySchema, create(pipe_data_entrySchema, { pipeId: i, bytes: big.length }), big);
  await w.close();
  const back = await readImage(join(bigDir, 'fifo-data.img'));
  t.is(back.size, 8 + 3 * (4 + 6 + big.length)); // magics, then size + 6-byte pipe_data_entry + payload
  t.true(back.entries.every((e) => Buffer.from(e.extra!).equals(big)));
  for (const name of ['core-1.img', 'pipes-data.img']) {
    const path = join(dir, name);
    t.is(await showImage(path, { pretty: true }), await critText(path, true), `${name} pretty`);
    const ours = await showImage(path, { pretty: false });
    t.is(ours, await critText(path, false), name);
    t.true((await critEncode(ours)).equals(await readFile(path)), `${name}: crit encode of the JSON gives other bytes`);
  }
});

test('ImageBatch: images written together at the flush, owner-only, byte for byte what writeImage writes; a failure names its file', async (t) => {
  const dir = await makeWorkDir(t);
  const images = openImagesDir(dir);
  const core = (comm: string) => create(core_entrySchema, { mtype: core_entry_march.X86_64, tc: { taskState: 1, exitCode: 0, personality: 0, flags: 0, blkSigset: 0n, comm } });
  const batch = new ImageBatch(images);
  await writeImage(batch, 'core-1.img', core_entrySchema, [core('one')]);
  await writeImage(batch, 'core-2.img', core_entrySchema, [core('two')]);
  t.deepEqual(readdirSync(dir), [], 'nothing before the flush');
  await batch.flush();
  await batch.flush();
  t.deepEqual(readdirSync(dir).sort(), ['core-1.img', 'core-2.img'], 'a second flush writes nothing again');
  await writeImage(images, 'core-3.img', core_entrySchema, [core('two')]);
  t.true((await readFile(join(dir, 'core-2.img'))).equals(await readFile(join(dir, 'core-3.img'))));
  for (const name of ['core-1.img', 'core-2.img']) t.is((await stat(join(dir, name))).mode & 0o777, 0o600, name);

  // the batch stops at the first image that fails: the ones before it are written, not the ones after
  const failing = new ImageBatch(images);
  await writeImage(failing, 'core-4.img', core_entrySchema, [core('four')]);
  await writeImage(failing, 'core-1.img', core_entrySchema, [core('again')]);
  await writeImage(failing, 'core-5.img', core_entrySchema, [core('five')]);
  await t.throwsAsync(failing.flush(), { instanceOf: TsdumpError, message: /core-1\.img: byte 0: cannot create image: .*EEXIST/ });
  t.deepEqual(readdirSync(dir).sort(), ['core-1.img', 'core-2.img', 'core-3.img', 'core-4.img']);
  t.is(((await readImage(join(dir, 'core-1.img'))).entries[0]!.message as unknown as { tc: { comm: string } }).tc.comm, 'one', 'the existing image untouched');
});

test('malformed input: one-line TsdumpError naming the file and the byte offset', async (t) => {
  const dir = await makeWorkDir(t);
  const good = encodeImage({
    type: 'PIPES_DATA',
    magic: 0,
    entries: [{ schema: pipe_data_entrySchema, message: create(pipe_data_entrySchema, { pipeId: 1, bytes: 4 }), extra: Buffer.from('abcd') }],
  });
  const cases: [string, Uint8Array | null, ErrorCode, RegExp][] = [
    ['empty.img', new Uint8Array(), 'IMAGE_FORMAT', /byte 0: empty file/],
    ['pipes-data.img', good.subarray(0, 12), 'IMAGE_FORMAT', /byte 8: truncated entry: \d+ bytes announced, 0 left/],
    ['payload.img', good.subarray(0, good.length - 1), 'IMAGE_FORMAT', /byte \d+: truncated payload of pipe_data_entry/],
    ['magic.img', Buffer.concat([Buffer.from([0x19, 0x43, 0x56, 0x54, 1, 2, 3, 4]), good.subarray(8)]), 'IMAGE_FORMAT', /byte 4: unknown image magic 0x4030201/],
    ['text.img', Buffer.from('this is not a CRIU image\n'), 'IMAGE_FORMAT', /byte 0: unknown image magic 0x73696874/],
    ['required.img', Buffer.concat([good.subarray(0, 8), Buffer.from([2, 0, 0, 0, 0x08, 0x01])]), 'IMAGE_FORMAT', /byte 8: pipe_data_entry lacks required field bytes/],
    ['missing.img', null, 'IMAGE_IO', /byte 0: cannot read image: ENOENT/],
  ];
  for (const [name, bytes, code, message] of cases) {
    const path = join(dir, name);
    if (bytes) await writeFile(path, bytes);
    const err = await t.throwsAsync(showImage(path), { instanceOf: TsdumpError }, name);
    t.is(err?.code, code, name);
    t.true(err!.message.startsWith(`${path}: byte `), `${name}: ${err?.message}`);
    t.regex(err!.message, message, name);
    t.false(err!.message.includes('\n'), name);
  }
});

test('crit --pretty formatting of synthetic entries: IP addresses, dev_t, flags, dict names, unix names, non-ASCII text', async (t) => {
  const dir = await makeWorkDir(t);
  let seed = 7;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const word = (): number => (rnd(3) === 0 ? 0 : rnd(2) === 0 ? rnd(0x10000) : (rnd(0x10000) << 16) | rnd(0x10000)) >>> 0;
  const fown = { uid: 0, euid: 0, signum: 0, pidType: 0, pid: 0 };
  const opts = { soSndbuf: 1, soRcvbuf: 2, soSndTmoSec: 0n, soSndTmoUsec: 0n, soRcvTmoSec: 0n, soRcvTmoUsec: 0n };
  const inet = Array.from({ length: 40 }, (_, i) => {
    const v6 = i % 2 === 1;
    return create(inet_sk_entrySchema, {
      id: i, ino: 1000 + i, family: v6 ? 10 : 2, type: [1, 2, 3, 4][i % 4]!, proto: [0, 6, 17, 136, 99][i % 5]!,
      state: i % 12, srcPort: rnd(65536), dstPort: rnd(65536), flags: rnd(0x10000), backlog: 0,
      srcAddr: Array.from({ length: v6 ? 4 : 1 }, word), dstAddr: Array.from({ length: v6 ? 4 : 1 }, word), fown, opts,
    });
  });
  const nameBytes = [0x00, 0x09, 0x0a, 0x20, 0x2e, 0x3d, 0x61, 0x7f, 0x80, 0xff];
  const unix = Array.from({ length: 30 }, (_, i) =>
    create(unix_sk_entrySchema, {
      id: i, ino: i, type: 1, state: 10, flags: 0, uflags: 0, backlog: 0, peer: 0, fown, opts,
      name: Uint8Array.from({ length: rnd(4) === 0 ? 90 + rnd(60) : rnd(20) }, () => (rnd(2) ? 0x61 + rnd(26) : nameBytes[rnd(nameBytes.length)]!)),
    }),
  );
  const texts = ['/tmp/é', '/日本/語', '/emoji/😀', '/ctl/\x01\x7f\t"\\', ''];
  const reg = texts.map((name, i) => create(reg_file_entrySchema, { id: i, flags: [0o2, 0o102002, 0o4000000, 0][i % 4]!, pos: 1n << 40n, fown, name }));
  const ghost = create(ghost_file_entrySchema, { uid: 0, gid: 0, mode: 0o100600, dev: (259 << 20) | 3, rdev: 0x1234_5678, ino: 77n });
  await writeImage(dir, 'inetsk.img', inet_sk_entrySchema, inet);
  await writeImage(dir, 'unixsk.img', unix_sk_entrySchema, unix);
  await writeImage(dir, 'reg-files.img', reg_file_entrySchema, reg);
  await writeImage(dir, 'ghost-file-1.img', ghost_file_entrySchema, [ghost], [Buffer.from('ghost data')]);
  for (const name of ['inetsk.img', 'unixsk.img', 'reg-files.img', 'ghost-file-1.img']) {
    const path = join(dir, name);
    for (const pretty of [false, true]) t.is(await showImage(path, { pretty }), await critText(path, pretty), `${name} pretty=${pretty}`);
  }
});

test('payloads after entries (ghost chunks, TCP queues, SysV IPC) are sized from the entry and print as crit prints them', async (t) => {
  const dir = await makeWorkDir(t);
  const bytes = (s: string): Buffer => Buffer.from(s);
  const desc = { key: 1, uid: 0, gid: 0, cuid: 0, cgid: 0, mode: 0o600, id: 5 };

  const ghost = await ImageWriter.create(dir, 'ghost-file-2.img');
  await ghost.append(ghost_file_entrySchema, create(ghost_file_entrySchema, { uid: 0, gid: 0, mode: 0o100600, chunks: true, size: 9000n }));
  await ghost.append(ghost_chunk_entrySchema, create(ghost_chunk_entrySchema, { len: 3n, off: 0n }), bytes('abc'));
  await ghost.append(ghost_chunk_entrySchema, create(ghost_chunk_entrySchema, { len: 4n, off: 8192n }), bytes('wxyz'));
  await ghost.close();

  const tcp = { inqSeq: 1, outqSeq: 2, optMask: 0x1f, sndWscale: 7, mssClamp: 1460, nodelay: true };
  await writeImage(dir, 'tcp-stream-2a.img', tcp_stream_entrySchema, [create(tcp_stream_entrySchema, { ...tcp, inqLen: 2, outqLen: 5 })], [bytes('inOUTQ!')]);

  await writeImage(dir, 'ipcns-sem-1.img', ipc_sem_entrySchema, [create(ipc_sem_entrySchema, { desc, nsems: 3 })], [
    Buffer.from([1, 0, 2, 0, 0xff, 0xff, 0, 0]),
  ]);
  await writeImage(dir, 'ipcns-shm-1.img', ipc_shm_entrySchema, [create(ipc_shm_entrySchema, { desc, size: 5n })], [bytes('hello\0\0\0')]);
  const msgs = [
    [1n, 'first'],
    [2n, 'second message'],
  ] as const;
  const queue = Buffer.concat(
    msgs.flatMap(([mtype, text]) => {
      const m = toBinary(ipc_msgSchema, create(ipc_msgSchema, { mtype, msize: text.length }));
      const size = Buffer.alloc(4);
      size.writeUInt32LE(m.length);
      return [size, m, bytes(text), Buffer.alloc(Math.ceil(text.length / 8) * 8 - text.length)];
    }),
  );
  await writeImage(dir, 'ipcns-msg-1.img', ipc_msg_entrySchema, [create(ipc_msg_entrySchema, { desc, qbytes: 100, qnum: 2 })], [queue]);

  for (const name of ['ghost-file-2.img', 'tcp-stream-2a.img', 'ipcns-sem-1.img', 'ipcns-shm-1.img', 'ipcns-msg-1.img']) {
    const path = join(dir, name);
    const img = await readImage(path);
    t.true(Buffer.from(encodeImage(img)).equals(await readFile(path)), name);
    for (const pretty of [false, true]) t.is(await showImage(path, { pretty }), await critText(path, pretty), `${name} pretty=${pretty}`);
  }
  await t.throwsAsync(
    writeImage(dir, 'ipcns-sem-2.img', ipc_sem_entrySchema, [create(ipc_sem_entrySchema, { desc, nsems: 3 })], [Buffer.alloc(6)]),
    { message: /needs a 8-byte payload, got 6/ },
  );
});
