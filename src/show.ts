// `tsdump show`: one image as crit's JSON (showImage), or an images directory summarised or seen
// through crit x's views (showDir, src/show/). The CLI (src/cli/run.ts) prints what these return; errors are TsdumpErrors.

import { typedErrors } from './errors.js';
import { critImage, pyJson } from './images/crit.js';
import { readImage } from './images/reader.js';
import { loadDumpDir, verdict } from './show/dir.js';
import { viewJson, viewText, type ShowDirView } from './show/views.js';

export interface ShowOptions {
  /** crit's --pretty: indented, with hex/flags/dev/IP formatting. */
  readonly pretty?: boolean;
}

/** One image as `crit decode -i FILE [--pretty]` prints it (without the trailing newline). */
export function showImage(path: string, options: ShowOptions = {}): Promise<string> {
  return typedErrors(() => showImageText(path, options));
}

async function showImageText(path: string, options: ShowOptions): Promise<string> {
  const image = await readImage(path);
  if (image.magic === 0) {
    // crit cannot decode raw images; say what the file is instead.
    return pyJson({ magic: image.type, size: image.size }, options.pretty ?? false);
  }
  return pyJson(critImage(image, options.pretty ?? false), options.pretty ?? false);
}

export { SHOW_DIR_VIEWS, type ShowDirView } from './show/views.js';

export interface ShowDirResult {
  /** What `show` prints on stdout. */
  readonly output: string;
  readonly verdict: 'complete' | 'incomplete' | 'inconsistent';
  /** Why the directory is not a complete dump, one line each (also in the JSON output). */
  readonly problems: readonly string[];
}

/** An images directory: a summary, or one of crit x's views (ps, fds, mems, rss), as text or JSON. */
export function showDir(dir: string, options: { view?: ShowDirView; json?: boolean } = {}): Promise<ShowDirResult> {
  return typedErrors(async () => {
    const d = await loadDumpDir(dir);
    const output = options.json ? JSON.stringify(viewJson(d, options.view)) + '\n' : viewText(d, options.view);
    return { output, verdict: verdict(d), problems: d.problems.map((p) => `${p.kind}: ${p.message}`) };
  });
}
