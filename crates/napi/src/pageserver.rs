//! N-API surface of the page server (tsdump_core::pageserver): `PageServer.listen(...)` +
//! `serveNext()` for the receiver, `session.connectPageServer(...)` for a dump's connection, and
//! `pageServerSendImages(...)` to push a local dump's pagemaps and pages to a page server. Each
//! blocking session runs on its own thread; JavaScript only sees reports, never page data.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tokio::sync::oneshot;
use tsdump_core::error::{Error as CoreError, ErrorCode};
use tsdump_core::pageserver::{self, ImageKind, Outcome, PageServerClient, PageServerListener, SendStats, Timeouts, TlsOptions};

use crate::errors::to_napi;
use crate::session::{Session, TracerState};

/// Runs blocking core work on a fresh thread and resolves with its result.
async fn on_thread<T, F>(name: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> tsdump_core::Result<T> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| Error::from_reason(format!("KERNEL: cannot start a thread: {e}")))?;
    match rx.await {
        Ok(r) => r.map_err(to_napi),
        Err(_) => Err(Error::from_reason("CANCELLED: the page-server thread ended without an answer")),
    }
}

fn kind_str(k: ImageKind) -> String {
    k.as_str().to_string()
}

fn port_of(port: u32) -> Result<u16> {
    u16::try_from(port).map_err(|_| Error::from_reason(format!("USAGE: page server port {port} out of range")))
}

/// CRIU's `--tls` options; absent paths take CRIU's defaults (/etc/pki/...).
#[napi(object)]
pub struct PageServerTls {
    /// `--tls-cacert`: trust only this CA (PEM).
    pub cacert: Option<String>,
    /// `--tls-cacrl`: certificate revocation list (PEM).
    pub cacrl: Option<String>,
    /// `--tls-cert`: our certificate (PEM).
    pub cert: Option<String>,
    /// `--tls-key`: its private key (PEM).
    pub key: Option<String>,
    /// `--tls-no-cn-verify`: the peer's certificate need not name the address.
    pub no_cn_verify: Option<bool>,
}

fn tls_options(t: Option<PageServerTls>) -> Option<TlsOptions> {
    t.map(|t| TlsOptions {
        cacert: t.cacert.map(PathBuf::from),
        cacrl: t.cacrl.map(PathBuf::from),
        cert: t.cert.map(PathBuf::from),
        key: t.key.map(PathBuf::from),
        no_cn_verify: t.no_cn_verify.unwrap_or(false),
    })
}

#[napi(object)]
pub struct PageServerListenOptions {
    /// Where received images go (created 0700 if missing).
    pub images_dir: String,
    /// Address to bind (default 0.0.0.0, as criu page-server).
    pub address: Option<String>,
    /// 0 picks a free port (see `port`).
    pub port: u32,
    /// Require CRIU's TLS from every client.
    pub tls: Option<PageServerTls>,
    /// How long a client may stay silent before it is dropped (default 60 s; 0: no limit).
    pub idle_timeout_ms: Option<u32>,
}

#[napi(object)]
pub struct PageServerImage {
    /// 'pid' or 'shmem'.
    pub kind: String,
    pub id: i64,
    pub pagemap_file: String,
    pub pages_file: String,
    pub entries: i64,
    pub pages: i64,
}

#[napi(object)]
pub struct PageServerReport {
    pub peer: String,
    pub images: Vec<PageServerImage>,
    pub page_bytes: i64,
}

/// A client the server gave up on; what it sent was removed.
#[napi(object)]
pub struct DroppedClient {
    pub peer: String,
    /// The error code, as thrown errors carry it.
    pub code: String,
    pub message: String,
}

/// How serving one client ended: exactly one of the two is set.
#[napi(object)]
pub struct PageServerOutcome {
    pub served: Option<PageServerReport>,
    pub dropped: Option<DroppedClient>,
}

/// A bound page-server socket serving one client at a time until one completes.
#[napi]
pub struct PageServer {
    port: u32,
    dir: PathBuf,
    cancel: Arc<AtomicBool>,
    listener: Arc<PageServerListener>,
    busy: Arc<AtomicBool>,
}

#[napi]
impl PageServer {
    /// Binds the socket now, so callers know the port before a peer connects. TLS certificates
    /// and keys are read here: a bad path fails before anything listens.
    #[napi(factory)]
    pub fn listen(opts: PageServerListenOptions) -> Result<PageServer> {
        let port = port_of(opts.port)?;
        let tls = tls_options(opts.tls);
        let mut l = PageServerListener::bind(opts.address.as_deref().unwrap_or("0.0.0.0"), port, tls.as_ref()).map_err(to_napi)?;
        if let Some(ms) = opts.idle_timeout_ms {
            l.set_timeouts(Timeouts { idle: (ms > 0).then(|| Duration::from_millis(u64::from(ms))), ..Timeouts::default() });
        }
        Ok(PageServer {
            port: u32::from(l.port()),
            dir: PathBuf::from(opts.images_dir),
            cancel: Arc::new(AtomicBool::new(false)),
            listener: Arc::new(l),
            busy: Arc::new(AtomicBool::new(false)),
        })
    }

    #[napi(getter)]
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Accepts the next client and serves it: `served` once it sent CLOSE and hung up, `dropped`
    /// if it failed (TLS refused it, it timed out, hung up early, broke the protocol), leaving
    /// nothing of it behind. Rejects only when cancelled or when the listener itself fails.
    #[napi]
    pub async fn serve_next(&self) -> Result<PageServerOutcome> {
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(Error::from_reason("USAGE: this page server is already serving a client"));
        }
        let (l, dir, cancel, busy) = (self.listener.clone(), self.dir.clone(), self.cancel.clone(), self.busy.clone());
        let r = on_thread("tsdump-pagesrv", move || {
            let r = l.serve_next(&dir, &cancel);
            busy.store(false, Ordering::Release);
            r
        })
        .await?;
        Ok(match r {
            Outcome::Served(r) => PageServerOutcome {
                served: Some(PageServerReport {
                    peer: r.peer,
                    page_bytes: r.page_bytes as i64,
                    images: r
                        .images
                        .into_iter()
                        .map(|i| PageServerImage {
                            kind: kind_str(i.kind),
                            id: i.id as i64,
                            pagemap_file: i.pagemap_file,
                            pages_file: i.pages_file,
                            entries: i.entries as i64,
                            pages: i.pages as i64,
                        })
                        .collect(),
                }),
                dropped: None,
            },
            Outcome::Dropped { peer, error } => PageServerOutcome {
                served: None,
                dropped: Some(DroppedClient { peer, code: error.code.as_str().to_string(), message: error.message }),
            },
        })
    }

    /// Makes a waiting or running `serveNext()` reject with CANCELLED (within ~50 ms), removing
    /// what the client sent.
    #[napi]
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// The session's page-server connection, opened by `connectPageServer` before the tree was
/// seized. One lost to an error is not reopened: the server discarded what it got on it.
pub(crate) fn take_client(state: &mut TracerState, address: &str, port: u16) -> tsdump_core::Result<PageServerClient> {
    state.page_server.take().ok_or_else(|| {
        CoreError::new(ErrorCode::ImageIo, format!("page server {address}:{port}: not connected (connectPageServer opens the connection; one lost to an error is not reopened)"))
    })
}

#[napi(object)]
pub struct PageServerConnectOptions {
    pub address: String,
    pub port: u32,
    /// Connect with CRIU's TLS.
    pub tls: Option<PageServerTls>,
}

#[napi]
impl Session {
    /// Opens the connection `dumpMemory`, `readPreDump` and `sendShmemToPageServer` send through,
    /// and waits for the server's first answer: a server that is down, refuses our certificate
    /// or is busy with another client fails here, before the tree is frozen. Interruptible
    /// (`interrupt`) like the transfers.
    #[napi]
    pub async fn connect_page_server(&self, opts: PageServerConnectOptions) -> Result<()> {
        let port = port_of(opts.port)?;
        let tls = tls_options(opts.tls);
        self.run(move |state| {
            let mut c = PageServerClient::connect(&opts.address, port, tls.as_ref())?;
            c.ping()?;
            state.page_server = Some(c);
            Ok(())
        })
        .await
    }
}

#[napi(object)]
pub struct SendImagesOptions {
    /// Directory holding pagemap-*.img and their pages-*.img.
    pub images_dir: String,
    pub address: String,
    pub port: u32,
    /// Task pagemaps to send (pagemap-PID.img).
    pub pids: Vec<i64>,
    /// Shared-memory pagemaps to send (pagemap-shmem-ID.img).
    pub shmem_ids: Option<Vec<i64>>,
    /// Connect with CRIU's TLS.
    pub tls: Option<PageServerTls>,
}

#[napi(object)]
pub struct SendImagesReport {
    pub entries: i64,
    pub pages: i64,
    pub holes: i64,
    /// Bytes written to the socket (headers + pages).
    pub bytes: i64,
    pub elapsed_ns: i64,
}

/// Sends existing pagemap/pages images to a page server (OPEN2, ADD_F/holes, CLOSE + ack).
#[napi]
pub async fn page_server_send_images(opts: SendImagesOptions) -> Result<SendImagesReport> {
    let port = port_of(opts.port)?;
    let tls = tls_options(opts.tls);
    let dir = PathBuf::from(opts.images_dir);
    let mut what: Vec<(ImageKind, u64)> = opts.pids.iter().map(|&p| (ImageKind::Task, p as u64)).collect();
    what.extend(opts.shmem_ids.unwrap_or_default().iter().map(|&s| (ImageKind::Shmem, s as u64)));
    on_thread("tsdump-pagesend", move || {
        let t0 = Instant::now();
        let mut c = PageServerClient::connect(&opts.address, port, tls.as_ref())?;
        let mut total = SendStats::default();
        for (kind, id) in what {
            let s = pageserver::send_pagemap_image(&mut c, &dir, kind, id)?;
            total.entries += s.entries;
            total.pages += s.pages;
            total.holes += s.holes;
        }
        total.bytes = c.bytes_sent();
        c.close()?;
        Ok(SendImagesReport {
            entries: total.entries as i64,
            pages: total.pages as i64,
            holes: total.holes as i64,
            bytes: total.bytes as i64,
            elapsed_ns: t0.elapsed().as_nanos() as i64,
        })
    })
    .await
}

#[napi(object)]
pub struct SendShmemOptions {
    /// The object's mapping in the task.
    pub start: BigInt,
    pub end: BigInt,
    pub address: String,
    pub port: u32,
}

#[napi]
impl Session {
    /// Sends the shared anonymous object mapped at `[start, end)` in `pid` to the page server
    /// over the session's connection (the one `dumpMemory({ pageServer })` uses, opened here if
    /// none is yet): pagemap-shmem-<shmid> with the object's allocated pages, as CRIU's dump
    /// sends shared memory. Callers send each shmid once.
    #[napi]
    pub async fn send_shmem_to_page_server(&self, pid: i32, opts: SendShmemOptions) -> Result<crate::memory::ShmemDumpInfo> {
        let (start, end) = (opts.start.get_u64().1, opts.end.get_u64().1);
        let port = port_of(opts.port)?;
        let address = opts.address;
        let d = self
            .run(move |state| {
                let mut c = take_client(state, &address, port)?;
                let before = c.bytes_sent();
                let r = pageserver::send_shmem(&mut c, pid, start, end);
                // An error once something was sent drops the connection (the server discards
                // what it got); one before (the mapping gone) leaves it usable.
                if r.is_ok() || c.bytes_sent() == before {
                    state.page_server = Some(c);
                }
                r
            })
            .await?;
        Ok(crate::memory::ShmemDumpInfo {
            shmid: BigInt::from(d.ino),
            size: BigInt::from(d.size),
            pages_file: "page-server".to_string(),
            entries: d
                .entries
                .iter()
                .map(|e| crate::memory::PagemapEntryInfo { vaddr: BigInt::from(e.vaddr), nr_pages: e.nr_pages, flags: e.flags })
                .collect(),
            pages_written: d.pages_written as i64,
        })
    }
}
