// What one CPU architecture contributes to the images (see ./index.ts).
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { core_entry_march, core_entrySchema } from '../images/gen/core_pb.js';
import type { ThreadStateInfo } from '../../native/index.js';

export type ThreadRegs = ThreadStateInfo['regs'];
export type Restart = ThreadStateInfo['syscallRestart'];

export interface CpuArch {
  /** core_entry.mtype of every core image written on this CPU. */
  readonly mtype: core_entry_march;
  /**
   * The core_entry's per-architecture thread info (registers, FPU state, TLS) of one thread, from
   * the registers the freezer read and what it worked out about an interrupted syscall.
   */
  threadInfo(
    regs: ThreadRegs,
    restart: Restart,
    clearTidAddr: bigint,
  ): Pick<MessageInitShape<typeof core_entrySchema>, 'threadInfo' | 'tiAarch64'>;
}

/**
 * A typed array from the native side as an image's repeated field, without copying it into an
 * array: create() keeps a list value that is not an Array as it is, and the image encoder
 * (images/encode.ts) only iterates it. The copies were ~600 words a thread, per thread, while
 * the tree is frozen.
 */
export function repeated<T extends number | bigint>(words: ArrayLike<T> & Iterable<T>): T[] {
  return words as unknown as T[];
}
