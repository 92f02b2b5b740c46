// Helpers shared by the anonymous-inode kinds (eventfd, signalfd, timerfd, eventpoll, inotify).
import type { FdInfoEntry } from '../../../native/index.js';

/** True for `anon_inode:[name]` (and the bracket-less `anon_inode:name` older kernels print). */
export function isAnon(fd: FdInfoEntry, name: string): boolean {
  return fd.target === `anon_inode:[${name}]` || fd.target === `anon_inode:${name}`;
}

/** An fdinfo line the inspector did not parse into a field (key without the colon). */
export function fdinfoExtra(fd: FdInfoEntry, key: string): string | undefined {
  return fd.extra.find(([k]) => k === key)?.[1]?.trim();
}
