// `tsdump show`: one image as crit's JSON (showImage), or a short summary of a whole image
// directory (showDir). The CLI (src/cli/run.ts) prints what these return; errors are TsdumpErrors.

import { join } from 'node:path';
import type { DescMessage, Message, MessageShape } from '@bufbuild/protobuf';
import { TsdumpError } from './errors.js';
import { critImage, pyJson } from './images/crit.js';
import { readImage, readImagesDir, type ImageFile } from './images/reader.js';
import { core_entrySchema, task_kobj_ids_entrySchema } from './images/gen/core_pb.js';
import { fd_types, fdinfo_entrySchema, file_entrySchema, type file_entry } from './images/gen/fdinfo_pb.js';
import { mm_entrySchema } from './images/gen/mm_pb.js';
import { pagemap_entrySchema } from './images/gen/pagemap_pb.js';
import { pstree_entrySchema, type pstree_entry } from './images/gen/pstree_pb.js';
import { pagemapPages } from './images/pagemap.js';

export interface ShowOptions {
  /** crit's --pretty: indented, with hex/flags/dev/IP formatting. */
  readonly pretty?: boolean;
}

/** One image as `crit decode -i FILE [--pretty]` prints it (without the trailing newline). */
export async function showImage(path: string, options: ShowOptions = {}): Promise<string> {
  const image = await readImage(path);
  if (image.magic === 0) {
    // crit cannot decode raw images; say what the file is instead.
    return pyJson({ magic: image.type, size: image.size }, options.pretty ?? false);
  }
  return pyJson(critImage(image, options.pretty ?? false), options.pretty ?? false);
}

function messagesOf<Desc extends DescMessage>(image: ImageFile | undefined, schema: Desc): MessageShape<Desc>[] {
  const out: MessageShape<Desc>[] = [];
  for (const e of image?.entries ?? []) {
    if (e.schema.typeName === schema.typeName) out.push(e.message as Message as MessageShape<Desc>);
  }
  return out;
}

function sizeText(bytes: bigint): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(bytes);
  let u = 0;
  while (v >= 1024 && u < units.length - 1) [v, u] = [v / 1024, u + 1];
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

function fileText(f: file_entry | undefined): string {
  if (!f) return '?';
  switch (f.type) {
    case fd_types.REG:
      return f.reg?.name ?? 'file';
    case fd_types.PIPE:
      return `pipe:[${f.pipe?.pipeId}]`;
    case fd_types.FIFO:
      return `fifo:[${f.fifo?.pipeId}]`;
    case fd_types.INETSK:
      return `inet socket:[${f.isk?.ino}]`;
    case fd_types.UNIXSK:
      return `unix socket:[${f.usk?.ino}]`;
    default:
      return (fd_types[f.type] ?? String(f.type)).toLowerCase();
  }
}

export const SHOW_DIR_VIEWS = ['tree', 'mems', 'fds'] as const;
export type ShowDirView = (typeof SHOW_DIR_VIEWS)[number];

/** A few lines about a dump: the process tree, per-task memory, per-task open files (or one of them). */
export async function showDir(dir: string, options: { view?: ShowDirView } = {}): Promise<string> {
  const images = new Map((await readImagesDir(dir)).map((img) => [img.path.slice(dir.length).replace(/^\/+/, ''), img]));
  const tree = messagesOf(images.get('pstree.img'), pstree_entrySchema);
  if (tree.length === 0) throw new TsdumpError('IMAGE_FORMAT', `${join(dir, 'pstree.img')}: byte 0: no process tree in this directory`);
  const comm = (pid: number): string => messagesOf(images.get(`core-${pid}.img`), core_entrySchema)[0]?.tc?.comm ?? '?';
  const views: Record<ShowDirView, () => string[]> = {
    tree() {
      const lines = ['process tree:'];
      const children = new Map<number, pstree_entry[]>();
      for (const p of tree) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p]);
      const walk = (p: pstree_entry, depth: number): void => {
        const threads = p.threads.length === 1 ? '' : `, ${p.threads.length} threads`;
        lines.push(`${'  '.repeat(depth + 1)}${p.pid} ${comm(p.pid)} (pgid ${p.pgid}, sid ${p.sid}${threads})`);
        for (const c of children.get(p.pid) ?? []) walk(c, depth + 1);
      };
      const pids = new Set(tree.map((p) => p.pid));
      for (const root of tree.filter((p) => !pids.has(p.ppid))) walk(root, 0);
      return lines;
    },
    mems() {
      const lines = ['memory:'];
      for (const p of tree) {
        const mm = messagesOf(images.get(`mm-${p.pid}.img`), mm_entrySchema)[0];
        const mapped = (mm?.vmas ?? []).reduce((sum, v) => sum + (v.end - v.start), 0n);
        const pages = messagesOf(images.get(`pagemap-${p.pid}.img`), pagemap_entrySchema).reduce(
          (sum, e) => sum + (e.inParent ? 0n : pagemapPages(e)),
          0n,
        );
        lines.push(`  ${p.pid} ${comm(p.pid)}: ${mm?.vmas.length ?? 0} vmas, ${sizeText(mapped)} mapped, ${pages} pages dumped`);
      }
      return lines;
    },
    fds() {
      const files = new Map(messagesOf(images.get('files.img'), file_entrySchema).map((f) => [f.id, f]));
      const lines = ['files:'];
      for (const p of tree) {
        const ids = messagesOf(images.get(`ids-${p.pid}.img`), task_kobj_ids_entrySchema)[0];
        const fds = ids ? messagesOf(images.get(`fdinfo-${ids.filesId}.img`), fdinfo_entrySchema) : [];
        lines.push(`  ${p.pid} ${comm(p.pid)}: ${fds.length} descriptors`);
        for (const fd of fds) lines.push(`    fd ${fd.fd}: ${fileText(files.get(fd.id))}`);
      }
      return lines;
    },
  };
  const chosen = options.view ? [options.view] : SHOW_DIR_VIEWS;
  return [`${dir}: ${images.size} images, ${tree.length} processes`, ...chosen.flatMap((v) => views[v]())].join('\n');
}
