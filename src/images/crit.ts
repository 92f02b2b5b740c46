// An image as crit (CRIU 4.1's image tool) prints it, so `tsdump show` output can be diffed
// against `crit decode`: the same dict shape (set fields in field-number order, enum names,
// base64 bytes, per-image extras) and, with `pretty`, crit's formatting driven by the (criu)
// field options: hex, flag names, dev_t as "major:minor", dict names, IP addresses.

import { fromBinary, getOption, isFieldSet, type DescField, type DescMessage, type Message } from '@bufbuild/protobuf';
import { numericField, type Image, type ImageEntry } from './codec.js';
import { ipc_msgSchema } from './gen/ipc-msg_pb.js';
import { criu } from './gen/opts_pb.js';

export type PyValue = boolean | number | bigint | string | PyValue[] | PyDict;
export interface PyDict {
  [key: string]: PyValue;
}

// crit 4.1 knows pagemap_entry field 2 as nr_pages and has no field 5 (CRIU 4.2 renamed field 2
// to compat_nr_pages and added a 64-bit nr_pages = 5); print what the reference crit prints.
const CRIT_NAMES: Record<string, Record<string, string | null>> = {
  pagemap_entry: { compat_nr_pages: 'nr_pages', nr_pages: null },
};

const FLAG_NAMES: Record<string, readonly (readonly [string, number])[]> = {
  'mmap.prot': [['PROT_READ', 0x1], ['PROT_WRITE', 0x2], ['PROT_EXEC', 0x4]],
  'mmap.flags': [['MAP_SHARED', 0x1], ['MAP_PRIVATE', 0x2], ['MAP_ANON', 0x20], ['MAP_GROWSDOWN', 0x100]],
  'mmap.status': [
    ['VMA_AREA_NONE', 0], ['VMA_AREA_REGULAR', 1 << 0], ['VMA_AREA_STACK', 1 << 1], ['VMA_AREA_VSYSCALL', 1 << 2],
    ['VMA_AREA_VDSO', 1 << 3], ['VMA_AREA_HEAP', 1 << 5], ['VMA_FILE_PRIVATE', 1 << 6], ['VMA_FILE_SHARED', 1 << 7],
    ['VMA_ANON_SHARED', 1 << 8], ['VMA_ANON_PRIVATE', 1 << 9], ['VMA_AREA_SYSVIPC', 1 << 10], ['VMA_AREA_SOCKET', 1 << 11],
    ['VMA_AREA_VVAR', 1 << 12], ['VMA_AREA_AIORING', 1 << 13], ['VMA_AREA_MEMFD', 1 << 14], ['VMA_AREA_SHSTK', 1 << 15],
    ['VMA_UNSUPP', 2 ** 31],
  ],
  'rfile.flags': [
    ['O_WRONLY', 0o1], ['O_RDWR', 0o2], ['O_CREAT', 0o100], ['O_EXCL', 0o200], ['O_NOCTTY', 0o400], ['O_TRUNC', 0o1000],
    ['O_APPEND', 0o2000], ['O_NONBLOCK', 0o4000], ['O_DSYNC', 0o10000], ['FASYNC', 0o20000], ['O_DIRECT', 0o40000],
    ['O_LARGEFILE', 0o100000], ['O_DIRECTORY', 0o200000], ['O_NOFOLLOW', 0o400000], ['O_NOATIME', 0o1000000],
    ['O_CLOEXEC', 0o2000000],
  ],
  'pmap.flags': [['PE_PARENT', 1 << 0], ['PE_LAZY', 1 << 1], ['PE_PRESENT', 1 << 2]],
  'seals.flags': [
    ['F_SEAL_SEAL', 0x1], ['F_SEAL_SHRINK', 0x2], ['F_SEAL_GROW', 0x4], ['F_SEAL_WRITE', 0x8], ['F_SEAL_FUTURE_WRITE', 0x10],
  ],
};

// (criu).dict: names for a few numeric fields, looked up by field name.
const DICT_NAMES: Record<string, Record<string, Record<number, string>>> = {
  gen: { task_state: { 1: 'Alive', 3: 'Zombie', 6: 'Stopped' } },
  sk: {
    family: { 1: 'UNIX', 2: 'INET', 10: 'INET6', 16: 'NETLINK', 17: 'PACKET' },
    type: { 1: 'STREAM', 2: 'DGRAM', 3: 'RAW', 5: 'SEQPACKET', 10: 'PACKET' },
    state: {
      1: 'ESTABLISHED', 2: 'SYN_SENT', 3: 'SYN_RECV', 4: 'FIN_WAIT1', 5: 'FIN_WAIT2', 6: 'TIME_WAIT', 7: 'CLOSE',
      8: 'CLOSE_WAIT', 9: 'LAST_ACK', 10: 'LISTEN',
    },
    proto: { 0: 'IP', 6: 'TCP', 17: 'UDP', 136: 'UDPLITE' },
  },
};

/** Python's base64.encodebytes: lines of 76 characters, each ending in a newline. */
export function base64Lines(bytes: Uint8Array): string {
  const b64 = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
  let out = '';
  for (let i = 0; i < b64.length; i += 76) out += b64.slice(i, i + 76) + '\n';
  return out;
}

const hex2 = (c: number): string => '=' + c.toString(16).toUpperCase().padStart(2, '0');

/** Quoted-printable as Python's quopri.encodestring (binascii.b2a_qp, text mode); crit uses it for unix socket names. */
export function quotedPrintable(data: Uint8Array): string {
  const MAX = 76;
  const nl = data.indexOf(0x0a);
  const eol = nl > 0 && data[nl - 1] === 0x0d ? '\r\n' : '\n';
  let out = '';
  let lineLen = 0;
  for (let i = 0; i < data.length; ) {
    const c = data[i]!;
    const next = data[i + 1];
    const last = i + 1 === data.length;
    const encode =
      c > 126 ||
      c === 0x3d ||
      (c === 0x2e && lineLen === 0 && (last || next === 0x0a || next === 0x0d || next === 0)) ||
      ((c === 0x09 || c === 0x20) && last) ||
      (c < 33 && c !== 0x0d && c !== 0x0a && c !== 0x09 && c !== 0x20);
    if (encode) {
      if (lineLen + 3 >= MAX) {
        out += '=' + eol;
        lineLen = 0;
      }
      out += hex2(c);
      lineLen += 3;
      i++;
    } else if (c === 0x0a || (c === 0x0d && next === 0x0a)) {
      lineLen = 0;
      const prev = out.charCodeAt(out.length - 1);
      if (out.length > 0 && (prev === 0x20 || prev === 0x09)) out = out.slice(0, -1) + hex2(prev);
      out += eol;
      i += c === 0x0d ? 2 : 1;
    } else {
      if (!last && next !== 0x0a && lineLen + 1 >= MAX) {
        out += '=' + eol;
        lineLen = 0;
      }
      lineLen++;
      out += String.fromCharCode(c);
      i++;
    }
  }
  return out;
}

/** An address as CRIU stores it (1 or 4 little-endian words of network-order bytes), as Python's ipaddress prints it. */
export function ipText(words: readonly number[]): string {
  const bytes = Buffer.alloc(16);
  words.slice(0, 4).forEach((w, i) => bytes.writeUInt32LE(w >>> 0, i * 4));
  if (words.length === 1) return [...bytes.subarray(0, 4)].join('.');
  const groups = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2).toString(16));
  // Longest run (first on ties) of two or more zero groups becomes "::", as Python's ipaddress does.
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  if (bestLen < 2) return groups.join(':');
  const head = groups.slice(0, best).join(':');
  const tail = groups.slice(best + bestLen).join(':');
  return `${head}::${tail}`;
}

function devText(value: bigint, odev: boolean): string {
  if (odev) {
    // glibc's major()/minor() of a 64-bit dev_t
    const major = ((value >> 8n) & 0xfffn) | ((value >> 32n) & ~0xfffn);
    const minor = (value & 0xffn) | ((value >> 12n) & ~0xffn);
    return `${major}:${minor}`;
  }
  return `${value >> 20n}:${value & 0xfffffn}`;
}

function flagsText(value: bigint, names: readonly (readonly [string, number])[]): string {
  const parts = names.filter(([, bit]) => (value & BigInt(bit)) !== 0n).map(([name]) => name);
  const rest = value & ~names.reduce((all, [, bit]) => all | BigInt(bit), 0n);
  if (rest !== 0n) parts.push('0x' + rest.toString(16));
  return parts.join(' | ');
}

const hexText = (v: bigint): string => (v < 0n ? '-0x' + (-v).toString(16) : '0x' + v.toString(16));

function intValue(field: DescField, value: number | bigint, pretty: boolean, isHex: boolean): PyValue {
  if (!pretty) return value;
  const opts = getOption(field, criu);
  const v = BigInt(value);
  if (isHex) return hexText(v);
  if (opts.dev) return devText(v, opts.odev);
  if (opts.flags) {
    const names = FLAG_NAMES[opts.flags];
    return names ? flagsText(v, names) : hexText(v);
  }
  if (opts.dict) return DICT_NAMES[opts.dict]?.[field.name]?.[Number(v)] ?? value;
  return value;
}

function scalarValue(field: DescField, value: unknown, pretty: boolean, isHex: boolean): PyValue {
  if (field.fieldKind === 'message' || (field.fieldKind === 'list' && field.listKind === 'message')) {
    return messageDict(field.message!, value as Message, pretty, isHex);
  }
  if (field.fieldKind === 'enum' || (field.fieldKind === 'list' && field.listKind === 'enum')) {
    const n = value as number;
    return field.enum!.values.find((v) => v.number === n)?.name ?? n;
  }
  if (value instanceof Uint8Array) {
    return getOption(field, criu).conv === 'unix_name' ? quotedPrintable(value) : base64Lines(value);
  }
  if (typeof value === 'number' || typeof value === 'bigint') return intValue(field, value, pretty, isHex);
  return value as boolean | string;
}

/** One protobuf message as crit's pb2dict makes it. */
export function messageDict(schema: DescMessage, message: Message, pretty: boolean, isHex = false): PyDict {
  const out: PyDict = {};
  const renames = CRIT_NAMES[schema.typeName] ?? {};
  const record = message as unknown as Record<string, unknown>;
  for (const field of [...schema.fields].sort((a, b) => a.number - b.number)) {
    const name = field.name in renames ? renames[field.name] : field.name;
    if (name === null || name === undefined || !isFieldSet(message, field)) continue;
    const value = record[field.localName];
    const hex = isHex || getOption(field, criu).hex;
    if (field.fieldKind === 'list') {
      const list = value as unknown[];
      out[name] =
        pretty && getOption(field, criu).ipadd
          ? [ipText(list as number[])]
          : list.map((v) => scalarValue(field, v, pretty, hex));
    } else {
      out[name] = scalarValue(field, value, pretty, hex);
    }
  }
  return out;
}

const u32 = (b: Uint8Array, at: number): number => new DataView(b.buffer, b.byteOffset + at, 4).getUint32(0, true);

/** The extra payload of an entry as crit prints it, or undefined when crit prints none. */
function extraValue(type: string, e: ImageEntry, index: number): PyValue | undefined {
  const extra = e.extra ?? new Uint8Array();
  switch (type) {
    case 'PIPES_DATA':
    case 'FIFO_DATA':
    case 'SK_QUEUES':
    case 'BPFMAP_DATA':
      return base64Lines(extra);
    case 'IPCNS_SHM':
      return e.extra ? base64Lines(extra.subarray(0, numericField(e, 'size'))) : undefined;
    case 'TCP_STREAM': {
      const inq = numericField(e, 'inq_len');
      return { inq: base64Lines(extra.subarray(0, inq)), outq: base64Lines(extra.subarray(inq)) };
    }
    case 'IPCNS_SEM':
      return Array.from({ length: numericField(e, 'nsems') }, (_, i) => extra[2 * i]! | (extra[2 * i + 1]! << 8));
    case 'IPCNS_MSG': {
      const out: PyValue[] = [];
      for (let at = 0; at < extra.length; ) {
        const size = u32(extra, at);
        const msg = fromBinary(ipc_msgSchema, extra.subarray(at + 4, at + 4 + size));
        out.push(messageDict(ipc_msgSchema, msg, false), base64Lines(extra.subarray(at + 4 + size, at + 4 + size + msg.msize)));
        at += 4 + size + Math.ceil(msg.msize / 8) * 8;
      }
      return out;
    }
    case 'GHOST_FILE':
      return index > 0 || e.extra ? base64Lines(extra) : undefined;
    default:
      return undefined;
  }
}

/** A decoded image as crit's `decode` prints it: {"magic": NAME, "entries": [...]}. */
export function critImage(image: Image, pretty: boolean): PyDict {
  const entries = image.entries.map((e, i) => {
    const d = messageDict(e.schema, e.message, pretty);
    const extra = extraValue(image.type, e, i);
    if (extra !== undefined) d.extra = extra;
    return d;
  });
  return { magic: image.type, entries };
}

function pyString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\b') out += '\\b';
    else if (ch === '\f') out += '\\f';
    else if (c >= 0x20 && c <= 0x7e) out += ch;
    else if (c > 0xffff) {
      const v = c - 0x10000;
      out += `\\u${(0xd800 | (v >> 10)).toString(16).padStart(4, '0')}\\u${(0xdc00 | (v & 0x3ff)).toString(16).padStart(4, '0')}`;
    } else out += `\\u${c.toString(16).padStart(4, '0')}`;
  }
  return out + '"';
}

/** JSON text exactly as Python's json.dumps writes it (indent 4 when pretty, as crit does). */
export function pyJson(value: PyValue, pretty: boolean, depth = 0): string {
  if (typeof value === 'string') return pyString(value);
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number' || typeof value === 'bigint') return value.toString();
  const items: string[] = Array.isArray(value)
    ? value.map((v) => pyJson(v, pretty, depth + 1))
    : Object.entries(value).map(([k, v]) => `${pyString(k)}: ${pyJson(v, pretty, depth + 1)}`);
  const [open, close] = Array.isArray(value) ? ['[', ']'] : ['{', '}'];
  if (items.length === 0) return open + close;
  if (!pretty) return open + items.join(', ') + close;
  const pad = '\n' + ' '.repeat(4 * (depth + 1));
  return open + pad + items.join(',' + pad) + '\n' + ' '.repeat(4 * depth) + close;
}
