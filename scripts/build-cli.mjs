// Bundles the command line into dist/cli.js (over the file tsc wrote there) and its on-demand
// parts into dist/cli-*.js. Unbundled, a dump makes Node resolve, read and compile ~190 ES
// modules (yargs and @bufbuild/protobuf included), the larger part of the CLI's start-up.
// The library (dist/index.js and the rest of dist/) stays tsc's output, module per module.
//
// What src/cli.ts and src/cli/*.ts import on demand becomes its own chunk, loaded only by the
// commands that need it: `tsdump --version` compiles the 30 KB entry alone, a dump adds the
// flow, the image schemas and the native loader. The help texts are rendered here, by yargs
// from the same option tables (args.ts helpText()), and built in as TSDUMP_HELP_TEXTS, so that
// --help does not load yargs either. The chunks sit in dist/ beside the entry, as tsc's files
// do, so what they resolve from import.meta.url (../package.json, ../native/index.cjs) is found
// at the same place.
//
// Usage: node scripts/build-cli.mjs [OUTDIR]   (default dist)
import { build } from 'esbuild';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const outdir = process.argv[2] ?? 'dist';
const common = { bundle: true, platform: 'node', format: 'esm', target: 'node20', logLevel: 'warning' };

// args.ts is bundled alone into a temporary directory and run: it must not load the native core
// (nor anything else --help does not need), and here it could not find it.
async function renderHelpTexts() {
  const tmp = mkdtempSync(join(tmpdir(), 'tsdump-help-'));
  try {
    await build({ ...common, entryPoints: ['src/cli/args.ts'], outfile: join(tmp, 'args.mjs') });
    const args = await import(pathToFileURL(join(tmp, 'args.mjs')).href);
    const texts = { '': await args.helpText(undefined) };
    for (const name of args.COMMANDS) texts[name] = await args.helpText(name);
    return texts;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

// chunk names carry a content hash: the previous build's would otherwise pile up
for (const f of readdirSync(outdir, { withFileTypes: true })) {
  if (f.isFile() && /^cli-.*\.js(\.map)?$/.test(f.name)) rmSync(join(outdir, f.name));
}

await build({
  ...common,
  // own-child.ts forks './worker.js' beside the module it runs from: in the bundle that is dist/
  entryPoints: { cli: 'src/cli.ts', worker: 'src/dump/worker.ts' },
  outdir,
  splitting: true,
  chunkNames: 'cli-[name]-[hash]',
  sourcemap: 'linked',
  define: { TSDUMP_HELP_TEXTS: JSON.stringify(await renderHelpTexts()) },
});
