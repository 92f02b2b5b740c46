// Loading plugins from --libdir and calling their hooks in CRIU's manner: plugins in file-name
// order, the first one that handles an object ends the search. A plugin is code run as root before
// any other check, so nothing is imported that someone else could have written: every plugin file
// (links resolved), its directory and their parents must belong to root or to us and be closed
// to group and others (a sticky parent such as /tmp excepted), as ssh's StrictModes wants.
import { readdir, realpath, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { TsdumpError } from '../errors.js';
import { nullLogger, type Logger } from '../log.js';
import { isPlugin, type Plugin } from './define.js';
import type { HookArgs, HookName, PluginContext, PluginStage } from './types.js';

export interface LoadPluginsOptions {
  stage: PluginStage;
  imagesDir: string;
  log?: Logger;
}

export interface HookOutcome {
  handled: boolean;
  /** The plugin that handled it. */
  plugin?: string;
}

export class PluginHost {
  private initialised: Plugin[] = [];

  constructor(
    readonly plugins: readonly Plugin[],
    private readonly ctx: PluginContext,
  ) {}

  /** Runs every plugin's init; one failing aborts (after exiting those already initialised). */
  async init(): Promise<void> {
    for (const p of this.plugins) {
      try {
        await p.init?.(this.ctx);
      } catch (err) {
        await this.exit(false);
        throw pluginError(p, 'init', err);
      }
      this.initialised.push(p);
    }
  }

  /** Runs the exit of every initialised plugin; their errors are logged, never thrown. */
  async exit(ok: boolean): Promise<void> {
    const done = this.initialised;
    this.initialised = [];
    for (const p of done) {
      try {
        await p.exit?.(this.ctx, { ok });
      } catch (err) {
        this.ctx.log.error(`plugin ${p.name}: exit: ${errText(err)}`);
      }
    }
  }

  /** Whether any plugin implements `hook` (so the dump can refuse early when none does). */
  has(hook: HookName): boolean {
    return this.plugins.some((p) => typeof p.hooks?.[hook] === 'function');
  }

  /** Asks the plugins in order until one handles `args`. */
  async run<H extends HookName>(hook: H, args: HookArgs<H>): Promise<HookOutcome> {
    for (const p of this.plugins) {
      const fn = p.hooks?.[hook] as ((a: HookArgs<H>, c: PluginContext) => unknown) | undefined;
      if (!fn) continue;
      let answer: unknown;
      try {
        answer = await fn.call(p.hooks, args, this.ctx);
      } catch (err) {
        throw pluginError(p, hook, err);
      }
      if (answer === true) {
        this.ctx.log.debug(`plugin ${p.name} handled ${hook}`);
        return { handled: true, plugin: p.name };
      }
    }
    return { handled: false };
  }
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function pluginError(p: Plugin, where: string, err: unknown): TsdumpError {
  return new TsdumpError('PLUGIN', `plugin ${p.name}: ${where}: ${errText(err)}`, { cause: err });
}

const PLUGIN_FILE = /\.(m?js)$/;

/** Refuses `path` (a plugin file, or its directory) if anyone but root or us could change it, or its parents. */
async function checkTrusted(path: string, what: string): Promise<void> {
  const me = process.geteuid?.() ?? 0;
  let real: string;
  try {
    real = await realpath(path);
  } catch (err) {
    throw new TsdumpError('PLUGIN', `${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? errText(err)}`, { cause: err });
  }
  for (let p = real, first = true; ; first = false) {
    const st = await stat(p);
    const why =
      st.uid !== 0 && st.uid !== me
        ? `belongs to uid ${st.uid} (neither root nor us)`
        : (st.mode & 0o022) !== 0 && (first || (st.mode & 0o1000) === 0)
          ? `is writable by ${st.mode & 0o002 ? 'everyone' : 'its group'} (mode ${(st.mode & 0o7777).toString(8)})`
          : undefined;
    if (why) {
      const subject = p === real ? `${what} ${path}` : `${what} ${path}: its directory ${p}`;
      throw new TsdumpError('PLUGIN', `${subject} ${why}; plugins run as root, so tsdump loads none that others could change`);
    }
    const up = dirname(p);
    if (up === p) return;
    p = up;
  }
}

/** Imports every .js/.mjs module in `dir` (sorted by name); each must default-export a plugin. */
export async function loadPluginsFrom(dir: string): Promise<Plugin[]> {
  const abs = resolve(dir);
  let names: string[];
  try {
    names = (await readdir(abs, { withFileTypes: true }))
      .filter((e) => (e.isFile() || e.isSymbolicLink()) && PLUGIN_FILE.test(e.name))
      .map((e) => e.name)
      .sort();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? errText(err);
    throw new TsdumpError('PLUGIN', `plugin dir ${abs}: ${code}`, { cause: err });
  }
  await checkTrusted(abs, 'plugin dir');
  const plugins: Plugin[] = [];
  for (const name of names) {
    const file = join(abs, name);
    await checkTrusted(file, 'plugin');
    let mod: { default?: unknown };
    try {
      mod = (await import(pathToFileURL(file).href)) as { default?: unknown };
    } catch (err) {
      throw new TsdumpError('PLUGIN', `plugin ${file}: cannot load: ${errText(err)}`, { cause: err });
    }
    if (!isPlugin(mod.default)) {
      throw new TsdumpError('PLUGIN', `plugin ${file}: the default export is not made by definePlugin()`);
    }
    if (plugins.some((p) => p.name === (mod.default as Plugin).name)) {
      throw new TsdumpError('PLUGIN', `plugin ${file}: another plugin is already named ${(mod.default as Plugin).name}`);
    }
    plugins.push(mod.default);
  }
  return plugins;
}

/** Loads the plugins of `libDir` (none when undefined) and initialises them. */
export async function loadPlugins(libDir: string | undefined, opts: LoadPluginsOptions): Promise<PluginHost> {
  const log = opts.log ?? nullLogger;
  const plugins = libDir === undefined ? [] : await loadPluginsFrom(libDir);
  for (const p of plugins) log.info(`Loaded plugin ${p.name}`);
  const host = new PluginHost(plugins, { stage: opts.stage, imagesDir: resolve(opts.imagesDir), log });
  await host.init();
  return host;
}
