// Streaming image writer: entries are buffered up to FLUSH_AT bytes and then written, so memory
// stays bounded by the buffer plus the largest single payload, whatever the image's size. Files
// are created through the run's images directory (./dir.ts), never by path.

import { basename, join } from 'node:path';
import { create, type DescMessage, type MessageInitShape } from '@bufbuild/protobuf';
import { TsdumpError } from '../errors.js';
import { imageTypeForFile, type ImageType } from './catalog.js';
import { checkExtra, encodeEntry, extraLength, headBytes, imageError, missingRequired, schemaAt, type NewEntry } from './codec.js';
import { closeFd, imagesDirOf, writeAll, type ImagesDir } from './dir.js';

const FLUSH_AT = 64 * 1024;

function ioError(file: string, offset: number, what: string, err: unknown): TsdumpError {
  const e = err as NodeJS.ErrnoException;
  return new TsdumpError('IMAGE_IO', `${file}: byte ${offset}: ${what}: ${e.code ?? e.message}`, { cause: err });
}

export class ImageWriter {
  readonly path: string;
  readonly type: ImageType;
  private readonly fd: number;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private written = 0;
  private count = 0;

  private constructor(path: string, type: ImageType, fd: number) {
    this.path = path;
    this.type = type;
    this.fd = fd;
  }

  /**
   * Creates fileName in the images directory (0600, must not exist, never through a link); the
   * file name decides the image type. A directory given by path must exist.
   */
  static async create(dir: ImagesDir | string, fileName: string): Promise<ImageWriter> {
    const { path, type, fd } = createImage(dir, fileName);
    const w = new ImageWriter(path, type, fd);
    w.queue(headBytes(type));
    return w;
  }

  /** Adds one entry; `extra` is the payload CRIU expects after it (its length is checked). */
  async append<Desc extends DescMessage>(schema: Desc, message: MessageInitShape<Desc>, extra?: Uint8Array): Promise<void> {
    const entry = extra ? { schema, message, extra } : { schema, message };
    const offset = this.written + this.pendingBytes;
    checkEntry(this.path, this.type, this.count, offset, schema);
    checkExtra(this.type, entry, this.count, this.path, offset);
    for (const part of encodeChecked(this.path, offset, entry)) this.queue(part);
    this.count++;
    if (this.pendingBytes >= FLUSH_AT) await this.flush();
  }

  /**
   * Adds one entry whose `length`-byte payload is too big to hold at once: `pieces` yields it in
   * parts, each written before the next is asked for (so a piece's buffer may be reused).
   */
  async appendStreamed<Desc extends DescMessage>(
    schema: Desc,
    message: MessageInitShape<Desc>,
    length: number,
    pieces: AsyncIterable<Uint8Array>,
  ): Promise<void> {
    const offset = this.written + this.pendingBytes;
    const want = extraLength(this.type, { schema, message }, this.count, new Uint8Array());
    if (want !== 'rest' && want !== length) {
      throw imageError(this.path, offset, `${schema.typeName} needs a ${want}-byte payload, got ${length}`);
    }
    checkEntry(this.path, this.type, this.count, offset, schema);
    for (const part of encodeChecked(this.path, offset, { schema, message })) this.queue(part);
    this.count++;
    let have = 0;
    for await (const piece of pieces) {
      have += piece.length;
      if (have > length) break;
      this.queue(piece);
      await this.flush();
    }
    if (have !== length) throw imageError(this.path, offset, `${schema.typeName} payload of ${have} bytes, ${length} promised`);
  }

  /**
   * Adds `count` entries of `schema` already encoded (size + protobuf each, e.g. by
   * encodePagemapEntries), for hot paths where encoding through the schema is too slow.
   */
  async appendEncoded(schema: DescMessage, bytes: Uint8Array, count: number): Promise<void> {
    checkEncoded(this.path, this.type, this.count, schema, count);
    this.queue(bytes);
    this.count += count;
    if (this.pendingBytes >= FLUSH_AT) await this.flush();
  }

  async close(): Promise<void> {
    try {
      await this.flush();
    } finally {
      await closeFd(this.fd);
    }
  }

  private queue(bytes: Uint8Array): void {
    this.pending.push(bytes);
    this.pendingBytes += bytes.length;
  }

  private async flush(): Promise<void> {
    if (this.pendingBytes === 0) return;
    const parts = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    const buf = Buffer.concat(parts);
    try {
      await writeAll(this.fd, buf);
      this.written += buf.length;
    } catch (err) {
      throw ioError(this.path, this.written, 'cannot write image', err);
    }
  }
}

/** The entry is the one an image of `type` takes at `index`. */
function checkEntry(path: string, type: ImageType, index: number, offset: number, schema: DescMessage): void {
  const expected = schemaAt(type, index);
  if (schema.typeName !== expected.typeName) {
    throw new TsdumpError('IMAGE_FORMAT', `${path}: byte ${offset}: entry ${index} must be ${expected.typeName}, got ${schema.typeName}`);
  }
}

/**
 * The entry's bytes. Encoding refuses a required field that is not set, at any depth (both the
 * compiled encoder and toBinary): only then is the message walked, to name the field.
 */
function encodeChecked(path: string, offset: number, entry: NewEntry): Uint8Array[] {
  try {
    return encodeEntry(entry);
  } catch (err) {
    // (an init object is walked as the message create() makes of it)
    let missing: string | undefined;
    try {
      missing = missingRequired(entry.schema, create(entry.schema, entry.message));
    } catch {
      missing = undefined;
    }
    if (missing) throw imageError(path, offset, `${entry.schema.typeName} lacks required field ${missing}`, err);
    throw err;
  }
}

function checkEncoded(path: string, type: ImageType, index: number, schema: DescMessage, count: number): void {
  for (let i = 0; i < count; i++) {
    const expected = schemaAt(type, index + i);
    if (schema.typeName !== expected.typeName) {
      throw new TsdumpError('IMAGE_FORMAT', `${path}: entry ${index + i} must be ${expected.typeName}, got ${schema.typeName}`);
    }
  }
}

/** The image type fileName names (a CRIU image file name, not a raw one). */
function imageType(path: string, fileName: string): ImageType {
  const type = imageTypeForFile(basename(fileName));
  if (!type) throw new TsdumpError('IMAGE_FORMAT', `${path}: byte 0: not a CRIU image file name`);
  if (type.head === 'raw') throw new TsdumpError('IMAGE_FORMAT', `${path}: byte 0: ${type.name} is a raw image, not written here`);
  return type;
}

/** An images directory's "cannot create PATH: why" as the image's own error. */
function createError(path: string, err: unknown): TsdumpError {
  const why = err instanceof Error ? err.message.replace(`cannot create ${path}: `, '') : String(err);
  return new TsdumpError('IMAGE_IO', `${path}: byte 0: cannot create image: ${why}`, { cause: err });
}

/** Creates fileName in the images directory; the file name decides the image type. */
function createImage(dir: ImagesDir | string, fileName: string): { path: string; type: ImageType; fd: number } {
  const images = imagesDirOf(dir);
  const path = join(images.workPath, fileName);
  const type = imageType(path, fileName);
  try {
    return { path, type, fd: images.createFile(fileName) };
  } catch (err) {
    throw createError(path, err);
  }
}

/**
 * A small image built in memory and written in one go when it is complete, by the images
 * directory off the main thread (ImageBatch): created as ImageWriter creates (0600, must not
 * exist), with the same checks and bytes. An image that fails to build is never created.
 */
export class ImageBuffer {
  readonly path: string;
  private readonly batch: ImageBatch;
  /** Written at once, in a batch of its own (not one the caller flushes). */
  private readonly alone: boolean;
  private readonly fileName: string;
  private readonly type: ImageType;
  private readonly parts: Uint8Array[] = [];
  private bytes = 0;
  private count = 0;

  constructor(target: ImageTarget, fileName: string) {
    this.alone = !(target instanceof ImageBatch);
    this.batch = target instanceof ImageBatch ? target : new ImageBatch(imagesDirOf(target));
    this.fileName = fileName;
    this.path = join(this.batch.workPath, fileName);
    this.type = imageType(this.path, fileName);
    this.push(headBytes(this.type));
  }

  /** Adds one entry (as ImageWriter.append). */
  append<Desc extends DescMessage>(schema: Desc, message: MessageInitShape<Desc>, extra?: Uint8Array): this {
    const entry = extra ? { schema, message, extra } : { schema, message };
    checkEntry(this.path, this.type, this.count, this.bytes, schema);
    checkExtra(this.type, entry, this.count, this.path, this.bytes);
    for (const part of encodeChecked(this.path, this.bytes, entry)) this.push(part);
    this.count++;
    return this;
  }

  appendEncoded(schema: DescMessage, bytes: Uint8Array, count: number): this {
    checkEncoded(this.path, this.type, this.count, schema, count);
    this.push(bytes);
    this.count += count;
    return this;
  }

  /** Creates the image file with what was appended: now, or with its batch when that is flushed. */
  async write(): Promise<void> {
    this.batch.add(this.fileName, this.path, Buffer.concat(this.parts));
    if (this.alone) await this.batch.flush();
  }

  private push(b: Uint8Array): void {
    this.parts.push(b);
    this.bytes += b.length;
  }
}

/**
 * Whole images written together, off the main thread, in one native call (`flush`): a task's
 * images cost the main thread one call while the tree is frozen, instead of a create, write and
 * close each (~25 us an image). Nothing is written before the flush; a batch that is never
 * flushed writes nothing.
 */
export class ImageBatch {
  private names: string[] = [];
  private paths: string[] = [];
  private contents: Uint8Array[] = [];

  /** The directory's (asked once: a native call). */
  readonly workPath: string;

  constructor(readonly dir: ImagesDir) {
    this.workPath = dir.workPath;
  }

  add(name: string, path: string, content: Uint8Array): void {
    this.names.push(name);
    this.paths.push(path);
    this.contents.push(content);
  }

  /** Writes what was added, in order; the first image that fails fails the flush. */
  async flush(): Promise<void> {
    const { names, paths, contents } = this;
    if (!names.length) return;
    [this.names, this.paths, this.contents] = [[], [], []];
    try {
      await this.dir.writeFiles(names, contents);
    } catch (err) {
      const path = paths.find((p) => err instanceof Error && (err.message.startsWith(`cannot create ${p}: `) || err.message.startsWith(`cannot write ${p}: `)));
      throw path ? writeError(path, err) : err;
    }
  }
}

/** The error of an image the images directory failed to create or write. */
function writeError(path: string, err: unknown): TsdumpError {
  if (err instanceof Error && err.message.startsWith(`cannot create ${path}: `)) return createError(path, err);
  const why = err instanceof Error ? err.message.replace(`cannot write ${path}: `, '') : String(err);
  return new TsdumpError('IMAGE_IO', `${path}: cannot write image: ${why}`, { cause: err });
}

/** Where a whole image goes: the directory (written at once) or a batch (written at its flush). */
export type ImageTarget = ImagesDir | string | ImageBatch;

/** Writes an image whose entries all share one message type; `extras[i]` follows entry i. */
export async function writeImage<Desc extends DescMessage>(
  target: ImageTarget,
  fileName: string,
  schema: Desc,
  entries: readonly MessageInitShape<Desc>[],
  extras: readonly (Uint8Array | undefined)[] = [],
): Promise<void> {
  const image = new ImageBuffer(target, fileName);
  for (const [i, message] of entries.entries()) image.append(schema, message, extras[i]);
  await image.write();
}
