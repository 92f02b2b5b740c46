// `tsdump report DIR [-o FILE]`: the HTML picture of a dump (html.ts), written owner-only to FILE
// (it names every file and socket the tree had open) or printed on stdout.

import { basename, dirname, resolve } from 'node:path';
import { TsdumpError } from '../errors.js';
import { closeFd, openImagesDir, writeAll } from '../images/dir.js';
import { loadDumpDir, verdict } from '../show/dir.js';
import { renderReport } from './html.js';

export interface ReportResult {
  /** Where the report went (undefined: returned as `html`). */
  readonly output?: string;
  readonly html: string;
  readonly bytes: number;
  readonly processes: number;
  readonly verdict: 'complete' | 'incomplete' | 'inconsistent';
  readonly problems: readonly string[];
}

export async function writeReport(dir: string, options: { output?: string; version?: string } = {}): Promise<ReportResult> {
  const d = await loadDumpDir(resolve(dir));
  const html = renderReport(d, options.version !== undefined ? { version: options.version } : {});
  if (options.output !== undefined) {
    // created the way the -o log is: through its directory's descriptor, replacing any old file
    // by name, never writing through a link planted in its place
    const path = resolve(options.output);
    let fd: number;
    try {
      fd = openImagesDir(dirname(path), { shared: true }).createFileReplacing(basename(path));
    } catch (err) {
      throw new TsdumpError('IMAGE_IO', `report ${path}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    try {
      await writeAll(fd, Buffer.from(html));
    } finally {
      await closeFd(fd);
    }
  }
  return {
    ...(options.output !== undefined ? { output: options.output } : {}),
    html,
    bytes: Buffer.byteLength(html),
    processes: d.processes.length,
    verdict: verdict(d),
    problems: d.problems.map((p) => `${p.kind}: ${p.message}`),
  };
}
