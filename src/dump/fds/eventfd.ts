// eventfd: the counter and the file flags (CRIU's eventfd_file_entry).
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { TsdumpError } from '../../errors.js';
import { fdinfoExtra, isAnon } from './anon.js';
import type { FdKind } from './kind.js';

export const eventfds: FdKind = {
  name: 'eventfds',
  matches: (fd) => isAnon(fd, 'eventfd'),
  async entry(c) {
    // EFD_SEMAPHORE lives in the eventfd context, not in the file flags. eventfd_file_entry has
    // no field for it and CRIU's restore always calls eventfd(counter, 0), so the mode would
    // silently turn into counter mode: refuse instead of restoring different behaviour.
    if (fdinfoExtra(c.fd, 'eventfd-semaphore') === '1') {
      throw new TsdumpError(
        'UNSUPPORTED_FD',
        `pid ${c.pid}: fd ${c.fd.fd} (${c.fd.target}): tsdump cannot dump EFD_SEMAPHORE eventfds: ` +
          `CRIU's eventfd image has no place for the semaphore mode and restore would bring it back in counter mode`,
      );
    }
    if (c.fd.eventfdCount === undefined) {
      throw new TsdumpError('KERNEL', `pid ${c.pid}: fd ${c.fd.fd}: fdinfo of the eventfd has no eventfd-count line`);
    }
    return {
      type: fd_types.EVENTFD,
      id: c.id,
      efd: { id: c.id, flags: c.fileFlags, fown: c.fown, counter: c.fd.eventfdCount },
    };
  },
};
