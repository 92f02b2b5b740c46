//! Memory: which pages of a task to dump and draining them into a pages image (or a socket).
//!
//! The flow of `dump_memory`: read the VMAs (`vma`), decide per VMA like CRIU does, scan
//! pagemap for the pages that carry state (`pagemap`: present or swapped, not the zero page, for
//! private file mappings only copied-on-write pages), then drain those pages into the sink
//! through the chosen source (`drain`). The pagemap entries returned describe the pages image in
//! order, as CRIU's `pagemap_entry` (vaddr, nr_pages, flags = PE_PRESENT).
//!
//! The decisions and the scan are separate steps (`decide_vmas`, `scan_vmas`) so that a
//! snapshot's pages can be scanned after the task is released (`snapshot`).

pub mod drain;
pub mod memfd;
pub mod pagemap;
pub mod predump;
pub mod shmem;
pub mod snapshot;
pub mod track;
pub mod vma;

use std::fs::File;
use std::time::Instant;

use crate::error::{Error, ErrorCode, Result};
use crate::parasite::blob::Blob;
use crate::parasite::Injector;

pub use drain::{CountingSink, FdSink, PageSink, PageSource, ReadSource, VmspliceSource};
pub use pagemap::{Counts, Run};
pub use vma::{Decision, Vma};

/// CRIU's pagemap_entry flags.
pub const PE_PARENT: u32 = 1 << 0;
pub const PE_LAZY: u32 = 1 << 1;
pub const PE_PRESENT: u32 = 1 << 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The tracer reads pages (process_vm_readv, /proc/PID/mem).
    Read,
    /// The task vmsplices its pages into pipes (needs an infected task).
    Vmsplice,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagemapEntry {
    pub vaddr: u64,
    pub nr_pages: u32,
    pub flags: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmaReport {
    pub vma: Vma,
    pub decision: Decision,
    pub reason: &'static str,
    /// Pages of this VMA written to the pages image.
    pub pages_dumped: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    pub scan_ns: u64,
    pub drain_ns: u64,
    pub total_ns: u64,
    /// vmsplice mode: inside injected vmsplice calls, and splicing pipes into the sink.
    pub vmsplice_ns: u64,
    pub splice_ns: u64,
}

#[derive(Debug, Clone)]
pub struct MemDump {
    pub entries: Vec<PagemapEntry>,
    pub vmas: Vec<VmaReport>,
    pub counts: Counts,
    /// Pages written to the pages image (== counts.dump on success).
    pub pages_written: u64,
    pub bytes_written: u64,
    pub timings: Timings,
    /// vmsplice calls in the task (vmsplice mode).
    pub vmsplice_calls: u64,
    /// vmsplice mode: None when the resident parasite drained, else why it could not (single
    /// injected syscalls did the work).
    pub blob_refused: Option<String>,
    /// Incremental dumps: pages left in the parent images (PE_PARENT entries, no data).
    pub pages_in_parent: u64,
    /// --snapshot: why no snapshot was taken and the pages were copied while frozen.
    pub snapshot_refused: Option<String>,
    /// --snapshot: the pages are scanned and copied after the release, from the snapshot; the
    /// entries and counts come from `snapshot::Pending::drain` (here they are empty).
    pub after_release: bool,
    /// --snapshot: the VmFlags of the task's mappings are read from the snapshot after the
    /// release (`snapshot::Drained::vm_flags`); the inspection's mappings have none.
    pub vm_flags_after_release: bool,
}

/// The scan: VMAs, decisions and the runs of pages to dump.
pub struct Plan {
    pub vmas: Vec<VmaReport>,
    pub runs: Vec<Run>,
    pub counts: Counts,
}

/// `vma` minus the range `[lo, hi)`: none, one or two pieces.
pub fn subtract(v: &Vma, lo: u64, hi: u64) -> Vec<Vma> {
    if hi <= v.start || lo >= v.end {
        return vec![v.clone()];
    }
    let mut out = Vec::new();
    if v.start < lo {
        out.push(Vma { end: lo, ..v.clone() });
    }
    if hi < v.end {
        let offset = if v.inode != 0 { v.offset + (hi - v.start) } else { v.offset };
        out.push(Vma { start: hi, offset, ..v.clone() });
    }
    out
}

/// Scans `pid`'s VMAs. `hide` is a range of tsdump's own (the parasite's scratch mapping): it
/// is left out of the VMAs and the pages as if it were not there.
pub fn plan(pid: i32, hide: Option<(u64, u64)>) -> Result<Plan> {
    plan_vmas(pid, vma::read_vmas(pid)?, hide)
}

/// `plan` over mappings already read.
pub fn plan_vmas(pid: i32, vmas: Vec<Vma>, hide: Option<(u64, u64)>) -> Result<Plan> {
    let mut vmas = decide_vmas(pid, vmas, hide)?;
    let mut runs = Vec::new();
    let mut counts = Counts::default();
    scan_vmas(pid, &mut vmas, |_| true, &mut runs, &mut counts)?;
    Ok(Plan { vmas, runs, counts })
}

/// The first half of a plan: what to do with each of `pid`'s mappings (`hide` left out, as in
/// `plan`), refusing a mapping that cannot be dumped. No page is looked at.
pub fn decide_vmas(pid: i32, mut vmas: Vec<Vma>, hide: Option<(u64, u64)>) -> Result<Vec<VmaReport>> {
    if let Some((lo, hi)) = hide {
        vmas = vmas.iter().flat_map(|v| subtract(v, lo, hi)).collect();
    }
    vmas.into_iter()
        .map(|v| {
            let (decision, reason) = vma::decide(&v);
            if decision == Decision::Unsupported {
                return Err(Error::new(
                    ErrorCode::UnsupportedVma,
                    format!("pid {pid}: {reason} at {:#x}-{:#x} ({}){}", v.start, v.end, v.path, vma::unsupported_advice(&v)),
                ));
            }
            Ok(VmaReport { vma: v, decision, reason, pages_dumped: 0 })
        })
        .collect()
}

/// The second half: scans the pagemap of `pagemap_of` for the pages to dump in the mappings
/// `pick` selects, appending their runs (in address order) and counts. `pagemap_of` is the task
/// itself, or a process holding the same memory (a --snapshot holder, `snapshot`).
pub fn scan_vmas(pagemap_of: i32, vmas: &mut [VmaReport], pick: impl Fn(&VmaReport) -> bool, runs: &mut Vec<Run>, counts: &mut Counts) -> Result<()> {
    let path = format!("/proc/{pagemap_of}/pagemap");
    let pm = File::open(&path).map_err(|e| Error::new(ErrorCode::Procfs, format!("pid {pagemap_of}: opening {path}: {e}")))?;
    for r in vmas.iter_mut().filter(|r| pick(r)) {
        let before = counts.dump;
        if r.decision.dumps_private_pages() {
            if !pagemap::scan_vma_fast(&pm, &r.vma, r.decision, runs, counts)? {
                // No PAGEMAP_SCAN: one pagemap entry per page, zero page told by its PFN.
                pagemap::scan_vma(&pm, &r.vma, r.decision, &pagemap::zero_pfns()?, runs, counts)?;
            }
        } else {
            counts.skipped += r.vma.pages();
        }
        r.pages_dumped = counts.dump - before;
    }
    Ok(())
}

/// Pagemap entries for runs (split where a run exceeds u32 pages).
pub fn entries(runs: &[Run]) -> Vec<PagemapEntry> {
    let ps = vma::page_size();
    let mut out = Vec::with_capacity(runs.len());
    for r in runs {
        let mut left = r.nr_pages;
        let mut at = r.vaddr;
        while left > 0 {
            let n = left.min(u32::MAX as u64);
            out.push(PagemapEntry { vaddr: at, nr_pages: n as u32, flags: PE_PRESENT });
            at += n * ps;
            left -= n;
        }
    }
    out
}

#[derive(Clone)]
pub struct DumpOpts {
    /// pages-N.img in the images directory.
    pub pages: crate::images_dir::NewFile,
    /// The task's mappings when already read (before infection: no scratch among them); else
    /// /proc/PID/maps is read.
    pub vmas: Option<Vec<Vma>>,
    pub mode: Mode,
    /// Pipes for the vmsplice source.
    pub pipes: usize,
    /// Write only pages changed since the parent images (`track`); None dumps every page.
    pub incremental: Option<track::Incremental>,
}

/// The infected task a drain works through: the injector, and the resident parasite when the
/// caller runs one (else the drain starts its own).
pub struct Infected<'a> {
    pub inj: &'a mut Injector,
    pub blob: Option<&'a mut Blob>,
}

impl<'a> From<&'a mut Injector> for Infected<'a> {
    fn from(inj: &'a mut Injector) -> Self {
        Infected { inj, blob: None }
    }
}

/// Scans `pid`'s memory and writes the selected pages to `opts.pages`. Vmsplice mode needs an
/// infected task; the caller cures it.
pub fn dump_memory(pid: i32, opts: &DumpOpts, infected: Option<Infected>) -> Result<MemDump> {
    dump_memory_with(pid, opts, infected, |_, _, _| FdSink::create_file(&opts.pages))
}

/// The mapping among `vmas` (sorted, disjoint) that holds `addr`.
pub(crate) fn vma_at(vmas: &[VmaReport], addr: u64) -> Option<&VmaReport> {
    let i = vmas.partition_point(|r| r.vma.end <= addr);
    vmas.get(i).filter(|r| r.vma.start <= addr)
}

/// Private anonymous memory, which CRIU marks PE_LAZY (served by userfaultfd in lazy mode).
pub(crate) fn lazy_capable(r: &VmaReport) -> bool {
    r.decision == Decision::Anon && !r.vma.path.starts_with("/dev/zero")
}

/// Like `dump_memory`, but the pages go to a page server: OPEN2 for the task, then the pagemap
/// entries in address order, one ADD_F per drained piece (PE_PRESENT, plus PE_LAZY for private
/// anonymous memory as the local pagemap has it) and the PE_PARENT entries of an incremental dump
/// as holes between them. Holes are sent only if the server has a parent image for the task (its
/// OPEN2 answer, as CRIU's client asks it); without one every page is sent. The server checks the
/// holes against its parent. The caller sends CLOSE once every task is sent.
pub fn dump_memory_to_page_server(
    pid: i32,
    opts: &DumpOpts,
    infected: Option<Infected>,
    client: &mut crate::pageserver::PageServerClient,
) -> Result<MemDump> {
    let has_parent = client.open(crate::pageserver::ImageKind::Task, pid as u64)?;
    let whole;
    let opts = if opts.incremental.is_some() && !has_parent {
        whole = DumpOpts { incremental: None, ..opts.clone() };
        &whole
    } else {
        opts
    };
    let mut d = dump_memory_with(pid, opts, infected, |plan, _runs, entries| {
        crate::pageserver::PageServerSink::with_entries(client, with_lazy_flags(&plan.vmas, entries))
    })?;
    // What went over the wire carries the same flags, so report them.
    d.entries = with_lazy_flags(&d.vmas, &d.entries);
    Ok(d)
}

/// `entries` as a page server is sent them: PE_LAZY on the pages of private anonymous memory, as
/// CRIU marks them (a local pagemap gets the same flags from the mm image, src/dump/mm-image.ts).
pub(crate) fn with_lazy_flags(vmas: &[VmaReport], entries: &[PagemapEntry]) -> Vec<PagemapEntry> {
    let lazy = |e: &PagemapEntry| e.flags & PE_PRESENT != 0 && vma_at(vmas, e.vaddr).is_some_and(lazy_capable);
    entries.iter().map(|e| PagemapEntry { flags: if lazy(e) { e.flags | PE_LAZY } else { e.flags }, ..e.clone() }).collect()
}

/// The scan and the drain into the sink `make_sink` builds from the plan and the runs to write.
fn dump_memory_with<S, F>(pid: i32, opts: &DumpOpts, infected: Option<Infected>, make_sink: F) -> Result<MemDump>
where
    S: PageSink + Send,
    F: FnOnce(&Plan, &[Run], &[PagemapEntry]) -> Result<S>,
{
    let t0 = Instant::now();
    let hide = infected.as_ref().map(|i| (i.inj.scratch_addr(), i.inj.scratch_addr() + i.inj.scratch_len() as u64));
    let plan = match &opts.vmas {
        Some(v) => plan_vmas(pid, v.clone(), hide)?,
        None => plan(pid, hide)?,
    };
    let (runs, entries, pages_in_parent) = match &opts.incremental {
        Some(inc) => track::split(pid, &plan.runs, inc)?,
        None => (plan.runs.clone(), entries(&plan.runs), 0),
    };
    let t1 = Instant::now();
    let ps = vma::page_size();
    let to_write: u64 = runs.iter().map(|r| r.nr_pages).sum();
    let progress = crate::progress::current();
    progress.start(pid, to_write * ps);
    let mut sink = CountingSink { inner: make_sink(&plan, &runs, &entries)?, progress };
    let readable = |addr: u64| vma_at(&plan.vmas, addr).is_some_and(|r| r.vma.readable());
    let mut vmsplice_calls = 0;
    let mut blob_refused = None;
    let (mut vmsplice_ns, mut splice_ns) = (0, 0);
    match opts.mode {
        Mode::Read => ReadSource::new(pid).drain(&runs, &readable, &mut sink)?,
        Mode::Vmsplice => {
            let i = infected.ok_or_else(|| Error::new(ErrorCode::Parasite, format!("pid {pid}: vmsplice mode needs an infected task")))?;
            let mut src = VmspliceSource::with_blob(i.inj, i.blob, drain::pipes_for(to_write * ps, opts.pipes))?;
            let r = src.drain(&runs, &readable, &mut sink);
            vmsplice_calls = src.vmsplice_calls;
            blob_refused = src.blob_refused.clone();
            (vmsplice_ns, splice_ns) = (src.vmsplice_ns, src.splice_ns);
            let fin = src.finish();
            r?;
            fin?;
        }
    }
    let t2 = Instant::now();
    let bytes = sink.written();
    if bytes != to_write * ps {
        return Err(Error::new(ErrorCode::ImageIo, format!("pid {pid}: wrote {bytes} bytes for {to_write} pages")));
    }
    Ok(MemDump {
        entries,
        vmas: plan.vmas,
        counts: plan.counts,
        pages_written: bytes / ps,
        bytes_written: bytes,
        timings: Timings {
            scan_ns: (t1 - t0).as_nanos() as u64,
            drain_ns: (t2 - t1).as_nanos() as u64,
            total_ns: (t2 - t0).as_nanos() as u64,
            vmsplice_ns,
            splice_ns,
        },
        vmsplice_calls,
        blob_refused,
        pages_in_parent,
        snapshot_refused: None,
        after_release: false,
        vm_flags_after_release: false,
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod subtract_tests {
    use super::*;

    #[test]
    fn subtract_cuts_out_a_range() {
        let v = Vma { start: 0x1000, end: 0x9000, prot: 3, shared: false, offset: 0, dev: "00:00".into(), inode: 0, path: String::new(), vm_flags: vec![] };
        assert_eq!(subtract(&v, 0x1000, 0x9000), vec![]);
        assert_eq!(subtract(&v, 0xa000, 0xb000), vec![v.clone()]);
        let parts = subtract(&v, 0x3000, 0x4000);
        assert_eq!(parts.iter().map(|p| (p.start, p.end)).collect::<Vec<_>>(), [(0x1000, 0x3000), (0x4000, 0x9000)]);
    }
}
