// pstree.img: the process tree in CRIU's walk order (see tree-order.ts), with each process's
// threads. Zombies are in it too: restore recreates them from their core image.
import { create } from '@bufbuild/protobuf';
import { writeImage } from '../images/index.js';
import type { ImagesDir } from '../images/dir.js';
import { pstree_entrySchema } from '../images/gen/pstree_pb.js';
import type { TreeMember } from './tree-order.js';

export async function writePstree(dir: ImagesDir, root: number, members: readonly TreeMember[]): Promise<void> {
  const entries = members.map((m) => {
    const e =
      m.kind === 'live'
        ? { pid: m.proc.pid, ppid: m.proc.ppid, pgid: m.proc.pgid, sid: m.proc.sid, threads: m.proc.threads.map((t) => t.tid) }
        : { pid: m.zombie.pid, ppid: m.zombie.ppid, pgid: m.zombie.pgid, sid: m.zombie.sid, threads: [m.zombie.pid] };
    return create(pstree_entrySchema, { ...e, ppid: e.pid === root ? 0 : e.ppid });
  });
  await writeImage(dir, 'pstree.img', pstree_entrySchema, entries);
}
