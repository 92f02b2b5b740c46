//! `session.dumpMemory(pid, opts)`: selects the pages of a seized task like CRIU does and writes
//! them to pages-<id>.img (owner-only) in the session's images directory (`useImagesDir`) from
//! Rust; JavaScript gets the pagemap entries, the per-VMA decisions, counts and timings, never
//! page data.

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tsdump_core::mem::{self, snapshot, track, DumpOpts, Mode};

use crate::parasite::{check_traced_by_us, with_parasite};
use crate::convert::big;
use crate::session::Session;

/// read: the tracer copies the pages, no injection; vmsplice: the task gifts them into pipes.
#[napi(string_enum = "lowercase")]
pub enum MemoryMode {
    Read,
    Vmsplice,
}

impl From<MemoryMode> for Mode {
    fn from(m: MemoryMode) -> Mode {
        match m {
            MemoryMode::Read => Mode::Read,
            MemoryMode::Vmsplice => Mode::Vmsplice,
        }
    }
}

/// How writes between two runs are told: userfaultfd write-protect, or soft-dirty bits.
#[napi(string_enum = "kebab-case")]
#[derive(Clone, Copy)]
pub enum TrackingMethod {
    UffdWp,
    SoftDirty,
}

impl From<TrackingMethod> for track::Method {
    fn from(m: TrackingMethod) -> track::Method {
        match m {
            TrackingMethod::UffdWp => track::Method::UffdWp,
            TrackingMethod::SoftDirty => track::Method::SoftDirty,
        }
    }
}

impl From<track::Method> for TrackingMethod {
    fn from(m: track::Method) -> TrackingMethod {
        match m {
            track::Method::UffdWp => TrackingMethod::UffdWp,
            track::Method::SoftDirty => TrackingMethod::SoftDirty,
        }
    }
}

impl TrackingInfo {
    pub(crate) fn of((m, a): (track::Method, track::Armed)) -> TrackingInfo {
        TrackingInfo { method: m.into(), fd: a.fd, vmas: a.vmas as i64, refused: a.refused as i64 }
    }
}

#[napi(object)]
pub struct DumpMemoryOptions {
    pub pages_id: u32,
    pub mode: MemoryMode,
    /// Pipes in flight in vmsplice mode (default 8, at most 8).
    pub pipes: Option<u32>,
    /// Incremental dump: write only pages written since the parent's tracking was armed; the
    /// parent's pagemap entries say which clean pages it can give (PE_PARENT, no data).
    pub parent: Option<ParentPages>,
    /// The task's userfaultfd left by a pre-dump: closed after the scan (if it still is one).
    pub close_fd: Option<i32>,
    /// Start tracking writes after the drain (pre-dump, dump --track-mem).
    pub arm: Option<TrackingMethod>,
    /// Send the pages to this page server (one connection per session, opened by the first call,
    /// finished by `closePageServer`) instead of writing pages-<pagesId>.img.
    pub page_server: Option<PageServerAddress>,
    /// startVisit only: take a copy-on-write snapshot of the task's private memory instead of
    /// draining it; `drainSnapshots` copies it after the tree is released.
    pub snapshot: Option<SnapshotMode>,
}

/// What a snapshot that cannot be taken leads to.
#[napi(string_enum = "lowercase")]
#[derive(PartialEq, Eq)]
pub enum SnapshotMode {
    /// Copy that task's memory while frozen, and say why (`snapshotRefused`).
    Fallback,
    /// Fail the dump.
    Strict,
}

#[napi(object)]
pub struct PageServerAddress {
    pub address: String,
    pub port: u32,
}

#[napi(object)]
pub struct ParentPages {
    pub method: TrackingMethod,
    pub entries: Vec<PagemapEntryInfo>,
}

#[napi(object)]
pub struct TrackingInfo {
    pub method: TrackingMethod,
    /// uffd-wp: the userfaultfd's number in the task.
    pub fd: Option<i32>,
    pub vmas: i64,
    /// VMAs the kernel would not register (dumped whole next time).
    pub refused: i64,
}

#[napi(object)]
pub struct PagemapEntryInfo {
    pub vaddr: BigInt,
    pub nr_pages: u32,
    /// PE_PRESENT (4) etc., as CRIU's pagemap_entry.flags.
    pub flags: u32,
}

/// What the drain did with one mapping. Its other facts (protection, offset, device, VmFlags)
/// are the inspection's (`VmaInfo`), not repeated here: every value handed over is converted
/// on the main thread while the tree is frozen.
#[napi(object)]
pub struct VmaDumpInfo {
    pub start: BigInt,
    pub end: BigInt,
    pub inode: BigInt,
    pub path: String,
    #[napi(ts_type = "'anon' | 'file-cow' | 'whole' | 'shmem' | 'file-shared' | 'skip' | 'unsupported'")]
    pub decision: String,
    pub reason: String,
    pub pages_dumped: i64,
}

#[napi(object)]
pub struct MemoryCounts {
    pub scanned: i64,
    pub written: i64,
    pub zero: i64,
    pub skipped: i64,
    pub absent: i64,
}

#[napi(object)]
pub struct MemoryTimings {
    pub scan_ns: i64,
    pub drain_ns: i64,
    pub total_ns: i64,
    /// vmsplice mode: time inside the injected vmsplice calls, and splicing pipes into the file.
    pub vmsplice_ns: i64,
    pub splice_ns: i64,
}

#[napi(object)]
pub struct MemoryDump {
    pub pages_file: String,
    pub entries: Vec<PagemapEntryInfo>,
    pub vmas: Vec<VmaDumpInfo>,
    pub counts: MemoryCounts,
    pub bytes_written: i64,
    pub timings: MemoryTimings,
    pub vmsplice_calls: i64,
    /// vmsplice mode: why the resident parasite could not drain (absent when it did).
    pub blob_refused: Option<String>,
    /// Pages left in the parent images (PE_PARENT).
    pub pages_in_parent: i64,
    /// Set when `arm` was asked.
    pub tracking: Option<TrackingInfo>,
    /// A snapshot was asked and none taken: why (the pages were copied while frozen).
    pub snapshot_refused: Option<String>,
    /// A snapshot holds the pages: they are scanned and copied after the release, and
    /// `session.drainSnapshots()` brings the entries and counts (empty here).
    pub after_release: bool,
    /// The VmFlags of the task's mappings come from the snapshot after the release
    /// (`SnapshotDrainInfo.vmFlags`): the inspection's mappings have none.
    pub vm_flags_after_release: bool,
}


pub(crate) fn entries_to_js(entries: Vec<mem::PagemapEntry>) -> Vec<PagemapEntryInfo> {
    entries.into_iter().map(|e| PagemapEntryInfo { vaddr: big(e.vaddr), nr_pages: e.nr_pages, flags: e.flags }).collect()
}

/// A scan's counts, with the pages actually written.
pub(crate) fn counts_to_js(c: &mem::Counts, written: u64) -> MemoryCounts {
    MemoryCounts { scanned: c.scanned as i64, written: written as i64, zero: c.zero as i64, skipped: c.skipped as i64, absent: c.absent as i64 }
}

pub(crate) fn to_js(d: mem::MemDump, path: String) -> MemoryDump {
    MemoryDump {
        pages_file: path,
        entries: entries_to_js(d.entries),
        vmas: d
            .vmas
            .into_iter()
            .map(|r| VmaDumpInfo {
                start: big(r.vma.start),
                end: big(r.vma.end),
                inode: big(r.vma.inode),
                path: r.vma.path,
                decision: r.decision.as_str().to_string(),
                reason: r.reason.to_string(),
                pages_dumped: r.pages_dumped as i64,
            })
            .collect(),
        counts: counts_to_js(&d.counts, d.pages_written),
        bytes_written: d.bytes_written as i64,
        timings: MemoryTimings {
            scan_ns: d.timings.scan_ns as i64,
            drain_ns: d.timings.drain_ns as i64,
            total_ns: d.timings.total_ns as i64,
            vmsplice_ns: d.timings.vmsplice_ns as i64,
            splice_ns: d.timings.splice_ns as i64,
        },
        vmsplice_calls: d.vmsplice_calls as i64,
        blob_refused: d.blob_refused,
        pages_in_parent: d.pages_in_parent as i64,
        tracking: None,
        snapshot_refused: d.snapshot_refused,
        after_release: d.after_release,
        vm_flags_after_release: d.vm_flags_after_release,
    }
}


/// The memory tracking method this kernel offers: soft-dirty where it has it, else uffd-wp
/// async with PAGEMAP_SCAN; null when neither.
#[napi]
#[cfg_attr(test, allow(dead_code))] // called from JavaScript only
pub fn memory_tracking_method() -> Option<TrackingMethod> {
    let soft_dirty = tsdump_core::kerndat::probe_all().iter().any(|p| p.name == "mem_dirty_track" && p.supported);
    track::pick_method(soft_dirty).map(Into::into)
}

/// Whether fd `fd` of `pid` is a tracking userfaultfd (async write-protect) as a pre-dump leaves.
#[napi]
#[cfg_attr(test, allow(dead_code))] // called from JavaScript only
pub fn is_tracking_fd(pid: i32, fd: i32) -> bool {
    track::is_tracking_uffd(pid, fd)
}

#[napi]
impl Session {
    /// Dumps the private memory of `pid` (seized by this session) into pages-<pagesId>.img.
    #[napi]
    pub async fn dump_memory(&self, pid: i32, opts: DumpMemoryOptions) -> Result<MemoryDump> {
        let req = MemoryOptions::parse(self, opts)?;
        self.run(move |state| {
            check_traced_by_us(pid, pid)?;
            req.run(state, |memory| {
                if req.opts.mode == Mode::Read && memory.arm.is_none() && memory.close_fd.is_none() {
                    let d = match memory.page_server {
                        Some(c) => mem::dump_memory_to_page_server(pid, &memory.opts, None, c)?,
                        None => mem::dump_memory(pid, &memory.opts, None)?,
                    };
                    return Ok((d, None));
                }
                // One infection, one freeze: scan and drain, then end the old tracking and
                // start the new one, so no write falls between two trackings.
                with_parasite(pid, |inj| {
                    let d = match memory.page_server {
                        Some(c) => mem::dump_memory_to_page_server(pid, &memory.opts, Some(inj.into()), c)?,
                        None => mem::dump_memory(pid, &memory.opts, Some(inj.into()))?,
                    };
                    let armed = track::retrack(inj, memory.close_fd, memory.arm, &d.vmas)?;
                    Ok((d, armed))
                })
            })
        })
        .await
    }
}

impl ParentPages {
    /// What the parent images hold, for an incremental drain.
    pub(crate) fn incremental(&self) -> track::Incremental {
        track::Incremental {
            method: self.method.into(),
            parent: self.entries.iter().map(|e| mem::Run { vaddr: e.vaddr.get_u64().1, nr_pages: e.nr_pages as u64 }).collect(),
        }
    }
}

pub(crate) fn port(s: &PageServerAddress) -> Result<u16> {
    u16::try_from(s.port).map_err(|_| Error::from_reason(format!("USAGE: page server port {} out of range", s.port)))
}

/// dumpMemory's options, checked on the calling thread.
pub(crate) struct MemoryOptions {
    pub opts: mem::DumpOpts,
    pub arm: Option<track::Method>,
    pub close_fd: Option<i32>,
    pub server: Option<(String, u16)>,
    pub snapshot: Option<tsdump_core::mem::snapshot::Mode>,
}

impl MemoryOptions {
    pub fn parse(session: &Session, opts: DumpMemoryOptions) -> Result<MemoryOptions> {
        let mode = opts.mode.into();
        let pages = session.pages_file(format!("pages-{}.img", opts.pages_id))?;
        let incremental = opts.parent.as_ref().map(ParentPages::incremental);
        let server = match opts.page_server {
            Some(s) => Some((port(&s)?, s.address)).map(|(p, a)| (a, p)),
            None => None,
        };
        Ok(MemoryOptions {
            opts: DumpOpts { pages, vmas: None, mode, pipes: opts.pipes.unwrap_or(8) as usize, incremental },
            arm: opts.arm.map(Into::into),
            close_fd: opts.close_fd,
            server,
            snapshot: opts.snapshot.map(|s| if s == SnapshotMode::Strict { snapshot::Mode::Strict } else { snapshot::Mode::Fallback }),
        })
    }

    /// Runs `drain` with the session's page-server connection (`connectPageServer` opened it
    /// before the tree was seized) and turns its result into the binding's: a half-written pages image is removed,
    /// the connection kept only after a whole task went through (after an error it is dropped
    /// and the server discards what it got).
    pub fn run(
        &self,
        state: &mut crate::session::TracerState,
        drain: impl FnOnce(tsdump_core::collect::MemoryRequest) -> tsdump_core::Result<(mem::MemDump, Option<(track::Method, track::Armed)>)>,
    ) -> tsdump_core::Result<MemoryDump> {
        let mut client = match &self.server {
            Some((address, port)) => Some(crate::pageserver::take_client(state, address, *port)?),
            None => None,
        };
        let pages = &self.opts.pages;
        let req = tsdump_core::collect::MemoryRequest {
            opts: self.opts.clone(),
            page_server: client.as_mut(),
            close_fd: self.close_fd,
            arm: self.arm,
            snapshot: self.snapshot,
        };
        let (d, armed) = drain(req).inspect_err(|_| {
            // a half-written pages image must not pass for a dump
            if self.server.is_none() {
                pages.remove();
            }
        })?;
        let file = match (client, &self.server) {
            (Some(c), Some((address, port))) => {
                state.page_server = Some(c);
                format!("page-server://{address}:{port}")
            }
            _ => pages.display(),
        };
        let mut js = to_js(d, file);
        js.tracking = armed.map(TrackingInfo::of);
        Ok(js)
    }
}

#[napi(object)]
pub struct DumpShmemOptions {
    pub pages_id: u32,
    /// The mapping of the object in `pid` (a VMA with decision 'shmem').
    pub start: BigInt,
    pub end: BigInt,
}

#[napi(object)]
pub struct ShmemDumpInfo {
    /// The object's inode: CRIU's shmid (pagemap-shmem-<shmid>.img).
    pub shmid: BigInt,
    pub size: BigInt,
    pub pages_file: String,
    /// `vaddr` counts from the start of the object.
    pub entries: Vec<PagemapEntryInfo>,
    pub pages_written: i64,
}

#[napi]
impl Session {
    /// Dumps a shared anonymous object (MAP_SHARED|MAP_ANONYMOUS, memfd) once, through its
    /// mapping in `pid`, into pages-<pagesId>.img. Callers dump each shmid once.
    #[napi]
    pub async fn dump_shmem(&self, pid: i32, opts: DumpShmemOptions) -> Result<ShmemDumpInfo> {
        let (start, end) = (opts.start.get_u64().1, opts.end.get_u64().1);
        let pages = self.pages_file(format!("pages-{}.img", opts.pages_id))?;
        let d = self
            .run(move |_| {
                check_traced_by_us(pid, pid)?;
                let d = mem::shmem::dump_shmem(pid, start, end, &pages).inspect_err(|_| pages.remove())?;
                Ok((d, pages.display()))
            })
            .await?;
        let (d, file) = d;
        Ok(ShmemDumpInfo {
            shmid: big(d.ino),
            size: big(d.size),
            pages_file: file,
            entries: d
                .entries
                .into_iter()
                .map(|e| PagemapEntryInfo { vaddr: big(e.vaddr), nr_pages: e.nr_pages, flags: e.flags })
                .collect(),
            pages_written: d.pages_written as i64,
        })
    }
}

#[napi]
impl Session {
    /// Ends the tracking a `dumpMemory({ arm })` started in `pid` (seized by this session): closes
    /// its userfaultfd `fd` in the task, if that still is one. For a run that fails after arming.
    #[napi]
    pub async fn drop_tracking(&self, pid: i32, fd: i32) -> Result<bool> {
        self.run(move |_| {
            check_traced_by_us(pid, pid)?;
            if !track::is_tracking_uffd(pid, fd) {
                return Ok(false);
            }
            with_parasite(pid, |inj| track::disarm(inj, fd))?;
            Ok(true)
        })
        .await
    }
}

#[napi]
impl Session {
    /// Finishes the page-server transfer `dumpMemory({ pageServer })` started: CLOSE, and wait
    /// for the server to answer that its images are complete. False if nothing was sent.
    #[napi]
    pub async fn close_page_server(&self) -> Result<bool> {
        self.run(|state| match state.page_server.take() {
            Some(c) => c.close().map(|()| true),
            None => Ok(false),
        })
        .await
    }
}

#[napi(object)]
pub struct DumpMemfdOptions {
    /// Used for the contents' pages image unless the memfd is empty (then nothing is written).
    pub pages_id: u32,
    /// Reach the memfd through this fd of the task...
    pub fd: Option<i32>,
    /// ...or through its mapping `[start, end)` (a memfd whose fds are all closed).
    pub start: Option<BigInt>,
    pub end: Option<BigInt>,
}

#[napi(object)]
pub struct MemfdDumpInfo {
    /// The inode number: CRIU's shmid (pagemap-shmem-<shmid>.img).
    pub shmid: BigInt,
    pub size: BigInt,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// F_GET_SEALS.
    pub seals: u32,
    /// Absent for an empty memfd: no pages image and no pagemap are written then.
    pub pages_file: Option<String>,
    /// `vaddr` counts from the start of the file.
    pub entries: Vec<PagemapEntryInfo>,
    pub pages_written: i64,
}

#[napi]
impl Session {
    /// Dumps a memfd of `pid` (seized by this session) once: its inode's metadata, and its
    /// allocated pages into pages-<pagesId>.img. Callers dump each inode once.
    #[napi]
    pub async fn dump_memfd(&self, pid: i32, opts: DumpMemfdOptions) -> Result<MemfdDumpInfo> {
        let source = match (opts.fd, &opts.start, &opts.end) {
            (Some(fd), None, None) => mem::memfd::Source::Fd(fd),
            (None, Some(s), Some(e)) => mem::memfd::Source::Mapping { start: s.get_u64().1, end: e.get_u64().1 },
            _ => return Err(Error::from_reason("USAGE: dumpMemfd: give either fd or start and end")),
        };
        let pages = self.pages_file(format!("pages-{}.img", opts.pages_id))?;
        let (d, file) = self
            .run(move |_| {
                check_traced_by_us(pid, pid)?;
                let d = mem::memfd::dump_memfd(pid, source, &pages).inspect_err(|_| pages.remove())?;
                let file = d.wrote_pages.then(|| pages.display());
                Ok((d, file))
            })
            .await?;
        Ok(MemfdDumpInfo {
            shmid: big(d.ino),
            size: big(d.size),
            mode: d.mode,
            uid: d.uid,
            gid: d.gid,
            seals: d.seals,
            pages_file: file,
            entries: d
                .entries
                .into_iter()
                .map(|e| PagemapEntryInfo { vaddr: big(e.vaddr), nr_pages: e.nr_pages, flags: e.flags })
                .collect(),
            pages_written: d.pages_written as i64,
        })
    }
}
