// One tsdump memory dump, as its own process so /usr/bin/time sees its peak RSS (Node + addon):
// seize the tree, drain the memory into DIR/pages-1.img, kill the tree. Prints timings as JSON.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const native = require('../native/index.cjs');
const [pid, dir, mode = 'vmsplice'] = process.argv.slice(2);
const session = new native.Session();
const t0 = performance.now();
await session.seizeTree(Number(pid));
const t1 = performance.now();
let dump;
let t2;
try {
  dump = await session.dumpMemory(Number(pid), { imagesDir: dir, pagesId: 1, mode, ...(process.env.TSDUMP_BENCH_PIPES ? { pipes: Number(process.env.TSDUMP_BENCH_PIPES) } : {}) });
} finally {
  t2 = performance.now();
  await session.releaseTree({ mode: 'kill' });
}
const t3 = performance.now();
session.close();
const ms = (ns) => ns / 1e6;
console.log(JSON.stringify({
  seizeMs: t1 - t0,
  // Seize to the kill being sent: the tasks' downtime attributable to the dump.
  frozenMs: t2 - t0,
  releaseMs: t3 - t2,
  scanMs: ms(dump.timings.scanNs),
  drainMs: ms(dump.timings.drainNs),
  vmspliceMs: ms(dump.timings.vmspliceNs),
  spliceMs: ms(dump.timings.spliceNs),
  vmspliceCalls: dump.vmspliceCalls,
  pages: dump.counts.written,
}));
