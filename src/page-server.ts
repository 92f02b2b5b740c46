// The page server, CRIU's protocol for moving a dump's memory over TCP: `runPageServer` receives
// (what `tsdump page-server -D DIR --port P` runs), `sendImagesToPageServer` pushes an existing
// dump's pagemaps and pages to one. Both run in Rust; page data never reaches JavaScript, which
// only sees the reports.
import { isIP } from 'node:net';
import { native } from './native.js';
import { openImagesDir } from './images/dir.js';
import { TsdumpError, isErrorCode } from './errors.js';

/**
 * CRIU's `--tls` (`--tls-cacert`, `--tls-cacrl`, `--tls-cert`, `--tls-key`, `--tls-no-cn-verify`):
 * both ends present a certificate and check the peer's against the trusted CAs. Absent paths
 * take CRIU's defaults: /etc/pki/CA/cacert.pem (plus the system's CAs when no cacert is given),
 * /etc/pki/CA/cacrl.pem if present, /etc/pki/criu/cert.pem and /etc/pki/criu/private/key.pem.
 * Certificates must name the address in subjectAltName (an IP: entry for an IP address).
 */
export interface PageServerTls {
  readonly cacert?: string;
  readonly cacrl?: string;
  readonly cert?: string;
  readonly key?: string;
  /** Do not require the peer's certificate to name the address. */
  readonly noCnVerify?: boolean;
}

/** The address `tsdump page-server` and `criu page-server` listen on without --address. */
export const DEFAULT_LISTEN_ADDRESS = '0.0.0.0';

export interface PageServerOptions {
  /** Directory the received pagemap-*.img and pages-*.img go into (created 0700 if missing). */
  readonly imagesDir: string;
  /** Address to listen on; default 0.0.0.0 like `criu page-server`. */
  readonly address?: string;
  /** TCP port; 0 picks a free one (reported through onListening). */
  readonly port: number;
  /** Require CRIU's TLS from every client. */
  readonly tls?: PageServerTls;
  /** Seconds a connected client may stay silent before it is dropped (default 60; 0: no limit). */
  readonly idleTimeout?: number;
  /** Aborting stops waiting/receiving: the promise rejects with CANCELLED and partial images are removed. */
  readonly signal?: AbortSignal;
  /** Called once the socket is bound, before any peer connects. */
  readonly onListening?: (info: { address: string; port: number }) => void;
  /**
   * Called for each client that failed and was dropped (refused by TLS, silent or too slow, gone
   * before CLOSE, broke the protocol); what it sent was removed and the server waits for the next.
   */
  readonly onClientDropped?: (info: { peer: string; error: TsdumpError }) => void;
  /**
   * The images of the previous (pre-)dump on this side, relative to imagesDir as CRIU takes it:
   * linked as imagesDir/parent, so an incremental dump may send holes (pages the parent holds),
   * each checked against the parent image. `criu page-server --prev-images-dir` does the same.
   */
  readonly prevImagesDir?: string;
}

export interface ReceivedImage {
  readonly kind: 'pid' | 'shmem';
  /** PID of the task (kind 'pid') or shared-memory id (kind 'shmem'). */
  readonly id: number;
  readonly pagemapFile: string;
  readonly pagesFile: string;
  readonly entries: number;
  readonly pages: number;
}

export interface PageServerResult {
  /** address:port of the peer that sent the images. */
  readonly peer: string;
  readonly images: readonly ReceivedImage[];
  readonly pageBytes: number;
}

function cancelled(what: string): TsdumpError {
  return new TsdumpError('CANCELLED', `page server: ${what}`);
}

/**
 * Serves like `criu page-server`: listens, takes a peer (`criu dump --page-server` or tsdump),
 * writes the images it sends and resolves once the peer sent CLOSE. Images only get their final
 * names at CLOSE. Unlike CRIU's, a peer that fails does not end the server: it is dropped (see
 * onClientDropped), nothing it sent stays, and the next peer is served.
 */
export async function runPageServer(opts: PageServerOptions): Promise<PageServerResult> {
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new TsdumpError('USAGE', `page server: invalid port ${opts.port}`);
  }
  const idle = opts.idleTimeout;
  if (idle !== undefined && !(idle >= 0 && idle * 1000 <= 0xffffffff)) throw new TsdumpError('USAGE', `page server: invalid idle timeout ${idle}`);
  if (opts.signal?.aborted) throw cancelled('aborted before listening');
  if (opts.prevImagesDir !== undefined) linkParent(opts.imagesDir, opts.prevImagesDir);
  const address = opts.address ?? DEFAULT_LISTEN_ADDRESS;
  const server = await native.PageServer.listen({
    imagesDir: opts.imagesDir,
    address,
    port: opts.port,
    ...(opts.tls ? { tls: { ...opts.tls } } : {}),
    ...(idle !== undefined ? { idleTimeoutMs: Math.round(idle * 1000) } : {}),
  });
  const onAbort = (): void => server.cancel();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    opts.onListening?.({ address, port: server.port });
    for (;;) {
      const { served, dropped } = await server.serveNext();
      if (served) {
        return {
          peer: served.peer,
          pageBytes: served.pageBytes,
          images: served.images.map((i) => ({
            kind: i.kind === 'shmem' ? 'shmem' : 'pid',
            id: i.id,
            pagemapFile: i.pagemapFile,
            pagesFile: i.pagesFile,
            entries: i.entries,
            pages: i.pages,
          })),
        };
      }
      if (dropped) opts.onClientDropped?.({ peer: dropped.peer, error: new TsdumpError(isErrorCode(dropped.code) ? dropped.code : 'IMAGE_IO', dropped.message) });
    }
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * What to tell the user before a page server that any host can feed starts: listening on every
 * address without TLS, anyone who reaches the port can write images there. undefined when safe.
 */
export function exposureWarning(address: string, tls: PageServerTls | undefined): string | undefined {
  if (tls) return undefined;
  const everywhere = isIP(address) === 4 ? address === '0.0.0.0' : isIP(address) === 6 && new URL(`http://[${address}]/`).hostname === '[::]';
  if (!everywhere) return undefined;
  return `listening on every address (${address}) without TLS: any host that reaches this port can send images; use --tls, or --address to listen on one interface only`;
}

/** imagesDir/parent → prev, replacing an old link (images dir created owner-only if missing). */
function linkParent(imagesDir: string, prev: string): void {
  openImagesDir(imagesDir, { create: true }).symlink(prev, 'parent', true);
}

export interface SendImagesOptions {
  /** Directory of a finished dump holding pagemap-PID.img and the pages-N.img they name. */
  readonly imagesDir: string;
  readonly address: string;
  readonly port: number;
  /** Tasks whose pagemap-PID.img to send. */
  readonly pids: readonly number[];
  /** Shared-memory pagemaps (pagemap-shmem-ID.img) to send. */
  readonly shmemIds?: readonly number[];
  /** Connect with CRIU's TLS. */
  readonly tls?: PageServerTls;
}

export interface SendImagesResult {
  readonly entries: number;
  readonly pages: number;
  readonly holes: number;
  /** Bytes written to the socket, headers included. */
  readonly bytes: number;
  readonly elapsedMs: number;
}

/**
 * Sends a local dump's pagemaps and pages to a page server (OPEN2, ADD_F with the pages spliced
 * from the pages file, holes for the rest, CLOSE and its ack). Rejects with IMAGE_IO naming the
 * peer, image and address if the server goes away.
 */
export async function sendImagesToPageServer(opts: SendImagesOptions): Promise<SendImagesResult> {
  const r = await native.pageServerSendImages({
    imagesDir: opts.imagesDir,
    address: opts.address,
    port: opts.port,
    pids: [...opts.pids],
    shmemIds: opts.shmemIds ? [...opts.shmemIds] : undefined,
    ...(opts.tls ? { tls: { ...opts.tls } } : {}),
  });
  return { entries: r.entries, pages: r.pages, holes: r.holes, bytes: r.bytes, elapsedMs: r.elapsedNs / 1e6 };
}
