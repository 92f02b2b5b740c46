//! `dump --snapshot`: the task's private memory is copied after the tree is released, from a
//! copy-on-write snapshot taken while it was frozen.
//!
//! While frozen (`take`, in the visit): the resident parasite forks a holder (blob/proto.h, struct
//! blob_snapshot): a process that shares every private page of the task copy-on-write as it is at
//! that instant and never runs the application's code. Only the mappings are decided then, no page
//! scanned: the holder's page tables are the task's as they were at the fork, so its pagemap is
//! scanned after the release instead, and so is its smaps for the VmFlags where it tells them all
//! (`vm_flags_may_wait`, `Taken::vm_flags_later`): smaps walks every page table under the task's
//! mmap lock, which the infection and the fork wait for. Fork copies a mapping's page tables whole
//! or not at all; the mappings whose pages it did not carry (MADV_DONTFORK: absent in the holder;
//! MADV_WIPEONFORK: zeroes there) are found by asking both pagemaps whether they hold a page to
//! dump (`Taken::copy_unforked`), and their pages are read from the frozen task into a scratch file
//! of the images directory: their place in the pages image depends on the pages below them, known
//! only after the scan. Shared mappings are no concern here: their pages are dumped from the frozen
//! task by the shmem and memfd stages. Mappings fork leaves empty in the holder (no anon_vma: never
//! written) hold no page to dump either way, bar the zero page, which the holder then counts absent
//! rather than zero.
//!
//! After the release (`Pending::drain`): the holder's pagemap is scanned, and the holder writes
//! those pages into their places in the pages image itself (tsdump hands it the file and asks
//! pwritev of its own memory), the unforked ones going from the scratch file; its smaps is read
//! if the VmFlags waited for it; then it is killed. Not read from outside with process_vm_readv: that pins the pages it reads, and a
//! read-only pin of an anonymous page shared copy-on-write unshares it, giving the holder a
//! private copy of every page. Mappings without PROT_READ, which the holder cannot write from,
//! are read through /proc/PID/mem (plain references, no pin). The holder lives only as long as
//! its channel to tsdump: if tsdump dies it sees EOF and exits, and a `Holder` dropped for any
//! reason kills it.
//!
//! With a page server the pages go to it instead, through a window of a scratch file
//! (`Filler::send`). An incremental dump scans the task while frozen (`Planned`): which pages
//! were written since the parent is the task's record, not the holder's; to a page server, the
//! pages left in the parent go as holes among the others, as from a frozen drain.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::Instant;

use nix::errno::Errno;

use super::drain::{PageSink, ReadSource};
use super::pagemap::{Counts, Run};
use super::vma::{page_size, Decision, Vma};
use super::{decide_vmas, entries, scan_vmas, DumpOpts, Infected, MemDump, Timings, VmaReport};
use crate::error::{Error, ErrorCode, Result};
use crate::freezer::procinfo::has_exited;
use crate::images_dir::NewFile;
use crate::pageserver::{ImageKind, PageServerClient, PageServerSink};

/// How a snapshot that cannot be taken is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Copy that task's memory while it is frozen, as without --snapshot (and say why).
    Fallback,
    /// Fail the dump (--snapshot=strict).
    Strict,
}

/// Test-only (documented in the README): release first and copy from the live task with no
/// snapshot at all, the torn copy the consistency test must catch.
pub const TORN_ENV: &str = "TSDUMP_TEST_TORN_SNAPSHOT";

/// The holder process of one task's snapshot.
pub struct Holder {
    pub pid: i32,
    pidfd: OwnedFd,
    /// The holder's channel: it exits when this closes.
    sock: OwnedFd,
}

/// Most bytes one BLOB_PWRITE asks (a cancelled dump stops between two).
const PWRITE_MAX: u64 = 64 << 20;

impl Holder {
    /// Takes charge of holder `pid`, connected on `sock`: pinned by a pidfd, and first in line
    /// for the OOM killer (it shares the task's pages; the task must not be the one to go).
    pub fn new(pid: i32, sock: OwnedFd) -> Result<Holder> {
        // SAFETY: pidfd_open(2) with no flags; the result is checked before being owned.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(Error::from_errno(Errno::last(), pid, "pidfd_open of the snapshot holder"));
        }
        // SAFETY: fd was just returned by pidfd_open and is owned by nobody else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let holder = Holder { pid, pidfd, sock };
        let _ = std::fs::write(format!("/proc/{pid}/oom_score_adj"), "1000");
        Ok(holder)
    }

    /// One request and its answer (`fd` goes along with SCM_RIGHTS). Waits for the answer while
    /// watching the holder (killed: an error) and cancellation.
    fn ask(&self, op: u32, a0: u64, iovs: &[(u64, u64)], fd: Option<&File>) -> Result<i64> {
        use crate::parasite::blob::{iovec_bytes, poll_in, send_request, REP_LEN};
        let fds: Vec<i32> = fd.iter().map(|f| f.as_raw_fd()).collect();
        send_request(self.sock.as_raw_fd(), op, iovs.len() as u32, [a0, 0, 0, 0, 0, 0, 0], &iovec_bytes(iovs), &fds)
            .map_err(|e| self.gone(e.desc()))?;
        loop {
            crate::cancel::check("the snapshot copy")?;
            if poll_in(self.sock.as_raw_fd(), 100)? {
                let mut rep = [0u8; REP_LEN];
                // SAFETY: recv into a buffer of rep.len() bytes.
                let n = unsafe { libc::recv(self.sock.as_raw_fd(), rep.as_mut_ptr().cast(), rep.len(), libc::MSG_DONTWAIT) };
                if n < 0 && matches!(Errno::last(), Errno::EAGAIN | Errno::EINTR) {
                    continue;
                }
                if n as usize != REP_LEN {
                    return Err(self.gone("closed"));
                }
                return Ok(i64::from_ne_bytes(rep[0..8].try_into().expect("8 bytes")));
            }
        }
    }

    fn gone(&self, how: &str) -> Error {
        Error::new(ErrorCode::TargetGone, format!("the snapshot holder (pid {}) was killed during the background copy (its channel {how})", self.pid))
    }

    /// The holder writes its own pages `pieces` (address, length) into `file` from `off` on.
    fn pwrite(&self, pieces: &[(u64, u64)], off: u64, what: &str) -> Result<()> {
        let want: u64 = pieces.iter().map(|p| p.1).sum();
        let r = self.ask(crate::parasite::blob::OP_PWRITE, off, pieces, None)?;
        if r < 0 {
            return Err(Error::new(ErrorCode::ImageIo, format!("the snapshot holder (pid {}) writing {what}: {}", self.pid, Errno::from_raw(-r as i32).desc())));
        }
        if r as u64 != want {
            return Err(Error::new(ErrorCode::ImageIo, format!("the snapshot holder (pid {}) wrote {r} of {want} bytes into {what}", self.pid)));
        }
        Ok(())
    }

    /// Memory the snapshot costs now: the holder's pages no longer shared with the task (the
    /// task wrote or dropped them since), from /proc/PID/smaps_rollup.
    pub fn extra_bytes(&self) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", self.pid)).ok()?;
        let kib = |name: &str| {
            text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        };
        Some((kib("Private_Dirty:")? + kib("Private_Clean:")?) * 1024)
    }
}

impl Drop for Holder {
    /// Kills the holder and waits (a few seconds at most) until it has exited: a dump that
    /// returns leaves no holder running. Its reaper (a subreaper or init) collects it.
    fn drop(&mut self) {
        let fd = self.pidfd.as_raw_fd();
        // SAFETY: pidfd_send_signal(2) on our pidfd; a holder already gone makes it fail, harmlessly.
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, libc::SIGKILL, std::ptr::null::<u8>(), 0) };
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while Instant::now() < deadline {
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one pollfd, valid for the call; a pidfd polls readable once its process exited.
            if unsafe { libc::poll(&mut p, 1, 100) } > 0 {
                break;
            }
        }
    }
}

/// A snapshot taken in the visit, before the unforked pages are copied.
pub struct Taken {
    pid: i32,
    /// The task's mappings and what to do with each; their pages are not scanned yet.
    vmas: Vec<VmaReport>,
    /// The parasite's scratch mapping, which the holder has too.
    hide: (u64, u64),
    pages: NewFile,
    /// The pages go to the dump's page server instead of `pages`.
    to_page_server: bool,
    /// An incremental dump's pages, fixed while frozen.
    planned: Option<Planned>,
    /// None in the torn test mode: the pages are read from the live task.
    holder: Option<Holder>,
}

/// What is left to scan and copy after the release.
pub struct Pending {
    pub pid: i32,
    holder: Option<Holder>,
    vmas: Vec<VmaReport>,
    /// The mappings fork left out of the holder (dc) or zeroed there (wf): scanned in the task
    /// while frozen, their pages copied to `staged` in address order.
    unforked: Vec<(u64, u64)>,
    unforked_runs: Vec<Run>,
    unforked_counts: Counts,
    staged: Option<File>,
    /// The pages image, or None when the pages go to the page server.
    file: Option<File>,
    pages: NewFile,
    /// Pages copied while frozen (fork does not carry them).
    pub frozen_pages: u64,
    /// An incremental dump's pages, fixed while frozen: not scanned again.
    planned: Option<Planned>,
    /// The VmFlags are read from the holder's smaps after the release (`Taken::vm_flags_later`).
    vm_flags_later: bool,
    hide: (u64, u64),
}

/// What the scan and copy after the release did.
#[derive(Debug, Clone, Default)]
pub struct Drained {
    /// The pagemap entries of the pages image, in address order (as `MemDump::entries`).
    pub entries: Vec<super::PagemapEntry>,
    /// The whole task's counts, the unforked mappings' included.
    pub counts: Counts,
    /// Pages copied after the release.
    pub pages: u64,
    pub scan_ns: u64,
    pub ns: u64,
    /// The snapshot's memory cost at the end of the copy (its peak: the holder never frees).
    pub extra_bytes: Option<u64>,
    /// The task exited during the copy (the images hold it as it was at the snapshot).
    pub task_exited: bool,
    /// The task's mappings with their VmFlags, read from the holder, when they were left for
    /// after the release.
    pub vm_flags: Option<Vec<Vma>>,
}

/// The pages of an incremental dump, fixed while frozen: which pages were written since the
/// parent is the task's own record (soft-dirty bits, uffd-wp), which the holder does not have.
struct Planned {
    /// The pages to copy, in address order (some may be in unforked mappings).
    runs: Vec<Run>,
    /// The pagemap's entries, PE_PARENT ones included.
    entries: Vec<super::PagemapEntry>,
    /// The scan's counts, `dump` being the pages to copy.
    counts: Counts,
}

/// Whether `pid`'s VmFlags may be left for the holder to tell after the release, as far as the
/// task shows before the fork: the holder's mappings carry every VmFlags of the task's but the
/// locks (fork does not inherit mlock) and userfaultfd's (not dumped), so a task with locked
/// memory (VmLck) has its smaps read while frozen. `Taken::vm_flags_later` checks the rest.
pub fn vm_flags_may_wait(pid: i32) -> Result<bool> {
    if std::env::var_os(TORN_ENV).is_some() {
        return Ok(false);
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| Error::new(ErrorCode::Procfs, format!("pid {pid}: /proc/{pid}/status: {e}")))?;
    Ok(crate::inspect::parse::status_field(&status, "VmLck") == Some("0 kB"))
}

/// Takes the task's snapshot (the task is frozen and infected, its blob running) and decides what
/// to do with each of its mappings; which pages to copy is scanned after the release, in the
/// holder, whose page tables are the task's as they were at the fork. Where no snapshot can be
/// had (`refused`: the caller knows why none may be forked; no resident parasite; a fork that
/// fails) the memory is drained now, as without --snapshot, and `snapshot_refused` says why, or
/// with `Mode::Strict` the dump fails.
pub fn take(
    pid: i32,
    opts: &DumpOpts,
    infected: Infected,
    mode: Mode,
    refused: Option<Error>,
    mut page_server: Option<&mut PageServerClient>,
) -> Result<(MemDump, Option<Taken>)> {
    let t0 = Instant::now();
    let torn = std::env::var_os(TORN_ENV).is_some();
    let Infected { inj, mut blob } = infected;
    let holder = match (refused, torn, blob.as_deref_mut()) {
        (Some(e), ..) => Err(e),
        (None, true, _) => Ok(None),
        (None, false, Some(b)) => b.snapshot(inj).map(Some),
        (None, false, None) => Err(Error::new(ErrorCode::Unsupported, format!("pid {pid}: no resident parasite to fork a snapshot from"))),
    };
    let holder = match holder {
        Ok(h) => h,
        Err(e) if e.code == ErrorCode::TargetGone || mode == Mode::Strict => return Err(e),
        Err(e) => {
            let infected = Some(Infected { inj, blob });
            let mut d = match page_server {
                Some(c) => super::dump_memory_to_page_server(pid, opts, infected, c)?,
                None => super::dump_memory(pid, opts, infected)?,
            };
            d.snapshot_refused = Some(e.message);
            return Ok((d, None));
        }
    };
    // an incremental dump to a page server that has no parent image for the task sends every
    // page, as dump_memory_to_page_server does: asked now (PS_IOV_PARENT), while frozen, since
    // the pages left out of an incremental copy are decided now
    let no_parent = match (&opts.incremental, page_server.as_deref_mut()) {
        (Some(_), Some(c)) => !c.has_parent(ImageKind::Task, pid as u64)?,
        _ => false,
    };
    let whole;
    let opts = if no_parent {
        whole = DumpOpts { incremental: None, ..opts.clone() };
        &whole
    } else {
        opts
    };
    let hide = (inj.scratch_addr(), inj.scratch_addr() + inj.scratch_len() as u64);
    let maps = match &opts.vmas {
        Some(v) => v.clone(),
        None => super::vma::read_vmas(pid)?,
    };
    let mut vmas = decide_vmas(pid, maps, Some(hide))?;
    let (planned, pages_in_parent) = match &opts.incremental {
        Some(inc) => {
            let (mut runs, mut counts) = (Vec::new(), Counts::default());
            scan_vmas(pid, &mut vmas, |_| true, &mut runs, &mut counts)?;
            let (runs, entries, in_parent) = super::track::split(pid, &runs, inc)?;
            counts.dump = runs.iter().map(|r| r.nr_pages).sum();
            (Some(Planned { runs, entries, counts }), in_parent)
        }
        None => (None, 0),
    };
    let ns = t0.elapsed().as_nanos() as u64;
    let d = MemDump {
        // an incremental dump's entries are known now (its tracking records them); the counts
        // come with the copy
        entries: planned.as_ref().map(|p| p.entries.clone()).unwrap_or_default(),
        vmas: vmas.clone(),
        counts: Counts::default(),
        pages_written: 0,
        bytes_written: 0,
        timings: Timings { total_ns: ns, ..Timings::default() },
        vmsplice_calls: 0,
        blob_refused: None,
        pages_in_parent,
        snapshot_refused: None,
        after_release: true,
        vm_flags_after_release: false,
    };
    let to_page_server = page_server.is_some();
    Ok((d, Some(Taken { pid, vmas, hide, pages: opts.pages.clone(), to_page_server, planned, holder })))
}

/// Writes page data at given offsets of the pages image.
struct At<'a> {
    file: &'a File,
    off: u64,
    what: &'a str,
}

impl PageSink for At<'_> {
    fn splice_from(&mut self, _pipe: std::os::fd::RawFd, _len: usize) -> Result<()> {
        Err(Error::new(ErrorCode::Kernel, "internal: splice into a positioned page writer"))
    }
    fn write_buf(&mut self, buf: &[u8]) -> Result<()> {
        self.file.write_all_at(buf, self.off).map_err(|e| Error::new(ErrorCode::ImageIo, format!("writing {}: {e}", self.what)))?;
        self.off += buf.len() as u64;
        Ok(())
    }
    fn written(&self) -> u64 {
        self.off
    }
}

/// Pieces of the holder's memory bound for consecutive bytes of the pages image, from `off` on:
/// one BLOB_PWRITE (at most MAX_IOV pieces, PWRITE_MAX bytes).
struct Batch {
    off: u64,
    len: u64,
    iovs: Vec<(u64, u64)>,
}

impl Batch {
    /// Has the holder write what is queued; the batch is then empty.
    fn send(&mut self, holder: &Holder, what: &str) -> Result<()> {
        if !self.iovs.is_empty() {
            holder.pwrite(&self.iovs, self.off, what)?;
            self.iovs.clear();
        }
        self.len = 0;
        Ok(())
    }
}

/// Whether `addr` lies in one of `ranges` (the unforked mappings, each whole).
fn within(ranges: &[(u64, u64)], addr: u64) -> bool {
    ranges.iter().any(|&(lo, hi)| lo <= addr && addr < hi)
}

/// Whether the page at `addr` can be read through process_vm_readv (else /proc/PID/mem).
fn readable(vmas: &[VmaReport], addr: u64) -> bool {
    super::vma_at(vmas, addr).is_some_and(|r| r.vma.readable())
}

/// Copies `len` bytes of `from` at `from_off` into `to` at `to_off`, inside the kernel.
fn copy_between(from: &File, mut from_off: u64, to: &File, mut to_off: u64, mut len: u64, what: &str) -> Result<()> {
    while len > 0 {
        let (mut a, mut b) = (from_off as i64, to_off as i64);
        // SAFETY: copy_file_range(2) on two open files with offsets we own; no memory is passed.
        let n = unsafe { libc::copy_file_range(from.as_raw_fd(), &mut a, to.as_raw_fd(), &mut b, len as usize, 0) };
        if n <= 0 {
            let why = if n == 0 { "the scratch file ended early".to_string() } else { Errno::last().desc().to_string() };
            return Err(Error::new(ErrorCode::ImageIo, format!("copying the pages held while frozen into {what}: {why}")));
        }
        (from_off, to_off, len) = (from_off + n as u64, to_off + n as u64, len - n as u64);
    }
    Ok(())
}

/// `runs` cut into pieces of at most PWRITE_MAX bytes (one holder request, one ADD_F).
fn pieces(runs: &[Run]) -> impl Iterator<Item = Run> + '_ {
    let per = PWRITE_MAX / page_size();
    runs.iter().flat_map(move |r| {
        (0..r.nr_pages.div_ceil(per)).map(move |i| Run { vaddr: r.vaddr + i * PWRITE_MAX, nr_pages: (r.nr_pages - i * per).min(per) })
    })
}

/// Fills files with a snapshot's pages, piece by piece in address order: from the scratch file
/// of the pages held while frozen, queued for the holder to write (`batch`: it writes into the
/// file last handed to it), or, from a mapping the holder cannot write from, read through
/// /proc/PID/mem.
struct Filler<'a> {
    pending: &'a Pending,
    unforked: &'a [(u64, u64)],
    batch: Batch,
    staged_off: u64,
    src: ReadSource,
    what: &'a str,
}

impl Filler<'_> {
    /// Hands `file` to the holder for its writes.
    fn hand(&self, file: &File) -> Result<()> {
        let Some(holder) = &self.pending.holder else { return Ok(()) };
        let r = holder.ask(crate::parasite::blob::OP_SETFD, 0, &[], Some(file))?;
        if r != 0 {
            return Err(Error::new(ErrorCode::Parasite, format!("the snapshot holder (pid {}) refused the file for {}", holder.pid, self.what)));
        }
        Ok(())
    }

    /// `piece` into `file` at `off`; whether it was copied after the release.
    fn fill(&mut self, piece: Run, file: &File, off: u64) -> Result<bool> {
        let p = self.pending;
        let len = piece.nr_pages * page_size();
        let readable = readable(&p.vmas, piece.vaddr);
        let held_while_frozen = within(self.unforked, piece.vaddr);
        match (&p.holder, &p.staged) {
            (_, Some(staged)) if held_while_frozen => {
                copy_between(staged, self.staged_off, file, off, len, self.what)?;
                self.staged_off += len;
                return Ok(false);
            }
            (Some(holder), _) if readable => {
                let b = &mut self.batch;
                if b.iovs.len() == crate::parasite::blob::MAX_IOV || b.len + len > PWRITE_MAX || b.off + b.len != off {
                    b.send(holder, self.what)?;
                    b.off = off;
                }
                b.iovs.push((piece.vaddr, len));
                b.len += len;
            }
            // the holder cannot write from a mapping without PROT_READ; in the torn test mode,
            // the live task is read as any dump reads it
            (holder, _) => {
                if let Some(h) = holder {
                    self.batch.send(h, self.what)?;
                }
                self.src.copy_run(piece, readable, &mut At { file, off, what: self.what }).map_err(|e| p.why(e))?;
            }
        }
        Ok(true)
    }

    /// Has the holder write what it has queued.
    fn flush(&mut self) -> Result<()> {
        match &self.pending.holder {
            Some(h) => self.batch.send(h, self.what),
            None => Ok(()),
        }
    }

    /// `runs` into the pages image `file`, back to back. Returns the pages copied after the release.
    fn copy(&mut self, runs: &[Run], file: &File) -> Result<u64> {
        self.hand(file)?;
        let (mut off, mut pages) = (0, 0);
        for piece in pieces(runs) {
            if self.fill(piece, file, off)? {
                pages += piece.nr_pages;
            }
            off += piece.nr_pages * page_size();
        }
        self.flush()?;
        Ok(pages)
    }

    /// `runs` to the page server, as `mem::dump_memory_to_page_server` sends a frozen task's
    /// (OPEN2, then the pagemap `entries` in address order through the same `PageServerSink`:
    /// ADD_F with the pages, PE_LAZY on private anonymous memory, an incremental dump's PE_PARENT
    /// entries as holes between them). The pages go through a scratch file of the images
    /// directory, PWRITE_MAX bytes at a time: the holder writes only into files. Returns the
    /// pages copied after the release.
    fn send(&mut self, runs: &[Run], entries: &[super::PagemapEntry], client: &mut PageServerClient) -> Result<u64> {
        let p = self.pending;
        client.open(ImageKind::Task, p.pid as u64)?;
        let window = p.pages.dir.scratch_file("snapshot-pages")?;
        self.hand(&window)?;
        let mut sink = PageServerSink::with_entries(client, super::with_lazy_flags(&p.vmas, entries))?;
        let (mut len, mut pages) = (0, 0);
        for piece in pieces(runs) {
            let n = piece.nr_pages * page_size();
            if len + n > PWRITE_MAX {
                self.flush()?;
                send_window(&mut sink, &window, len)?;
                len = 0;
            }
            if self.fill(piece, &window, len)? {
                pages += piece.nr_pages;
            }
            len += n;
        }
        self.flush()?;
        send_window(&mut sink, &window, len)?;
        Ok(pages)
    }
}

/// Sends the `len` bytes the holder wrote into `window`, from its start, and empties it.
/// sendfile hands the socket the file's pages themselves, not a copy, and they may leave long
/// after: the window is truncated, not overwritten, so the next pieces go into fresh pages.
fn send_window(sink: &mut PageServerSink, window: &File, len: u64) -> Result<()> {
    let fail = |what: &str, e: std::io::Error| Error::new(ErrorCode::ImageIo, format!("{what} the scratch file of snapshot pages: {e}"));
    // SAFETY: lseek(2) on a file we own.
    if unsafe { libc::lseek(window.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
        return Err(fail("rewinding", std::io::Error::last_os_error()));
    }
    sink.splice_from(window.as_raw_fd(), len as usize)?;
    window.set_len(0).map_err(|e| fail("truncating", e))
}

impl Taken {
    /// Whether the holder has every mapping of the task: then its smaps, read after the
    /// release, tells the task's VmFlags (a MADV_DONTFORK mapping is absent from it, and only
    /// the task's smaps knows its flags).
    pub fn vm_flags_later(&self) -> Result<bool> {
        let Some(holder) = &self.holder else { return Ok(false) };
        let (lo, hi) = self.hide;
        let held: Vec<Vma> = super::vma::read_vmas(holder.pid)?.iter().flat_map(|v| super::subtract(v, lo, hi)).collect();
        Ok(self.vmas.iter().all(|r| held.binary_search_by_key(&r.vma.start, |h| h.start).is_ok()))
    }

    /// Copies, from the frozen task, the pages fork left out of the holder: those of the
    /// mappings where the holder has none of the pages the task has to dump (MADV_DONTFORK:
    /// absent there; MADV_WIPEONFORK: zeroes there; fork copies a mapping's page tables whole
    /// or not at all). Their place in the pages image depends on the pages below them, known
    /// only after the release, so they wait in a scratch file of the images directory; the
    /// rest waits in the holder. `vm_flags_later` says whether VmFlags wait for the holder too.
    pub fn copy_unforked(self, vm_flags_later: bool) -> Result<Pending> {
        let pid = self.pid;
        let mut vmas = self.vmas;
        // in the torn test mode there is no holder: everything is read after the release
        let unforked = match &self.holder {
            Some(h) => unforked(pid, h.pid, &vmas)?,
            None => Vec::new(),
        };
        let (mut unforked_runs, mut unforked_counts) = (Vec::new(), Counts::default());
        match &self.planned {
            Some(p) => unforked_runs = p.runs.iter().copied().filter(|r| within(&unforked, r.vaddr)).collect(),
            None if !unforked.is_empty() => scan_vmas(pid, &mut vmas, |r| within(&unforked, r.vma.start), &mut unforked_runs, &mut unforked_counts)?,
            None => {}
        }
        let file = if self.to_page_server { None } else { Some(self.pages.create()?) };
        let copied = (|| -> Result<(Option<File>, u64)> {
            if unforked_runs.is_empty() {
                return Ok((None, 0));
            }
            let staged = self.pages.dir.scratch_file("unforked-pages")?;
            let mut sink = At { file: &staged, off: 0, what: "the scratch file of pages held while frozen" };
            let mut src = ReadSource::new(pid);
            for &run in &unforked_runs {
                src.copy_run(run, readable(&vmas, run.vaddr), &mut sink)?;
            }
            Ok((Some(staged), unforked_runs.iter().map(|r| r.nr_pages).sum()))
        })();
        let (staged, frozen_pages) = match copied {
            Ok(c) => c,
            Err(e) => {
                self.pages.remove();
                return Err(e);
            }
        };
        Ok(Pending {
            pid,
            holder: self.holder,
            vmas,
            unforked,
            unforked_runs,
            unforked_counts,
            staged,
            file,
            pages: self.pages,
            frozen_pages,
            planned: self.planned,
            vm_flags_later,
            hide: self.hide,
        })
    }
}

/// The task's mappings whose pages to dump fork did not carry into the holder `holder`.
fn unforked(pid: i32, holder: i32, vmas: &[VmaReport]) -> Result<Vec<(u64, u64)>> {
    let open = |p: i32| {
        let path = format!("/proc/{p}/pagemap");
        File::open(&path).map_err(|e| Error::new(ErrorCode::Procfs, format!("pid {p}: opening {path}: {e}")))
    };
    let (task_pm, holder_pm) = (open(pid)?, open(holder)?);
    let holds = |pm: &File, r: &VmaReport| super::pagemap::holds_pages(pm, &r.vma, r.decision);
    let mut out = Vec::new();
    // the vdso is written whole from the holder, which maps the same kernel pages
    for r in vmas.iter().filter(|r| r.decision.dumps_private_pages() && r.decision != Decision::Whole) {
        if !holds(&holder_pm, r)? && holds(&task_pm, r)? {
            out.push((r.vma.start, r.vma.end));
        }
    }
    Ok(out)
}

impl Pending {
    /// Whether a holder holds the pages (false in the torn test mode).
    pub fn has_holder(&self) -> bool {
        self.holder.is_some()
    }

    /// Scans the holder for the pages to dump and copies them into the pages image, or sends them
    /// to `page_server` when the visit was asked to (the holder writes them, see the module
    /// doc), then kills the holder. The pages image is removed if this fails.
    pub fn drain(mut self, page_server: Option<&mut PageServerClient>) -> Result<Drained> {
        let t0 = Instant::now();
        let what = if self.file.is_some() { self.pages.display() } else { format!("the page server (pid {})", self.pid) };
        let copied = self.scan_and_copy(&what, t0, page_server);
        let mut drained = match copied {
            Ok(d) => d,
            Err(e) => {
                self.pages.remove();
                return Err(e);
            }
        };
        if self.vm_flags_later {
            match self.holder_vm_flags() {
                Ok(v) => drained.vm_flags = Some(v),
                Err(e) => {
                    self.pages.remove();
                    return Err(e);
                }
            }
        }
        drained.extra_bytes = self.holder.as_ref().and_then(Holder::extra_bytes);
        drained.task_exited = has_exited(self.pid, self.pid);
        drop(self.holder.take());
        drained.ns = t0.elapsed().as_nanos() as u64;
        Ok(drained)
    }

    fn scan_and_copy(&mut self, what: &str, t0: Instant, page_server: Option<&mut PageServerClient>) -> Result<Drained> {
        let source = self.holder.as_ref().map_or(self.pid, |h| h.pid);
        let unforked = std::mem::take(&mut self.unforked);
        let (runs, counts, entries) = match self.planned.take() {
            Some(p) => (p.runs, p.counts, p.entries),
            None => {
                let (mut runs, mut counts) = (Vec::new(), self.unforked_counts);
                scan_vmas(source, &mut self.vmas, |r| !within(&unforked, r.vma.start), &mut runs, &mut counts).map_err(|e| self.why(e))?;
                runs.extend_from_slice(&self.unforked_runs);
                runs.sort_unstable_by_key(|r| r.vaddr);
                let entries = entries(&runs);
                (runs, counts, entries)
            }
        };
        let scan_ns = t0.elapsed().as_nanos() as u64;
        let mut filler = Filler { pending: self, unforked: &unforked, batch: Batch { off: 0, len: 0, iovs: Vec::new() }, staged_off: 0, src: ReadSource::new(source), what };
        let pages = match (&self.file, page_server) {
            (Some(file), _) => {
                let pages = filler.copy(&runs, file)?;
                file.sync_all().map_err(|e| Error::new(ErrorCode::ImageIo, format!("fsync {what}: {e}")))?;
                pages
            }
            (None, Some(client)) => filler.send(&runs, &entries, client)?,
            (None, None) => return Err(Error::new(ErrorCode::Kernel, format!("internal: pid {}: its pages are for a page server, and none is connected", self.pid))),
        };
        Ok(Drained { entries, counts, pages, scan_ns, ..Drained::default() })
    }

    /// The holder's mappings with their VmFlags (its scratch left out): the task's as they were
    /// at the fork (see `vm_flags_may_wait`).
    fn holder_vm_flags(&self) -> Result<Vec<Vma>> {
        let pid = self.holder.as_ref().map_or(self.pid, |h| h.pid);
        let (lo, hi) = self.hide;
        let smaps = crate::inspect::read_smaps(pid).map_err(|e| self.why(e))?;
        Ok(smaps.iter().flat_map(|v| super::subtract(v, lo, hi)).collect())
    }

    /// A failed read, told by what happened to the process it read from.
    fn why(&self, e: Error) -> Error {
        if e.code == ErrorCode::Cancelled {
            return e;
        }
        match &self.holder {
            Some(h) if has_exited(h.pid, h.pid) => Error::new(
                ErrorCode::TargetGone,
                format!("pid {}: its snapshot holder (pid {}) was killed during the background copy ({})", self.pid, h.pid, e.message),
            ),
            None if has_exited(self.pid, self.pid) => {
                Error::new(ErrorCode::TargetGone, format!("pid {}: exited during the copy ({})", self.pid, e.message))
            }
            _ => e,
        }
    }
}
