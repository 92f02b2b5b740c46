// SysV IPC: shared memory segments, semaphore sets and message queues (ipcns-{var,shm,msg,sem}-N.img,
// criu/ipc_ns.c). `criu restore` recreates SysV objects only as the contents of an IPC namespace
// it creates for the restored root — the namespace whose id is the root's ipc_ns_id in
// ids-PID.img when that differs from the inventory's (the dumper's). Two cases:
//
//  - The tree's root lives in an IPC namespace of its own (`unshare -i`): every object of that
//    namespace is dumped, as CRIU dumps it.
//  - The tree shares tsdump's IPC namespace (the host's, usually — PostgreSQL's case: every one
//    of its processes attaches a small interlock segment). When the tree attaches SysV segments,
//    its SysV objects are dumped as a namespace of its own: the segments it attaches (or created
//    and nobody attaches), and the semaphore sets and message queues a process of the tree was
//    the last to use. The tree gets an ipc_ns_id of its own, so restore puts it in a fresh IPC
//    namespace holding exactly those. The restored objects are then private to the tree, so an
//    object a process outside the tree also uses is refused, naming it and that process: the two
//    could no longer share it. A tree that attaches no segment keeps our namespace, as before.
//
// Every task of the tree must be in the root's IPC namespace (restore creates one, for the root).
// A segment's contents go to pagemap-shmem-SHMID.img like shared anonymous memory, read through
// an attachment of tsdump's own. Restore re-attaches each chain of VMAs of a segment with one
// shmat() (criu/shmem.c open_shmem_sysv): a chain that does not cover the whole segment from its
// start is refused, and so are segments in huge pages.
import { readFile, statfs } from 'node:fs/promises';
import { create, toBinary } from '@bufbuild/protobuf';
import type { IpcDescInfo, ShmAttachmentInfo, ShmSegmentInfo, SysvObjectsInfo } from '../../native/index.js';
import { native } from '../native.js';
import { TsdumpError } from '../errors.js';
import { nsInode } from './proc-ns.js';
import type { Logger } from '../log.js';
import { ImageWriter, writeImage } from '../images/index.js';
import { ipc_var_entrySchema } from '../images/gen/ipc-var_pb.js';
import { ipc_shm_entrySchema } from '../images/gen/ipc-shm_pb.js';
import { ipc_msg_entrySchema, ipc_msgSchema } from '../images/gen/ipc-msg_pb.js';
import { ipc_sem_entrySchema } from '../images/gen/ipc-sem_pb.js';
import type { DumpContext } from './context.js';
import { writeShmemPagemap } from './mm-image.js';
import { pageBytesN } from '../arch/index.js';

const HUGETLBFS_MAGIC = 0x958458f6;

/** "key 0x00986952 (shmid 4)", as ipcs prints a key. */
function named(kind: string, d: IpcDescInfo, idName: string): string {
  return `SysV ${kind} key 0x${d.key.toString(16).padStart(8, '0')} (${idName} ${d.id})`;
}

export class SysvIpc {
  private constructor(
    /** Whose IPC namespace the objects are read in; undefined for ours. */
    private readonly nsPid: number | undefined,
    private readonly objects: SysvObjectsInfo | undefined,
    /** The tree shares our namespace but takes its objects into one of its own. */
    readonly privateNamespace: boolean,
  ) {}

  /**
   * Decides what the dump holds of SysV IPC, while nothing is written yet: `pids` are the
   * tree's live processes, root first (frozen).
   */
  static async collect(pids: readonly number[], log?: Logger): Promise<SysvIpc> {
    const [root] = pids;
    if (root === undefined) throw new TsdumpError('USAGE', 'no process to dump');
    const ours = ipcNs('self');
    const rootNs = ipcNs(root);
    for (const pid of pids) {
      if (ipcNs(pid) !== rootNs) {
        throw new TsdumpError(
          'UNSUPPORTED',
          `pid ${pid}: lives in another IPC namespace than the tree's root ${root}; criu restore creates one IPC namespace, for the root ` +
            '(CRIU refuses such trees too): dump the subtree that shares one IPC namespace',
        );
      }
    }
    const own = rootNs !== ours;
    const all = native.sysvObjects(own ? root : undefined);
    // where no segment is attached at all, no task of the tree maps one: its maps go unread
    const attachments = new Map<number, { pid: number; a: ShmAttachmentInfo }[]>();
    const someAttached = all.shm.some((s) => s.nattch > 0) || all.unreadable.some((u) => u.kind === 'shm');
    for (const pid of someAttached ? pids : []) {
      for (const a of native.sysvAttachments(pid)) {
        const list = attachments.get(a.shmid) ?? [];
        list.push({ pid, a });
        attachments.set(a.shmid, list);
      }
    }
    // Without CAP_IPC_OWNER another user's objects cannot be read; a user's own tree only
    // matters where it attaches one of them (the others it could not have used either).
    const unreadable = all.unreadable.map((u) => `${u.kind} ${u.id}`);
    const attachedUnreadable = all.unreadable.filter((u) => u.kind === 'shm' && attachments.has(u.id));
    if ((own && unreadable.length > 0) || attachedUnreadable.length > 0) {
      throw new TsdumpError(
        'EPERM_PTRACE',
        `the tree's SysV IPC objects cannot be read by uid ${process.geteuid?.()}: ${(own ? unreadable : attachedUnreadable.map((u) => `shm ${u.id}`)).join(', ')} ` +
          '(IPC_STAT denied; dumping another user\'s SysV objects needs root or CAP_IPC_OWNER)',
      );
    }
    if (unreadable.length > 0) log?.debug(`SysV objects not ours to read, and not attached by the tree: ${unreadable.join(', ')}`);
    if (own) {
      // the root's own namespace, whole, as CRIU dumps it
      await checkLayouts(all.shm, attachments);
      return new SysvIpc(root, all, false);
    }
    if (attachments.size === 0) return new SysvIpc(undefined, undefined, false);

    const tree = new Set(pids);
    const shm = all.shm.filter((s) => attachments.has(s.desc.id) || (s.nattch === 0 && tree.has(s.cpid)));
    for (const s of shm) {
      const ofTree = attachments.get(s.desc.id)?.length ?? 0;
      if (s.nattch > ofTree) await refuseSharedSegment(s, ofTree, pids, ours);
    }
    const sem = all.sem.filter((s) => s.pids.some((p) => tree.has(p)));
    for (const s of sem) await refuseShared(named('semaphore set', s.desc, 'semid'), s.pids, tree, ours);
    const msg = all.msg.filter((q) => tree.has(q.lspid) || tree.has(q.lrpid));
    for (const q of msg) await refuseShared(named('message queue', q.desc, 'msqid'), [q.lspid, q.lrpid], tree, ours);
    await checkLayouts(shm, attachments);
    log?.info(
      `The tree's SysV objects (${shm.length} segment(s), ${sem.length} semaphore set(s), ${msg.length} message queue(s)) ` +
        'are dumped as an IPC namespace of its own: after the restore they are private to it',
    );
    return new SysvIpc(undefined, { shm, sem, msg, unreadable: [] }, true);
  }

  /** Writes ipcns-{var,shm,msg,sem}-ID.img and each segment's pages; `ipcNsId` is the root's. */
  async write(ctx: DumpContext, ipcNsId: number | undefined): Promise<void> {
    const objects = this.objects;
    if (!objects) return;
    if (ipcNsId === undefined) throw new TsdumpError('PROCFS', 'the tree\'s root has no ipc_ns_id (no /proc/PID/ns/ipc?)');
    const dir = ctx.imagesDir;
    const nsPid = this.nsPid;
    const vars = await ctx.call(() => native.ipcVars(nsPid));
    await writeImage(dir, `ipcns-var-${ipcNsId}.img`, ipc_var_entrySchema, [
      create(ipc_var_entrySchema, {
        semCtls: vars.semCtls,
        msgCtlmax: vars.msgCtlmax,
        msgCtlmnb: vars.msgCtlmnb,
        msgCtlmni: vars.msgCtlmni,
        autoMsgmni: vars.autoMsgmni,
        shmCtlmax: vars.shmCtlmax,
        shmCtlall: vars.shmCtlall,
        shmCtlmni: vars.shmCtlmni,
        shmRmidForced: vars.shmRmidForced,
        mqQueuesMax: vars.mqQueuesMax,
        mqMsgMax: vars.mqMsgMax,
        mqMsgsizeMax: vars.mqMsgsizeMax,
        ...(vars.mqMsgDefault != null ? { mqMsgDefault: vars.mqMsgDefault } : {}),
        ...(vars.mqMsgsizeDefault != null ? { mqMsgsizeDefault: vars.mqMsgsizeDefault } : {}),
        ...(vars.msgNextId != null ? { msgNextId: vars.msgNextId } : {}),
        ...(vars.semNextId != null ? { semNextId: vars.semNextId } : {}),
        ...(vars.shmNextId != null ? { shmNextId: vars.shmNextId } : {}),
      }),
    ]);

    await writeImage(
      dir,
      `ipcns-shm-${ipcNsId}.img`,
      ipc_shm_entrySchema,
      objects.shm.map((s) => create(ipc_shm_entrySchema, { desc: desc(s.desc), size: s.size, inPagemaps: true })),
    );
    const { pageServer } = ctx.options;
    for (const s of objects.shm) {
      ctx.cancellation.throwIfCancelled();
      const base = { ...(nsPid !== undefined ? { nsPid } : {}), shmid: s.desc.id, size: s.size };
      if (pageServer) {
        // the server writes pagemap-shmem-SHMID.img and its pages, as with criu dump --page-server
        const sent = await ctx.call(() => ctx.session.dumpSysvShm({ ...base, pageServer }));
        ctx.stats.counters.shpagesWritten += sent.pagesWritten;
      } else {
        const pagesId = ctx.nextPagesId++;
        const d = await ctx.call(() => ctx.session.dumpSysvShm({ ...base, pagesId }));
        ctx.stats.counters.shpagesWritten += d.pagesWritten;
        await writeShmemPagemap(dir, d, pagesId);
      }
      ctx.stats.counters.shpagesScanned += Number((s.size + pageBytesN() - 1n) / pageBytesN());
    }

    const msgs = await ImageWriter.create(dir, `ipcns-msg-${ipcNsId}.img`);
    try {
      for (const q of objects.msg) {
        const messages = await ctx.call(() => native.sysvMessages(nsPid, q.desc.id, q.qnum));
        // each message: an ipc_msg (size-prefixed, as an entry is), then its text padded to 8
        const parts = messages.flatMap((m) => {
          const head = toBinary(ipc_msgSchema, create(ipc_msgSchema, { mtype: BigInt(m.mtype), msize: m.text.length }));
          const size = Buffer.alloc(4);
          size.writeUInt32LE(head.length);
          return [size, head, padded(m.text, 8)];
        });
        await msgs.append(ipc_msg_entrySchema, create(ipc_msg_entrySchema, { desc: desc(q.desc), qbytes: q.qbytes, qnum: messages.length }), Buffer.concat(parts));
      }
    } finally {
      await msgs.close();
    }

    const sems = await ImageWriter.create(dir, `ipcns-sem-${ipcNsId}.img`);
    try {
      for (const s of objects.sem) {
        // the values as u16, padded to 8 bytes
        const values = Buffer.alloc(s.values.length * 2);
        s.values.forEach((v, i) => values.writeUInt16LE(v, i * 2));
        await sems.append(ipc_sem_entrySchema, create(ipc_sem_entrySchema, { desc: desc(s.desc), nsems: s.values.length }), padded(values, 8));
      }
    } finally {
      await sems.close();
    }
  }
}

function desc(d: IpcDescInfo) {
  return { key: d.key, uid: d.uid, gid: d.gid, cuid: d.cuid, cgid: d.cgid, mode: d.mode, id: d.id };
}

function padded(b: Uint8Array, to: number): Buffer {
  const out = Buffer.alloc(Math.ceil(b.length / to) * to);
  out.set(b);
  return out;
}

/**
 * A segment the tree attaches `ofTree` times (VMAs) of its nattch: the rest are outside it.
 * Refused naming a process that holds one (or the count, if none can be found).
 */
async function refuseSharedSegment(s: ShmSegmentInfo, ofTree: number, pids: readonly number[], ns: bigint): Promise<never> {
  const what = named('shared memory segment', s.desc, 'shmid');
  const outside = native.sysvAttachedBy(s.desc.id, ns, [...pids, process.pid]);
  const who = outside.length > 0 ? `also attached by ${await describePid(outside[0]!)}, outside the dumped tree` : `attached ${s.nattch} times, only ${ofTree} of them by the dumped tree`;
  throw new TsdumpError('UNSUPPORTED', `${what} is ${who}. ${SHARED_ADVICE}`);
}

/** Semaphore sets and queues: refused when a live process outside the tree used them last. */
async function refuseShared(what: string, users: readonly number[], tree: ReadonlySet<number>, ns: bigint): Promise<void> {
  for (const pid of users) {
    if (pid <= 0 || tree.has(pid) || pid === process.pid) continue;
    // a process that is gone (or in another IPC namespace: a reused pid) shares nothing now
    let inNs: bigint | undefined;
    try {
      inNs = ipcNs(pid);
    } catch {
      inNs = undefined;
    }
    if (inNs !== ns) continue;
    throw new TsdumpError('UNSUPPORTED', `${what} is used by the dumped tree and by ${await describePid(pid)}, outside it. ${SHARED_ADVICE}`);
  }
}

const SHARED_ADVICE =
  'A restored tree gets its SysV objects in an IPC namespace of its own, where the two could no longer share it: ' +
  'dump the tree together with that process (from a common ancestor), or stop that process first';

async function describePid(pid: number): Promise<string> {
  const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
  return comm ? `pid ${pid} (${comm.trim()})` : `pid ${pid}`;
}

/**
 * Refuses what restore cannot re-attach: per process, the VMAs of a segment must form chains that
 * each start at offset 0 and run, without a hole, to the segment's end; and no huge pages.
 */
async function checkLayouts(shm: readonly ShmSegmentInfo[], attachments: ReadonlyMap<number, { pid: number; a: ShmAttachmentInfo }[]>): Promise<void> {
  for (const s of shm) {
    const list = attachments.get(s.desc.id);
    if (!list) continue;
    const what = named('shared memory segment', s.desc, 'shmid');
    const first = list[0]!;
    const mapFile = `/proc/${first.pid}/map_files/${first.a.start.toString(16)}-${first.a.end.toString(16)}`;
    if ((await statfs(mapFile)).type === HUGETLBFS_MAGIC) {
      throw new TsdumpError('UNSUPPORTED_VMA', `pid ${first.pid}: ${what} lives in huge pages (SHM_HUGETLB): tsdump cannot dump it yet`);
    }
    const page = pageBytesN();
    const whole = ((s.size + page - 1n) / page) * page;
    const byPid = new Map<number, ShmAttachmentInfo[]>();
    for (const { pid, a } of list) byPid.set(pid, [...(byPid.get(pid) ?? []), a]);
    for (const [pid, vmas] of byPid) {
      let chainStart: bigint | undefined;
      let prevEnd = 0n;
      const broken = (why: string) =>
        new TsdumpError(
          'UNSUPPORTED_VMA',
          `pid ${pid}: ${what} is attached ${why}; criu restore re-attaches whole segments only (criu/shmem.c), so tsdump refuses it, as the restore would`,
        );
      for (const v of [...vmas].sort((x, y) => (x.start < y.start ? -1 : 1))) {
        if (chainStart === undefined || v.pgoff === 0n) {
          if (chainStart !== undefined && prevEnd - chainStart !== whole) throw broken(`at 0x${chainStart.toString(16)} only in part`);
          if (v.pgoff !== 0n) throw broken(`at 0x${v.start.toString(16)} from offset 0x${v.pgoff.toString(16)}, not from its start`);
          chainStart = v.start;
        } else if (v.start !== prevEnd || v.pgoff !== v.start - chainStart) {
          throw broken(`at 0x${chainStart.toString(16)} with a hole`);
        }
        prevEnd = v.end;
      }
      if (chainStart !== undefined && prevEnd - chainStart !== whole) throw broken(`at 0x${chainStart.toString(16)} only in part`);
    }
  }
}

/** The IPC namespace's inode of `pid` (every kernel tsdump runs on has IPC namespaces). */
function ipcNs(pid: number | 'self'): bigint {
  const ino = nsInode(pid, 'ipc');
  if (ino === undefined) throw new TsdumpError('PROCFS', `pid ${pid}: no /proc/${pid}/ns/ipc`);
  return ino;
}
