// The CRIU image container: head magic(s), then entries of a u32 little-endian size followed by
// that many bytes of protobuf, each optionally followed by a raw payload whose length the entry
// itself gives. Whole-buffer decode/encode; ImageWriter streams the same layout.

import { fromBinary, isFieldSet, type DescMessage, type Message, type MessageInitShape } from '@bufbuild/protobuf';
import { TsdumpError } from '../errors.js';
import {
  IMAGE_TYPES,
  IMG_COMMON_MAGIC,
  IMG_SERVICE_MAGIC,
  imageTypeByMagic,
  type ImageType,
} from './catalog.js';
import { ipc_msgSchema } from './gen/ipc-msg_pb.js';
import { encodeMessage } from './encode.js';

export interface ImageEntry {
  readonly schema: DescMessage;
  readonly message: Message;
  /** Bytes CRIU appends after this entry (pipe contents, queued packets, ...), when it has any. */
  readonly extra?: Uint8Array;
}

/** An entry to encode: its message, or the init object create() would make it from (encode.ts). */
export interface NewEntry {
  readonly schema: DescMessage;
  readonly message: MessageInitShape<DescMessage>;
  readonly extra?: Uint8Array;
}

export interface Image {
  /** CRIU's name for the image type ("CORE", "PAGEMAP", ...). */
  readonly type: string;
  /** The per-image magic (0 for raw images). */
  readonly magic: number;
  readonly entries: readonly ImageEntry[];
}

export function imageError(file: string, offset: number, what: string, cause?: unknown): TsdumpError {
  return new TsdumpError('IMAGE_FORMAT', `${file}: byte ${offset}: ${what}`, { cause });
}

export function imageType(name: string): ImageType {
  const t = IMAGE_TYPES.find((x) => x.name === name);
  if (!t) throw new TsdumpError('IMAGE_FORMAT', `unknown image type ${name}`);
  return t;
}

/** The magics written before the first entry. */
export function headBytes(type: ImageType): Uint8Array {
  const words =
    type.head === 'raw'
      ? []
      : type.head === 'inventory'
        ? [type.magic]
        : [type.head === 'service' ? IMG_SERVICE_MAGIC : IMG_COMMON_MAGIC, type.magic];
  const out = new Uint8Array(words.length * 4);
  const view = new DataView(out.buffer);
  words.forEach((w, i) => view.setUint32(i * 4, w, true));
  return out;
}

/** Which message the entry at `index` is, given the entries before it. */
export function schemaAt(type: ImageType, index: number): DescMessage {
  const schema = index === 0 && type.first ? type.first : type.entry;
  if (!schema) throw new TsdumpError('IMAGE_FORMAT', `${type.name} images have no protobuf entries`);
  return schema;
}

/** A numeric (or bool) field of an entry by its proto name; 0 when unset or absent. */
export function numericField(entry: Pick<NewEntry, 'schema' | 'message'>, name: string): number {
  const field = entry.schema.fields.find((f) => f.name === name);
  const value = field ? (entry.message as unknown as Record<string, unknown>)[field.localName] : undefined;
  return typeof value === 'bigint' ? Number(value) : typeof value === 'number' ? value : value === true ? 1 : 0;
}

const LABEL_REQUIRED = 2;

/** The dotted path of the first required field that is not set, as CRIU's reader would reject it. */
export function missingRequired(schema: DescMessage, message: Message): string | undefined {
  const record = message as unknown as Record<string, unknown>;
  for (const field of schema.fields) {
    const set = isFieldSet(message, field);
    if (!set && field.proto.label === LABEL_REQUIRED) return field.name;
    if (!set || !field.message) continue;
    const value = record[field.localName];
    const items = (field.fieldKind === 'list' ? value : [value]) as Message[];
    for (const [i, item] of items.entries()) {
      const inner = missingRequired(field.message, item);
      if (inner) return field.fieldKind === 'list' ? `${field.name}[${i}].${inner}` : `${field.name}.${inner}`;
    }
  }
  return undefined;
}

const roundUp = (n: number, to: number): number => Math.ceil(n / to) * to;

/**
 * Length of the payload following an entry, or 'rest' when it runs to the end of the file
 * (a ghost file stored in one piece). `after` is the bytes after the entry, for ipc-msg, whose
 * payload is itself a run of size-prefixed messages.
 */
export function extraLength(type: ImageType, entry: Omit<NewEntry, 'extra'>, index: number, after: Uint8Array): number | 'rest' {
  const rule = type.extra;
  if (!rule) return 0;
  const get = (name: string): number => numericField(entry, name);
  switch (rule.kind) {
    case 'field':
      return rule.fields.reduce((sum, name) => sum + get(name), 0);
    case 'ipc-sem':
      return roundUp(get('nsems') * 2, 8);
    case 'ipc-shm':
      return get('in_pagemaps') ? 0 : roundUp(get('size'), 4);
    case 'ghost':
      if (index > 0) return get('len');
      return get('chunks') ? 0 : 'rest';
    case 'ipc-msg': {
      let at = 0;
      for (let i = 0; i < get('qnum'); i++) {
        if (at + 4 > after.length) return at + 4;
        const size = new DataView(after.buffer, after.byteOffset + at, 4).getUint32(0, true);
        if (at + 4 + size > after.length) return at + 4 + size;
        const msg = fromBinary(ipc_msgSchema, after.subarray(at + 4, at + 4 + size));
        at += 4 + size + roundUp(msg.msize, 8);
      }
      return at;
    }
  }
}

/** Throws unless `entry.extra` has the length CRIU will read after this entry. */
export function checkExtra(type: ImageType, entry: NewEntry, index: number, file: string, offset: number): void {
  const want = extraLength(type, entry, index, entry.extra ?? new Uint8Array());
  const have = entry.extra?.length ?? 0;
  if (want !== 'rest' && want !== have) {
    throw imageError(file, offset, `${entry.schema.typeName} needs a ${want}-byte payload, got ${have}`);
  }
}

/** Decodes a whole image file. `file` names it in errors. */
export function decodeImage(bytes: Uint8Array, file: string): Image {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length === 0) throw imageError(file, 0, 'empty file, expected an image magic');
  if (bytes.length < 4) throw imageError(file, 0, `file of ${bytes.length} bytes is too short for an image magic`);
  let at = 4;
  let magic = view.getUint32(0, true);
  const head = magic === IMG_COMMON_MAGIC ? 'common' : magic === IMG_SERVICE_MAGIC ? 'service' : 'inventory';
  if (head !== 'inventory') {
    if (bytes.length < 8) throw imageError(file, 4, 'file ends before the image magic');
    magic = view.getUint32(4, true);
    at = 8;
  }
  const type = imageTypeByMagic(magic);
  if (!type) throw imageError(file, at - 4, `unknown image magic 0x${magic.toString(16)} (not a CRIU image?)`);
  if (type.head !== head) {
    throw imageError(file, 0, `${type.name} image has the wrong head magic (expected ${type.head}, found ${head})`);
  }
  const entries: ImageEntry[] = [];
  while (at < bytes.length) {
    const start = at;
    if (at + 4 > bytes.length) throw imageError(file, start, `truncated entry size (${bytes.length - at} of 4 bytes)`);
    const size = view.getUint32(at, true);
    at += 4;
    if (at + size > bytes.length) {
      throw imageError(file, start, `truncated entry: ${size} bytes announced, ${bytes.length - at} left`);
    }
    const schema = schemaAt(type, entries.length);
    let message: Message;
    try {
      message = fromBinary(schema, bytes.subarray(at, at + size));
    } catch (err) {
      throw imageError(file, start, `bad ${schema.name}: ${(err as Error).message}`, err);
    }
    const missing = missingRequired(schema, message);
    if (missing) throw imageError(file, start, `${schema.name} lacks required field ${missing}`);
    at += size;
    const len = extraLength(type, { schema, message }, entries.length, bytes.subarray(at));
    const end = len === 'rest' ? bytes.length : at + len;
    if (end > bytes.length) {
      throw imageError(file, at, `truncated payload of ${schema.name}: ${end - at} bytes expected, ${bytes.length - at} left`);
    }
    entries.push(len === 'rest' || len > 0 ? { schema, message, extra: bytes.subarray(at, end) } : { schema, message });
    at = end;
  }
  return { type: type.name, magic: type.magic, entries };
}

/** The bytes of one entry: size, protobuf, payload. */
export function encodeEntry(entry: NewEntry): Uint8Array[] {
  const body = encodeMessage(entry.schema, entry.message);
  const size = new Uint8Array(4);
  new DataView(size.buffer).setUint32(0, body.length, true);
  return entry.extra ? [size, body, entry.extra] : [size, body];
}

/** Encodes a whole image; the inverse of decodeImage. */
export function encodeImage(image: Image): Uint8Array {
  const type = imageType(image.type);
  const parts = [headBytes(type), ...image.entries.flatMap(encodeEntry)];
  return Buffer.concat(parts);
}
