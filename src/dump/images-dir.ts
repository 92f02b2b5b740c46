// The images directory: created owner-only, checked writable up front, and stripped of a stale
// inventory.img so that a dump interrupted half-way can never be mistaken for a complete one.
import { mkdir, rm, stat, access, constants } from 'node:fs/promises';
import { resolve } from 'node:path';
import { TsdumpError } from '../errors.js';

export async function prepareImagesDir(dir: string): Promise<string> {
  const abs = resolve(dir);
  try {
    await mkdir(abs, { recursive: true, mode: 0o700 });
    const st = await stat(abs);
    if (!st.isDirectory()) throw new TsdumpError('IMAGE_IO', `images dir ${abs} is not a directory`);
    await access(abs, constants.W_OK | constants.X_OK);
    await rm(resolve(abs, 'inventory.img'), { force: true });
  } catch (err) {
    if (err instanceof TsdumpError) throw err;
    const e = err as NodeJS.ErrnoException;
    throw new TsdumpError('IMAGE_IO', `images dir ${abs}: ${e.code ?? ''} ${e.message}`.trim(), { cause: err });
  }
  return abs;
}
