#!/usr/bin/env node
// tsdump's command line: parse (src/cli/args.ts), run through the library (src/cli/run.ts),
// and turn any failure into one line on stderr and exit status 1.
//
// Start-up is part of every dump's wall time: what a command does not need is never loaded (yargs
// is imported by the parser only past --version, the dump flow, the image schemas and the native
// core by run.ts only for the commands that use them), and dist/cli.js is this file bundled
// (scripts/build-cli.mjs).
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { parseCommandLine } from './cli/args.js';
import { run } from './cli/run.js';
import { TsdumpError } from './errors.js';

// A command runs for a fraction of a second, mostly while the tree is frozen, on machines with
// few cores: V8's default tier-up budget sends the dump flow's functions to TurboFan, whose
// background compiles then compete with the tracer thread and the target for those cores, for
// code that runs a few dozen times. Four times the budget still optimises the loops that run
// thousands of times (a thread's registers), and leaves the rest to the baseline tiers; set
// before the dump flow is loaded. Measured in bench/README.md ("The command's V8 budget").
setFlagsFromString('--interrupt-budget=270000');

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

async function main(argv: string[]): Promise<number> {
  const version = packageVersion();
  const invocation = await parseCommandLine(argv, { version });
  return run(invocation, { version, argv, stdout: process.stdout, stderr: process.stderr });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    // Expected failures carry a code and a message meant for the user; anything else is a bug,
    // whose stack is shown only on request.
    const msg = err instanceof Error ? err.message : String(err);
    process.stderr.write(`tsdump: ${msg.split('\n')[0]}\n`);
    if (process.argv.includes('--json')) {
      // Machine readers get the stable code too: one JSON document, as on success.
      const code = err instanceof TsdumpError ? err.code : 'INTERNAL';
      process.stdout.write(`${JSON.stringify({ error: { code, message: msg } })}\n`);
    }
    if (!(err instanceof TsdumpError) && process.env.TSDUMP_DEBUG && err instanceof Error) {
      process.stderr.write(`${err.stack ?? ''}\n`);
    }
    process.exitCode = 1;
  },
);
