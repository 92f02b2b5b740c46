// The one place TypeScript knows which CPU it runs on. Every CPU-specific part of an image
// comes from the module of the CPU tsdump runs on (a dump is always of tasks on this machine):
// x86_64.ts, aarch64.ts.
import { native } from '../native.js';
import { aarch64 } from './aarch64.js';
import type { CpuArch } from './types.js';
import { x86_64 } from './x86_64.js';

export type { CpuArch } from './types.js';

const BY_NODE_ARCH: Partial<Record<NodeJS.Architecture, CpuArch>> = { x64: x86_64, arm64: aarch64 };

/** The architecture module of this machine; other CPUs have no native package to get here. */
export function hostArch(): CpuArch {
  const a = BY_NODE_ARCH[process.arch];
  if (!a) throw new Error(`tsdump: no support for the ${process.arch} CPU (x86_64 and aarch64 only)`);
  return a;
}

let pageSize: number | undefined;

/**
 * The kernel's page size in bytes: 4 KiB on x86_64; 4, 16 or 64 KiB on aarch64. CRIU's images
 * count pages, not bytes, so they carry any page size; they are restored on a kernel with the
 * same one.
 */
export function pageBytes(): number {
  pageSize ??= native.pageSize();
  return pageSize;
}

/** pageBytes() as a bigint, for address arithmetic. */
export function pageBytesN(): bigint {
  return BigInt(pageBytes());
}
