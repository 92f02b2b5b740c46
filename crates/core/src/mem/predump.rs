//! CRIU's `--pre-dump-mode=read`: the pages of a pre-dump are read after the task was released,
//! so the freeze lasts only as long as the scan and the arming of the tracking, whatever the
//! size of the memory.
//!
//! While frozen (`prepare`): the VMAs and pagemap runs, the split against the parent images, and
//! a pidfd plus a /proc/PID/mem handle that both stay bound to this very process. The caller arms
//! the tracking in the same freeze, then cures the parasite and releases the tree.
//!
//! After the release (`PendingRead::read`): process_vm_readv in batches of iovecs. The task runs
//! meanwhile, so what is read is only as good as the tracking makes it:
//! - a page written before or while it is read is written again by the next dump (the tracking
//!   armed in the freeze reports it), so a torn or newer copy here is never used;
//! - a page that cannot be read any more (its VMA unmapped or shrunk since the scan: EFAULT, or a
//!   short read stopping there) is retried alone through /proc/PID/mem (which also reads mappings
//!   made PROT_NONE since), and if that fails too it is left out of the pagemap. It must not be
//!   recorded as present: the next dump would point at the parent for it (PE_PARENT) and the
//!   restore would fill it from a page this image never held. CRIU's page_xfer_predump_pages
//!   drops such pages the same way (cnt_sub(CNT_PAGES_WRITTEN) and no pagemap entry);
//! - a task that exited (ESRCH, or the pidfd says so when the read ends, which also covers its
//!   pid being reused by another process) gets no pages at all: nothing read from that pid can
//!   be told to be its own.

use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

use crate::error::{Error, ErrorCode, Result};
use crate::parasite::Injector;

use super::drain::{FdSink, PageSink};
use super::pagemap::Counts;
use super::vma::page_size;
use super::{track, PagemapEntry, VmaReport, PE_PARENT, PE_PRESENT};

/// Bytes read per batch (one process_vm_readv when nothing faults), and iovecs per call
/// (the kernel's UIO_MAXIOV).
const BATCH: usize = 1 << 20;
const MAX_IOV: usize = 1024;

/// Where the read pages go, in address order.
pub trait ReadSink {
    /// Whole pages read at `vaddr` (a PE_PRESENT entry).
    fn pages(&mut self, vaddr: u64, buf: &[u8]) -> Result<()>;
    /// An entry without data (PE_PARENT: the parent images hold these pages).
    fn hole(&mut self, entry: &PagemapEntry) -> Result<()>;
}

/// The pages image of a local pre-dump: holes are only pagemap entries.
impl ReadSink for FdSink {
    fn pages(&mut self, _vaddr: u64, buf: &[u8]) -> Result<()> {
        self.write_buf(buf)
    }
    fn hole(&mut self, _entry: &PagemapEntry) -> Result<()> {
        Ok(())
    }
}

/// One task scanned while frozen, to be read once released.
pub struct PendingRead {
    pid: i32,
    pidfd: OwnedFd,
    /// /proc/PID/mem opened while frozen: FOLL_FORCE reads (mappings without PROT_READ) of this
    /// process's address space only.
    mem: File,
    /// PE_PRESENT entries to read and PE_PARENT entries left in the parent, by address.
    entries: Vec<PagemapEntry>,
    /// Address ranges with PROT_READ at the scan, sorted.
    readable: Vec<(u64, u64)>,
    pub vmas: Vec<VmaReport>,
    pub counts: Counts,
    pub scan_ns: u64,
}

/// What a read gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The entries the sink got, by address (pages left out are in no entry).
    pub entries: Vec<PagemapEntry>,
    pub pages_read: u64,
    /// Pages planned but unreadable after the release (their mapping went away).
    pub pages_lost: u64,
    pub pages_in_parent: u64,
    /// The task exited during the read: `entries` is empty and what the sink got is not its own.
    pub gone: bool,
    pub read_ns: u64,
    pub readv_calls: u64,
}

fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(Error::from_errno(Errno::last(), pid, "pidfd_open"));
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Scans `pid` (frozen; `inj` its parasite, whose scratch is left out) and, with `incremental`,
/// splits the pages against the parent images. Arm the tracking after this, in the same freeze.
pub fn prepare(pid: i32, inj: Option<&Injector>, incremental: Option<&track::Incremental>) -> Result<PendingRead> {
    let t0 = Instant::now();
    let hide = inj.map(|i| (i.scratch_addr(), i.scratch_addr() + i.scratch_len() as u64));
    let plan = super::plan(pid, hide)?;
    let entries = match incremental {
        Some(inc) => track::split(pid, &plan.runs, inc)?.1,
        None => super::entries(&plan.runs),
    };
    let mut readable: Vec<(u64, u64)> = Vec::new();
    for r in plan.vmas.iter().filter(|r| r.vma.readable()) {
        match readable.last_mut() {
            Some(l) if l.1 == r.vma.start => l.1 = r.vma.end,
            _ => readable.push((r.vma.start, r.vma.end)),
        }
    }
    let pidfd = pidfd_open(pid)?;
    let path = format!("/proc/{pid}/mem");
    let mem = File::open(&path).map_err(|e| Error::new(ErrorCode::Procfs, format!("pid {pid}: opening {path}: {e}")))?;
    Ok(PendingRead { pid, pidfd, mem, entries, readable, vmas: plan.vmas, counts: plan.counts, scan_ns: t0.elapsed().as_nanos() as u64 })
}

/// A piece of a PE_PRESENT entry to read: within one readability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    vaddr: u64,
    len: usize,
    readable: bool,
}

/// What the read sees of the entries, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Hole(PagemapEntry),
    Piece(Piece),
}

impl PendingRead {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The planned entries (before any page was found unreadable).
    pub fn entries(&self) -> &[PagemapEntry] {
        &self.entries
    }

    /// Pages planned to be read.
    pub fn pages_planned(&self) -> u64 {
        self.entries.iter().filter(|e| e.flags & PE_PRESENT != 0).map(|e| u64::from(e.nr_pages)).sum()
    }

    /// Pages left in the parent images.
    pub fn pages_in_parent(&self) -> u64 {
        self.entries.iter().filter(|e| e.flags & PE_PARENT != 0).map(|e| u64::from(e.nr_pages)).sum()
    }

    /// Reads every page instead of leaving any in the parent (a page server that has no parent
    /// image for this task). Clean pages read now are as good as any read after the release.
    pub fn read_everything(&mut self) {
        let ps = page_size();
        let mut out: Vec<PagemapEntry> = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            match out.last_mut() {
                Some(l) if l.vaddr + u64::from(l.nr_pages) * ps == e.vaddr && u64::from(l.nr_pages) + u64::from(e.nr_pages) <= u64::from(u32::MAX) => {
                    l.nr_pages += e.nr_pages
                }
                _ => out.push(PagemapEntry { vaddr: e.vaddr, nr_pages: e.nr_pages, flags: PE_PRESENT }),
            }
        }
        self.entries = out;
    }

    fn items(&self) -> Vec<Item> {
        let ps = page_size();
        let mut out = Vec::new();
        for e in &self.entries {
            if e.flags & PE_PRESENT == 0 {
                out.push(Item::Hole(e.clone()));
                continue;
            }
            let (s, end) = (e.vaddr, e.vaddr + u64::from(e.nr_pages) * ps);
            let mut at = s;
            while at < end {
                // the readable range holding `at`, or the gap before the next one
                let i = self.readable.partition_point(|r| r.1 <= at);
                let (readable, stop) = match self.readable.get(i) {
                    Some(&(rs, re)) if rs <= at => (true, re.min(end)),
                    Some(&(rs, _)) => (false, rs.min(end)),
                    None => (false, end),
                };
                let mut a = at;
                while a < stop {
                    let n = (BATCH as u64).min(stop - a);
                    out.push(Item::Piece(Piece { vaddr: a, len: n as usize, readable }));
                    a += n;
                }
                at = stop;
            }
        }
        out
    }

    /// Reads the planned pages into `sink` (the task may run meanwhile; see the module comment).
    pub fn read(&self, sink: &mut dyn ReadSink) -> Result<ReadOutcome> {
        let t0 = Instant::now();
        let ps = page_size() as usize;
        let items = self.items();
        let mut out = ReadOutcome::default();
        let mut buf = vec![0u8; BATCH];
        let mut ok: Vec<bool> = Vec::with_capacity(BATCH / ps);
        let mut i = 0;
        while i < items.len() {
            // between two batches nothing is half done: a cancelled pre-dump may stop here
            crate::cancel::check("the pre-dump read")?;
            let batch_start = i;
            let mut bytes = 0;
            while let Some(Item::Piece(p)) = items.get(i) {
                if bytes + p.len > BATCH || i - batch_start == MAX_IOV {
                    break;
                }
                bytes += p.len;
                i += 1;
            }
            if i == batch_start {
                let Item::Hole(h) = &items[i] else { unreachable!("a piece always fits an empty batch") };
                sink.hole(h)?;
                push_entry(&mut out.entries, h.vaddr, h.nr_pages, h.flags, ps as u64);
                out.pages_in_parent += u64::from(h.nr_pages);
                i += 1;
                continue;
            }
            let pieces: Vec<Piece> = items[batch_start..i]
                .iter()
                .map(|it| match it {
                    Item::Piece(p) => *p,
                    Item::Hole(_) => unreachable!("batches hold pieces only"),
                })
                .collect();
            ok.clear();
            ok.resize(bytes / ps, false);
            if self.read_batch(&pieces, &mut buf[..bytes], &mut ok, &mut out.readv_calls)? {
                return Ok(self.gone(t0, out.readv_calls));
            }
            // emit the pages read, in order; the others are left out
            let mut page = 0;
            for p in &pieces {
                let n = p.len / ps;
                let mut k = 0;
                while k < n {
                    if !ok[page + k] {
                        out.pages_lost += 1;
                        k += 1;
                        continue;
                    }
                    let from = k;
                    while k < n && ok[page + k] {
                        k += 1;
                    }
                    let vaddr = p.vaddr + (from * ps) as u64;
                    sink.pages(vaddr, &buf[(page + from) * ps..(page + k) * ps])?;
                    push_entry(&mut out.entries, vaddr, (k - from) as u32, PE_PRESENT, ps as u64);
                    out.pages_read += (k - from) as u64;
                }
                page += n;
            }
        }
        // The pidfd outlives a reused pid: a task gone by now may have been gone while we read.
        if !self.alive() {
            return Ok(self.gone(t0, out.readv_calls));
        }
        out.read_ns = t0.elapsed().as_nanos() as u64;
        Ok(out)
    }

    fn gone(&self, t0: Instant, readv_calls: u64) -> ReadOutcome {
        ReadOutcome { gone: true, read_ns: t0.elapsed().as_nanos() as u64, readv_calls, ..ReadOutcome::default() }
    }

    /// Whether the process the pidfd names still exists (a zombie has no memory left to read:
    /// its reads failed with ESRCH already).
    fn alive(&self) -> bool {
        // SAFETY: pidfd_send_signal with signal 0 only checks the target; no siginfo is passed.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), 0, std::ptr::null::<libc::siginfo_t>(), 0) };
        r == 0 || Errno::last() != Errno::ESRCH
    }

    /// Reads `pieces` (laid out back to back in `buf`) and marks each page read in `ok`. Returns
    /// true if the task is gone.
    fn read_batch(&self, pieces: &[Piece], buf: &mut [u8], ok: &mut [bool], calls: &mut u64) -> Result<bool> {
        let ps = page_size() as usize;
        let mut i = 0; // piece
        let mut skip = 0; // bytes of pieces[i] done
        let mut off = 0; // where pieces[i] starts in buf
        while i < pieces.len() {
            let p = pieces[i];
            if !p.readable {
                // no PROT_READ at the scan: /proc/PID/mem forces the read, a page at a time on error
                let (from, to) = (off + skip, off + p.len);
                if self.mem.read_exact_at(&mut buf[from..to], p.vaddr + skip as u64).is_ok() {
                    ok[from / ps..to / ps].fill(true);
                } else {
                    for pg in (from..to).step_by(ps) {
                        ok[pg / ps] = self.read_one(&mut buf[pg..pg + ps], p.vaddr + (pg - off) as u64);
                    }
                }
                off += p.len;
                i += 1;
                skip = 0;
                continue;
            }
            // the readable pieces from here on, in one call
            let mut remote = vec![RemoteIoVec { base: (p.vaddr + skip as u64) as usize, len: p.len - skip }];
            let mut end = off + p.len;
            let mut j = i + 1;
            while j < pieces.len() && pieces[j].readable {
                remote.push(RemoteIoVec { base: pieces[j].vaddr as usize, len: pieces[j].len });
                end += pieces[j].len;
                j += 1;
            }
            let start = off + skip;
            *calls += 1;
            let got = match process_vm_readv(Pid::from_raw(self.pid), &mut [IoSliceMut::new(&mut buf[start..end])], &remote) {
                Ok(n) => n / ps * ps,
                Err(Errno::ESRCH) => return Ok(true),
                Err(Errno::EFAULT) => 0,
                Err(e) => return Err(Error::from_errno(e, self.pid, format_args!("process_vm_readv at {:#x}", p.vaddr + skip as u64))),
            };
            ok[start / ps..(start + got) / ps].fill(true);
            // advance over what was read
            let mut left = got;
            while left > 0 {
                let here = (pieces[i].len - skip).min(left);
                skip += here;
                left -= here;
                if skip == pieces[i].len {
                    off += pieces[i].len;
                    i += 1;
                    skip = 0;
                }
            }
            if start + got < end {
                // stopped at a page it could not read: that page alone, then on with the rest
                let at = off + skip;
                ok[at / ps] = self.read_one(&mut buf[at..at + ps], pieces[i].vaddr + skip as u64);
                skip += ps;
                if skip == pieces[i].len {
                    off += pieces[i].len;
                    i += 1;
                    skip = 0;
                }
            }
        }
        Ok(false)
    }

    /// One page through /proc/PID/mem (FOLL_FORCE: also a mapping made PROT_NONE since the scan).
    fn read_one(&self, page: &mut [u8], vaddr: u64) -> bool {
        self.mem.read_exact_at(page, vaddr).is_ok()
    }

    /// For tests: a pending read of `pid` over explicit entries and readable ranges.
    #[cfg(test)]
    fn for_test(pid: i32, entries: Vec<PagemapEntry>, readable: Vec<(u64, u64)>) -> PendingRead {
        let pidfd = pidfd_open(pid).unwrap();
        let mem = File::open(format!("/proc/{pid}/mem")).unwrap();
        PendingRead { pid, pidfd, mem, entries, readable, vmas: Vec::new(), counts: Counts::default(), scan_ns: 0 }
    }
}

fn push_entry(entries: &mut Vec<PagemapEntry>, vaddr: u64, nr_pages: u32, flags: u32, ps: u64) {
    match entries.last_mut() {
        Some(l) if l.flags == flags && l.vaddr + u64::from(l.nr_pages) * ps == vaddr && u64::from(l.nr_pages) + u64::from(nr_pages) <= u64::from(u32::MAX) => {
            l.nr_pages += nr_pages
        }
        _ => entries.push(PagemapEntry { vaddr, nr_pages, flags }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what a read sends.
    #[derive(Default)]
    struct Collect {
        pages: Vec<(u64, Vec<u8>)>,
        holes: Vec<PagemapEntry>,
    }

    impl ReadSink for Collect {
        fn pages(&mut self, vaddr: u64, buf: &[u8]) -> Result<()> {
            self.pages.push((vaddr, buf.to_vec()));
            Ok(())
        }
        fn hole(&mut self, entry: &PagemapEntry) -> Result<()> {
            self.holes.push(entry.clone());
            Ok(())
        }
    }

    /// A mapping of our own whose pages hold their index; part of it is unmapped and part made
    /// PROT_NONE after the "scan", as a task running during the read could do.
    #[test]
    fn pages_unmapped_after_the_scan_are_left_out() {
        let ps = page_size() as usize;
        let n = 16;
        // SAFETY: a private anonymous mapping of our own, unmapped at the end.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), n * ps, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) } as *mut u8;
        assert_ne!(p as *mut libc::c_void, libc::MAP_FAILED);
        // SAFETY: inside the mapping.
        unsafe {
            for i in 0..n {
                std::ptr::write_bytes(p.add(i * ps), i as u8 + 1, ps);
            }
        }
        let base = p as u64;
        let at = |i: usize| base + (i * ps) as u64;
        let pid = std::process::id() as i32;
        let entries = vec![
            PagemapEntry { vaddr: at(0), nr_pages: 2, flags: PE_PARENT },
            PagemapEntry { vaddr: at(2), nr_pages: 14, flags: PE_PRESENT },
        ];
        let pending = PendingRead::for_test(pid, entries, vec![(base, base + (n * ps) as u64)]);
        // SAFETY: inside the mapping: pages 5..7 go away, page 10 loses PROT_READ.
        unsafe {
            assert_eq!(libc::munmap(p.add(5 * ps).cast(), 2 * ps), 0);
            assert_eq!(libc::mprotect(p.add(10 * ps).cast(), ps, libc::PROT_NONE), 0);
        }
        let mut sink = Collect::default();
        let out = pending.read(&mut sink).unwrap();
        // SAFETY: unmapping what is left of our mapping.
        unsafe {
            libc::munmap(p.cast(), 5 * ps);
            libc::munmap(p.add(7 * ps).cast(), (n - 7) * ps);
        }
        assert!(!out.gone);
        assert_eq!(out.pages_lost, 2);
        assert_eq!(out.pages_read, 12);
        assert_eq!(out.pages_in_parent, 2);
        assert_eq!(
            out.entries,
            vec![
                PagemapEntry { vaddr: at(0), nr_pages: 2, flags: PE_PARENT },
                PagemapEntry { vaddr: at(2), nr_pages: 3, flags: PE_PRESENT },
                PagemapEntry { vaddr: at(7), nr_pages: 9, flags: PE_PRESENT },
            ]
        );
        assert_eq!(sink.holes, vec![PagemapEntry { vaddr: at(0), nr_pages: 2, flags: PE_PARENT }]);
        // every page sent is the page that was there, the PROT_NONE one included
        let mut seen = Vec::new();
        for (vaddr, data) in &sink.pages {
            for (k, page) in data.chunks(ps).enumerate() {
                let idx = ((vaddr - base) as usize) / ps + k;
                assert!(page.iter().all(|&b| b == idx as u8 + 1), "page {idx}");
                seen.push(idx);
            }
        }
        assert_eq!(seen, [2, 3, 4, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
    }

    #[test]
    fn a_task_gone_gives_no_pages() {
        // SAFETY: the child only sleeps until it is killed.
        let child = unsafe { libc::fork() };
        if child == 0 {
            loop {
                // SAFETY: pause is async-signal-safe.
                unsafe { libc::pause() };
            }
        }
        let pending = PendingRead::for_test(child, vec![PagemapEntry { vaddr: 0x10000, nr_pages: 1, flags: PE_PRESENT }], vec![(0x10000, 0x11000)]);
        let mut status = 0;
        // SAFETY: killing and reaping our own child.
        unsafe {
            assert_eq!(libc::kill(child, libc::SIGKILL), 0);
            assert_eq!(libc::waitpid(child, &mut status, 0), child);
        }
        let mut sink = Collect::default();
        let out = pending.read(&mut sink).unwrap();
        assert!(out.gone);
        assert!(out.entries.is_empty());
        assert!(sink.pages.is_empty());
    }

    #[test]
    fn read_everything_turns_parent_entries_into_reads() {
        let pid = std::process::id() as i32;
        let mut p = PendingRead::for_test(
            pid,
            vec![
                PagemapEntry { vaddr: 0x10000, nr_pages: 2, flags: PE_PARENT },
                PagemapEntry { vaddr: 0x12000, nr_pages: 1, flags: PE_PRESENT },
                PagemapEntry { vaddr: 0x20000, nr_pages: 1, flags: PE_PARENT },
            ],
            vec![],
        );
        assert_eq!(p.pages_in_parent(), 3);
        p.read_everything();
        assert_eq!(p.pages_in_parent(), 0);
        assert_eq!(
            p.entries(),
            [PagemapEntry { vaddr: 0x10000, nr_pages: 3, flags: PE_PRESENT }, PagemapEntry { vaddr: 0x20000, nr_pages: 1, flags: PE_PRESENT }]
        );
    }
}
