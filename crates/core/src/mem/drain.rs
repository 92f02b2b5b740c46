//! Moving the selected pages into a sink. Sources and sinks are separate choices:
//! - `ReadSource`: the tracer copies pages with process_vm_readv (one copy), falling back to
//!   pread on /proc/PID/mem for mappings without PROT_READ (FOLL_FORCE); works without injecting.
//! - `VmspliceSource`: the task itself vmsplice(SPLICE_F_GIFT)s its pages into pipes and the
//!   tracer splice()s them into the sink: page data never passes through user space. The task's
//!   side is the resident parasite (one socket round trip per pipe load; the blob owns the
//!   pipes, so a tsdump that dies leaves the task neither SIGPIPE nor descriptors), or, where
//!   the blob cannot run (no image for this architecture, another network namespace,
//!   TSDUMP_PARASITE=inject), one injected syscall per pipe load. Pipes are capped by /proc/sys/fs/pipe-max-size (no
//!   CAP_SYS_RESOURCE here), so several are filled per round. Mappings without PROT_READ are read
//!   through /proc/PID/mem instead of being mprotect'ed, so the task's map is never changed.
//! - `FdSink`: a file (pages-N.img) or a socket (a page server later); takes spliced pipes or
//!   plain buffers.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

use crate::arch::nr;
use crate::error::{Error, ErrorCode, Result};
use crate::images_dir::NewFile;
use crate::parasite::blob::Blob;
use crate::parasite::Injector;

use super::pagemap::Run;
use super::vma::page_size;

/// Where page data goes.
pub trait PageSink {
    /// Moves exactly `len` bytes out of pipe `pipe` into the sink.
    fn splice_from(&mut self, pipe: RawFd, len: usize) -> Result<()>;
    /// Writes a buffer.
    fn write_buf(&mut self, buf: &[u8]) -> Result<()>;
    /// Bytes taken so far.
    fn written(&self) -> u64;
}

/// Where page data comes from. `runs` are drained in order; `readable(vaddr)` tells whether the
/// page's mapping has PROT_READ.
pub trait PageSource {
    fn drain(&mut self, runs: &[Run], readable: &dyn Fn(u64) -> bool, sink: &mut (dyn PageSink + Send)) -> Result<()>;
}

/// A sink that reports every piece it takes to a progress counter (crate::progress): one count
/// per pipe load, from whichever thread splices it.
pub struct CountingSink<S> {
    pub inner: S,
    pub progress: std::sync::Arc<crate::progress::Progress>,
}

impl<S: PageSink> PageSink for CountingSink<S> {
    fn splice_from(&mut self, pipe: RawFd, len: usize) -> Result<()> {
        self.inner.splice_from(pipe, len)?;
        self.progress.add(len as u64);
        Ok(())
    }
    fn write_buf(&mut self, buf: &[u8]) -> Result<()> {
        self.inner.write_buf(buf)?;
        self.progress.add(buf.len() as u64);
        Ok(())
    }
    fn written(&self) -> u64 {
        self.inner.written()
    }
}

/// A file or socket.
pub struct FdSink {
    fd: OwnedFd,
    what: String,
    written: u64,
}

impl FdSink {
    /// Creates an image file in its images directory (owner-only, never over an existing name).
    pub fn create_file(file: &NewFile) -> Result<FdSink> {
        let f = file.create()?;
        Ok(FdSink { fd: f.into(), what: file.display(), written: 0 })
    }

    /// Any writable fd (a connected socket for a page server).
    pub fn from_fd(fd: OwnedFd, what: impl Into<String>) -> FdSink {
        FdSink { fd, what: what.into(), written: 0 }
    }

    pub fn sync(&self) -> Result<()> {
        nix::unistd::fsync(&self.fd).or_else(|e| if e == Errno::EINVAL { Ok(()) } else { Err(e) }).map_err(|e| {
            Error::new(ErrorCode::ImageIo, format!("fsync {}: {}", self.what, e.desc()))
        })
    }
}

impl PageSink for FdSink {
    fn splice_from(&mut self, pipe: RawFd, len: usize) -> Result<()> {
        let mut left = len;
        while left > 0 {
            // SAFETY: both fds are open for the duration of the call; no offsets passed.
            let n = unsafe {
                libc::splice(pipe, std::ptr::null_mut(), self.fd.as_raw_fd(), std::ptr::null_mut(), left, libc::SPLICE_F_MOVE)
            };
            if n < 0 {
                let e = Errno::last();
                if e == Errno::EINTR {
                    continue;
                }
                return Err(Error::new(ErrorCode::ImageIo, format!("splice into {}: {}", self.what, e.desc())));
            }
            if n == 0 {
                return Err(Error::new(ErrorCode::ImageIo, format!("splice into {}: pipe ran dry with {left} bytes left", self.what)));
            }
            left -= n as usize;
            self.written += n as u64;
        }
        Ok(())
    }

    fn write_buf(&mut self, buf: &[u8]) -> Result<()> {
        // SAFETY: the fd stays owned by self; ManuallyDrop keeps the temporary File from closing it.
        let mut f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(self.fd.as_raw_fd()) });
        f.write_all(buf).map_err(|e| Error::new(ErrorCode::ImageIo, format!("writing {}: {e}", self.what)))?;
        self.written += buf.len() as u64;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }
}

/// Copy buffer size of the read source: memory use stays flat in the target's size.
const READ_BUF: usize = 1 << 20;

/// The tracer reads the pages (process_vm_readv, or /proc/PID/mem for unreadable mappings).
pub struct ReadSource {
    pid: i32,
    mem: Option<File>,
    buf: Vec<u8>,
}

impl ReadSource {
    pub fn new(pid: i32) -> ReadSource {
        ReadSource { pid, mem: None, buf: Vec::new() }
    }

    fn mem(&mut self) -> Result<&File> {
        if self.mem.is_none() {
            let path = format!("/proc/{}/mem", self.pid);
            let f = File::open(&path).map_err(|e| Error::new(ErrorCode::Procfs, format!("pid {}: opening {path}: {e}", self.pid)))?;
            self.mem = Some(f);
        }
        Ok(self.mem.as_ref().expect("just opened"))
    }

    /// Copies one run into the sink in READ_BUF pieces.
    pub fn copy_run(&mut self, run: Run, readable: bool, sink: &mut dyn PageSink) -> Result<()> {
        if self.buf.is_empty() {
            self.buf = vec![0u8; READ_BUF];
        }
        let ps = page_size();
        let mut addr = run.vaddr;
        let end = run.vaddr + run.nr_pages * ps;
        while addr < end {
            crate::cancel::check("the page read")?;
            let n = (READ_BUF as u64).min(end - addr) as usize;
            let pid = self.pid;
            if readable {
                let remote = [RemoteIoVec { base: addr as usize, len: n }];
                let mut buf = std::mem::take(&mut self.buf);
                let got = process_vm_readv(Pid::from_raw(pid), &mut [IoSliceMut::new(&mut buf[..n])], &remote)
                    .map_err(|e| Error::from_errno(e, pid, format_args!("process_vm_readv at {addr:#x}")));
                self.buf = buf;
                if got? != n {
                    return Err(Error::new(ErrorCode::Kernel, format!("pid {pid}: short process_vm_readv at {addr:#x}")));
                }
            } else {
                let mut buf = std::mem::take(&mut self.buf);
                let r = self.mem().and_then(|m| {
                    m.read_exact_at(&mut buf[..n], addr)
                        .map_err(|e| Error::new(ErrorCode::Kernel, format!("pid {pid}: reading /proc/{pid}/mem at {addr:#x}: {e}")))
                });
                self.buf = buf;
                r?;
            }
            sink.write_buf(&self.buf[..n])?;
            addr += n as u64;
        }
        Ok(())
    }
}

impl PageSource for ReadSource {
    fn drain(&mut self, runs: &[Run], readable: &dyn Fn(u64) -> bool, sink: &mut (dyn PageSink + Send)) -> Result<()> {
        for &r in runs {
            self.copy_run(r, readable(r.vaddr), sink)?;
        }
        Ok(())
    }
}

/// One pipe: the task holds the write end (fd number `task_fd` in its table), we the read end.
struct Pipe {
    task_fd: i32,
    ours: OwnedFd,
    cap: usize,
}

/// Limits of the vmsplice source (for injected calls, MAX_PIPES iovec arrays of MAX_IOV must
/// fit the scratch; the blob takes the same batches over its socket).
const MAX_PIPES: usize = 8;
/// The kernel's UIO_MAXIOV.
const MAX_IOV: usize = crate::parasite::blob::MAX_IOV;

/// The resident parasite a drain talks to: its own, or one the caller started and keeps.
enum BlobUse<'a> {
    Own(Blob),
    Lent(&'a mut Blob),
}

impl BlobUse<'_> {
    fn get(&mut self) -> &mut Blob {
        match self {
            BlobUse::Own(b) => b,
            BlobUse::Lent(b) => b,
        }
    }
}

/// The task vmsplices its own pages into pipes; we splice them into the sink.
pub struct VmspliceSource<'a> {
    inj: &'a mut Injector,
    blob: Option<BlobUse<'a>>,
    /// Why the blob is not used (None when it is).
    pub blob_refused: Option<String>,
    pipes: Vec<Pipe>,
    fallback: ReadSource,
    /// vmsplice calls made (one injected syscall each).
    pub vmsplice_calls: u64,
    /// Time spent in injected vmsplice calls, and in splicing pipes into the sink.
    pub vmsplice_ns: u64,
    pub splice_ns: u64,
}

/// Opens the read end of a pipe the task made, through /proc/PID/fd (any fd kind would need
/// pidfd_getfd; a pipe reopens as a new description of the same pipe).
fn open_read_end(pid: i32, rfd: i32) -> Result<OwnedFd> {
    let path = format!("/proc/{pid}/fd/{rfd}");
    let f = std::fs::OpenOptions::new().read(true).open(&path).map_err(|e| Error::new(ErrorCode::Kernel, format!("pid {pid}: opening {path}: {e}")))?;
    Ok(f.into())
}

/// /proc/sys/fs/pipe-max-size, the most an unprivileged F_SETPIPE_SZ may ask (read once).
pub fn pipe_max_size() -> usize {
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| std::fs::read_to_string("/proc/sys/fs/pipe-max-size").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1 << 20))
}

/// Pipes worth making for `bytes` of pages: enough to keep both ends busy, at most `max`.
pub fn pipes_for(bytes: u64, max: usize) -> usize {
    (bytes.div_ceil(pipe_max_size().min(4 << 20) as u64) as usize).clamp(1, max.max(1))
}

impl<'a> VmspliceSource<'a> {
    /// Creates `npipes` pipes inside the task (by the resident parasite, started here, or
    /// injected pipe2), opens their read ends through /proc/PID/fd and grows them to
    /// pipe-max-size.
    pub fn new(inj: &'a mut Injector, npipes: usize) -> Result<VmspliceSource<'a>> {
        Self::with_blob(inj, None, npipes)
    }

    /// `new` through a resident parasite the caller started (and stops: this source only has it
    /// close the pipes it made for the drain). Without one, one is started here.
    pub fn with_blob(inj: &'a mut Injector, lent: Option<&'a mut Blob>, npipes: usize) -> Result<VmspliceSource<'a>> {
        let pid = inj.pid();
        let mut src = VmspliceSource {
            inj,
            blob: None,
            blob_refused: None,
            pipes: Vec::new(),
            fallback: ReadSource::new(pid),
            vmsplice_calls: 0,
            vmsplice_ns: 0,
            splice_ns: 0,
        };
        let want = pipe_max_size().min(4 << 20);
        if let Some(b) = lent {
            src.blob = Some(BlobUse::Lent(b));
        } else if std::env::var("TSDUMP_PARASITE").as_deref() == Ok("inject") {
            src.blob_refused = Some("TSDUMP_PARASITE=inject".into());
        } else {
            match Blob::start(src.inj) {
                Ok(b) => src.blob = Some(BlobUse::Own(b)),
                Err(e) if e.code == ErrorCode::TargetGone => return Err(e),
                Err(e) => src.blob_refused = Some(e.message),
            }
        }
        if let Some(blob) = src.blob.as_mut() {
            for (rfd, wfd, cap) in blob.get().pipes(src.inj, npipes.clamp(1, MAX_PIPES), want)? {
                src.pipes.push(Pipe { task_fd: wfd, ours: open_read_end(pid, rfd)?, cap });
            }
            return Ok(src);
        }
        let off = Injector::DATA_OFFSET;
        let fit = (src.inj.data_limit() - off) / (MAX_IOV * 16);
        if fit == 0 {
            return Err(Error::new(ErrorCode::Parasite, format!("pid {pid}: scratch too small for a vmsplice batch")));
        }
        for _ in 0..npipes.clamp(1, MAX_PIPES.min(fit)) {
            let at = src.inj.remote(off);
            src.inj.syscall_ok(pid, nr::PIPE2, [at, libc::O_CLOEXEC as u64, 0, 0, 0, 0], "pipe2")?;
            let mut b = [0u8; 8];
            src.inj.read(off, &mut b)?;
            let rfd = i32::from_ne_bytes(b[0..4].try_into().expect("4"));
            let wfd = i32::from_ne_bytes(b[4..8].try_into().expect("4"));
            let opened = open_read_end(pid, rfd);
            // The task keeps only the write end, whatever happened.
            let closed = src.inj.syscall_ok(pid, nr::CLOSE, [rfd as u64, 0, 0, 0, 0, 0], "close(pipe read end)");
            let ours = match opened {
                Ok(f) => f,
                Err(e) => {
                    let _ = src.inj.syscall(pid, nr::CLOSE, [wfd as u64, 0, 0, 0, 0, 0]);
                    return Err(e);
                }
            };
            src.pipes.push(Pipe { task_fd: wfd, ours, cap: 0 });
            closed?;
            let p = src.pipes.last_mut().expect("just pushed");
            // SAFETY: F_SETPIPE_SZ on a pipe fd we own.
            let got = unsafe { libc::fcntl(p.ours.as_raw_fd(), libc::F_SETPIPE_SZ, want as libc::c_int) };
            p.cap = if got > 0 {
                got as usize
            } else {
                // SAFETY: F_GETPIPE_SZ on a pipe fd we own.
                (unsafe { libc::fcntl(p.ours.as_raw_fd(), libc::F_GETPIPE_SZ) }).max(4096) as usize
            };
        }
        Ok(src)
    }

    /// Whether the resident parasite does the task's side.
    pub fn uses_blob(&self) -> bool {
        self.blob.is_some()
    }

    /// Closes the task's pipe ends (ours close on drop).
    pub fn finish(mut self) -> Result<()> {
        self.close_task_ends()
    }

    fn close_task_ends(&mut self) -> Result<()> {
        match self.blob.take() {
            // The blob made the pipes and closes them.
            Some(BlobUse::Own(blob)) => {
                self.pipes.clear();
                return blob.stop(self.inj);
            }
            Some(BlobUse::Lent(blob)) => {
                self.pipes.clear();
                return blob.close_pipes(self.inj);
            }
            None => {}
        }
        let pid = self.inj.pid();
        let mut first_err = None;
        for p in self.pipes.drain(..) {
            if let Err(e) = self.inj.syscall_ok(pid, nr::CLOSE, [p.task_fd as u64, 0, 0, 0, 0, 0], "close(pipe write end)") {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Fills pipe `i` with the next pages of `queue` (one vmsplice in the task); returns the bytes.
    fn fill(&mut self, i: usize, queue: &mut VecDeque<(u64, u64)>) -> Result<usize> {
        let pid = self.inj.pid();
        let cap = self.pipes[i].cap;
        let mut iovs: Vec<(u64, u64)> = Vec::with_capacity(MAX_IOV);
        let mut bytes = 0usize;
        while bytes < cap && iovs.len() < MAX_IOV {
            let Some((addr, len)) = queue.front_mut() else { break };
            let take = (*len as usize).min(cap - bytes);
            iovs.push((*addr, take as u64));
            bytes += take;
            if take as u64 == *len {
                queue.pop_front();
            } else {
                *addr += take as u64;
                *len -= take as u64;
            }
        }
        let t0 = std::time::Instant::now();
        let fd = self.pipes[i].task_fd;
        let flags = libc::SPLICE_F_GIFT | libc::SPLICE_F_NONBLOCK;
        let r = match self.blob.as_mut() {
            Some(blob) => blob.get().vmsplice(self.inj, fd, &iovs, flags)?,
            None => {
                let iov_base = Injector::DATA_OFFSET + i * MAX_IOV * 16;
                let raw: Vec<u8> = iovs.iter().flat_map(|(a, l)| [a.to_ne_bytes(), l.to_ne_bytes()]).flatten().collect();
                self.inj.write(iov_base, &raw)?;
                let args = [fd as u64, self.inj.remote(iov_base), iovs.len() as u64, flags as u64, 0, 0];
                self.inj.syscall(pid, nr::VMSPLICE, args)?
            }
        };
        self.vmsplice_calls += 1;
        self.vmsplice_ns += t0.elapsed().as_nanos() as u64;
        if r < 0 {
            return Err(Error::new(ErrorCode::Parasite, format!("pid {pid}: vmsplice in the task: {}", Errno::from_raw(-r as i32).desc())));
        }
        if r as usize != bytes {
            return Err(Error::new(ErrorCode::Parasite, format!("pid {pid}: vmsplice moved {r} of {bytes} bytes")));
        }
        Ok(bytes)
    }
}

/// Work for the splicer thread, in file order.
enum Chunk {
    /// Move this many bytes out of pipe i, then hand the pipe back.
    Pipe(usize, usize),
    /// Bytes read by the tracer itself (mappings without PROT_READ).
    Buf(Vec<u8>),
}

/// A sink that forwards buffers to the splicer thread (for the /proc/PID/mem fallback).
struct ChunkSender<'a> {
    tx: &'a std::sync::mpsc::Sender<Chunk>,
    sent: u64,
}

impl PageSink for ChunkSender<'_> {
    fn splice_from(&mut self, _pipe: RawFd, _len: usize) -> Result<()> {
        Err(Error::new(ErrorCode::Kernel, "internal: splice into the chunk forwarder"))
    }
    fn write_buf(&mut self, buf: &[u8]) -> Result<()> {
        self.tx.send(Chunk::Buf(buf.to_vec())).map_err(|_| Error::new(ErrorCode::ImageIo, "the page writer stopped"))?;
        self.sent += buf.len() as u64;
        Ok(())
    }
    fn written(&self) -> u64 {
        self.sent
    }
}

impl PageSource for VmspliceSource<'_> {
    /// The tracer thread fills pipes (injected vmsplice) while a second thread splices full
    /// pipes into the sink, so the two costs overlap instead of adding up.
    fn drain(&mut self, runs: &[Run], readable: &dyn Fn(u64) -> bool, sink: &mut (dyn PageSink + Send)) -> Result<()> {
        use std::sync::mpsc;
        let ps = page_size();
        // What fits in the pipes at once needs no second thread: fill them all, then empty them.
        let room: usize = self.pipes.iter().map(|p| p.cap).sum();
        let bytes: u64 = runs.iter().map(|r| r.nr_pages * ps).sum();
        if bytes <= room as u64 && runs.iter().all(|r| readable(r.vaddr)) {
            let mut queue: VecDeque<(u64, u64)> = runs.iter().map(|r| (r.vaddr, r.nr_pages * ps)).collect();
            // (more than once only when a pipe load is cut short by the iovec limit)
            while !queue.is_empty() {
                let mut filled = Vec::new();
                for i in 0..self.pipes.len() {
                    if queue.is_empty() {
                        break;
                    }
                    crate::cancel::check("the page drain")?;
                    filled.push((i, self.fill(i, &mut queue)?));
                }
                let t0 = std::time::Instant::now();
                for (i, n) in filled {
                    sink.splice_from(self.pipes[i].ours.as_raw_fd(), n)?;
                }
                self.splice_ns += t0.elapsed().as_nanos() as u64;
            }
            return Ok(());
        }
        let (work_tx, work_rx) = mpsc::channel::<Chunk>();
        let (free_tx, free_rx) = mpsc::channel::<usize>();
        for i in 0..self.pipes.len() {
            free_tx.send(i).expect("receiver alive");
        }
        let read_fds: Vec<RawFd> = self.pipes.iter().map(|p| p.ours.as_raw_fd()).collect();
        std::thread::scope(|scope| {
            let splicer = scope.spawn(move || -> Result<u64> {
                let mut spent = 0u64;
                for chunk in work_rx {
                    let t0 = std::time::Instant::now();
                    match chunk {
                        Chunk::Pipe(i, bytes) => {
                            sink.splice_from(read_fds[i], bytes)?;
                            let _ = free_tx.send(i);
                        }
                        Chunk::Buf(b) => sink.write_buf(&b)?,
                    }
                    spent += t0.elapsed().as_nanos() as u64;
                }
                Ok(spent)
            });
            let produced = (|| -> Result<()> {
                let stopped = || Error::new(ErrorCode::ImageIo, "the page writer stopped");
                let mut queue = VecDeque::new();
                let flush = |this: &mut Self, queue: &mut VecDeque<(u64, u64)>| -> Result<()> {
                    while !queue.is_empty() {
                        crate::cancel::check("the page drain")?;
                        let i = free_rx.recv().map_err(|_| stopped())?;
                        let bytes = this.fill(i, queue)?;
                        work_tx.send(Chunk::Pipe(i, bytes)).map_err(|_| stopped())?;
                    }
                    Ok(())
                };
                for &r in runs {
                    if readable(r.vaddr) {
                        queue.push_back((r.vaddr, r.nr_pages * ps));
                        continue;
                    }
                    // File order: what is queued goes first, then this run read by the tracer.
                    flush(self, &mut queue)?;
                    self.fallback.copy_run(r, false, &mut ChunkSender { tx: &work_tx, sent: 0 })?;
                }
                flush(self, &mut queue)
            })();
            drop(work_tx);
            let spliced = splicer.join().map_err(|_| Error::new(ErrorCode::Kernel, "the page writer thread panicked"))?;
            // The writer's error explains a producer's "writer stopped".
            let spent = spliced?;
            produced?;
            self.splice_ns += spent;
            Ok(())
        })
    }
}

impl Drop for VmspliceSource<'_> {
    fn drop(&mut self) {
        let _ = self.close_task_ends();
    }
}
