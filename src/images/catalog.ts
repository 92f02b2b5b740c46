// The catalogue of CRIU image types: per-image magic, which head magic precedes it, the file names
// CRIU gives them, the protobuf message of their entries and the payload CRIU appends after some
// entries. Facts from CRIU 4.x (criu/include/magic.h, criu/image-desc.c, pycriu's images.py).

import type { DescMessage } from '@bufbuild/protobuf';
import { apparmor_entrySchema } from './gen/apparmor_pb.js';
import { autofs_entrySchema } from './gen/autofs_pb.js';
import { binfmt_misc_entrySchema } from './gen/binfmt-misc_pb.js';
import { bpfmap_data_entrySchema } from './gen/bpfmap-data_pb.js';
import { bpfmap_file_entrySchema } from './gen/bpfmap-file_pb.js';
import { cgroup_entrySchema } from './gen/cgroup_pb.js';
import { core_entrySchema, task_kobj_ids_entrySchema } from './gen/core_pb.js';
import { cpuinfo_entrySchema } from './gen/cpuinfo_pb.js';
import { creds_entrySchema } from './gen/creds_pb.js';
import { eventfd_file_entrySchema } from './gen/eventfd_pb.js';
import { eventpoll_file_entrySchema, eventpoll_tfd_entrySchema } from './gen/eventpoll_pb.js';
import { ext_file_entrySchema } from './gen/ext-file_pb.js';
import { fdinfo_entrySchema, file_entrySchema } from './gen/fdinfo_pb.js';
import { irmap_cache_entrySchema } from './gen/fh_pb.js';
import { fifo_entrySchema } from './gen/fifo_pb.js';
import { file_lock_entrySchema } from './gen/file-lock_pb.js';
import { fs_entrySchema } from './gen/fs_pb.js';
import {
  fanotify_file_entrySchema,
  fanotify_mark_entrySchema,
  inotify_file_entrySchema,
  inotify_wd_entrySchema,
} from './gen/fsnotify_pb.js';
import { ghost_chunk_entrySchema, ghost_file_entrySchema } from './gen/ghost-file_pb.js';
import { inventory_entrySchema } from './gen/inventory_pb.js';
import { ipc_msg_entrySchema } from './gen/ipc-msg_pb.js';
import { ipc_sem_entrySchema } from './gen/ipc-sem_pb.js';
import { ipc_shm_entrySchema } from './gen/ipc-shm_pb.js';
import { ipc_var_entrySchema } from './gen/ipc-var_pb.js';
import { memfd_inode_entrySchema } from './gen/memfd_pb.js';
import { mm_entrySchema } from './gen/mm_pb.js';
import { mnt_entrySchema } from './gen/mnt_pb.js';
import { net_device_entrySchema, netns_entrySchema } from './gen/netdev_pb.js';
import { ns_file_entrySchema } from './gen/ns_pb.js';
import { packet_sock_entrySchema } from './gen/packet-sock_pb.js';
import { pagemap_entrySchema, pagemap_headSchema } from './gen/pagemap_pb.js';
import { pidns_entrySchema } from './gen/pidns_pb.js';
import { pipe_data_entrySchema } from './gen/pipe-data_pb.js';
import { pipe_entrySchema } from './gen/pipe_pb.js';
import { pstree_entrySchema } from './gen/pstree_pb.js';
import { reg_file_entrySchema } from './gen/regfile_pb.js';
import { remap_file_path_entrySchema } from './gen/remap-file-path_pb.js';
import { rlimit_entrySchema } from './gen/rlimit_pb.js';
import { sa_entrySchema } from './gen/sa_pb.js';
import { seccomp_entrySchema } from './gen/seccomp_pb.js';
import { siginfo_entrySchema } from './gen/siginfo_pb.js';
import { signalfd_entrySchema } from './gen/signalfd_pb.js';
import { inet_sk_entrySchema } from './gen/sk-inet_pb.js';
import { netlink_sk_entrySchema } from './gen/sk-netlink_pb.js';
import { sk_packet_entrySchema } from './gen/sk-packet_pb.js';
import { unix_sk_entrySchema } from './gen/sk-unix_pb.js';
import { stats_entrySchema } from './gen/stats_pb.js';
import { tcp_stream_entrySchema } from './gen/tcp-stream_pb.js';
import { timens_entrySchema } from './gen/timens_pb.js';
import { itimer_entrySchema, posix_timer_entrySchema } from './gen/timer_pb.js';
import { timerfd_entrySchema } from './gen/timerfd_pb.js';
import { tty_data_entrySchema, tty_file_entrySchema, tty_info_entrySchema } from './gen/tty_pb.js';
import { tunfile_entrySchema } from './gen/tun_pb.js';
import { userns_entrySchema } from './gen/userns_pb.js';
import { utsns_entrySchema } from './gen/utsns_pb.js';
import { vma_entrySchema } from './gen/vma_pb.js';

/** First u32 of every protobuf image except inventory. */
export const IMG_COMMON_MAGIC = 0x54564319;
/** First u32 of images that describe the run rather than the processes (stats, irmap cache). */
export const IMG_SERVICE_MAGIC = 0x55105940;

/** What precedes the entries: one or two magics, or nothing for raw images. */
export type ImageHead = 'common' | 'service' | 'inventory' | 'raw';

/**
 * How many bytes CRIU appends after an entry, computed from the entry itself:
 * - `field`: the value of the named numeric fields, summed (pipe data, socket queues, ...);
 * - `ipc-sem` / `ipc-shm`: a u16 per semaphore padded to 8 bytes / the segment padded to 4;
 * - `ipc-msg`: `qnum` size-prefixed ipc_msg entries, each followed by its text padded to 8;
 * - `ghost`: see ghost-file.ts; ghost images carry data after the head or after every chunk.
 */
export type ExtraRule =
  | { kind: 'field'; fields: readonly string[] }
  | { kind: 'ipc-sem' }
  | { kind: 'ipc-shm' }
  | { kind: 'ipc-msg' }
  | { kind: 'ghost' };

export interface ImageType {
  /** CRIU's magic name, as crit prints it ("CORE", "PAGEMAP", ...). */
  readonly name: string;
  /** The per-image magic (0 for raw images). */
  readonly magic: number;
  readonly head: ImageHead;
  /** File names CRIU uses for this type; `N` stands for a number (decimal, or hex where noted). */
  readonly files: RegExp;
  /** Message of the entries; `first` replaces it for the first entry (pagemap head, ghost head). */
  readonly entry?: DescMessage;
  readonly first?: DescMessage;
  readonly extra?: ExtraRule;
}

const num = '(\\d+)';
const hex = '([0-9a-f]+)';
const img = (stem: string): RegExp => new RegExp(`^${stem}\\.img$`);

function protoImage(name: string, magic: number, files: RegExp, entry?: DescMessage, more: Partial<ImageType> = {}): ImageType {
  return { name, magic, head: 'common', files, entry, ...more };
}

export const IMAGE_TYPES: readonly ImageType[] = [
  protoImage('INVENTORY', 0x58313116, img('inventory'), inventory_entrySchema, { head: 'inventory' }),
  protoImage('PSTREE', 0x50273030, img('pstree'), pstree_entrySchema),
  protoImage('FDINFO', 0x56213732, img(`fdinfo-${num}`), fdinfo_entrySchema),
  protoImage('PAGEMAP', 0x56084025, img(`pagemap(?:-shmem|-secretmem)?-${num}`), pagemap_entrySchema, {
    first: pagemap_headSchema,
  }),
  protoImage('CORE', 0x55053847, img(`core-${num}`), core_entrySchema),
  protoImage('IDS', 0x54432030, img(`ids-${num}`), task_kobj_ids_entrySchema),
  protoImage('VMAS', 0x54123737, img(`vmas-${num}`), vma_entrySchema),
  protoImage('PIPES', 0x56513555, img('pipes'), pipe_entrySchema),
  protoImage('PIPES_DATA', 0x56453709, img('pipes-data'), pipe_data_entrySchema, { extra: { kind: 'field', fields: ['bytes'] } }),
  protoImage('FIFO', 0x58364939, img('fifo'), fifo_entrySchema),
  protoImage('FIFO_DATA', 0x59333054, img('fifo-data'), pipe_data_entrySchema, { extra: { kind: 'field', fields: ['bytes'] } }),
  protoImage('SIGACT', 0x55344201, img(`sigacts-${num}`), sa_entrySchema),
  protoImage('UNIXSK', 0x54373943, img('unixsk'), unix_sk_entrySchema),
  protoImage('INETSK', 0x56443851, img('inetsk'), inet_sk_entrySchema),
  protoImage('PACKETSK', 0x60454618, img('packetsk'), packet_sock_entrySchema),
  protoImage('NETLINK_SK', 0x58005614, img('netlinksk'), netlink_sk_entrySchema),
  protoImage('SK_QUEUES', 0x56264026, img('sk-queues'), sk_packet_entrySchema, { extra: { kind: 'field', fields: ['length'] } }),
  protoImage('ITIMERS', 0x57464056, img(`itimers-${num}`), itimer_entrySchema),
  protoImage('POSIX_TIMERS', 0x52603957, img(`posix-timers-${num}`), posix_timer_entrySchema),
  protoImage('CREDS', 0x54023547, img(`creds-${num}`), creds_entrySchema),
  protoImage('UTSNS', 0x54473203, img(`utsns-${num}`), utsns_entrySchema),
  protoImage('IPC_VAR', 0x53115007, img(`ipcns-var-${num}`), ipc_var_entrySchema),
  protoImage('IPCNS_SHM', 0x46283044, img(`ipcns-shm-${num}`), ipc_shm_entrySchema, { extra: { kind: 'ipc-shm' } }),
  protoImage('IPCNS_MSG', 0x55453737, img(`ipcns-msg-${num}`), ipc_msg_entrySchema, { extra: { kind: 'ipc-msg' } }),
  protoImage('IPCNS_SEM', 0x59573019, img(`ipcns-sem-${num}`), ipc_sem_entrySchema, { extra: { kind: 'ipc-sem' } }),
  protoImage('REG_FILES', 0x50363636, img('reg-files'), reg_file_entrySchema),
  protoImage('EXT_FILES', 0x59255641, img('ext-files'), ext_file_entrySchema),
  protoImage('FS', 0x51403912, img(`fs-${num}`), fs_entrySchema),
  protoImage('MM', 0x57492820, img(`mm-${num}`), mm_entrySchema),
  protoImage('REMAP_FPATH', 0x59133954, img('remap-fpath'), remap_file_path_entrySchema),
  protoImage('GHOST_FILE', 0x52583605, img(`ghost-file-${hex}`), ghost_chunk_entrySchema, {
    first: ghost_file_entrySchema,
    extra: { kind: 'ghost' },
  }),
  protoImage('TCP_STREAM', 0x51465506, img(`tcp-stream-${hex}`), tcp_stream_entrySchema, {
    extra: { kind: 'field', fields: ['inq_len', 'outq_len'] },
  }),
  protoImage('EVENTFD_FILE', 0x44523722, img('eventfd'), eventfd_file_entrySchema),
  protoImage('EVENTPOLL_FILE', 0x45023858, img('eventpoll'), eventpoll_file_entrySchema),
  protoImage('EVENTPOLL_TFD', 0x44433746, img('eventpoll-tfd'), eventpoll_tfd_entrySchema),
  protoImage('SIGNALFD', 0x57323820, img('signalfd'), signalfd_entrySchema),
  protoImage('INOTIFY_FILE', 0x48424431, img('inotify'), inotify_file_entrySchema),
  protoImage('INOTIFY_WD', 0x54562009, img('inotify-wd'), inotify_wd_entrySchema),
  protoImage('FANOTIFY_FILE', 0x55096122, img('fanotify'), fanotify_file_entrySchema),
  protoImage('FANOTIFY_MARK', 0x56506035, img('fanotify-mark'), fanotify_mark_entrySchema),
  protoImage('MNTS', 0x55563928, img(`mountpoints-${num}`), mnt_entrySchema),
  protoImage('NETDEV', 0x57373951, img(`netdev-${num}`), net_device_entrySchema),
  protoImage('NETNS', 0x55933752, img(`netns-${num}`), netns_entrySchema),
  protoImage('TTY_FILES', 0x59433025, img('tty'), tty_file_entrySchema),
  protoImage('TTY_INFO', 0x59453036, img('tty-info'), tty_info_entrySchema),
  protoImage('TTY_DATA', 0x59413026, img('tty-data'), tty_data_entrySchema),
  protoImage('FILE_LOCKS', 0x54323616, img('filelocks'), file_lock_entrySchema),
  protoImage('RLIMIT', 0x57113925, img(`rlimit-${num}`), rlimit_entrySchema),
  protoImage('SIGNAL', 0x59255647, img(`signal-[sp]-${num}`), siginfo_entrySchema),
  protoImage('NS_FILES', 0x61394011, img('ns-files'), ns_file_entrySchema),
  protoImage('TUNFILE', 0x57143751, img('tunfile'), tunfile_entrySchema),
  protoImage('CGROUP', 0x59383330, img('cgroup'), cgroup_entrySchema),
  protoImage('TIMERFD', 0x50493712, img('timerfd'), timerfd_entrySchema),
  protoImage('CPUINFO', 0x61404013, img('cpuinfo'), cpuinfo_entrySchema),
  protoImage('USERNS', 0x55474906, img(`userns-${num}`), userns_entrySchema),
  protoImage('SECCOMP', 0x64413049, img('seccomp'), seccomp_entrySchema),
  protoImage('BINFMT_MISC', 0x67343323, img(`binfmt-misc(?:-${num})?`), binfmt_misc_entrySchema),
  protoImage('AUTOFS', 0x49353943, img(`autofs-${num}`), autofs_entrySchema),
  protoImage('FILES', 0x56303138, img('files'), file_entrySchema),
  protoImage('MEMFD_INODE', 0x48453499, img('memfd'), memfd_inode_entrySchema),
  protoImage('TIMENS', 0x43114433, img(`timens-${num}`), timens_entrySchema),
  protoImage('PIDNS', 0x61157326, img(`pidns-${num}`), pidns_entrySchema),
  protoImage('BPFMAP_FILE', 0x57506142, img('bpfmap-file'), bpfmap_file_entrySchema),
  protoImage('BPFMAP_DATA', 0x64324033, img('bpfmap-data'), bpfmap_data_entrySchema, {
    extra: { kind: 'field', fields: ['keys_bytes', 'values_bytes'] },
  }),
  protoImage('APPARMOR', 0x59423047, img('apparmor'), apparmor_entrySchema),
  protoImage('STATS', 0x57093306, /^stats-(dump|restore)$/, stats_entrySchema, { head: 'service' }),
  protoImage('IRMAP_CACHE', 0x57004059, /^irmap-cache$/, irmap_cache_entrySchema, { head: 'service' }),
  // Raw images: no magic, no entries; page contents, netlink dumps, tarballs.
  protoImage('PAGES', 0, img(`pages(?:-shmem)?-${num}`), undefined, { head: 'raw' }),
  protoImage('RAW', 0, /^(?:(?:ifaddr|route6?|rule|ip6?tables|nftables|netns-ct|netns-exp)-\d+\.img|tmpfs(?:-dev)?-\d+\.tar\.gz\.img)$/, undefined, {
    head: 'raw',
  }),
];

const byMagic = new Map(IMAGE_TYPES.filter((x) => x.head !== 'raw').map((x) => [x.magic, x]));

export function imageTypeByMagic(magic: number): ImageType | undefined {
  return byMagic.get(magic);
}

/** The image type CRIU would write under this file name (basename), if any. */
export function imageTypeForFile(fileName: string): ImageType | undefined {
  return IMAGE_TYPES.find((x) => x.files.test(fileName));
}
