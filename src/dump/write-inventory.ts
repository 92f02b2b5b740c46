// inventory.img: the commit point of a dump. It is written last, after every other image is on
// disk, so a directory without it is an interrupted dump and `criu restore` refuses it.
import { randomUUID } from 'node:crypto';
import { create } from '@bufbuild/protobuf';
import { writeImage } from '../images/index.js';
import type { ImagesDir } from '../images/dir.js';
import { inventory_entrySchema, lsmtype } from '../images/gen/inventory_pb.js';
import type { task_kobj_ids_entry } from '../images/gen/core_pb.js';

/** CRIU's image format version that fdinfo-per-id and ns-per-id images belong to. */
const IMG_VERSION = 2;

export interface InventoryFacts {
  rootIds: task_kobj_ids_entry;
  rootCgSet?: number;
  plugins?: string[];
  /** Set by a pre-dump: CRIU's PRE_DUMP_SPLICE (1) or PRE_DUMP_READ (2). */
  preDumpMode?: number;
  /** --tcp-close: `criu restore` then insists on --tcp-close too (criu/image.c). */
  tcpClose?: boolean;
}

export async function writeInventory(dir: ImagesDir, facts: InventoryFacts): Promise<void> {
  const entry = create(inventory_entrySchema, {
    imgVersion: IMG_VERSION,
    fdinfoPerId: true,
    rootIds: facts.rootIds,
    nsPerId: true,
    lsmtype: lsmtype.NO_LSM,
    networkLockMethod: 0,
    pluginsEntry: { plugins: facts.plugins ?? [] },
    dumpCriuRunId: randomUUID(),
    ...(facts.rootCgSet !== undefined ? { rootCgSet: facts.rootCgSet } : {}),
    ...(facts.preDumpMode !== undefined ? { preDumpMode: facts.preDumpMode } : {}),
    ...(facts.tcpClose ? { tcpClose: true } : {}),
  });
  await writeImage(dir, 'inventory.img', inventory_entrySchema, [entry]);
}
