// timerfd: clock, settime flags, time to the next expiry, interval and unread expirations
// (CRIU's timerfd_entry).
import { readFile } from 'node:fs/promises';
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { TsdumpError } from '../../errors.js';
import { native } from '../../native.js';
import { isAnon } from './anon.js';
import type { FdKind } from './kind.js';

const CLOCK_REALTIME = 0;
const CLOCK_MONOTONIC = 1;

export const timerfds: FdKind = {
  name: 'timerfds',
  matches: (fd) => isAnon(fd, 'timerfd'),
  async entry(c) {
    const t = c.fd.timerfd;
    if (!t) throw new TsdumpError('KERNEL', `pid ${c.pid}: fd ${c.fd.fd}: fdinfo of the timerfd has no timer lines`);
    // CRIU's restore accepts only these two clocks and fails the whole restore on any other.
    if (t.clockid !== CLOCK_REALTIME && t.clockid !== CLOCK_MONOTONIC) {
      throw new TsdumpError(
        'UNSUPPORTED_FD',
        `pid ${c.pid}: fd ${c.fd.fd} (${c.fd.target}): tsdump cannot dump timerfds on clock ${t.clockid} ` +
          `(CRIU restores only CLOCK_REALTIME and CLOCK_MONOTONIC timerfds)`,
      );
    }
    let value = { sec: t.valueSec, nsec: t.valueNsec };
    let ticks = t.ticks;
    const periodic = t.intervalSec !== 0n || t.intervalNsec !== 0n;
    if (periodic && value.sec === 0n && value.nsec === 0n) {
      // A periodic timer that expired unread shows it_value 0 until the next read or gettime
      // re-arms it; recorded like that it would come back disarmed. timerfd_gettime on a
      // duplicate does what the task's own next gettime would: re-arms it for its next period
      // and counts the periods it missed into the unread ticks.
      const s = native.timerfdSettle(c.pid, c.fd.fd);
      value = { sec: BigInt(s.valueSec), nsec: BigInt(s.valueNsec) };
      ticks = await settledTicks(c.pid, c.fd.fd, ticks);
    }
    return {
      type: fd_types.TIMERFD,
      id: c.id,
      tfd: {
        id: c.id,
        flags: c.fileFlags,
        fown: c.fown,
        clockid: t.clockid,
        ticks,
        settimeFlags: t.settimeFlags,
        vsec: value.sec,
        vnsec: value.nsec,
        isec: t.intervalSec,
        insec: t.intervalNsec,
      },
    };
  },
};

/** The `ticks:` line of the timerfd's fdinfo, read again after settling it. */
async function settledTicks(pid: number, fd: number, before: bigint): Promise<bigint> {
  const text = await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
  const m = /^ticks:\s*(\d+)$/m.exec(text);
  if (!m) throw new TsdumpError('KERNEL', `pid ${pid}: fd ${fd}: fdinfo of the timerfd has no ticks line`);
  const after = BigInt(m[1]!);
  return after > before ? after : before;
}
