// Writes man/tsdump.1 from the command-line tables (src/cli/man.ts): npm run gen:man.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { manPage } from '../src/cli/man.js';

const root = join(import.meta.dirname, '..');
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
writeFileSync(join(root, 'man', 'tsdump.1'), manPage(version));
