// Proves the acceptance catalogue and its harness with the reference CRIU before tsdump is
// measured against them: every subject the reference CRIU can dump here goes through
// `criu dump` → `criu restore -d` → self-verification, and must PASS (or, for a known CRIU gap,
// fail exactly as recorded in the catalogue). Subjects CRIU cannot dump here are checked live,
// so they are known good for tsdump's end-to-end test. Run under build/subreaper (npm test does).
import test from 'ava';
import { existsSync } from 'node:fs';
import { catalogue, liveCheck, roundTrip, type CatalogueEntry } from './helpers/catalogue.js';
import { join } from 'node:path';
import { CriuError, criuDump, critDecodeAll, firstCriuError } from './helpers/criu.js';
import { REDIS_SERVER } from './helpers/programs.js';

function available(entry: CatalogueEntry): string | undefined {
  if (entry.name.startsWith('redis') && !existsSync(REDIS_SERVER)) return `${REDIS_SERVER} not installed`;
  return undefined;
}

for (const entry of catalogue) {
  const missing = available(entry);
  const ref = entry.reference;
  if (missing) {
    // Not a skip: the catalogue must be runnable where the suite runs (.ci/run installs redis).
    test(`${entry.name}: prerequisites`, (t) => t.fail(`${entry.name}: ${missing}`));
    continue;
  }
  if (ref.expect === 'cannot-dump') {
    test(`${entry.name}: reference CRIU refuses the dump as known, the subject runs on and verifies live`, async (t) => {
      const result = await liveCheck(t, entry, async (subject, workDir) => {
        const err = await t.throwsAsync(criuDump(subject.pid, join(workDir, 'images'), entry.dumpArgs ?? []), {
          instanceOf: CriuError,
        });
        // Pins the reason recorded in the catalogue; a CRIU that starts coming through shows up here.
        t.regex(err?.log ?? '', ref.match, `${ref.reason}\nfirst error: ${err ? firstCriuError(err.log) : ''}`);
      });
      t.is(result, 'PASS');
    });
    continue;
  }
  test(`${entry.name}: reference CRIU dump → restore → verify`, async (t) => {
    const rt = await roundTrip(t, entry, criuDump);
    if (ref.expect === 'pass') {
      t.is(rt.result, 'PASS', rt.subject.describe());
    } else {
      // A known reference-CRIU gap: the target is right, CRIU restores this state wrongly.
      t.regex(rt.result, ref.match, `expected the known CRIU failure (${ref.reason})\n${rt.subject.describe()}`);
    }
    // The reference images decode with crit: the baseline tsdump's images are compared against.
    const decoded = await critDecodeAll(rt.imagesDir);
    t.true(decoded.has('inventory.img') && decoded.has('pstree.img'), [...decoded.keys()].join(' '));
  });
}

// The known-gap targets are correct programs: without a dump they pass.
for (const entry of catalogue.filter((e) => e.reference.expect === 'fail')) {
  test(`${entry.name}: verifies itself live`, async (t) => {
    t.is(await liveCheck(t, entry), 'PASS');
  });
}
