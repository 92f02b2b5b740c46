// Bundles the command line into dist/cli.js (over the file tsc wrote there) and its on-demand
// parts into dist/cli-*.js. Unbundled, a dump makes Node resolve, read and compile ~190 ES
// modules (yargs and @bufbuild/protobuf included), the larger part of the CLI's start-up.
// The library (dist/index.js and the rest of dist/) stays tsc's output, module per module.
//
// What src/cli.ts and src/cli/*.ts import on demand becomes its own chunk, loaded only by the
// commands that need it: `tsdump --version` compiles the 30 KB entry alone, --help adds yargs,
// a dump the flow, the image schemas and the native loader. The chunks sit in dist/ beside
// the entry, as tsc's files do, so what they resolve from import.meta.url (../package.json,
// ../native/index.cjs) is found at the same place.
//
// Usage: node scripts/build-cli.mjs [OUTDIR]   (default dist)
import { build } from 'esbuild';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const outdir = process.argv[2] ?? 'dist';

// chunk names carry a content hash: the previous build's would otherwise pile up
for (const f of readdirSync(outdir, { withFileTypes: true })) {
  if (f.isFile() && /^cli-.*\.js(\.map)?$/.test(f.name)) rmSync(join(outdir, f.name));
}

await build({
  entryPoints: ['src/cli.ts'],
  outdir,
  bundle: true,
  splitting: true,
  chunkNames: 'cli-[name]-[hash]',
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: 'linked',
  logLevel: 'warning',
});
