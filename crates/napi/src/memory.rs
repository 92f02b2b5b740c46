//! `session.dumpMemory(pid, opts)`: selects the pages of a seized task like CRIU does and writes
//! them to DIR/pages-<id>.img (owner-only) from Rust; JavaScript gets the pagemap entries, the
//! per-VMA decisions, counts and timings, never page data.

use std::path::PathBuf;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tsdump_core::mem::{self, DumpOpts, Mode};

use crate::parasite::{check_traced_by_us, with_parasite};
use crate::session::Session;

#[napi(object)]
pub struct DumpMemoryOptions {
    pub images_dir: String,
    pub pages_id: u32,
    /// 'read' (tracer copies, no injection) or 'vmsplice' (the task gifts pages into pipes).
    #[napi(ts_type = "'read' | 'vmsplice'")]
    pub mode: String,
    /// Pipes in flight in vmsplice mode (default 8, at most 8).
    pub pipes: Option<u32>,
}

#[napi(object)]
pub struct PagemapEntryInfo {
    pub vaddr: BigInt,
    pub nr_pages: u32,
    /// PE_PRESENT (4) etc., as CRIU's pagemap_entry.flags.
    pub flags: u32,
}

#[napi(object)]
pub struct VmaDumpInfo {
    pub start: BigInt,
    pub end: BigInt,
    pub prot: u32,
    pub shared: bool,
    pub offset: BigInt,
    pub dev: String,
    pub inode: BigInt,
    pub path: String,
    pub vm_flags: Vec<String>,
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
}

fn big(v: u64) -> BigInt {
    BigInt::from(v)
}

fn to_js(d: mem::MemDump, path: String) -> MemoryDump {
    MemoryDump {
        pages_file: path,
        entries: d
            .entries
            .into_iter()
            .map(|e| PagemapEntryInfo { vaddr: big(e.vaddr), nr_pages: e.nr_pages, flags: e.flags })
            .collect(),
        vmas: d
            .vmas
            .into_iter()
            .map(|r| VmaDumpInfo {
                start: big(r.vma.start),
                end: big(r.vma.end),
                prot: r.vma.prot,
                shared: r.vma.shared,
                offset: big(r.vma.offset),
                dev: r.vma.dev,
                inode: big(r.vma.inode),
                path: r.vma.path,
                vm_flags: r.vma.vm_flags,
                decision: r.decision.as_str().to_string(),
                reason: r.reason.to_string(),
                pages_dumped: r.pages_dumped as i64,
            })
            .collect(),
        counts: MemoryCounts {
            scanned: d.counts.scanned as i64,
            written: d.pages_written as i64,
            zero: d.counts.zero as i64,
            skipped: d.counts.skipped as i64,
            absent: d.counts.absent as i64,
        },
        bytes_written: d.bytes_written as i64,
        timings: MemoryTimings {
            scan_ns: d.timings.scan_ns as i64,
            drain_ns: d.timings.drain_ns as i64,
            total_ns: d.timings.total_ns as i64,
            vmsplice_ns: d.timings.vmsplice_ns as i64,
            splice_ns: d.timings.splice_ns as i64,
        },
        vmsplice_calls: d.vmsplice_calls as i64,
    }
}

#[napi]
impl Session {
    /// Dumps the private memory of `pid` (seized by this session) into
    /// `imagesDir/pages-<pagesId>.img`.
    #[napi]
    pub async fn dump_memory(&self, pid: i32, opts: DumpMemoryOptions) -> Result<MemoryDump> {
        let mode = match opts.mode.as_str() {
            "read" => Mode::Read,
            "vmsplice" => Mode::Vmsplice,
            m => return Err(Error::from_reason(format!("UNSUPPORTED: dumpMemory mode {m:?} (want 'read' or 'vmsplice')"))),
        };
        let path = PathBuf::from(&opts.images_dir).join(format!("pages-{}.img", opts.pages_id));
        let pipes = opts.pipes.unwrap_or(8) as usize;
        self.run(move |_| {
            check_traced_by_us(pid, pid)?;
            let o = DumpOpts { pages_path: path.clone(), mode, pipes };
            let d = match mode {
                Mode::Read => mem::dump_memory(pid, &o, None),
                Mode::Vmsplice => with_parasite(pid, |inj| mem::dump_memory(pid, &o, Some(inj))),
            };
            let d = d.inspect_err(|_| {
                // A half-written pages image must not pass for a dump.
                let _ = std::fs::remove_file(&path);
            })?;
            Ok(to_js(d, path.display().to_string()))
        })
        .await
    }
}

#[napi(object)]
pub struct DumpShmemOptions {
    pub images_dir: String,
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
    /// mapping in `pid`, into `imagesDir/pages-<pagesId>.img`. Callers dump each shmid once.
    #[napi]
    pub async fn dump_shmem(&self, pid: i32, opts: DumpShmemOptions) -> Result<ShmemDumpInfo> {
        let (start, end) = (opts.start.get_u64().1, opts.end.get_u64().1);
        let path = PathBuf::from(&opts.images_dir).join(format!("pages-{}.img", opts.pages_id));
        let d = self
            .run(move |_| {
                check_traced_by_us(pid, pid)?;
                let d = mem::shmem::dump_shmem(pid, start, end, &path).inspect_err(|_| {
                    let _ = std::fs::remove_file(&path);
                })?;
                Ok((d, path.display().to_string()))
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
