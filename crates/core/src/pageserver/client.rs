//! Sending a dump's pagemaps and pages to a page server (`criu page-server` or tsdump's own).
//!
//! Page data moves kernel-side on a plain connection: from a pipe with splice(2), from a file with
//! sendfile(2); over TLS it goes through a buffer. The socket is corked so headers and pages leave
//! in full segments; it is uncorked only where the protocol waits for an answer (OPEN2, PARENT,
//! CLOSE), as CRIU's own client does. Every wait watches the calling thread's cancellation flag
//! (crate::cancel): an interrupted dump is never held by a server that stopped answering.

use std::net::ToSocketAddrs;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;

use crate::error::{Error, ErrorCode, Result};
use crate::mem::pagemap::Run;
use crate::mem::predump::ReadSink;
use crate::mem::shmem::{self, ShmemDump};
use crate::mem::{PageSink, PagemapEntry as MemEntry};

use super::conn::{secs, Conn, Fail, SendFail};
use super::proto::{self, Header, ImageKind, PE_PRESENT};
use super::tls::{self, TlsOptions};

/// How long we wait for a connection, and for an answer or for the peer to take more data.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(60);

fn page_size() -> usize {
    crate::mem::vma::page_size() as usize
}

/// A connection to a page server.
pub struct PageServerClient {
    conn: Conn,
    peer: String,
    /// The image OPEN2 selected: (kind, id, dst_id).
    open: Option<(ImageKind, u64, u64)>,
    ps: usize,
    bytes_sent: u64,
}

/// What the client sent, for reports and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    pub entries: u64,
    pub pages: u64,
    pub holes: u64,
    pub bytes: u64,
}

impl PageServerClient {
    /// Connects to `address:port`, with CRIU's `--tls` when `tls` is given (the handshake is
    /// done here: the server's certificate must name `address` and chain to a trusted CA).
    pub fn connect(address: &str, port: u16, tls: Option<&TlsOptions>) -> Result<PageServerClient> {
        let peer = format!("{address}:{port}");
        let fail = |what: String| Error::new(ErrorCode::ImageIo, format!("page server {peer}: {what}"));
        let config = tls.map(|o| tls::client_config(o, address)).transpose().map_err(|e| fail(e.message))?;
        let cancel = crate::cancel::flag();
        let addrs = (address, port).to_socket_addrs().map_err(|e| fail(format!("cannot resolve: {e}")))?;
        let mut last = None;
        let mut sock = None;
        for a in addrs {
            match Conn::connect(a, CONNECT_TIMEOUT, &cancel) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(Fail::Cancelled) => return Err(Error::new(ErrorCode::Cancelled, format!("page server {peer}: interrupted while connecting"))),
                Err(e) => last = Some(e),
            }
        }
        let Some(sock) = sock else {
            return Err(fail(match last {
                Some(Fail::Idle(d)) => format!("cannot connect: no answer in {}", secs(d)),
                Some(e) => format!("cannot connect: {e}"),
                None => "no address to connect to".into(),
            }));
        };
        let session = config.map(|(config, name)| rustls::ClientConnection::new(config, name).map(rustls::Connection::Client)).transpose().map_err(|e| fail(format!("TLS: {e}")))?;
        let conn = Conn::new(sock, session, cancel, Some(IO_TIMEOUT)).map_err(|e| fail(format!("socket set-up: {e}")))?;
        let mut c = PageServerClient { conn, peer: peer.clone(), open: None, ps: page_size(), bytes_sent: 0 };
        c.conn.handshake().map_err(|e| c.fail("TLS handshake", e))?;
        c.cork(true)?;
        Ok(c)
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    fn err(&self, what: impl std::fmt::Display) -> Error {
        let img = match self.open {
            Some((k, id, _)) => format!(" ({} {id})", k.as_str()),
            None => String::new(),
        };
        Error::new(ErrorCode::ImageIo, format!("page server {}{img}: {what}", self.peer))
    }

    fn fail(&self, what: impl std::fmt::Display, f: Fail) -> Error {
        match f {
            Fail::Cancelled => Error::new(ErrorCode::Cancelled, self.err(format_args!("interrupted while {what}")).message),
            f => self.err(format_args!("{what}: {f}")),
        }
    }

    fn cork(&self, on: bool) -> Result<()> {
        let v: libc::c_int = on.into();
        // SAFETY: setsockopt reads sizeof(int) bytes from a live local for the socket we own.
        let rc = unsafe {
            libc::setsockopt(self.conn.fd(), libc::IPPROTO_TCP, libc::TCP_CORK, (&v as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t)
        };
        if rc < 0 {
            return Err(self.err(format_args!("TCP_CORK: {}", Errno::last().desc())));
        }
        Ok(())
    }

    fn send_header(&mut self, h: Header, what: &str) -> Result<()> {
        let b = h.to_bytes();
        self.conn.write_all(&b).map_err(|e| self.fail(format_args!("sending {what}"), e))?;
        self.bytes_sent += b.len() as u64;
        Ok(())
    }

    /// Sends what is corked and waits for an answer of `N` bytes.
    fn ask<const N: usize>(&mut self, h: Header, what: &str) -> Result<[u8; N]> {
        self.send_header(h, what)?;
        self.cork(false)?;
        let mut b = [0u8; N];
        let r = self.conn.read_exact(&mut b);
        self.cork(true)?;
        r.map_err(|e| self.fail(format_args!("waiting for the answer to {what}"), e))?;
        Ok(b)
    }

    /// PS_IOV_OPEN2: selects the pagemap image (task PID or shmem id) later commands fill.
    /// Answers whether the server has a parent image for it (incremental dumps).
    pub fn open(&mut self, kind: ImageKind, id: u64) -> Result<bool> {
        let dst = proto::encode_dst(kind, id);
        self.open = Some((kind, id, dst));
        let b = self.ask::<1>(Header { cmd: proto::PS_IOV_OPEN2, dst_id: dst, ..Header::default() }, "OPEN2")?;
        Ok(b[0] != 0)
    }

    /// PS_IOV_PARENT: whether the server has a parent image for (kind, id).
    pub fn has_parent(&mut self, kind: ImageKind, id: u64) -> Result<bool> {
        let dst = proto::encode_dst(kind, id);
        let b = self.ask::<4>(Header { cmd: proto::PS_IOV_PARENT, dst_id: dst, ..Header::default() }, "PARENT")?;
        Ok(i32::from_ne_bytes(b) != 0)
    }

    /// A question every page server answers without side effects (PARENT of task 0): once
    /// answered, the server is serving this connection (it accepted our certificate and we are
    /// not queued behind another client). Dumps ask it before they freeze the tree.
    pub fn ping(&mut self) -> Result<()> {
        self.has_parent(ImageKind::Task, 0).map(|_| ())
    }

    fn dst(&self, what: &str) -> Result<u64> {
        self.open.map(|o| o.2).ok_or_else(|| self.err(format_args!("{what} before OPEN2")))
    }

    fn add_header(&mut self, vaddr: u64, nr_pages: u32, flags: u32, what: &str) -> Result<()> {
        let dst = self.dst(what)?;
        let h = Header { cmd: proto::encode_cmd(proto::PS_IOV_ADD_F, flags), nr_pages, vaddr, dst_id: dst };
        self.send_header(h, what)
    }

    /// ADD_F of `nr_pages` pages at `vaddr` whose bytes are read from `src_fd`: a pipe (spliced
    /// into the socket) or a file (sent with sendfile from its current offset, which advances).
    /// `flags` gets PE_PRESENT added.
    pub fn send_pages(&mut self, vaddr: u64, nr_pages: u32, flags: u32, src_fd: RawFd) -> Result<()> {
        self.add_header(vaddr, nr_pages, flags | PE_PRESENT, "ADD_F")?;
        self.move_from_fd(src_fd, nr_pages as usize * self.ps, vaddr)
    }

    /// ADD_F of pages held in a buffer (a whole number of pages).
    pub fn send_pages_buf(&mut self, vaddr: u64, flags: u32, buf: &[u8]) -> Result<()> {
        if !buf.len().is_multiple_of(self.ps) {
            return Err(self.err(format_args!("vaddr {vaddr:#x}: {} bytes is not a whole number of pages", buf.len())));
        }
        self.add_header(vaddr, (buf.len() / self.ps) as u32, flags | PE_PRESENT, "ADD_F")?;
        self.conn.write_all(buf).map_err(|e| self.fail(format_args!("sending pages at vaddr {vaddr:#x}"), e))?;
        self.bytes_sent += buf.len() as u64;
        Ok(())
    }

    /// An entry without data: PE_PARENT (the pages are in the parent image) and/or PE_LAZY.
    pub fn send_hole(&mut self, vaddr: u64, nr_pages: u32, flags: u32) -> Result<()> {
        if flags & PE_PRESENT != 0 {
            return Err(self.err(format_args!("vaddr {vaddr:#x}: a hole cannot carry PE_PRESENT")));
        }
        self.add_header(vaddr, nr_pages, flags, "hole")
    }

    fn move_from_fd(&mut self, src: RawFd, len: usize, vaddr: u64) -> Result<()> {
        // SAFETY: fstat fills a zeroed stat for a descriptor the caller keeps open.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above; `st` outlives the call.
        if unsafe { libc::fstat(src, &mut st) } < 0 {
            return Err(self.err(format_args!("vaddr {vaddr:#x}: fstat of source fd {src}: {}", Errno::last().desc())));
        }
        let is_pipe = st.st_mode & libc::S_IFMT == libc::S_IFIFO;
        let mut sent = 0;
        let r = self.conn.send_from(src, is_pipe, len, &mut sent);
        self.bytes_sent += sent;
        r.map_err(|e| match e {
            SendFail::Peer(f) => self.fail(format_args!("sending pages at vaddr {vaddr:#x} ({sent} of {len} bytes sent)"), f),
            SendFail::Source(e) => self.err(format_args!("vaddr {vaddr:#x}: reading the page source: {}", e.desc())),
            SendFail::SourceDry { left } => self.err(format_args!("vaddr {vaddr:#x}: the page source ran dry with {left} of {len} bytes to send")),
        })
    }

    /// PS_IOV_CLOSE: the server finishes its images and answers 0 once they are complete.
    pub fn close(mut self) -> Result<()> {
        let b = self.ask::<4>(Header { cmd: proto::PS_IOV_CLOSE, ..Header::default() }, "CLOSE")?;
        let status = i32::from_ne_bytes(b);
        if status != 0 {
            return Err(self.err(format_args!("CLOSE answered status {status}")));
        }
        self.conn.shutdown();
        Ok(())
    }
}

/// A `PageSink` that turns the drained byte stream back into ADD_F commands: the drainer hands
/// over pages in the order of the PE_PRESENT entries, so each piece's address follows from the
/// bytes seen so far. Entries without data (PE_PARENT holes) are sent where they fall in address
/// order: those before the first pages when the sink is made, the others right after the pages
/// they follow, so the server's pagemap comes out sorted like a local one.
pub struct PageServerSink<'c> {
    client: &'c mut PageServerClient,
    entries: Vec<MemEntry>,
    idx: usize,
    /// Pages of entries[idx] already sent.
    done: u64,
    written: u64,
}

impl<'c> PageServerSink<'c> {
    /// Every run a PE_PRESENT entry with `flags` added (PE_LAZY as CRIU marks anon memory).
    pub fn new(client: &'c mut PageServerClient, runs: &[Run], flags: u32) -> Result<PageServerSink<'c>> {
        let entries = runs.iter().map(|r| MemEntry { vaddr: r.vaddr, nr_pages: r.nr_pages as u32, flags: flags | PE_PRESENT }).collect();
        Self::with_entries(client, entries)
    }

    /// `entries` in address order: PE_PRESENT ones take the drained pages, the others go as holes.
    pub fn with_entries(client: &'c mut PageServerClient, entries: Vec<MemEntry>) -> Result<PageServerSink<'c>> {
        let entries = entries.into_iter().filter(|e| e.nr_pages > 0).collect();
        let mut s = PageServerSink { client, entries, idx: 0, done: 0, written: 0 };
        s.send_holes()?;
        Ok(s)
    }

    /// Sends the holes from the current entry up to the next one with pages.
    fn send_holes(&mut self) -> Result<()> {
        while let Some(e) = self.entries.get(self.idx).filter(|e| e.flags & PE_PRESENT == 0) {
            let (vaddr, nr, flags) = (e.vaddr, e.nr_pages, e.flags);
            self.client.send_hole(vaddr, nr, flags)?;
            self.idx += 1;
        }
        Ok(())
    }

    /// The next piece of at most `pages` pages: (vaddr, nr_pages, flags) within the current entry.
    fn next_piece(&mut self, pages: u64) -> Result<(u64, u32, u32)> {
        let ps = self.client.ps as u64;
        let e = self.entries.get(self.idx).ok_or_else(|| self.client.err(format_args!("{pages} more pages than the entries hold")))?;
        let n = pages.min(u64::from(e.nr_pages) - self.done);
        let vaddr = e.vaddr + self.done * ps;
        Ok((vaddr, n as u32, e.flags & !PE_PRESENT))
    }

    /// After `n` pages of the current entry went out: on to the next entry (and its holes).
    fn sent(&mut self, n: u32) -> Result<()> {
        self.done += u64::from(n);
        self.written += u64::from(n) * self.client.ps as u64;
        if self.entries.get(self.idx).is_some_and(|e| self.done == u64::from(e.nr_pages)) {
            self.idx += 1;
            self.done = 0;
            self.send_holes()?;
        }
        Ok(())
    }

    fn whole_pages(&self, len: usize) -> Result<u64> {
        if !len.is_multiple_of(self.client.ps) {
            return Err(self.client.err(format_args!("{len} bytes is not a whole number of pages")));
        }
        Ok((len / self.client.ps) as u64)
    }

    /// True once every entry was sent.
    pub fn finished(&self) -> bool {
        self.idx == self.entries.len()
    }
}

impl PageSink for PageServerSink<'_> {
    fn splice_from(&mut self, pipe: RawFd, len: usize) -> Result<()> {
        let mut pages = self.whole_pages(len)?;
        while pages > 0 {
            let (vaddr, n, flags) = self.next_piece(pages)?;
            self.client.send_pages(vaddr, n, flags, pipe)?;
            pages -= u64::from(n);
            self.sent(n)?;
        }
        Ok(())
    }

    fn write_buf(&mut self, buf: &[u8]) -> Result<()> {
        self.whole_pages(buf.len())?;
        let mut rest = buf;
        while !rest.is_empty() {
            let (vaddr, n, flags) = self.next_piece((rest.len() / self.client.ps) as u64)?;
            let (now, later) = rest.split_at(n as usize * self.client.ps);
            self.client.send_pages_buf(vaddr, flags, now)?;
            rest = later;
            self.sent(n)?;
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }
}

/// A read-mode pre-dump (pages read after the task was released) straight to the page server.
impl ReadSink for PageServerClient {
    fn pages(&mut self, vaddr: u64, buf: &[u8]) -> Result<()> {
        self.send_pages_buf(vaddr, 0, buf)
    }
    fn hole(&mut self, entry: &MemEntry) -> Result<()> {
        self.send_hole(entry.vaddr, entry.nr_pages, entry.flags)
    }
}

/// Sends the shared anonymous object mapped at `[start, end)` in `pid` (whole: its allocated
/// pages) as pagemap-shmem-INO, as CRIU's page-xfer does for shared memory (PS_TYPE_SHMEM, id =
/// the shmid, `vaddr` counting from the start of the object). Page data goes with sendfile.
pub fn send_shmem(client: &mut PageServerClient, pid: i32, start: u64, end: u64) -> Result<ShmemDump> {
    let f = shmem::open_object(pid, start, end)?;
    let meta = f.metadata().map_err(|e| Error::new(ErrorCode::Procfs, format!("pid {pid}: fstat of shared mapping {start:#x}: {e}")))?;
    let ps = client.ps as u64;
    let size = meta.size();
    let ranges = shmem::data_ranges(&f, size)?;
    client.open(ImageKind::Shmem, meta.ino())?;
    let mut entries: Vec<MemEntry> = Vec::new();
    let mut pages = 0;
    for (from, to) in ranges {
        // sendfile stops at the end of the object: a last partial page goes from a buffer
        let full = to.min(size / ps * ps);
        let mut at = from;
        while at < full {
            let n = ((full - at) / ps).min(u64::from(u32::MAX));
            // SAFETY: lseek on a descriptor we own.
            if unsafe { libc::lseek(f.as_raw_fd(), at as libc::off_t, libc::SEEK_SET) } < 0 {
                return Err(client.err(format_args!("pid {pid}: seeking the shared object to {at:#x}: {}", Errno::last().desc())));
            }
            client.send_pages(at, n as u32, 0, f.as_raw_fd())?;
            entries.push(MemEntry { vaddr: at, nr_pages: n as u32, flags: PE_PRESENT });
            pages += n;
            at += n * ps;
        }
        if at < to {
            let mut buf = vec![0u8; (to - at) as usize];
            let avail = (size.saturating_sub(at) as usize).min(buf.len());
            f.read_exact_at(&mut buf[..avail], at)
                .map_err(|e| Error::new(ErrorCode::Kernel, format!("pid {pid}: reading the shared object at {at:#x}: {e}")))?;
            client.send_pages_buf(at, 0, &buf)?;
            entries.push(MemEntry { vaddr: at, nr_pages: ((to - at) / ps) as u32, flags: PE_PRESENT });
            pages += (to - at) / ps;
        }
    }
    Ok(ShmemDump { ino: meta.ino(), size, entries, pages_written: pages })
}

/// Replays an existing pagemap image and its pages file (a local dump) to the page server:
/// PE_PRESENT entries with their data, the rest as holes. Opens (kind, id) first; does not CLOSE.
pub fn send_pagemap_image(client: &mut PageServerClient, dir: &Path, kind: ImageKind, id: u64) -> Result<SendStats> {
    let pm_path = dir.join(kind.pagemap_name(id));
    let what = pm_path.display().to_string();
    let bytes = std::fs::read(&pm_path).map_err(|e| Error::new(ErrorCode::ImageIo, format!("reading {what}: {e}")))?;
    let (pages_id, entries) = proto::parse_pagemap(&bytes, &what)?;
    let pages_path = dir.join(format!("pages-{pages_id}.img"));
    let pages = std::fs::File::open(&pages_path).map_err(|e| Error::new(ErrorCode::ImageIo, format!("opening {}: {e}", pages_path.display())))?;
    client.open(kind, id)?;
    let mut st = SendStats::default();
    let before = client.bytes_sent;
    for e in &entries {
        let flags = e.effective_flags();
        if flags & PE_PRESENT != 0 {
            client.send_pages(e.vaddr, e.nr_pages, flags, pages.as_raw_fd())?;
            st.pages += u64::from(e.nr_pages);
        } else {
            client.send_hole(e.vaddr, e.nr_pages, flags)?;
            st.holes += 1;
        }
        st.entries += 1;
    }
    st.bytes = client.bytes_sent - before;
    Ok(st)
}
