// tsdump's end-to-end acceptance: every subject of the catalogue is dumped by tsdump and restored
// by the reference CRIU (`criu restore -D DIR --shell-job -d`), and the restored program checks its
// own state. Subjects tsdump cannot dump yet must be refused cleanly: a typed error naming the
// resource, no inventory.img, and the subject still running and verifying itself.
import test from 'ava';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { catalogue, liveCheck, roundTrip } from './helpers/catalogue.js';
import { critDecodeAll } from './helpers/criu.js';
import { TsdumpCliError, tsdumpDump } from './helpers/tsdump.js';

/**
 * Subjects tsdump refuses today, with the error it must give; anything not listed must
 * round-trip to PASS. An entry leaves this table when its feature lands.
 */
const REFUSED: Readonly<Record<string, { code: string; match: RegExp }>> = {
  // eventfd_file_entry cannot carry EFD_SEMAPHORE and CRIU's restore recreates eventfds in
  // counter mode: tsdump refuses rather than restore different behaviour.
  t_eventfd_semaphore: { code: 'UNSUPPORTED_FD', match: /cannot dump EFD_SEMAPHORE eventfds/ },
  // CRIU's inotify image keeps the watches but has no place for the queue of unread events.
  t_inotify: { code: 'UNSUPPORTED_FD', match: /cannot dump inotify descriptors with unread events/ },
};

for (const entry of catalogue) {
  const refused = REFUSED[entry.name];
  if (refused) {
    test.serial(`${entry.name}: tsdump refuses it cleanly and the subject runs on`, async (t) => {
      const result = await liveCheck(t, entry, async (subject, workDir) => {
        const imagesDir = join(workDir, 'images');
        const err = await t.throwsAsync(tsdumpDump(subject.pid, imagesDir, entry.dumpArgs ?? []), { instanceOf: TsdumpCliError });
        t.is(err?.code, refused.code, err?.message);
        t.regex(err?.message ?? '', refused.match);
        t.false(existsSync(join(imagesDir, 'inventory.img')), 'a refused dump must not look complete');
      });
      t.is(result, 'PASS');
    });
    continue;
  }
  test.serial(`${entry.name}: tsdump dump → criu restore → verify`, async (t) => {
    const rt = await roundTrip(t, entry, tsdumpDump);
    t.is(rt.result, 'PASS', rt.subject.describe());
    const decoded = await critDecodeAll(rt.imagesDir);
    t.true(decoded.has('inventory.img') && decoded.has('pstree.img'), [...decoded.keys()].join(' '));
  });
}
