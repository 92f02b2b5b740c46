// signalfd: the signal mask it reads (CRIU's signalfd_entry). The pending signals themselves
// belong to the task and are dumped with it.
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { TsdumpError } from '../../errors.js';
import { isAnon } from './anon.js';
import type { FdKind } from './kind.js';

export const signalfds: FdKind = {
  name: 'signalfds',
  matches: (fd) => isAnon(fd, 'signalfd'),
  async entry(c) {
    if (c.fd.signalfdMask === undefined) {
      throw new TsdumpError('KERNEL', `pid ${c.pid}: fd ${c.fd.fd}: fdinfo of the signalfd has no sigmask line`);
    }
    return {
      type: fd_types.SIGNALFD,
      id: c.id,
      sgfd: { id: c.id, flags: c.fileFlags, fown: c.fown, sigmask: c.fd.signalfdMask },
    };
  },
};
