// Example tsdump plugin: takes over dumping of external files under a path prefix by copying
// their contents into the images directory, and journals every hook it sees.
//
//   TSDUMP_EXAMPLE_PREFIX=/srv/data tsdump dump -t PID -D /tmp/ckpt -L examples/plugins
//
// Files it claims are saved as ext-file-<id>.bin; hook-journal.jsonl records each call (one
// JSON object per line), which is what the test reads back.
import { appendFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { definePlugin } from 'tsdump/plugin';

const journal = (ctx, hook, args) =>
  appendFileSync(
    join(ctx.imagesDir, 'hook-journal.jsonl'),
    JSON.stringify({ hook, stage: ctx.stage, args }, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n',
    { mode: 0o600 },
  );

export default definePlugin({
  name: 'ext-file-copy',
  init(ctx) {
    journal(ctx, 'init', {});
  },
  exit(ctx, result) {
    journal(ctx, 'exit', result);
  },
  hooks: {
    dumpExtFile(file, ctx) {
      journal(ctx, 'dumpExtFile', file);
      const prefix = process.env.TSDUMP_EXAMPLE_PREFIX;
      if (!prefix || !file.path.startsWith(prefix)) return false; // not ours: ask the next plugin
      // /proc/PID/fd/N reaches the file even if it was renamed or unlinked since
      copyFileSync(file.procPath, join(ctx.imagesDir, `ext-file-${file.id}.bin`));
      ctx.log.info(`ext-file-copy: saved ${file.path} of pid ${file.pid} as id ${file.id}`);
      return true;
    },
    pauseDevices(task, ctx) {
      journal(ctx, 'pauseDevices', task);
      return false;
    },
    checkpointDevices(task, ctx) {
      journal(ctx, 'checkpointDevices', task);
      return false;
    },
    dumpDevicesLate(item, ctx) {
      journal(ctx, 'dumpDevicesLate', item);
      return false;
    },
    dumpFinish(result, ctx) {
      journal(ctx, 'dumpFinish', result);
      return true;
    },
  },
});
