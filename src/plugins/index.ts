// Plugins: ES modules loaded from --libdir, with hooks at CRIU's plugin points.
export { definePlugin, isPlugin, PLUGIN_API_VERSION, type Plugin } from './define.js';
export { loadPlugins, loadPluginsFrom, PluginHost, type HookOutcome, type LoadPluginsOptions } from './loader.js';
export * from './types.js';
