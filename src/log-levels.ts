// CRIU's log levels (-v0..-v4), apart from the logger (log.ts): the command-line parser needs the
// default, and must not load what the logger loads (the images directory, the native core).
export const LOG_MSG = 0;
export const LOG_ERROR = 1;
export const LOG_WARN = 2;
export const LOG_INFO = 3;
export const LOG_DEBUG = 4;
export const DEFAULT_VERBOSITY = LOG_WARN;

/** Each level's name, by its number: the Logger method that writes at it, and the JSON format's `level`. */
export const LOG_LEVEL_NAMES = ['msg', 'error', 'warn', 'info', 'debug'] as const;
export type LogLevelName = (typeof LOG_LEVEL_NAMES)[number];
