// CRIU's --tls on the page server, both ends, against the reference CRIU (GnuTLS) on loopback:
// - `criu dump --tls` → `tsdump page-server --tls` and `tsdump dump --tls` → `criu page-server
//   --tls`, each restored by `criu restore` to PASS; tsdump to tsdump over TLS too, with shared
//   memory (the sendfile path) and several tasks.
// - tsdump's server refuses whoever cannot authenticate (plain TCP with forged images, a client
//   certificate from another CA, none, a revoked one), keeps nothing they sent, and then serves
//   the real dump.
// - tsdump's client refuses a server it cannot authenticate (unknown CA, a certificate that does
//   not name the address) before the tree is frozen; --tls-no-cn-verify lifts only the name check.
// Certificates are made here with openssl; GnuTLS checks that a certificate names the address in
// subjectAltName, hence IP:127.0.0.1.
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { promisify } from 'node:util';
import { runPageServer, type PageServerResult, type PageServerTls } from '../src/page-server.js';
import { TsdumpError } from '../src/errors.js';
import { catalogue, liveCheck, roundTrip, type CatalogueEntry } from './helpers/catalogue.js';
import { criuDump, makeWorkDir } from './helpers/criu.js';
import { installPageImages, isPageImage, psHeader, startCriuPageServer, startTsdumpPageServer } from './helpers/page-server.js';
import { runTsdump, tsdumpDump } from './helpers/tsdump.js';

const exec = promisify(execFile);

function entry(name: string): CatalogueEntry {
  const e = catalogue.find((c) => c.name === name);
  if (!e) throw new Error(`no catalogue entry ${name}`);
  return e;
}

interface Identity {
  /** The CA that signed `cert` (what a peer must trust). */
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

interface Pki {
  readonly dir: string;
  /** CA "good": a certificate for 127.0.0.1 (RSA, as CRIU's documentation makes them). */
  readonly good: Identity;
  /** CA "good": a certificate naming 127.0.0.2 only. */
  readonly otherName: Identity;
  /** CA "good": a certificate for 127.0.0.1 that `crl` revokes. */
  readonly revoked: Identity;
  /** CA "good"'s revocation list. */
  readonly crl: string;
  /** Another CA altogether: a certificate for 127.0.0.1. */
  readonly rogue: Identity;
}

const openssl = (args: readonly string[], cwd: string) => exec('openssl', args, { cwd });

async function makeCa(dir: string, name: string): Promise<void> {
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}-ca.key`, '-out', `${name}-ca.pem`, '-days', '2',
    '-subj', `/CN=tsdump test ${name} CA`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
}

async function makeLeaf(dir: string, ca: string, name: string, san: string, keyType: readonly string[]): Promise<Identity> {
  await writeFile(join(dir, `${name}.ext`), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n`);
  await openssl(['req', '-newkey', ...keyType, '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=tsdump test ${name}`], dir);
  await openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}-ca.pem`, '-CAkey', `${ca}-ca.key`, '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`], dir);
  return { ca: join(dir, `${ca}-ca.pem`), cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
}

async function makePki(): Promise<Pki> {
  const dir = await mkdtemp(join(tmpdir(), 'tsdump-pki-'));
  const ec = ['ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];
  await makeCa(dir, 'good');
  await makeCa(dir, 'rogue');
  const good = await makeLeaf(dir, 'good', 'host', 'IP:127.0.0.1', ['rsa:2048']);
  const otherName = await makeLeaf(dir, 'good', 'other', 'IP:127.0.0.2', ec);
  const revoked = await makeLeaf(dir, 'good', 'revoked', 'IP:127.0.0.1', ec);
  const rogue = await makeLeaf(dir, 'rogue', 'intruder', 'IP:127.0.0.1', ec);
  // a CRL needs openssl's CA database
  await writeFile(join(dir, 'index.txt'), '');
  await writeFile(join(dir, 'crlnumber'), '01\n');
  await writeFile(join(dir, 'ca.cnf'), `[ca]\ndefault_ca = d\n[d]\ndatabase = ${dir}/index.txt\ncrlnumber = ${dir}/crlnumber\ndefault_md = sha256\ndefault_crl_days = 2\n`);
  const ca = ['-config', 'ca.cnf', '-keyfile', 'good-ca.key', '-cert', 'good-ca.pem', '-batch'];
  await openssl(['ca', ...ca, '-revoke', 'revoked.pem'], dir);
  await openssl(['ca', ...ca, '-gencrl', '-out', 'crl.pem'], dir);
  return { dir, good, otherName, revoked, crl: join(dir, 'crl.pem'), rogue };
}

let pki!: Pki;
test.before(async () => {
  pki = await makePki();
});
test.after.always(async () => {
  if (pki) await rm(pki.dir, { recursive: true, force: true });
});

/** The --tls options naming `id` (absolute paths: criu resolves relative ones against its work dir). */
const tlsArgs = (id: Identity, ca = id.ca): string[] => ['--tls', '--tls-cacert', ca, '--tls-cert', id.cert, '--tls-key', id.key];
const tlsOf = (id: Identity, ca = id.ca): PageServerTls => ({ cacert: ca, cert: id.cert, key: id.key });
const psArgs = (port: number): string[] => ['--page-server', '--address', '127.0.0.1', '--port', String(port)];

/** A whole forged session: OPEN2 of pid 4242, one page, CLOSE. */
const FORGED = Buffer.concat([psHeader(4, 0, 0n, (4242n << 8n) | 1n), psHeader(6 | (4 << 16), 1, 0x400000n, (4242n << 8n) | 1n), Buffer.alloc(4096, 0x41), psHeader(0x1023, 0, 0n, 0n)]);

/** Plain TCP to a TLS server: sends the forged session and waits for the server to hang up. */
async function plainForger(port: number): Promise<void> {
  const s = tcpConnect({ host: '127.0.0.1', port });
  s.on('error', () => undefined);
  s.resume(); // whatever the server answers is read, so its hang-up is seen
  await new Promise<void>((res) => {
    s.once('connect', () => s.write(FORGED));
    s.once('close', () => res());
  });
}

/** A TLS client with `cert`/`key` (or none) that trusts the server, then tries the forged session. */
async function tlsForger(port: number, client: { cert?: string; key?: string }): Promise<void> {
  const [ca, cert, key] = await Promise.all([pki.good.ca, client.cert, client.key].map((f) => (f ? readFile(f) : undefined)));
  const s = tlsConnect({ host: '127.0.0.1', port, ca, ...(cert ? { cert } : {}), ...(key ? { key } : {}) });
  s.on('error', () => undefined);
  s.resume();
  await new Promise<void>((res) => {
    s.once('secureConnect', () => s.write(FORGED));
    s.once('close', () => res());
  });
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test.serial('criu dump --tls → tsdump page-server --tls → criu restore, after refusing four clients that cannot authenticate (t_memory)', async (t) => {
  let stderr = '';
  let received: PageServerResult | undefined;
  const rt = await roundTrip(t, entry('t_memory'), async (pid, imagesDir, extraArgs) => {
    const serverDir = join(imagesDir, '..', 'srv');
    const ps = await startTsdumpPageServer(serverDir, [...tlsArgs(pki.good), '--tls-cacrl', pki.crl]);
    t.teardown(() => {
      if (ps.child.exitCode === null) ps.child.kill('SIGKILL');
    });
    await plainForger(ps.port);
    await tlsForger(ps.port, {});
    await tlsForger(ps.port, { cert: pki.rogue.cert, key: pki.rogue.key });
    await tlsForger(ps.port, { cert: pki.revoked.cert, key: pki.revoked.key });
    await waitFor('four dropped clients', () => ps.stderr().split('dropped client').length > 4);
    t.deepEqual(await readdir(serverDir), [], 'nothing of the forged sessions');
    await criuDump(pid, imagesDir, [...extraArgs, ...psArgs(ps.port), ...tlsArgs(pki.good)]);
    const { code, log } = await ps.done;
    stderr = ps.stderr();
    t.is(code, 0, log);
    received = JSON.parse(log.slice(0, log.indexOf('\n'))) as PageServerResult;
    t.deepEqual((await readdir(imagesDir)).filter(isPageImage), []);
    const moved = await installPageImages(serverDir, imagesDir);
    t.true(moved.includes(`pagemap-${pid}.img`), moved.join(' '));
  });
  t.is(rt.result, 'PASS', rt.subject.describe());
  t.true(received!.images.some((i) => i.id === rt.subject.pid && i.pages > 0), JSON.stringify(received));
  const drops = stderr.split('\n').filter((l) => l.includes('dropped client'));
  t.is(drops.length, 4, stderr);
  t.true(drops.every((l) => /TLS handshake/.test(l)), stderr);
  t.regex(drops[1]!, /no certificate|NoCertificatesPresented|certificate required/i);
  t.regex(drops[2]!, /UnknownIssuer/);
  t.regex(drops[3]!, /Revoked/);
});

test.serial('tsdump dump --tls → criu page-server --tls → criu restore (t_memory)', async (t) => {
  const rt = await roundTrip(t, entry('t_memory'), async (pid, imagesDir, extraArgs) => {
    const serverDir = join(imagesDir, '..', 'criu-srv');
    const ps = await startCriuPageServer(serverDir, tlsArgs(pki.good));
    t.teardown(() => {
      if (ps.child.exitCode === null) ps.child.kill('SIGKILL');
    });
    await tsdumpDump(pid, imagesDir, [...extraArgs, ...psArgs(ps.port), ...tlsArgs(pki.good)]);
    const { code, log } = await ps.done;
    t.is(code, 0, log.slice(-2000));
    t.regex(log, /TLS handshake completed/);
    t.deepEqual((await readdir(imagesDir)).filter(isPageImage), []);
    const moved = await installPageImages(serverDir, imagesDir);
    t.true(moved.includes(`pagemap-${pid}.img`), moved.join(' '));
  });
  t.is(rt.result, 'PASS', rt.subject.describe());
});

test.serial('tsdump dump --tls → tsdump page server with TLS → criu restore (t_mappings: two tasks, shared memory)', async (t) => {
  let received: PageServerResult | undefined;
  const rt = await roundTrip(t, entry('t_mappings'), async (pid, imagesDir, extraArgs) => {
    const serverDir = join(imagesDir, '..', 'srv');
    const ac = new AbortController();
    t.teardown(() => ac.abort());
    let bound!: (port: number) => void;
    const port = new Promise<number>((res) => (bound = res));
    const serving = runPageServer({ imagesDir: serverDir, address: '127.0.0.1', port: 0, tls: tlsOf(pki.good), signal: ac.signal, onListening: (l) => bound(l.port) });
    serving.catch(() => undefined);
    await tsdumpDump(pid, imagesDir, [...extraArgs, ...psArgs(await port), ...tlsArgs(pki.good)]);
    received = await serving;
    const moved = await installPageImages(serverDir, imagesDir);
    t.true(moved.some((f) => f.startsWith('pagemap-shmem-')), moved.join(' '));
  });
  t.is(rt.result, 'PASS', rt.subject.describe());
  t.deepEqual(received!.images.filter((i) => i.kind === 'pid').map((i) => i.id).sort(), [...rt.subject.pids].sort());
  t.is(received!.pageBytes, received!.images.reduce((n, i) => n + i.pages, 0) * 4096);
});

/**
 * `tsdump dump --tls` against a tsdump page server presenting `server` (and trusting the good CA):
 * the dump's exit and output, and what the server saw.
 */
async function dumpAgainst(t: ExecutionContext, pid: number, workDir: string, server: Identity, clientExtra: readonly string[] = []) {
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  let bound!: (port: number) => void;
  const port = new Promise<number>((res) => (bound = res));
  const drops: string[] = [];
  const serving = runPageServer({
    imagesDir: join(workDir, 'srv'),
    address: '127.0.0.1',
    port: 0,
    tls: tlsOf(server, pki.good.ca),
    signal: ac.signal,
    onListening: (l) => bound(l.port),
    onClientDropped: ({ error }) => drops.push(error.message),
  });
  serving.catch(() => undefined);
  const r = await runTsdump(['dump', '-t', String(pid), '-D', join(workDir, 'images'), '--shell-job', '--json', ...psArgs(await port), ...tlsArgs(pki.good), ...clientExtra]);
  return { r, serving, drops, ac };
}

for (const [what, server, refusal] of [
  ['a server certificate from an unknown CA', 'rogue', /UnknownIssuer/],
  ['a server certificate that does not name the address', 'otherName', /NotValidForName|not valid for name/i],
] as const) {
  test.serial(`tsdump dump --tls refuses ${what} before freezing; the tree runs on untouched`, async (t) => {
    const verdict = await liveCheck(t, entry('t_counter'), async (subject, workDir) => {
      const { r, serving, ac } = await dumpAgainst(t, subject.pid, workDir, pki[server]);
      t.not(r.code, 0, r.stdout);
      const out = r.stdout + r.stderr;
      t.regex(out, /IMAGE_IO/);
      t.regex(out, /page server 127\.0\.0\.1:\d+: TLS handshake/);
      t.regex(out, refusal);
      // refused while connecting: no stage after it ran, nothing was frozen
      t.false((await readdir(join(workDir, 'images')).catch(() => [] as string[])).includes('inventory.img'));
      ac.abort();
      t.is(((await t.throwsAsync(serving)) as TsdumpError).code, 'CANCELLED');
    });
    t.is(verdict, 'PASS');
  });
}

test.serial('--tls-no-cn-verify accepts a trusted certificate that names another address, and the dump completes', async (t) => {
  const verdict = await liveCheck(t, entry('t_counter'), async (subject, workDir) => {
    const { r, serving } = await dumpAgainst(t, subject.pid, workDir, pki.otherName, ['--tls-no-cn-verify', '--leave-running']);
    t.is(r.code, 0, r.stderr);
    const got = await serving;
    t.true(got.images.some((i) => i.id === subject.pid && i.pages > 0), JSON.stringify(got));
  });
  t.is(verdict, 'PASS');
});

test.serial('tsdump page-server: --tls-* without --tls, and a missing certificate, are refused up front', async (t) => {
  const work = await makeWorkDir(t);
  const r1 = await runTsdump(['page-server', '-D', join(work, 's'), '--port', '1', '--tls-cert', pki.good.cert]);
  t.not(r1.code, 0);
  t.regex(r1.stderr, /--tls-cert only makes sense with --tls/);
  const r2 = await runTsdump(['page-server', '-D', join(work, 's'), '--address', '127.0.0.1', '--port', '0', '--tls', '--tls-cacert', pki.good.ca, '--tls-cert', join(work, 'missing.pem'), '--tls-key', pki.good.key]);
  t.not(r2.code, 0);
  t.regex(r2.stderr, /missing\.pem/);
});
