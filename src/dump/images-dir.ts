// The images directory of a dump or pre-dump (src/images/dir.ts): opened once, created owner-only
// when missing, refused when another user could write into it, and refused when it already holds
// a checkpoint: a later dump must never damage a complete one.
import { TsdumpError } from '../errors.js';
import { openImagesDir, type ImagesDir } from '../images/dir.js';
import type { DumpOptions } from './options.js';

export function prepareImagesDir(options: Pick<DumpOptions, 'imagesDir' | 'log'>): ImagesDir {
  const dir = openImagesDir(options.imagesDir, { create: true });
  const made = dir.madeDirs();
  if (made.length > 0) options.log?.info(`created images dir ${made.at(-1)} (owner-only)`);
  const held = dir.checkpointFiles();
  if (held.length > 0) {
    const shown = held.length > 3 ? `${held.slice(0, 3).join(', ')}, ... (${held.length} files)` : held.join(', ');
    throw new TsdumpError('IMAGE_IO', `images dir ${dir.path} already holds a checkpoint (${shown}); tsdump never writes over one: choose another directory`);
  }
  return dir;
}
