#!/usr/bin/env node
// Command-line front end: parses CRIU-style options and hands them to the library. No dump logic
// lives here.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { TsdumpError } from './errors.js';

async function main(argv: string[]): Promise<void> {
  await yargs(argv)
    .scriptName('tsdump')
    .usage('$0 <command> [options]\n\nCheckpoint a live Linux process tree into CRIU-format images.')
    .strict()
    .demandCommand(1, 'name a command: dump, show')
    .help()
    .version()
    .fail((msg, err) => {
      throw err ?? new TsdumpError('USAGE', msg);
    })
    .parseAsync();
}

main(hideBin(process.argv)).catch((err: unknown) => {
  const msg = err instanceof Error ? err.message : String(err);
  process.stderr.write(`tsdump: ${msg}\n`);
  process.exitCode = 1;
});
