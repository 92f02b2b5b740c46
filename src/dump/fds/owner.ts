// The file owner (F_SETOWN_EX / F_SETSIG) of an open file description, as CRIU's fown_entry wants
// it. It belongs to the description, so a pidfd_getfd duplicate of the task's fd reads the same.
import type { FdKindContext } from './kind.js';
import { native } from '../../native.js';

export type Fown = FdKindContext['fown'];

export function fdOwner(pid: number, fd: number): Fown {
  const o = native.fdOwner(pid, fd);
  // Without an owner the kernel keeps no credentials: CRIU leaves them 0 as well.
  return { uid: o.uid, euid: o.euid, signum: o.signum, pidType: o.pidType, pid: o.pid };
}
