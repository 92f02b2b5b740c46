// The library entry point: `import { dump, readImage } from 'tsdump'`.
export { TsdumpError, type ErrorCode } from './errors.js';
