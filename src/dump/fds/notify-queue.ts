// Unread events of an inotify instance or fanotify group. CRIU's images keep the watches and
// marks, not the event queue (the kernel offers no way to read it back without consuming it), and
// CRIU drops the events without a word. tsdump refuses such a group unless asked for CRIU's
// behaviour with --drop-notify-events, and then says how much was dropped.
import { TsdumpError } from '../../errors.js';
import { native } from '../../native.js';
import type { FdKindContext } from './kind.js';

/** What a kind knows of its events' sizes, to turn the queued bytes into a number of events. */
export interface EventSizes {
  /** "inotify" or "fanotify", for messages. */
  readonly what: string;
  readonly min: number;
  readonly max: number;
}

/** Refuses, or warns and lets the dump go on, when the group behind `c` has unread events. */
export function checkUnreadEvents(c: FdKindContext, sizes: EventSizes): void {
  const queued = native.fdQueuedBytes(c.pid, c.fd.fd);
  if (queued === 0) return;
  const lo = Math.ceil(queued / sizes.max);
  const hi = Math.floor(queued / sizes.min);
  const events = lo === hi ? `${lo} unread event${lo === 1 ? '' : 's'}` : `${lo} to ${hi} unread events`;
  const where = `pid ${c.pid}: fd ${c.fd.fd} (${c.fd.target})`;
  if (!c.dropNotifyEvents) {
    throw new TsdumpError(
      'UNSUPPORTED_FD',
      `${where}: tsdump cannot dump ${sizes.what} descriptors with unread events (${events}, ${queued} bytes queued; ` +
        `CRIU's image keeps the watches, not the event queue); read them first, or pass --drop-notify-events ` +
        `to dump the ${sizes.what} group without them, as CRIU does`,
    );
  }
  c.warn(`${where}: dropping ${events} (${queued} bytes) of ${sizes.what} events: the restored group starts with an empty queue (--drop-notify-events)`);
}
