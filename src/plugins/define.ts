// definePlugin(): the one function a tsdump plugin imports (`import { definePlugin } from
// 'tsdump/plugin'`). It only checks the shape and marks the object, so this module has no
// dependencies and a plugin stays a plain ES module.
//
//   export default definePlugin({
//     name: 'my-gpu',
//     async init(ctx) { ... },
//     hooks: {
//       async pauseDevices({ pid }, ctx) { ...; return true; },
//       dumpExtFile(file, ctx) { return file.path.startsWith('/dev/my-gpu') ? save(file) : false; },
//     },
//   });
//
// Put the module (.js or .mjs) in a directory and pass it with --libdir (-L) or
// `dump({ libDir })`. Hooks are described in ./types.ts.
import { HOOK_NAMES, type PluginDefinition } from './types.js';

export type * from './types.js';

/** Version of the plugin contract; bumped only when a hook changes incompatibly. */
export const PLUGIN_API_VERSION = 1;

/** Marks objects made by definePlugin; a registered symbol so every copy of tsdump agrees. */
export const PLUGIN_BRAND: unique symbol = Symbol.for('tsdump.plugin') as never;

export type Plugin = Readonly<PluginDefinition> & { readonly [PLUGIN_BRAND]: number };

export function definePlugin(def: PluginDefinition): Plugin {
  if (!def || typeof def.name !== 'string' || def.name.length === 0) {
    throw new TypeError('definePlugin: a plugin needs a name');
  }
  const apiVersion = def.apiVersion ?? PLUGIN_API_VERSION;
  if (apiVersion > PLUGIN_API_VERSION) {
    throw new TypeError(`definePlugin: ${def.name} needs plugin API ${apiVersion}, this tsdump has ${PLUGIN_API_VERSION}`);
  }
  for (const key of Object.keys(def.hooks ?? {})) {
    if (!(HOOK_NAMES as readonly string[]).includes(key)) {
      throw new TypeError(`definePlugin: ${def.name} defines unknown hook ${key}; known: ${HOOK_NAMES.join(', ')}`);
    }
    const fn = (def.hooks as Record<string, unknown>)[key];
    if (typeof fn !== 'function') throw new TypeError(`definePlugin: ${def.name}.hooks.${key} is not a function`);
  }
  return Object.freeze({ ...def, apiVersion, hooks: Object.freeze({ ...def.hooks }), [PLUGIN_BRAND]: apiVersion });
}

export function isPlugin(x: unknown): x is Plugin {
  return typeof x === 'object' && x !== null && typeof (x as Record<symbol, unknown>)[PLUGIN_BRAND] === 'number';
}
