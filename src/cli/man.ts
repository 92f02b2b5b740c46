// tsdump(1), written from the same tables as --help (args.ts's helpModel): the commands, their
// options and examples, the criu options tsdump refuses. man/tsdump.1 is this function's output,
// committed; `npm run gen:man` rewrites it and the tests fail while it is stale.

import { helpModel, type HelpOption } from './args.js';

/** Text made safe for roff: backslashes, hyphens (as minus signs), and a leading control character. */
function roff(text: string): string {
  return text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .replace(/^([.'])/, '\\&$1');
}

function options(list: readonly HelpOption[]): string[] {
  return list.flatMap((o) => ['.TP', `.B ${roff(o.flags)}`, roff(o.desc)]);
}

export function manPage(version: string): string {
  const help = helpModel();
  const lines = [
    `.TH TSDUMP 1 "" "tsdump ${roff(version)}" "User Commands"`,
    '.SH NAME',
    'tsdump \\- checkpoint live Linux process trees into CRIU images',
    '.SH SYNOPSIS',
    '.B tsdump',
    '.I command',
    '.RI [ options ]',
    '.SH DESCRIPTION',
    roff(
      'tsdump freezes a live process tree and writes its state (threads, registers, memory, files, pipes, ' +
        'sockets, signals, timers, credentials) as CRIU-format images that criu restore brings back alive. ' +
        "It takes criu's option names and short forms, reads criu's configuration files, and refuses by name " +
        'the criu options it does not implement rather than ignore them.',
    ),
    '.SH COMMANDS',
  ];
  for (const c of help.commands) {
    lines.push(`.SS "${roff(c.usage)}"`, `${roff(c.description[0]!.toUpperCase() + c.description.slice(1))}.`);
    lines.push(...options(c.options));
    lines.push('.PP', 'Examples:', '.RS');
    for (const [line, what] of c.examples) lines.push('.PP', `.B ${roff(line)}`, '.br', roff(what));
    lines.push('.RE');
  }
  lines.push(
    '.SS "tsdump completion [bash|zsh]"',
    roff('Prints the shell completion script (the default shell from $SHELL): tsdump completion bash >> ~/.bashrc, or tsdump completion zsh into a directory of $fpath as _tsdump.'),
    '.SH "COMMON OPTIONS"',
    roff('Every command but report also takes:'),
    ...options(help.common),
    '.SH "REFUSED CRIU OPTIONS"',
    roff(`These criu options exist but tsdump does not implement them yet; each is refused by name, with exit status 1: ${help.refused.join(', ')}.`),
    '.SH "EXIT STATUS"',
    roff(
      '0 on success. 1 on failure, with one line on standard error (and, with --json, a JSON document carrying a stable error code on standard output). ' +
        'show and report also exit 1 when the directory is not a finished dump (after showing it); check when a required feature is missing or this user cannot dump.',
    ),
    '.SH FILES',
    '.TP',
    roff('/etc/criu/default.conf, ~/.criu/default.conf, $CRIU_CONFIG_FILE'),
    roff('criu configuration files, one option per line, read before the command line (not by report).'),
    '.TP',
    roff('/run/tsdump/kerndat.json'),
    roff("check's answers, cached until the next boot ($TSDUMP_KERNDAT_CACHE moves it)."),
    '.SH "SEE ALSO"',
    '.BR criu (8),',
    '.BR crit (1)',
  );
  return lines.join('\n') + '\n';
}
