// The library: `import { dump, check, readImage, readImagesDir } from 'tsdump'`. The CLI is a thin
// layer over exactly these functions.
export { dump, preDump, SUPPORTED_DUMP_OPTIONS, type DumpEvents, type DumpOptions, type DumpResult, type TaskPages } from './dump/index.js';
export type { DumpCounters, DumpTimings } from './dump/stats.js';
export { check, kerndat, formatCheckReport, type CheckOptions, type CheckReport, type Kerndat } from './check.js';
export { readImage, readImagesDir, ImageWriter, writeImage, type ImageFile } from './images/index.js';
export { showImage, showDir } from './show.js';
export { runPageServer, type PageServerOptions, type PageServerResult, type PageServerTls } from './page-server.js';
export { definePlugin, type Plugin } from './plugins/index.js';
export { ActionScriptError } from './action-scripts.js';
export { TsdumpError, ERROR_CODES, type ErrorCode } from './errors.js';
