// Every kind of open file tsdump can dump, tried in order.
import type { FdKind } from './kind.js';
import { regularFiles } from './regular.js';
import { pipes } from './pipe.js';

export const FD_KINDS: readonly FdKind[] = [regularFiles, pipes];
