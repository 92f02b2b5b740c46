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
