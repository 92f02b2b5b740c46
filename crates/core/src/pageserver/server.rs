//! The receiving side, like `criu page-server`: accepts a client and writes the pagemap and pages
//! images it is sent into a directory.
//!
//! Images are written under `NAME.part` and renamed to their real names only when the peer says
//! CLOSE (after fsync), so a connection cut mid-stream leaves nothing that looks like a complete
//! dump; the `.part` files are removed on any error. Every file is created through the directory's
//! descriptor (crate::images_dir), never through a path a planted link could redirect. Page data
//! goes socket → pipe → file with splice(2) and never enters user space (over TLS it is decrypted
//! through a buffer).
//!
//! Unlike CRIU's, this server is not held by a client that fails: one refused by TLS, one that
//! stays silent (idle timeout) or trickles (slow-client timeout), or one that hangs up before
//! CLOSE is dropped, everything it sent is removed, and the next client is accepted.

use std::fs::File;
use std::io::{BufWriter, ErrorKind, Write};
use std::net::{TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::error::{Error, ErrorCode, Result};
use crate::images_dir::{ImagesDir, OpenOptions};

use super::conn::{secs, Conn, Fail, TICK};
use super::proto::{self, Header, ImageKind, PagemapEntry, HEADER_LEN, PE_PARENT, PE_PRESENT};
use super::tls::{self, TlsOptions};

const PART: &str = ".part";

/// How long the server waits on a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest silence of a client: before its first command, between commands and inside one
    /// (None: no limit).
    pub idle: Option<Duration>,
    /// Slow-client timeout, as Apache's mod_reqtimeout: once a command's first byte is in, the
    /// command (its header, its pages) must arrive within this grace plus its size at
    /// `min_rate` bytes/s. The TLS handshake gets the grace alone.
    pub grace: Duration,
    pub min_rate: u64,
}

impl Default for Timeouts {
    /// Idle: as long as tsdump's client waits for an answer.
    fn default() -> Timeouts {
        Timeouts { idle: Some(DEFAULT_IDLE_TIMEOUT), grace: Duration::from_secs(10), min_rate: 64 << 10 }
    }
}

pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The buffer TLS page data is decrypted into on its way to the pages file.
const TLS_CHUNK: usize = 256 << 10;

fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ImageIo, format!("page server: {what}: {e}"))
}

/// Files written for one pagemap image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReport {
    pub kind: ImageKind,
    pub id: u64,
    pub pagemap_file: String,
    pub pages_file: String,
    pub entries: u64,
    pub pages: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ServeReport {
    /// address:port of the peer.
    pub peer: String,
    /// Images complete on disk, in the order they were opened.
    pub images: Vec<ImageReport>,
    /// Page bytes received.
    pub page_bytes: u64,
}

/// How one client's session ended.
#[derive(Debug)]
pub enum Outcome {
    /// The client sent CLOSE and hung up: its images are complete on disk.
    Served(ServeReport),
    /// The client failed (refused by TLS, timed out, hung up before CLOSE, broke the protocol):
    /// what it sent that CLOSE had not committed is removed, and the listener takes the next one.
    Dropped { peer: String, error: Error },
}

/// A bound listening socket; `serve_next` takes the next connection.
pub struct PageServerListener {
    listener: TcpListener,
    port: u16,
    tls: Option<Arc<rustls::ServerConfig>>,
    timeouts: Timeouts,
}

impl PageServerListener {
    /// Binds `address:port` (port 0 picks a free port; see `port()`). With `tls`, every client
    /// must complete CRIU's TLS handshake with a certificate the server trusts; certificates and
    /// keys are read here, so a bad path fails before anything listens.
    pub fn bind(address: &str, port: u16, tls: Option<&TlsOptions>) -> Result<PageServerListener> {
        let what = format!("listening on {address}:{port}");
        let tls = tls.map(|o| tls::server_config(o, Some(address))).transpose().map_err(|e| io(&what, e.message))?;
        let addr = (address, port).to_socket_addrs().map_err(|e| io(&what, e))?.next().ok_or_else(|| io(&what, "no address"))?;
        let listener = TcpListener::bind(addr).map_err(|e| io(&what, e))?;
        listener.set_nonblocking(true).map_err(|e| io(&what, e))?;
        let port = listener.local_addr().map_err(|e| io(&what, e))?.port();
        Ok(PageServerListener { listener, port, tls, timeouts: Timeouts::default() })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.timeouts = t;
    }

    /// Accepts the next connection and serves it until CLOSE and the peer's hang-up. Images go
    /// into `dir` (created 0700 if missing). Errors only when `cancel` is raised (what the
    /// client sent is removed) or the listener fails; a failing client is an Outcome::Dropped.
    pub fn serve_next(&self, dir: &Path, cancel: &Arc<AtomicBool>) -> Result<Outcome> {
        let images = ImagesDir::open(dir, OpenOptions::CREATE)?;
        let (sock, addr) = loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::new(ErrorCode::Cancelled, format!("page server on port {}: cancelled while waiting for a connection", self.port)));
            }
            wait_readable(self.listener.as_fd(), "accepting a connection")?;
            match self.listener.accept() {
                Ok(a) => break a,
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(io(format_args!("accepting on port {}", self.port), e)),
            }
        };
        let peer = addr.to_string();
        let dropped = |error: Error| Ok(Outcome::Dropped { peer: peer.clone(), error });
        // answers (has-parent, CLOSE status) must not wait for Nagle
        if let Err(e) = sock.set_nodelay(true) {
            return dropped(io(format_args!("peer {peer}"), e));
        }
        let session = match &self.tls {
            Some(c) => match rustls::ServerConnection::new(c.clone()) {
                Ok(s) => Some(rustls::Connection::Server(s)),
                Err(e) => return dropped(io(format_args!("peer {peer}: TLS"), e)),
            },
            None => None,
        };
        let conn = match Conn::new(sock, session, cancel.clone(), self.timeouts.idle) {
            Ok(c) => c,
            Err(e) => return dropped(io(format_args!("peer {peer}"), e)),
        };
        let mut s = match Session::new(dir, images, conn, peer.clone(), self.timeouts) {
            Ok(s) => s,
            Err(e) => return dropped(e),
        };
        match s.handshake().and_then(|()| s.run()) {
            Ok(()) => {
                s.conn.shutdown();
                Ok(Outcome::Served(ServeReport { peer, images: std::mem::take(&mut s.committed), page_bytes: s.page_bytes }))
            }
            Err(e) => {
                s.discard();
                if e.code == ErrorCode::Cancelled {
                    return Err(e);
                }
                dropped(e)
            }
        }
    }
}

/// Waits up to one tick for `fd` to be readable; true if it is.
fn wait_readable(fd: BorrowedFd<'_>, what: &str) -> Result<bool> {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd on the stack for a descriptor borrowed for the call.
    let n = unsafe { libc::poll(&mut p, 1, TICK.as_millis() as i32) };
    if n < 0 {
        let e = Errno::last();
        return if e == Errno::EINTR { Ok(false) } else { Err(io(what, e.desc())) };
    }
    Ok(n > 0)
}

struct OpenImage {
    kind: ImageKind,
    id: u64,
    dst_id: u64,
    pagemap: BufWriter<File>,
    pages: File,
    pagemap_path: PathBuf,
    pages_path: PathBuf,
    entries: u64,
    nr_pages: u64,
    /// What the parent image (DIR/parent/, as `criu page-server --prev-images-dir` links it) holds
    /// for this image: sorted, merged page ranges of its PE_PRESENT and PE_PARENT entries.
    parent: Option<Vec<(u64, u64)>>,
}

/// A finished image whose files still carry the .part suffix.
struct Pending {
    report: ImageReport,
    pagemap_path: PathBuf,
    pages_path: PathBuf,
}

struct Session {
    dir: PathBuf,
    images: ImagesDir,
    conn: Conn,
    peer: String,
    pipe_r: OwnedFd,
    pipe_w: OwnedFd,
    pipe_size: usize,
    ps: u64,
    cur: Option<OpenImage>,
    pending: Vec<Pending>,
    committed: Vec<ImageReport>,
    next_pages_id: u32,
    page_bytes: u64,
    timeouts: Timeouts,
    /// When the first byte of the current command arrived (the slow-client clock).
    command_start: Instant,
}

fn part(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(PART);
    PathBuf::from(s)
}

/// The name of `p` in the images directory, and of its `.part` file.
fn name(p: &Path) -> String {
    p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}
fn part_name(p: &Path) -> String {
    format!("{}{PART}", name(p))
}

fn create_part(images: &ImagesDir, path: &Path) -> Result<File> {
    images.create(&part_name(path)).map_err(|e| Error::new(e.code, format!("page server: {}", e.message)))
}

impl Session {
    fn new(dir: &Path, images: ImagesDir, conn: Conn, peer: String, timeouts: Timeouts) -> Result<Session> {
        let (pipe_r, pipe_w) = nix::unistd::pipe().map_err(|e| io("creating the transfer pipe", e.desc()))?;
        // Bigger pipes mean fewer splice calls; the size is capped by fs/pipe-max-size.
        let max = crate::mem::drain::pipe_max_size();
        let _ = nix::fcntl::fcntl(&pipe_w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(max as i32));
        let pipe_size = nix::fcntl::fcntl(&pipe_w, nix::fcntl::FcntlArg::F_GETPIPE_SZ).map_err(|e| io("sizing the transfer pipe", e.desc()))? as usize;
        Ok(Session {
            dir: dir.to_owned(),
            images,
            conn,
            peer,
            pipe_r,
            pipe_w,
            pipe_size,
            ps: crate::mem::vma::page_size(),
            cur: None,
            pending: Vec::new(),
            committed: Vec::new(),
            next_pages_id: proto::FIRST_SERVER_PAGES_ID,
            page_bytes: 0,
            timeouts,
            command_start: Instant::now(),
        })
    }

    fn err(&self, what: impl std::fmt::Display) -> Error {
        let img = match &self.cur {
            Some(c) => format!(" ({} {})", c.kind.as_str(), c.id),
            None => String::new(),
        };
        Error::new(ErrorCode::ImageIo, format!("page server: peer {}{img}: {what}", self.peer))
    }

    /// An error for a transfer that stopped while `what`.
    fn fail(&self, what: impl std::fmt::Display, f: Fail) -> Error {
        match f {
            Fail::Cancelled => Error::new(ErrorCode::Cancelled, format!("page server: peer {}: cancelled", self.peer)),
            Fail::Idle(d) => self.err(format_args!("{what}: the client sent nothing for {} (idle timeout)", secs(d))),
            Fail::Deadline => {
                let t = self.timeouts;
                self.err(format_args!("{what}: the client is too slow (slow-client timeout: {} per command, pages at {} KiB/s at least)", secs(t.grace), t.min_rate >> 10))
            }
            f => self.err(format_args!("{what}: {f}")),
        }
    }

    /// TLS: the client must authenticate within the grace (plain connections: nothing to do).
    fn handshake(&mut self) -> Result<()> {
        if !self.conn.is_tls() {
            return Ok(());
        }
        self.conn.set_deadline(Some(Instant::now() + self.timeouts.grace));
        self.conn.handshake().map_err(|f| self.fail("TLS handshake", f))?;
        self.conn.set_deadline(None);
        Ok(())
    }

    /// The next header, or None on a hang-up between commands.
    fn read_header(&mut self) -> Result<Option<Header>> {
        let mut b = [0u8; HEADER_LEN];
        let mut got = 0;
        // between commands only the idle timeout runs
        self.conn.set_deadline(None);
        while got < HEADER_LEN {
            match self.conn.read(&mut b[got..]) {
                Ok(0) | Err(Fail::Closed) if got == 0 => return Ok(None),
                Ok(0) | Err(Fail::Closed) => return Err(self.err(format_args!("the connection closed inside a command header ({got} of {HEADER_LEN} bytes)"))),
                Ok(n) => {
                    if got == 0 {
                        self.command_start = Instant::now();
                        self.conn.set_deadline(Some(self.command_start + self.timeouts.grace));
                    }
                    got += n;
                }
                Err(f) => return Err(self.fail("waiting for a command", f)),
            }
        }
        Ok(Some(Header::from_bytes(&b)))
    }

    fn reply(&mut self, b: &[u8], what: &str) -> Result<()> {
        self.conn.write_all(b).map_err(|f| self.fail(format_args!("answering {what}"), f))
    }

    fn run(&mut self) -> Result<()> {
        let mut flushed = false;
        let mut any = false;
        while let Some(h) = self.read_header()? {
            any = true;
            flushed = false;
            match h.command() {
                proto::PS_IOV_OPEN => {
                    self.open(h.dst_id)?;
                }
                proto::PS_IOV_OPEN2 => {
                    let has_parent = self.open(h.dst_id)?;
                    self.reply(&[u8::from(has_parent)], "OPEN2")?;
                }
                proto::PS_IOV_PARENT => {
                    let (kind, id) = self.decode(h.dst_id)?;
                    let has = i32::from(self.has_parent(kind, id));
                    self.reply(&has.to_ne_bytes(), "PARENT")?;
                }
                proto::PS_IOV_ADD => self.add(&h, PE_PRESENT)?,
                proto::PS_IOV_HOLE => self.add(&h, proto::PE_PARENT)?,
                proto::PS_IOV_ADD_F => self.add(&h, h.flags())?,
                cmd @ (proto::PS_IOV_CLOSE | proto::PS_IOV_FORCE_CLOSE) => {
                    self.commit()?;
                    self.reply(&0i32.to_ne_bytes(), "CLOSE")?;
                    flushed = true;
                    if cmd == proto::PS_IOV_FORCE_CLOSE {
                        break;
                    }
                }
                proto::PS_IOV_GET => return Err(Error::new(ErrorCode::Unsupported, format!("page server: peer {}: PS_IOV_GET (lazy pages) is not supported", self.peer))),
                other => return Err(self.err(format_args!("unknown command {other:#x} (header {h:?})"))),
            }
        }
        if !any || !flushed {
            return Err(self.err("the connection closed before CLOSE: the images are incomplete and were removed"));
        }
        Ok(())
    }

    fn decode(&self, dst: u64) -> Result<(ImageKind, u64)> {
        proto::decode_dst(dst).ok_or_else(|| self.err(format_args!("unknown image type in dst_id {dst:#x}")))
    }

    fn has_parent(&self, kind: ImageKind, id: u64) -> bool {
        self.dir.join("parent").join(kind.pagemap_name(id)).exists()
    }

    /// The page ranges the parent image of (kind, id) can give, if there is one.
    fn parent_coverage(&self, kind: ImageKind, id: u64) -> Result<Option<Vec<(u64, u64)>>> {
        let path = self.dir.join("parent").join(kind.pagemap_name(id));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(format_args!("reading the parent image {}", path.display()), e)),
        };
        let (_, entries) = proto::parse_pagemap(&bytes, &path.display().to_string())?;
        Ok(Some(coverage(&entries, self.ps)))
    }

    fn alloc_pages_id(&mut self) -> u32 {
        loop {
            let id = self.next_pages_id;
            self.next_pages_id += 1;
            let p = self.dir.join(format!("pages-{id}.img"));
            if !p.exists() && !part(&p).exists() {
                return id;
            }
        }
    }

    /// Starts writing the image `dst`; finishes the current one first. Answers has-parent.
    fn open(&mut self, dst: u64) -> Result<bool> {
        let (kind, id) = self.decode(dst)?;
        self.finish_current()?;
        self.forget_pending(kind, id);
        let pages_id = self.alloc_pages_id();
        let pagemap_path = self.dir.join(kind.pagemap_name(id));
        let pages_path = self.dir.join(format!("pages-{pages_id}.img"));
        let mut pagemap = BufWriter::new(create_part(&self.images, &pagemap_path)?);
        let opened = pagemap
            .write_all(&proto::pagemap_prologue(pages_id))
            .map_err(|e| io(format_args!("writing {}", part(&pagemap_path).display()), e))
            .and_then(|()| create_part(&self.images, &pages_path));
        let pages = match opened {
            Ok(f) => f,
            Err(e) => {
                self.images.remove(&part_name(&pagemap_path));
                return Err(e);
            }
        };
        let parent = match self.parent_coverage(kind, id) {
            Ok(p) => p,
            Err(e) => {
                self.images.remove(&part_name(&pagemap_path));
                self.images.remove(&part_name(&pages_path));
                return Err(e);
            }
        };
        let has_parent = parent.is_some();
        self.cur = Some(OpenImage { kind, id, dst_id: dst, pagemap, pages, pagemap_path, pages_path, entries: 0, nr_pages: 0, parent });
        Ok(has_parent)
    }

    fn add(&mut self, h: &Header, flags: u32) -> Result<()> {
        let dst_ok = self.cur.as_ref().is_some_and(|c| c.dst_id == h.dst_id);
        if !dst_ok {
            // Old clients sent data without OPEN; CRIU opens implicitly, so do we.
            self.open(h.dst_id)?;
        }
        if flags & PE_PARENT != 0 {
            // As CRIU's check_pagehole_in_parent: a hole the parent cannot fill would restore
            // as pages that were never dumped.
            let end = h.vaddr + u64::from(h.nr_pages) * self.ps;
            let c = self.cur.as_ref().expect("opened above");
            match &c.parent {
                None => return Err(self.err(format_args!("a parent hole at {:#x} ({} pages) but there is no parent image (DIR/parent)", h.vaddr, h.nr_pages))),
                Some(cov) if !covered(cov, h.vaddr, end) => {
                    return Err(self.err(format_args!("the parent hole {:#x}-{end:#x} is not in the parent image", h.vaddr)))
                }
                Some(_) => {}
            }
        }
        let entry = PagemapEntry { vaddr: h.vaddr, nr_pages: h.nr_pages, in_parent: None, flags: Some(flags) };
        let mut framed = Vec::with_capacity(28);
        proto::frame(&proto::encode_entry(&entry), &mut framed);
        let c = self.cur.as_mut().expect("opened above");
        c.pagemap.write_all(&framed).map_err(|e| io(format_args!("writing {}", part(&c.pagemap_path).display()), e))?;
        c.entries += 1;
        if flags & PE_PRESENT == 0 {
            return Ok(());
        }
        let len = u64::from(h.nr_pages) * self.ps;
        let allowed = self.timeouts.grace + Duration::from_secs_f64(len as f64 / self.timeouts.min_rate.max(1) as f64);
        self.conn.set_deadline(Some(self.command_start + allowed));
        self.receive_pages(h.vaddr, len)?;
        let c = self.cur.as_mut().expect("opened above");
        c.nr_pages += u64::from(h.nr_pages);
        Ok(())
    }

    /// Moves `len` bytes from the socket into the pages file: through the pipe on a plain
    /// connection, through a buffer over TLS.
    fn receive_pages(&mut self, vaddr: u64, len: u64) -> Result<()> {
        let mut buf = if self.conn.is_tls() { vec![0u8; len.min(TLS_CHUNK as u64) as usize] } else { Vec::new() };
        let mut left = len;
        while left > 0 {
            let r = if self.conn.is_tls() {
                let want = left.min(buf.len() as u64) as usize;
                self.conn.read(&mut buf[..want])
            } else {
                self.conn.splice_into(self.pipe_w.as_raw_fd(), left.min(self.pipe_size as u64) as usize)
            };
            let n = match r {
                Ok(0) | Err(Fail::Closed) => {
                    return Err(self.err(format_args!("the connection closed in the middle of the pages at vaddr {vaddr:#x} ({} of {len} bytes received)", len - left)))
                }
                Ok(n) => n,
                Err(f) => return Err(self.fail(format_args!("receiving pages at vaddr {vaddr:#x} ({} of {len} bytes)", len - left), f)),
            };
            if self.conn.is_tls() {
                let c = self.cur.as_mut().expect("an image is open");
                c.pages.write_all(&buf[..n]).map_err(|e| io(format_args!("writing {} (vaddr {vaddr:#x})", part(&c.pages_path).display()), e))?;
            } else {
                self.drain_pipe(n, vaddr)?;
            }
            left -= n as u64;
            self.page_bytes += n as u64;
        }
        Ok(())
    }

    fn drain_pipe(&mut self, mut n: usize, vaddr: u64) -> Result<()> {
        let c = self.cur.as_ref().expect("an image is open");
        let out = c.pages.as_raw_fd();
        while n > 0 {
            // SAFETY: both descriptors are open; the file is written at its current offset.
            let m = unsafe { libc::splice(self.pipe_r.as_raw_fd(), std::ptr::null_mut(), out, std::ptr::null_mut(), n, libc::SPLICE_F_MOVE) };
            if m < 0 {
                let e = Errno::last();
                if e == Errno::EINTR {
                    continue;
                }
                return Err(io(format_args!("writing {} (vaddr {vaddr:#x})", part(&c.pages_path).display()), e.desc()));
            }
            if m == 0 {
                return Err(io(format_args!("writing {} (vaddr {vaddr:#x})", part(&c.pages_path).display()), "the pipe ran dry"));
            }
            n -= m as usize;
        }
        Ok(())
    }

    /// Flushes and syncs the open image and queues it for the rename at CLOSE.
    fn finish_current(&mut self) -> Result<()> {
        let Some(mut c) = self.cur.take() else { return Ok(()) };
        let pm_part = part(&c.pagemap_path);
        let pg_part = part(&c.pages_path);
        let pending = Pending {
            report: ImageReport {
                kind: c.kind,
                id: c.id,
                pagemap_file: c.pagemap_path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
                pages_file: c.pages_path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
                entries: c.entries,
                pages: c.nr_pages,
            },
            pagemap_path: c.pagemap_path.clone(),
            pages_path: c.pages_path.clone(),
        };
        // Queued before the syncs so that a failure still removes the files.
        self.pending.push(pending);
        c.pagemap.flush().map_err(|e| io(format_args!("writing {}", pm_part.display()), e))?;
        c.pagemap.get_ref().sync_all().map_err(|e| io(format_args!("fsync {}", pm_part.display()), e))?;
        c.pages.sync_all().map_err(|e| io(format_args!("fsync {}", pg_part.display()), e))?;
        Ok(())
    }

    /// An image opened again in this session replaces the earlier one, as CRIU's page server
    /// does (it truncates): the earlier one's uncommitted files go now.
    fn forget_pending(&mut self, kind: ImageKind, id: u64) {
        let images = &self.images;
        self.pending.retain(|p| {
            let same = p.report.kind == kind && p.report.id == id;
            if same {
                images.remove(&part_name(&p.pagemap_path));
                images.remove(&part_name(&p.pages_path));
            }
            !same
        });
    }

    /// CLOSE: every image received so far gets its real name. If one cannot, none of this CLOSE's
    /// images stays under its real name: the session fails and discards them all.
    fn commit(&mut self) -> Result<()> {
        self.finish_current()?;
        let mut placed: Vec<String> = Vec::new();
        for p in &self.pending {
            for path in [&p.pages_path, &p.pagemap_path] {
                if let Err(e) = self.images.rename(&part_name(path), &name(path)) {
                    for f in &placed {
                        self.images.remove(f);
                    }
                    return Err(Error::new(e.code, format!("page server: {}", e.message)));
                }
                placed.push(name(path));
            }
        }
        for p in std::mem::take(&mut self.pending) {
            // an image committed before under the same id was replaced: its pages file is not
            // referenced by any pagemap any more
            if let Some(i) = self.committed.iter().position(|r| r.kind == p.report.kind && r.id == p.report.id) {
                let old = self.committed.remove(i);
                self.images.remove(&old.pages_file);
            }
            self.committed.push(p.report);
        }
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// After an error: nothing that was not committed stays behind.
    fn discard(&mut self) {
        if let Some(c) = self.cur.take() {
            self.images.remove(&part_name(&c.pagemap_path));
            self.images.remove(&part_name(&c.pages_path));
        }
        for p in self.pending.drain(..) {
            self.images.remove(&part_name(&p.pagemap_path));
            self.images.remove(&part_name(&p.pages_path));
        }
    }
}

/// Sorted, merged page ranges of the entries that hold pages (here or further up the chain).
fn coverage(entries: &[PagemapEntry], ps: u64) -> Vec<(u64, u64)> {
    let mut r: Vec<(u64, u64)> = entries
        .iter()
        .filter(|e| e.effective_flags() & (PE_PRESENT | PE_PARENT) != 0)
        .map(|e| (e.vaddr, e.vaddr + u64::from(e.nr_pages) * ps))
        .collect();
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for (s, e) in r {
        match out.last_mut() {
            Some(l) if l.1 >= s => l.1 = l.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Whether the sorted, merged ranges `cov` hold all of `[s, e)`.
fn covered(cov: &[(u64, u64)], s: u64, e: u64) -> bool {
    let i = cov.partition_point(|r| r.1 <= s);
    cov.get(i).is_some_and(|&(rs, re)| rs <= s && e <= re)
}

#[cfg(test)]
mod coverage_tests {
    use super::*;

    #[test]
    fn holes_must_lie_in_the_parent() {
        let e = |vaddr: u64, nr_pages: u32, flags: u32| PagemapEntry { vaddr, nr_pages, in_parent: None, flags: Some(flags) };
        let cov = coverage(&[e(0x1000, 2, PE_PRESENT), e(0x3000, 1, PE_PARENT), e(0x8000, 1, proto::PE_LAZY), e(0x9000, 1, PE_PRESENT)], 0x1000);
        assert_eq!(cov, vec![(0x1000, 0x4000), (0x9000, 0xa000)]);
        assert!(covered(&cov, 0x1000, 0x4000));
        assert!(covered(&cov, 0x2000, 0x3000));
        assert!(!covered(&cov, 0x3000, 0x5000));
        assert!(!covered(&cov, 0x8000, 0x9000), "lazy-only entries hold no pages");
        assert!(!covered(&[], 0x1000, 0x2000));
    }
}
