// The order CRIU walks a tree in: depth first from the root, siblings by pid. Tasks are dumped
// in this order (so ids and pages numbers match CRIU's) and pstree.img lists them in it.
import type { SeizedProcessInfo, SeizedTreeInfo, ZombieInfo } from '../../native/index.js';

export type TreeMember = { kind: 'live'; proc: SeizedProcessInfo } | { kind: 'zombie'; zombie: ZombieInfo };

const pidOf = (m: TreeMember) => (m.kind === 'live' ? m.proc.pid : m.zombie.pid);
const ppidOf = (m: TreeMember) => (m.kind === 'live' ? m.proc.ppid : m.zombie.ppid);

export function treeOrder(tree: SeizedTreeInfo): TreeMember[] {
  const members: TreeMember[] = [
    ...tree.processes.map((proc) => ({ kind: 'live' as const, proc })),
    ...tree.zombies.map((zombie) => ({ kind: 'zombie' as const, zombie })),
  ];
  const children = new Map<number, TreeMember[]>();
  for (const m of members) {
    if (pidOf(m) === tree.root) continue;
    children.set(ppidOf(m), [...(children.get(ppidOf(m)) ?? []), m]);
  }
  const ordered: TreeMember[] = [];
  const visit = (m: TreeMember) => {
    ordered.push(m);
    for (const c of (children.get(pidOf(m)) ?? []).sort((a, b) => pidOf(a) - pidOf(b))) visit(c);
  };
  const root = members.find((m) => pidOf(m) === tree.root);
  if (root) visit(root);
  return ordered;
}
