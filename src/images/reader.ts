// Reading image files and whole image directories.

import { readFile, readdir, stat } from 'node:fs/promises';
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

/** Reads one image. Raw images are recognised by CRIU's file names and not read. */
export async function readImage(path: string): Promise<ImageFile> {
  const type = imageTypeForFile(basename(path));
  if (type?.head === 'raw') {
    try {
      const { size } = await stat(path);
      return { path, size, type: type.name, magic: 0, entries: [] };
    } catch (err) {
      throw ioError(path, 'cannot stat image', err);
    }
  }
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw ioError(path, 'cannot read image', err);
  }
  return { path, size: bytes.length, ...decodeImage(bytes, path) };
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
