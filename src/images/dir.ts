// The images directory of one run (crates/core/src/images_dir.rs): opened once, every file created
// through its descriptor (O_CREAT|O_EXCL|O_NOFOLLOW, 0600), so no planted symlink and no directory
// swapped along the path can send a write outside it. Node has no openat(): the directory lives
// in Rust and hands out descriptors, which the streaming writers write to; small files whole
// (ImageBuffer's, the tracking sidecar) are created, written and closed there, several in one
// call off the main thread (`writeFiles`).
import { close, write } from 'node:fs';
import type { ImagesDir } from '../../native/index.js';
import { native } from '../native.js';

export type { ImagesDir } from '../../native/index.js';

/**
 * Opens DIR (an existing one must be ours and closed to others, unless `shared`: a log file's
 * directory); `create` makes it, and missing parents, 0700.
 */
export function openImagesDir(path: string, opts: { create?: boolean; shared?: boolean } = {}): ImagesDir {
  return native.ImagesDir.open(path, { create: !!opts.create, shared: !!opts.shared });
}

/** A directory given by path is opened as an ImagesDir (it must exist). */
export function imagesDirOf(dir: ImagesDir | string): ImagesDir {
  return typeof dir === 'string' ? openImagesDir(dir) : dir;
}

/** Writes all of `buf` at the descriptor's offset. */
export function writeAll(fd: number, buf: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (off: number): void => {
      if (off >= buf.length) return resolve();
      write(fd, buf, off, buf.length - off, null, (err, n) => (err ? reject(err) : step(off + n)));
    };
    step(0);
  });
}

export function closeFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => close(fd, (err) => (err ? reject(err) : resolve())));
}

