// Protobuf encoding for images: the bytes of @bufbuild/protobuf's toBinary, without its
// reflection per field. toBinary wraps every message and list in a reflection object, dispatches
// on the field kind for every value, and gives every nested message buffers of its own; a core
// image with its FPU arrays (~600 repeated words, proto2, unpacked) and 62 sigactions then takes
// milliseconds, per thread, while the tree is frozen. Here each message type is compiled once
// into a list of steps that read the message object directly and write, in toBinary's order
// (fields by number, presence as its unsafeIsSet decides, unknown fields last) and with its
// varint rules, into one growing buffer; a nested message's length is put in front of it when
// it is done. The bytes are the same (__test__/images.test.ts compares the two on every image
// of the catalogue). Types with maps, or with implicit-presence message fields (proto3; CRIU's
// schemas are proto2), go through toBinary.
//
// A message may also be given as its init object (what create() takes: nested messages as plain
// objects, lists and oneofs left out when empty): the bytes are create()'s then toBinary's, and
// the hot images (a core entry a thread) skip create()'s walk over every field.
import { create, isFieldSet, protoInt64, ScalarType, toBinary, type DescField, type DescMessage, type Message, type MessageInitShape } from '@bufbuild/protobuf';
import { WireType } from '@bufbuild/protobuf/wire';

// FeatureSet.FieldPresence values (as @bufbuild/protobuf's own reflection names them).
const IMPLICIT = 2;
const LEGACY_REQUIRED = 3;

type Fields = Record<string, unknown> & { $unknown?: { no: number; wireType: WireType; data: Uint8Array }[] };
type Step = (w: Writer, m: Fields) => void;
type Encoder = (w: Writer, m: Fields) => void;

const compiled = new WeakMap<DescMessage, Encoder | null>();

const utf8 = new TextEncoder();

/** A list an init object leaves out. */
const NONE: readonly never[] = [];

function checkInt32(v: number): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) throw new Error(`invalid int32: ${String(v)}`);
}

/**
 * Where messages are encoded before their bytes are copied out: one buffer, grown as needed and
 * used again by the next message (encoding is synchronous; a message is never encoded inside
 * another's encoding, nested messages are written into their parent's writer). A fresh 4 KiB
 * buffer a message cost more than encoding a small one.
 */
let scratch = new Uint8Array(16 * 1024);

/** The writer: one buffer, nested messages measured in place (fork/join as BinaryWriter's). */
class Writer {
  buf = scratch;
  pos = 0;
  private view = new DataView(this.buf.buffer);
  private readonly starts: number[] = [];

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n));
    bigger.set(this.buf.subarray(0, this.pos));
    this.buf = scratch = bigger;
    this.view = new DataView(bigger.buffer);
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }

  fork(): this {
    this.starts.push(this.pos);
    return this;
  }

  join(): this {
    const start = this.starts.pop()!;
    const len = this.pos - start;
    let size = 1;
    for (let v = len; v > 0x7f; v >>>= 7) size++;
    this.room(size);
    this.buf.copyWithin(start + size, start, this.pos);
    let at = start;
    let v = len;
    while (v > 0x7f) {
      this.buf[at++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[at] = v;
    this.pos += size;
    return this;
  }

  /** A tag known only as the message is written (an unknown field's). */
  tag(no: number, type: WireType): this {
    return this.uint32(((no << 3) | type) >>> 0);
  }

  /** A field's tag, compiled with its step (tagBytes). */
  tagOf(tag: Uint8Array): this {
    this.room(tag.length);
    for (let i = 0; i < tag.length; i++) this.buf[this.pos++] = tag[i]!;
    return this;
  }

  raw(b: Uint8Array): this {
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  uint32(v: number): this {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`invalid uint32: ${String(v)}`);
    this.room(5);
    while (v > 0x7f) {
      this.buf[this.pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[this.pos++] = v;
    return this;
  }

  int32(v: number): this {
    checkInt32(v);
    if (v >= 0) return this.uint32(v);
    // negative: sign-extended to ten bytes
    this.room(10);
    for (let i = 0; i < 9; i++) {
      this.buf[this.pos++] = (v & 127) | 128;
      v >>= 7;
    }
    this.buf[this.pos++] = 1;
    return this;
  }

  sint32(v: number): this {
    checkInt32(v);
    return this.uint32(((v << 1) ^ (v >> 31)) >>> 0);
  }

  bool(v: boolean): this {
    this.room(1);
    this.buf[this.pos++] = v ? 1 : 0;
    return this;
  }

  private varint64(lo: number, hi: number): this {
    this.room(10);
    for (let i = 0; i < 28; i += 7) {
      const shift = lo >>> i;
      const more = !(shift >>> 7 === 0 && hi === 0);
      this.buf[this.pos++] = (more ? shift | 0x80 : shift) & 0xff;
      if (!more) return this;
    }
    const split = ((lo >>> 28) & 0x0f) | ((hi & 0x07) << 4);
    const moreBits = !(hi >> 3 === 0);
    this.buf[this.pos++] = (moreBits ? split | 0x80 : split) & 0xff;
    if (!moreBits) return this;
    for (let i = 3; i < 31; i += 7) {
      const shift = hi >>> i;
      const more = !(shift >>> 7 === 0);
      this.buf[this.pos++] = (more ? shift | 0x80 : shift) & 0xff;
      if (!more) return this;
    }
    this.buf[this.pos++] = (hi >>> 31) & 0x01;
    return this;
  }

  uint64(v: bigint | string | number): this {
    // most 64-bit fields hold small values (flags, masks, counts, zeros): one uint32 varint
    if (typeof v === 'bigint' && v >= 0n && v <= 0xffffffffn) return this.uint32(Number(v));
    const { lo, hi } = protoInt64.uEnc(v);
    return this.varint64(lo, hi);
  }

  int64(v: bigint | string | number): this {
    const { lo, hi } = protoInt64.enc(v);
    return this.varint64(lo, hi);
  }

  sint64(v: bigint | string | number): this {
    const tc = protoInt64.enc(v);
    const sign = tc.hi >> 31;
    return this.varint64((tc.lo << 1) ^ sign, ((tc.hi << 1) | (tc.lo >>> 31)) ^ sign);
  }

  private fixed(n: 4 | 8, put: (view: DataView, at: number) => void): this {
    this.room(n);
    put(this.view, this.pos);
    this.pos += n;
    return this;
  }

  fixed32(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`invalid uint32: ${String(v)}`);
    return this.fixed(4, (d, at) => d.setUint32(at, v, true));
  }

  sfixed32(v: number): this {
    checkInt32(v);
    return this.fixed(4, (d, at) => d.setInt32(at, v, true));
  }

  fixed64(v: bigint | string | number): this {
    const { lo, hi } = protoInt64.uEnc(v);
    return this.fixed(8, (d, at) => {
      d.setInt32(at, lo, true);
      d.setInt32(at + 4, hi, true);
    });
  }

  sfixed64(v: bigint | string | number): this {
    const { lo, hi } = protoInt64.enc(v);
    return this.fixed(8, (d, at) => {
      d.setInt32(at, lo, true);
      d.setInt32(at + 4, hi, true);
    });
  }

  float(v: number): this {
    return this.fixed(4, (d, at) => d.setFloat32(at, v, true));
  }

  double(v: number): this {
    return this.fixed(8, (d, at) => d.setFloat64(at, v, true));
  }

  bytes(v: Uint8Array): this {
    return this.uint32(v.byteLength).raw(v);
  }

  string(v: string): this {
    return this.bytes(utf8.encode(v));
  }
}

/** toBinary(schema, create(schema, message)), faster (see the file's head). */
export function encodeMessage<Desc extends DescMessage>(schema: Desc, message: MessageInitShape<Desc>): Uint8Array {
  const enc = encoderOf(schema);
  if (!enc) return toBinary(schema, create(schema, message));
  const w = new Writer();
  enc(w, message as unknown as Fields);
  return w.finish();
}

/** The compiled encoder of a message type, or null if it needs toBinary. */
function encoderOf(desc: DescMessage): Encoder | null {
  const known = compiled.get(desc);
  if (known !== undefined) return known;
  const steps: Step[] = [];
  const enc: Encoder = (w, m) => {
    for (const s of steps) s(w, m);
    const unknown = m.$unknown;
    if (unknown) for (const { no, wireType, data } of unknown) w.tag(no, wireType).raw(data);
  };
  // set before compiling the fields: a message type may contain itself
  compiled.set(desc, enc);
  for (const f of [...desc.fields].sort((a, b) => a.number - b.number)) {
    const step = fieldStep(f);
    if (!step) {
      compiled.set(desc, null);
      return null;
    }
    steps.push(step);
  }
  // a nested type that needs toBinary makes this one need it too
  for (const f of desc.fields) {
    const sub = f.fieldKind === 'message' ? f.message : f.fieldKind === 'list' && f.listKind === 'message' ? f.message : undefined;
    if (sub && encoderOf(sub) === null) {
      compiled.set(desc, null);
      return null;
    }
  }
  return enc;
}

function wireTypeOf(type: ScalarType): WireType {
  switch (type) {
    case ScalarType.BYTES:
    case ScalarType.STRING:
      return WireType.LengthDelimited;
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return WireType.Bit64;
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
    case ScalarType.FLOAT:
      return WireType.Bit32;
    default:
      return WireType.Varint;
  }
}

/** A field's tag as its varint bytes, computed once per field when its step is compiled. */
function tagBytes(no: number, type: WireType): Uint8Array {
  let v = ((no << 3) | type) >>> 0;
  const bytes: number[] = [];
  while (v > 0x7f) {
    bytes.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  bytes.push(v);
  return Uint8Array.from(bytes);
}

/** The BinaryWriter call for one scalar type (as toBinary's writeScalarValue). */
function scalarWriter(type: ScalarType): (w: Writer, v: never) => void {
  switch (type) {
    case ScalarType.STRING:
      return (w, v) => w.string(v);
    case ScalarType.BOOL:
      return (w, v) => w.bool(v);
    case ScalarType.DOUBLE:
      return (w, v) => w.double(v);
    case ScalarType.FLOAT:
      return (w, v) => w.float(v);
    case ScalarType.INT32:
      return (w, v) => w.int32(v);
    case ScalarType.INT64:
      return (w, v) => w.int64(v);
    case ScalarType.UINT64:
      return (w, v) => w.uint64(v);
    case ScalarType.FIXED64:
      return (w, v) => w.fixed64(v);
    case ScalarType.BYTES:
      return (w, v) => w.bytes(v);
    case ScalarType.FIXED32:
      return (w, v) => w.fixed32(v);
    case ScalarType.SFIXED32:
      return (w, v) => w.sfixed32(v);
    case ScalarType.SFIXED64:
      return (w, v) => w.sfixed64(v);
    case ScalarType.SINT64:
      return (w, v) => w.sint64(v);
    case ScalarType.UINT32:
      return (w, v) => w.uint32(v);
    case ScalarType.SINT32:
      return (w, v) => w.sint32(v);
  }
}

function messageStep(no: number, sub: DescMessage, delimited: boolean): (w: Writer, v: Fields) => void {
  if (delimited) {
    const start = tagBytes(no, WireType.StartGroup);
    const end = tagBytes(no, WireType.EndGroup);
    return (w, v) => {
      encoderOf(sub)!(w.tagOf(start), v);
      w.tagOf(end);
    };
  }
  const tag = tagBytes(no, WireType.LengthDelimited);
  return (w, v) => {
    encoderOf(sub)!(w.tagOf(tag).fork(), v);
    w.join();
  };
}

function fieldStep(f: DescField): Step | null {
  if (f.fieldKind === 'map') return null;
  const name = f.localName;
  const no = f.number;
  if (f.fieldKind === 'list') {
    if (f.listKind === 'message') {
      const write = messageStep(no, f.message, f.delimitedEncoding);
      return (w, m) => {
        for (const item of (m[name] ?? NONE) as Fields[]) write(w, item);
      };
    }
    const type = f.listKind === 'enum' ? ScalarType.INT32 : f.scalar;
    const value = scalarWriter(type);
    if (f.packed) {
      const tag = tagBytes(no, WireType.LengthDelimited);
      return (w, m) => {
        const list = (m[name] ?? NONE) as never[];
        if (!list.length) return;
        w.tagOf(tag).fork();
        for (const item of list) value(w, item);
        w.join();
      };
    }
    const tag = tagBytes(no, wireTypeOf(type));
    return (w, m) => {
      for (const item of (m[name] ?? NONE) as never[]) value(w.tagOf(tag), item);
    };
  }
  if (f.presence === IMPLICIT) {
    // proto3 scalars: not in CRIU's schemas; presence by zero value, as isFieldSet decides
    if (f.fieldKind === 'message') return null;
    const type = f.fieldKind === 'enum' ? ScalarType.INT32 : f.scalar;
    const value = scalarWriter(type);
    const tag = tagBytes(no, wireTypeOf(type));
    return (w, m) => {
      if (isFieldSet(m as unknown as Message, f)) value(w.tagOf(tag), m[name] as never);
    };
  }
  const required = f.presence === LEGACY_REQUIRED;
  const oneof = f.oneof?.localName;
  const get = (m: Fields): unknown => {
    if (oneof !== undefined) {
      const o = m[oneof] as { case?: string; value?: unknown } | undefined;
      return o?.case === name ? o.value : undefined;
    }
    // null is unset, as create() takes it
    return Object.prototype.hasOwnProperty.call(m, name) ? (m[name] ?? undefined) : undefined;
  };
  const unset = () => {
    if (required) throw new Error(`cannot encode ${String(f)} to binary: required field not set`);
  };
  if (f.fieldKind === 'message') {
    const write = messageStep(no, f.message, f.delimitedEncoding);
    return (w, m) => {
      const v = get(m);
      if (v === undefined) return unset();
      write(w, v as Fields);
    };
  }
  const type = f.fieldKind === 'enum' ? ScalarType.INT32 : f.scalar;
  const value = scalarWriter(type);
  const tag = tagBytes(no, wireTypeOf(type));
  return (w, m) => {
    const v = get(m);
    if (v === undefined) return unset();
    value(w.tagOf(tag), v as never);
  };
}
