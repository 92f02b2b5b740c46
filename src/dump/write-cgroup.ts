// Cgroup membership: every thread's set of (controller, path) pairs, numbered as CRIU 4.1 numbers
// them, and cgroup.img with the sets and, per controller, the cgroup directories under the tree's
// cgroups with the properties CRIU knows how to restore (criu/cgroup.c, criu/cgroup-props.c).
//
// How CRIU lays it out, and so how tsdump does:
// - set 1 is the dumper's own (inventory.img root_cg_set); then a new id for each distinct set met
//   while the tasks are dumped in tree order, leader before its other threads. Every thread's
//   core records its set (thread_core.cg_set). A set is a /proc/PID/task/TID/cgroup file sorted
//   by controller name (byte order; cgroup v2's empty name first).
// - the first time a tree task's set is met, each of its cgroups is walked (directory order, as
//   ftw(3) sees it) and every directory found is recorded under its controller: mode, owner and
//   the known properties that exist there (value as read, one trailing newline dropped; values
//   saturating strtoll are stored as -1; cgroup.procs and tasks with an empty value).
// - the controllers are the dumper's /proc/self/cgroup lines (co-mounted names together), then
//   named hierarchies (name=...) in the order a tree task's set first mentions them.
// - cgroup.img is not written when every task lives in the dumper's set: restore then leaves
//   the tree where the restorer runs. The dumper's set itself is never in the image.
// With CRIU's default --manage-cgroups=soft, restore moves each task into its recorded cgroups,
// creating missing directories (and only then writing their properties).
import { opendir, open, stat } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { create } from '@bufbuild/protobuf';
import { writeImage } from '../images/index.js';
import type { ImagesDir } from '../images/dir.js';
import { cgroup_entrySchema } from '../images/gen/cgroup_pb.js';
import { TsdumpError } from '../errors.js';
import { nsInode } from './proc-ns.js';
import type { SeizedProcessInfo } from '../../native/index.js';
import { native } from '../native.js';

/** Properties CRIU 4.1 dumps per controller (its built-in cgroup-props table), in its order. */
const CONTROLLER_PROPS: Readonly<Record<string, readonly string[]>> = {
  cpu: ['cpu.shares', 'cpu.cfs_period_us', 'cpu.cfs_quota_us', 'cpu.rt_period_us', 'cpu.rt_runtime_us'],
  memory: [
    'memory.limit_in_bytes', 'memory.memsw.limit_in_bytes', 'memory.swappiness', 'memory.soft_limit_in_bytes',
    'memory.move_charge_at_immigrate', 'memory.oom_control', 'memory.use_hierarchy', 'memory.kmem.limit_in_bytes',
    'memory.kmem.tcp.limit_in_bytes',
  ],
  cpuset: [
    'cpuset.cpus', 'cpuset.mems', 'cpuset.memory_migrate', 'cpuset.cpu_exclusive', 'cpuset.mem_exclusive',
    'cpuset.mem_hardwall', 'cpuset.memory_spread_page', 'cpuset.memory_spread_slab', 'cpuset.sched_load_balance',
    'cpuset.sched_relax_domain_level',
  ],
  blkio: ['blkio.weight'],
  freezer: [],
  perf_event: [],
  net_cls: ['net_cls.classid'],
  net_prio: ['net_prio.ifpriomap'],
  pids: ['pids.max'],
  devices: ['devices.list'],
};
/** Dumped in every directory after the controller's own, v1 and v2 respectively. */
const GLOBAL_PROPS_V1 = ['cgroup.clone_children', 'notify_on_release', 'cgroup.procs', 'tasks'];
const GLOBAL_PROPS_V2 = ['cgroup.subtree_control', 'cgroup.max.descendants', 'cgroup.max.depth', 'cgroup.freeze', 'cgroup.type'];
/** Membership lists: only their permissions matter. */
const NO_VALUE = new Set(['cgroup.procs', 'tasks']);
/** CRIU reads a property with one read() into a 1 KiB buffer. */
const PROP_READ_MAX = 1023;
const LLONG_MAX = (1n << 63n) - 1n;

interface Member {
  name: string;
  path: string;
}

interface CgSet {
  id: number;
  members: Member[];
}

interface Dir {
  path: string;
  mode: number;
  uid: number;
  gid: number;
  props: { name: string; value: string; mode: number; uid: number; gid: number }[];
  children: Dir[];
}

interface Controller {
  names: string[];
  heads: Dir[];
  threaded: boolean;
}

const byteCompare = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** One /proc/.../cgroup file: "ID:controllers:path" lines, sorted by controller list as CRIU keeps them. */
export function parseCgroupFile(text: string, file: string): Member[] {
  const members: Member[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const first = line.indexOf(':');
    const second = first < 0 ? -1 : line.indexOf(':', first + 1);
    if (second < 0) throw new TsdumpError('PROCFS', `${file}: cannot parse cgroup line ${JSON.stringify(line)}`);
    members.push({ name: line.slice(first + 1, second), path: line.slice(second + 1) });
  }
  return members.sort((a, b) => byteCompare(a.name, b.name));
}

/** What CRIU stores for a property's text. */
export function propertyValue(name: string, raw: string): string {
  let value = raw.endsWith('\n') ? raw.slice(0, -1) : raw;
  // strtoll() saturates at LLONG_MAX: "unlimited" counters are recorded as -1
  const num = /^[\s]*([+-]?)(\d+)/.exec(value);
  if (num && num[1] !== '-' && BigInt(num[2]!) >= LLONG_MAX) value = '-1';
  if (name === 'memory.oom_control') {
    const m = /^oom_kill_disable (-?\d+)/.exec(value);
    if (!m) throw new TsdumpError('UNSUPPORTED', `cgroup property memory.oom_control: unexpected text ${JSON.stringify(value)}`);
    value = String(Number(m[1]));
  }
  return value;
}

/** Does a controller entry (its co-mounted names) stand for a set member's controller field? */
function contains(names: readonly string[], field: string): boolean {
  if (names.length === 1 && names[0] === '') return field === '';
  // CRIU's substring test: each name must occur in the field followed by ',' or the end
  return names.length > 0 && names.every((n) => field.split(n).slice(1).some((rest) => rest === '' || rest.startsWith(',')));
}

/** CRIU's find_dir: a path under an existing directory (by string prefix) is its descendant. */
function findDir(path: string, dirs: Dir[]): { kind: 'exact' | 'parent'; dir: Dir } | undefined {
  for (const d of dirs) {
    if (d.path === path) return { kind: 'exact', dir: d };
    if (path.startsWith(d.path)) return findDir(path, d.children) ?? { kind: 'parent', dir: d };
  }
  return undefined;
}

interface DirInit {
  dirName: string;
  children: DirInit[];
  properties: { name: string; value: string; perms: { mode: number; uid: number; gid: number } }[];
  dirPerms: { mode: number; uid: number; gid: number };
}

/** A directory as cgroup_dir_entry: heads by path, children by their name under the parent. */
function dirEntry(d: Dir, parentPath: string | undefined): DirInit {
  // CRIU cuts the parent's path (and the '/' after it) off the child's
  const cut = parentPath === undefined || parentPath === '/' ? 1 : parentPath.length + 1;
  return {
    dirName: d.path.slice(cut),
    children: d.children.map((c) => dirEntry(c, d.path)),
    properties: d.props.map((p) => ({ name: p.name, value: p.value, perms: { mode: p.mode, uid: p.uid, gid: p.gid } })),
    dirPerms: { mode: d.mode, uid: d.uid, gid: d.gid },
  };
}

export class CgroupMembership {
  private readonly sets: CgSet[] = [];
  private readonly controllers: Controller[] = [];
  private readonly dumperSet: CgSet;
  private rootSet: CgSet | undefined;
  private readonly threadSets = new Map<number, number>();

  private constructor(ownCgroup: string) {
    for (const line of ownCgroup.split('\n')) {
      if (line === '') continue;
      const field = line.split(':')[1] ?? '';
      const names = field.split(',').filter((n) => !n.startsWith('name='));
      if (names.length > 0) this.controllers.push({ names, heads: [], threaded: false });
    }
    this.dumperSet = this.setOf(parseCgroupFile(ownCgroup, '/proc/self/cgroup'));
  }

  /**
   * Reads the dumper's own cgroups and every live thread's, in CRIU's dump order, walking the
   * cgroups of each new set. The tree must be frozen.
   */
  static async collect(processes: readonly SeizedProcessInfo[]): Promise<CgroupMembership> {
    const own = readFileSync(`/proc/self/task/${process.pid}/cgroup`, 'utf8');
    const m = new CgroupMembership(own);
    const ownNs = nsInode('self', 'cgroup');
    for (const p of processes) {
      // The paths below are as tsdump sees them; a task in another cgroup namespace would need
      // its own view too (CRIU asks its parasite) to record the namespace's root.
      const ns = nsInode(p.pid, 'cgroup');
      if (ns !== undefined && ns !== ownNs) {
        throw new TsdumpError('UNSUPPORTED', `pid ${p.pid}: lives in another cgroup namespace; tsdump cannot dump cgroup namespaces yet`);
      }
    }
    // read off the main thread, in dump order; a text (most threads share one) is parsed once
    const threads = processes.flatMap((p) => p.threads.map((t) => ({ pid: p.pid, tid: t.tid })));
    const files = await native.threadCgroups(threads.map((t) => t.pid), threads.map((t) => t.tid));
    const setAt: (CgSet | undefined)[] = [];
    for (const [i, t] of threads.entries()) {
      const at = files.index[i]!;
      let set = setAt[at];
      if (!set) {
        const known = m.sets.length;
        set = setAt[at] = m.setOf(parseCgroupFile(files.texts[at]!, `/proc/${t.pid}/task/${t.tid}/cgroup`));
        if (m.sets.length > known) await m.walk(set);
      }
      m.rootSet ??= set;
      m.threadSets.set(t.tid, set.id);
    }
    return m;
  }

  /** inventory.img root_cg_set: the dumper's set. */
  get dumperSetId(): number {
    return this.dumperSet.id;
  }

  /** thread_core.cg_set of a live thread. */
  setOfThread(tid: number): number | undefined {
    return this.threadSets.get(tid);
  }

  /** Writes cgroup.img, unless every task shares the dumper's set (as CRIU, nothing to restore). */
  async write(imagesDir: ImagesDir): Promise<boolean> {
    if (this.rootSet === this.dumperSet && this.sets.length === 1) return false;
    const entry = create(cgroup_entrySchema, {
      sets: this.sets
        .filter((s) => s !== this.dumperSet)
        .map((s) => ({ id: s.id, ctls: s.members.map((c) => ({ name: c.name, path: c.path })) })),
      controllers: this.controllers.map((c) => ({
        cnames: c.names,
        dirs: c.heads.map((d) => dirEntry(d, undefined)),
        isThreaded: c.threaded,
      })),
    });
    await writeImage(imagesDir, 'cgroup.img', cgroup_entrySchema, [entry]);
    return true;
  }

  private setOf(members: Member[]): CgSet {
    const same = (s: CgSet) =>
      s.members.length === members.length && s.members.every((c, i) => c.name === members[i]!.name && c.path === members[i]!.path);
    const found = this.sets.find(same);
    if (found) return found;
    const set = { id: this.sets.length + 1, members };
    this.sets.push(set);
    return set;
  }

  private controllerFor(name: string): Controller {
    const found = this.controllers.find((c) => contains(c.names, name));
    if (found) return found;
    if (!name.startsWith('name=')) {
      throw new TsdumpError('UNSUPPORTED', `cgroup controller ${JSON.stringify(name)} is not mounted for tsdump itself`);
    }
    const named = { names: [name], heads: [], threaded: false };
    this.controllers.push(named);
    return named;
  }

  /** Records every directory under each of the set's cgroups (CRIU's collect_cgroups). */
  private async walk(set: CgSet): Promise<void> {
    for (const member of set.members) {
      const controller = this.controllerFor(member.name);
      const mount = hierarchyMount(controller.names);
      await this.walkDir(controller, mount, member.path === '/' ? '' : member.path);
    }
  }

  private async walkDir(controller: Controller, mount: string, rel: string): Promise<void> {
    const full = mount + rel;
    const path = rel === '' ? '/' : rel;
    const st = await stat(full);
    const found = findDir(path, controller.heads);
    if (found?.kind !== 'exact') {
      const dir: Dir = { path, mode: st.mode, uid: st.uid, gid: st.gid, props: [], children: [] };
      (found ? found.dir.children : controller.heads).push(dir);
      await this.readProps(controller, full, dir);
    }
    const entries = await opendir(full);
    for await (const e of entries) {
      if (e.isDirectory()) await this.walkDir(controller, mount, `${rel}/${e.name}`);
    }
  }

  private async readProps(controller: Controller, full: string, dir: Dir): Promise<void> {
    const names = [
      ...controller.names.flatMap((n) => CONTROLLER_PROPS[n] ?? []),
      ...(controller.names[0] === '' ? GLOBAL_PROPS_V2 : GLOBAL_PROPS_V1),
    ];
    for (const name of names) {
      const file = `${full}/${name}`;
      let fh;
      try {
        fh = await open(file, 'r');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // not on this kernel / not here
        throw new TsdumpError('PROCFS', `${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
      }
      try {
        const st = await fh.stat();
        let value = '';
        if (!NO_VALUE.has(name)) {
          const buf = Buffer.alloc(PROP_READ_MAX);
          const { bytesRead } = await fh.read(buf, 0, PROP_READ_MAX, null);
          value = propertyValue(name, buf.subarray(0, bytesRead).toString('latin1'));
        }
        if ((name === 'cgroup.type' && value === 'threaded') || name === 'tasks') controller.threaded = true;
        dir.props.push({ name, value, mode: st.mode, uid: st.uid, gid: st.gid });
      } catch (err) {
        if (err instanceof TsdumpError) throw err;
        throw new TsdumpError('PROCFS', `${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
      } finally {
        await fh.close();
      }
    }
  }
}

/**
 * Where a hierarchy is mounted here: /sys/fs/cgroup/NAME for v1 controllers, the unified
 * hierarchy at /sys/fs/cgroup/unified on hybrid systems or /sys/fs/cgroup itself. (CRIU mounts
 * a private instance of each instead; the directories are the same.)
 */
function hierarchyMount(names: readonly string[]): string {
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const [type, , superOpts = ''] = line.slice(sep + 3).split(' ');
    const fields = line.slice(0, sep).split(' ');
    // a bind mount of a sub-cgroup does not show the whole hierarchy
    if (fields[3] !== '/') continue;
    if (names[0] === '' ? type === 'cgroup2' : type === 'cgroup' && names.every((n) => superOpts.split(',').includes(n))) {
      return fields[4]!;
    }
  }
  throw new TsdumpError('UNSUPPORTED', `the cgroup hierarchy ${JSON.stringify(names.join(','))} is not mounted where tsdump can walk it`);
}
