// Which tasks share kernel objects. CRIU numbers each kind of object (mm, fd table, fs, signal
// handlers) separately and every namespace from one counter; restore recreates sharing from
// equal ids. Sharing is decided with kcmp(2) against one representative per id, the
// representatives kept in kcmp's own order so that a task is placed in log n calls.
import { statSync } from 'node:fs';
import { native } from '../native.js';
import type { task_kobj_ids_entry } from '../images/gen/core_pb.js';
import { create } from '@bufbuild/protobuf';
import { task_kobj_ids_entrySchema } from '../images/gen/core_pb.js';

type KobjKind = 'vm' | 'files' | 'fs' | 'sighand';
const KOBJ_KINDS: readonly KobjKind[] = ['vm', 'files', 'fs', 'sighand'];

/** Namespaces in the order CRIU numbers them, with the ids-img field each one fills. */
const NS_ORDER = [
  ['pid', 'pidNsId'],
  ['net', 'netNsId'],
  ['ipc', 'ipcNsId'],
  ['uts', 'utsNsId'],
  ['time', 'timeNsId'],
  ['mnt', 'mntNsId'],
  ['user', 'userNsId'],
  ['cgroup', 'cgroupNsId'],
] as const;

export interface NamespaceRef {
  kind: string;
  inode: bigint;
}

/** One task per id of a kind, in kcmp order: the pids as kcmpFind takes them, and their ids. */
class Representatives {
  private pids = new Int32Array(64);
  private readonly ids: number[] = [];

  constructor(pid: number, id: number) {
    this.insert(0, pid, id);
  }

  get count(): number {
    return this.ids.length;
  }

  sorted(): Int32Array {
    return this.pids.subarray(0, this.ids.length);
  }

  id(at: number): number {
    return this.ids[at]!;
  }

  insert(at: number, pid: number, id: number): void {
    const n = this.ids.length;
    if (n === this.pids.length) {
      const bigger = new Int32Array(n * 2);
      bigger.set(this.pids);
      this.pids = bigger;
    }
    this.pids.copyWithin(at + 1, at, n);
    this.pids[at] = pid;
    this.ids.splice(at, 0, id);
  }
}

export class KobjIds {
  private readonly reps = new Map<KobjKind, Representatives>();
  private readonly ns = new Map<string, number>();
  private nextNsId = 1;
  /** Namespace kinds the tree shares with us but is restored in one of its own (sysv-ipc.ts). */
  private readonly ownNamespaces = new Set<string>();

  constructor() {
    // tsdump itself takes id 1 of every kind, as CRIU does: the tree never shares with us.
    for (const kind of KOBJ_KINDS) this.reps.set(kind, new Representatives(process.pid, 1));
  }

  /**
   * The tree's namespace of this kind gets an id of its own even where it is ours, so that
   * restore creates a fresh one for the root (for the tree's SysV objects, see sysv-ipc.ts).
   * Call before the first task's ids are taken.
   */
  ownNamespace(kind: 'ipc'): void {
    this.ownNamespaces.add(kind);
  }

  /** The ids of process `pid` (namespaces from its /proc/PID/ns inodes). */
  idsOf(pid: number, namespaces: readonly NamespaceRef[]): task_kobj_ids_entry {
    return this.ids(pid, namespaces, false);
  }

  private ids(pid: number, namespaces: readonly NamespaceRef[], dumper: boolean): task_kobj_ids_entry {
    const ids = create(task_kobj_ids_entrySchema, {
      vmId: this.kobjId('vm', pid),
      filesId: this.kobjId('files', pid),
      fsId: this.kobjId('fs', pid),
      sighandId: this.kobjId('sighand', pid),
    });
    for (const [kind, field] of NS_ORDER) {
      const ns = namespaces.find((n) => n.kind === kind);
      if (ns) ids[field] = this.nsId(kind, ns.inode, !dumper && this.ownNamespaces.has(kind));
    }
    return ids;
  }

  /**
   * inventory.img's root_ids: the ids of the dumper itself, which restore treats as the root
   * task's parent (equal namespace ids mean "inherited", equal files_id would mean a shared fd
   * table with the restorer).
   */
  dumperIds(): task_kobj_ids_entry {
    const namespaces = NS_ORDER.flatMap(([kind]) => {
      try {
        return [{ kind, inode: BigInt(statSync(`/proc/self/ns/${kind}`).ino) }];
      } catch {
        return []; // a namespace kind this kernel lacks
      }
    });
    return this.ids(process.pid, namespaces, true);
  }

  /**
   * The id of the net namespace tsdump runs in: the sockets it finds with sock_diag live there
   * (CRIU records it as each socket's ns_id).
   */
  dumperNetNsId(): number {
    return this.nsId('net', BigInt(statSync('/proc/self/ns/net').ino), false);
  }

  private kobjId(kind: KobjKind, pid: number): number {
    const reps = this.reps.get(kind)!;
    const at = native.kcmpFind(pid, kind, reps.sorted());
    if (at >= 0) return reps.id(at);
    // a new object: the next id of its kind, placed where kcmp's order puts it
    const id = reps.count + 1;
    reps.insert(-at - 1, pid, id);
    return id;
  }

  private nsId(kind: string, inode: bigint, ownCopy: boolean): number {
    const key = `${kind}:${inode}${ownCopy ? ':tree' : ''}`;
    let id = this.ns.get(key);
    if (id === undefined) {
      id = this.nextNsId++;
      this.ns.set(key, id);
    }
    return id;
  }
}
