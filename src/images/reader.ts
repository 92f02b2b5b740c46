// Reading image files and whole image directories. Only regular files are read (a FIFO would
// block, /dev/zero never ends), opened non-blocking and checked before a byte is read, and no
// bigger than MAX_IMAGE_BYTES: what is read is the file, once, and what is shown comes from it.

import { constants } from 'node:fs';
import { open, readdir, type FileHandle } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { TsdumpError } from '../errors.js';
import { imageTypeForFile } from './catalog.js';
import { decodeImage, type Image } from './codec.js';

export interface ImageFile extends Image {
  readonly path: string;
  /** File size; for raw images (pages-N.img, ...) the only thing read. */
  readonly size: number;
}

function ioError(path: string, what: string, err: unknown): TsdumpError {
  const e = err as NodeJS.ErrnoException;
  return new TsdumpError('IMAGE_IO', `${path}: byte 0: ${what}: ${e.code ?? e.message}`, { cause: err });
}

/** The largest protobuf image read (CRIU's biggest, ghost files, are capped by --ghost-limit). */
export const MAX_IMAGE_BYTES = 1 << 30;

/** Reads one image. Raw images are recognised by CRIU's file names and not read. */
export async function readImage(path: string): Promise<ImageFile> {
  const type = imageTypeForFile(basename(path));
  let fh: FileHandle;
  try {
    // non-blocking: opening a FIFO must not wait for a writer
    fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw ioError(path, 'cannot read image', err);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) {
      const what = st.isFIFO() ? 'a FIFO' : st.isCharacterDevice() ? 'a character device' : st.isBlockDevice() ? 'a block device' : st.isSocket() ? 'a socket' : 'not a file';
      throw new TsdumpError('IMAGE_IO', `${path}: byte 0: ${what}, not an image file; only regular files are read`);
    }
    if (type?.head === 'raw') return { path, size: st.size, type: type.name, magic: 0, entries: [] };
    if (st.size > MAX_IMAGE_BYTES) {
      throw new TsdumpError('IMAGE_IO', `${path}: byte 0: ${st.size} bytes, more than any image tsdump reads (${MAX_IMAGE_BYTES})`);
    }
    const bytes = Buffer.alloc(st.size);
    let got = 0;
    while (got < bytes.length) {
      const { bytesRead } = await fh.read(bytes, got, bytes.length - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return { path, size: got, ...decodeImage(bytes.subarray(0, got), path) };
  } catch (err) {
    if (err instanceof TsdumpError) throw err;
    throw ioError(path, 'cannot read image', err);
  } finally {
    await fh.close();
  }
}

/** Reads every file in DIR that CRIU names as an image (logs and other files are skipped). */
export async function readImagesDir(dir: string): Promise<ImageFile[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    throw ioError(dir, 'cannot list image directory', err);
  }
  const images = names.filter((n) => imageTypeForFile(n)).sort();
  return Promise.all(images.map((n) => readImage(join(dir, n))));
}
