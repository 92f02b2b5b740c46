// pagemap entries that CRIU 4.1 and 4.2 both read: 4.1 takes the page count from field 2, 4.2
// from field 5 when present (4.2 itself writes 0 in field 2, which 4.1 cannot restore).

import { create, isFieldSet } from '@bufbuild/protobuf';
import { pagemap_entrySchema, type pagemap_entry } from './gen/pagemap_pb.js';

/** PE_* flags of pagemap_entry.flags. */
export const PE_PARENT = 1 << 0;
export const PE_LAZY = 1 << 1;
export const PE_PRESENT = 1 << 2;

export function pagemapEntry(vaddr: bigint, nrPages: number, flags: number): pagemap_entry {
  if (!Number.isInteger(nrPages) || nrPages <= 0 || nrPages > 0xffffffff) {
    throw new RangeError(`pagemap entry at 0x${vaddr.toString(16)}: bad page count ${nrPages}`);
  }
  return create(pagemap_entrySchema, { vaddr, compatNrPages: nrPages, nrPages: BigInt(nrPages), flags });
}

/** The page count of an entry written by either CRIU version. */
export function pagemapPages(entry: pagemap_entry): bigint {
  return isFieldSet(entry, pagemap_entrySchema.field.nrPages) ? entry.nrPages : BigInt(entry.compatNrPages);
}

function varint(out: Uint8Array, at: number, v: number): number {
  while (v >= 0x80) {
    out[at++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  out[at++] = v;
  return at;
}

/**
 * The image bytes (4-byte size + protobuf) of pagemap entries, byte for byte what encoding
 * pagemapEntry() through the schema gives, without the reflection: an incremental dump writes
 * one entry per run of written or parent pages, tens of thousands for scattered writes, and
 * does it while the tree is frozen.
 */
export function encodePagemapEntries(entries: readonly { vaddr: bigint; nrPages: number; flags: number }[]): Uint8Array {
  // at most 4 (size) + 4 tags + 10 + 5 + 5 + 5 varint bytes per entry
  const out = new Uint8Array(entries.length * 33);
  let at = 0;
  for (const e of entries) {
    if (!Number.isInteger(e.nrPages) || e.nrPages <= 0 || e.nrPages > 0xffffffff) {
      throw new RangeError(`pagemap entry at 0x${e.vaddr.toString(16)}: bad page count ${e.nrPages}`);
    }
    const sizeAt = at;
    at += 4;
    out[at++] = 0x08;
    at = varint(out, at, Number(e.vaddr));
    out[at++] = 0x10;
    at = varint(out, at, e.nrPages);
    out[at++] = 0x20;
    at = varint(out, at, e.flags);
    out[at++] = 0x28;
    at = varint(out, at, e.nrPages);
    new DataView(out.buffer).setUint32(sizeAt, at - sizeAt - 4, true);
  }
  return out.subarray(0, at);
}
