// A real browser for the tests: Debian's chromium, headless, driven over the DevTools protocol
// on a pipe (--remote-debugging-pipe: JSON messages ending in NUL on fds 3 and 4), so no port,
// no websocket and no npm dependency. It records what a person would never see (console
// errors, uncaught exceptions, every network request) and takes full-page screenshots.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { inflateSync } from 'node:zlib';

export const CHROMIUM = process.env.TSDUMP_CHROMIUM ?? '/usr/bin/chromium';

type Json = Record<string, unknown>;

export interface PageLog {
  /** console.error/assert calls, uncaught exceptions, and browser log entries of level error. */
  errors: string[];
  /** Every URL the page asked the network stack for. */
  requests: string[];
}

export interface Browser {
  /** Opens URL in a new tab of width × height CSS pixels and waits for its load event. */
  open(url: string, width?: number, height?: number): Promise<Page>;
  close(): Promise<void>;
}

export interface Page {
  readonly log: PageLog;
  /** Evaluates an expression in the page; its value, JSON-serialisable. */
  evaluate<T>(expression: string): Promise<T>;
  /** A screenshot of the whole page (not only the viewport), decoded. */
  screenshot(): Promise<Png>;
}

export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (or set TSDUMP_CHROMIUM)`);
  const profile = await mkdtemp(join(tmpdir(), 'tsdump-chromium-'));
  const child: ChildProcess = spawn(
    CHROMIUM,
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--hide-scrollbars',
      '--font-render-hinting=none',
      `--user-data-dir=${profile}`,
      '--remote-debugging-pipe',
      'about:blank',
    ],
    { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] },
  );
  const toBrowser = child.stdio[3] as Writable;
  const fromBrowser = child.stdio[4] as Readable;
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4000)));

  let nextId = 1;
  const pending = new Map<number, { resolve(v: Json): void; reject(e: Error): void; method: string }>();
  const listeners = new Set<(msg: Json) => void>();
  let buffered = Buffer.alloc(0);
  fromBrowser.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    for (let end = buffered.indexOf(0); end >= 0; end = buffered.indexOf(0)) {
      const msg = JSON.parse(buffered.subarray(0, end).toString('utf8')) as Json;
      buffered = buffered.subarray(end + 1);
      if (typeof msg.id === 'number' && pending.has(msg.id)) {
        const p = pending.get(msg.id)!;
        pending.delete(msg.id);
        if (msg.error) p.reject(new Error(`${p.method}: ${JSON.stringify(msg.error)}`));
        else p.resolve((msg.result ?? {}) as Json);
      } else for (const l of listeners) l(msg);
    }
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => {
    for (const p of pending.values()) p.reject(new Error(`chromium exited during ${p.method}\n${stderr}`));
    pending.clear();
  });

  const send = (method: string, params: Json = {}, sessionId?: string): Promise<Json> =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject, method });
      toBrowser.write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + '\0');
    });
  const waitFor = (pred: (msg: Json) => boolean, what: string, timeoutMs = 30_000): Promise<Json> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        listeners.delete(l);
        reject(new Error(`timed out waiting for ${what}`));
      }, timeoutMs);
      const l = (msg: Json): void => {
        if (!pred(msg)) return;
        clearTimeout(timer);
        listeners.delete(l);
        resolve(msg);
      };
      listeners.add(l);
    });

  return {
    async open(url, width = 1200, height = 900) {
      const { targetId } = (await send('Target.createTarget', { url: 'about:blank' })) as { targetId: string };
      const { sessionId } = (await send('Target.attachToTarget', { targetId, flatten: true })) as { sessionId: string };
      const log: PageLog = { errors: [], requests: [] };
      listeners.add((msg) => {
        if (msg.sessionId !== sessionId) return;
        const p = (msg.params ?? {}) as Json;
        if (msg.method === 'Runtime.consoleAPICalled' && (p.type === 'error' || p.type === 'assert')) {
          log.errors.push(`console.${String(p.type)}: ${JSON.stringify(p.args)}`);
        } else if (msg.method === 'Runtime.exceptionThrown') {
          log.errors.push(`exception: ${JSON.stringify((p.exceptionDetails as Json | undefined)?.text)} ${JSON.stringify((p.exceptionDetails as Json | undefined)?.exception)}`);
        } else if (msg.method === 'Log.entryAdded') {
          const e = p.entry as Json;
          if (e.level === 'error') log.errors.push(`${String(e.source)}: ${String(e.text)}`);
        } else if (msg.method === 'Network.requestWillBeSent') {
          log.requests.push(String((p.request as Json).url));
        }
      });
      for (const m of ['Runtime.enable', 'Log.enable', 'Page.enable', 'Network.enable']) await send(m, {}, sessionId);
      await send('Emulation.setDeviceMetricsOverride', { width, height, deviceScaleFactor: 1, mobile: false }, sessionId);
      const loaded = waitFor((m) => m.sessionId === sessionId && m.method === 'Page.loadEventFired', `load of ${url}`);
      const nav = (await send('Page.navigate', { url }, sessionId)) as { errorText?: string };
      if (nav.errorText) throw new Error(`navigating to ${url}: ${nav.errorText}`);
      await loaded;
      return {
        log,
        async evaluate<T>(expression: string): Promise<T> {
          const r = (await send('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true }, sessionId)) as {
            result: { value: T };
            exceptionDetails?: Json;
          };
          if (r.exceptionDetails) throw new Error(`evaluate: ${JSON.stringify(r.exceptionDetails)}`);
          return r.result.value;
        },
        async screenshot(): Promise<Png> {
          const m = (await send('Page.getLayoutMetrics', {}, sessionId)) as { cssContentSize: { width: number; height: number } };
          const clip = { x: 0, y: 0, width: Math.ceil(m.cssContentSize.width), height: Math.ceil(m.cssContentSize.height), scale: 1 };
          const { data } = (await send('Page.captureScreenshot', { format: 'png', clip, captureBeyondViewport: true }, sessionId)) as { data: string };
          return decodePng(Buffer.from(data, 'base64'));
        },
      };
    },
    async close() {
      await Promise.race([send('Browser.close').catch(() => undefined), new Promise((r) => setTimeout(r, 5000))]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
      await rm(profile, { recursive: true, force: true });
    },
  };
}

export interface Png {
  readonly width: number;
  readonly height: number;
  /** [r, g, b] of a pixel. */
  pixel(x: number, y: number): [number, number, number];
}

/** Decodes an 8-bit, non-interlaced RGB or RGBA PNG (what chromium writes). */
export function decodePng(buf: Buffer): Png {
  if (buf.readUInt32BE(0) !== 0x89504e47) throw new Error('not a PNG');
  let at = 8;
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Buffer[] = [];
  while (at < buf.length) {
    const len = buf.readUInt32BE(at);
    const type = buf.toString('latin1', at + 4, at + 8);
    const body = buf.subarray(at + 8, at + 8 + len);
    if (type === 'IHDR') {
      width = body.readUInt32BE(0);
      height = body.readUInt32BE(4);
      const [depth, colour, , , interlace] = [body[8], body[9], body[10], body[11], body[12]];
      if (depth !== 8 || interlace !== 0 || (colour !== 2 && colour !== 6)) throw new Error(`PNG depth ${depth} colour ${colour} interlace ${interlace}`);
      channels = colour === 6 ? 4 : 3;
    } else if (type === 'IDAT') idat.push(body);
    at += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const out = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!;
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? out[y * stride + x - channels]! : 0;
      const b = y > 0 ? out[(y - 1) * stride + x]! : 0;
      const c = x >= channels && y > 0 ? out[(y - 1) * stride + x - channels]! : 0;
      let v = line[x]!;
      if (filter === 1) v += a;
      else if (filter === 2) v += b;
      else if (filter === 3) v += (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)];
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      out[y * stride + x] = v & 0xff;
    }
  }
  return {
    width,
    height,
    pixel(x, y) {
      const i = Math.floor(y) * stride + Math.floor(x) * channels;
      return [out[i]!, out[i + 1]!, out[i + 2]!];
    },
  };
}
