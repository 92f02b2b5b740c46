// CRIU configuration files. Each line holds one option without its leading "--" and its
// arguments, separated by blanks; a word starting with '#' ends the line; "double quotes" keep
// blanks in an argument and \" escapes a quote. The files are read in CRIU's order and their
// options go before the command line's, so a later source wins:
//   /etc/criu/default.conf, $HOME/.criu/default.conf   (skipped with --no-default-config or --config)
//   $CRIU_CONFIG_FILE
//   --config FILE
//   the command line
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TsdumpError } from './errors.js';

export const GLOBAL_CONFIG_FILE = '/etc/criu/default.conf';
export const USER_CONFIG_FILE = '.criu/default.conf';

/** One option of a configuration file, as command-line words, and where it was written. */
export interface ConfigLine {
  file: string;
  line: number;
  /** "--option" (or "--option=value"), then its arguments. */
  words: string[];
}

/** A configuration file's options, one per non-empty line. */
export function parseConfigLines(text: string, file = 'config'): ConfigLine[] {
  const out: ConfigLine[] = [];
  text.split('\n').forEach((line, i) => {
    const words = splitConfigLine(line, `${file}:${i + 1}`);
    if (words.length > 0) out.push({ file, line: i + 1, words: [`--${words[0]!}`, ...words.slice(1)] });
  });
  return out;
}

/** Turns a configuration file's text into command-line words ("--option", "arg", ...). */
export function parseConfigText(text: string, file = 'config'): string[] {
  return parseConfigLines(text, file).flatMap((l) => l.words);
}

function splitConfigLine(line: string, where: string): string[] {
  const words: string[] = [];
  let i = 0;
  while (i < line.length) {
    while (i < line.length && /\s/.test(line[i]!)) i++;
    if (i >= line.length || line[i] === '#') break;
    if (line[i] === '"') {
      let word = '';
      i++;
      for (;;) {
        if (i >= line.length) throw new TsdumpError('USAGE', `${where}: unterminated quoted string`);
        const c = line[i]!;
        if (c === '\\' && line[i + 1] === '"') {
          word += '"';
          i += 2;
        } else if (c === '"') {
          i++;
          break;
        } else {
          word += c;
          i++;
        }
      }
      words.push(word);
    } else {
      const start = i;
      while (i < line.length && !/\s/.test(line[i]!)) i++;
      words.push(line.slice(start, i));
    }
  }
  return words;
}

export interface ConfigSources {
  /** Environment (CRIU_CONFIG_FILE, HOME). */
  env?: NodeJS.ProcessEnv;
  /** Overrides /etc/criu/default.conf (tests). */
  globalFile?: string;
}

export interface LoadedConfig {
  /** Files actually read, in order. */
  files: string[];
  /** Their options as command-line words, in order (to be placed before the command line's). */
  args: string[];
  /** The same, line by line with where each was written. */
  lines: ConfigLine[];
}

/** What the command line says about configuration, found before the real parse (as CRIU does). */
export function configDirectives(argv: readonly string[]): { configFile?: string; noDefault: boolean } {
  let configFile: string | undefined;
  let noDefault = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') break;
    if (a === '--no-default-config') noDefault = true;
    else if (a === '--config') {
      const next = argv[i + 1];
      if (next === undefined) throw new TsdumpError('USAGE', 'option --config needs a file');
      configFile = next;
      noDefault = true;
      i++;
    } else if (a.startsWith('--config=')) {
      configFile = a.slice('--config='.length);
      noDefault = true;
    }
  }
  return configFile === undefined ? { noDefault } : { configFile, noDefault };
}

/**
 * Reads the configuration files that apply to `argv`. Missing default files are skipped;
 * a file named by --config or CRIU_CONFIG_FILE must exist.
 */
export function loadConfig(argv: readonly string[], sources: ConfigSources = {}): LoadedConfig {
  const env = sources.env ?? process.env;
  const { configFile, noDefault } = configDirectives(argv);
  const candidates: { file: string; required: boolean }[] = [];
  if (!noDefault) {
    candidates.push({ file: sources.globalFile ?? GLOBAL_CONFIG_FILE, required: false });
    if (env.HOME) candidates.push({ file: join(env.HOME, USER_CONFIG_FILE), required: false });
  }
  if (env.CRIU_CONFIG_FILE) candidates.push({ file: env.CRIU_CONFIG_FILE, required: true });
  if (configFile !== undefined) candidates.push({ file: configFile, required: true });

  const loaded: LoadedConfig = { files: [], args: [], lines: [] };
  for (const { file, required } of candidates) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (!required && code === 'ENOENT') continue;
      throw new TsdumpError('USAGE', `config file ${file}: ${code ?? String(err)}`, { cause: err });
    }
    loaded.files.push(file);
    const lines = parseConfigLines(text, file);
    loaded.lines.push(...lines);
    loaded.args.push(...lines.flatMap((l) => l.words));
  }
  return loaded;
}
