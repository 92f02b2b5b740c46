// The images directory of a dump or pre-dump (src/images/dir.ts): opened once, created owner-only
// when missing (and said so in the log), refused when another user could write into it, and never
// written into while it holds a checkpoint: with replaceImages the new set is written beside it
// and swapped in at the commit point (`commitImages`), so a failure leaves the old set whole.
// A run that fails before its commit removes what it created (`discardImages`), nothing else.
import { resolve } from 'node:path';
import { TsdumpError } from '../errors.js';
import { openImagesDir, type ImagesDir } from '../images/dir.js';
import type { DumpOptions } from './options.js';

export function prepareImagesDir(options: Pick<DumpOptions, 'imagesDir' | 'log' | 'replaceImages' | 'prevImagesDir'>): ImagesDir {
  const dir = openImagesDir(options.imagesDir, { create: true });
  const made = dir.madeDirs();
  if (made.length > 0) options.log?.info(`created images dir ${made.at(-1)} (owner-only)`);
  const held = dir.checkpointFiles();
  if (held.length === 0) return dir;
  const shown = held.length > 3 ? `${held.slice(0, 3).join(', ')}, ... (${held.length} files)` : held.join(', ');
  if (!options.replaceImages) {
    throw new TsdumpError(
      'IMAGE_IO',
      `images dir ${dir.path} already holds a checkpoint (${shown}); tsdump never writes over one: choose another directory, or give --replace-images to replace it once the new one is complete`,
    );
  }
  if (options.prevImagesDir !== undefined && resolve(dir.path, options.prevImagesDir) === dir.path) {
    throw new TsdumpError('USAGE', `--prev-images-dir ${options.prevImagesDir} is the checkpoint --replace-images would replace`);
  }
  dir.stageReplacement();
  options.log?.info(`images dir ${dir.path} holds a checkpoint (${shown}): the new one is written to ${dir.workPath} and replaces it once complete`);
  return dir;
}

/** The commit point: the new set is in place (swapped in, when it replaces one). */
export function commitImages(dir: ImagesDir, log: DumpOptions['log']): void {
  const c = dir.commit();
  if (c.replaced > 0) log?.info(`replaced the previous checkpoint in ${dir.path} (${c.replaced} files)`);
  if (c.leftOver) log?.warn(`files of the replaced checkpoint that could not be put back are in ${c.leftOver}`);
}

/** After a failure before the commit: removes what this run created (files, the dirs it made). */
export function discardImages(dir: ImagesDir, log: DumpOptions['log']): void {
  const created = dir.created().length;
  const left = dir.discard();
  if (created > 0 || left.length > 0) log?.info(`removed the ${created} files this run wrote in ${dir.workPath}`);
  for (const l of left) log?.warn(`left in place (not empty, or not ours any more): ${l}`);
}
