// Every kind of open file tsdump can dump, tried in order.
import type { FdKind } from './kind.js';
import { regularFiles } from './regular.js';
import { pipes } from './pipe.js';
import { eventfds } from './eventfd.js';
import { signalfds } from './signalfd.js';
import { timerfds } from './timerfd.js';
import { eventpolls } from './eventpoll.js';
import { inotifies } from './inotify.js';
import { fanotifies } from './fanotify.js';
import { fifos } from './fifo.js';
import { ghostFiles } from './ghost.js';
import { memfds } from './memfd.js';
import { sockets } from './socket.js';
import { terminals } from './tty.js';
import { pidfds } from './pidfd.js';

// Terminals first: regular files refuse /dev/pts paths, and a terminal is never a plain path.
// memfds before ghost files: their /proc name ("/memfd:NAME (deleted)") looks like a deleted file.
export const FD_KINDS: readonly FdKind[] = [terminals, regularFiles, pipes, eventfds, signalfds, timerfds, eventpolls, inotifies, fanotifies, fifos, memfds, ghostFiles, sockets, pidfds];
