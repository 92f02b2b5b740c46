//! N-API surface of the read-mode pre-dump (tsdump_core::mem::predump): `preparePreDumpRead`
//! scans a frozen task and arms its tracking, the caller releases the tree, then
//! `readPreDump` reads the pages into pages-N.img or to the session's page server. Between the
//! two the scan is kept here under a number (the tree is released in between, so it cannot live
//! with the task's ptrace state); `discardPreDumpRead` drops one that will not be read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tsdump_core::mem::predump::{self, PendingRead};
use tsdump_core::mem::{self, track, FdSink, PageSink};
use tsdump_core::pageserver::ImageKind;

use crate::memory::{port, PageServerAddress, PagemapEntryInfo, ParentPages, ShmemDumpInfo, TrackingInfo, TrackingMethod};
use crate::parasite::{check_traced_by_us, with_parasite};
use crate::pageserver::take_client;
use crate::convert::big;
use crate::session::Session;

static PENDING: Mutex<BTreeMap<u32, PendingRead>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

fn pending() -> std::sync::MutexGuard<'static, BTreeMap<u32, PendingRead>> {
    // a panic while holding it leaves only complete entries behind
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}



fn entries_js(entries: &[mem::PagemapEntry]) -> Vec<PagemapEntryInfo> {
    entries.iter().map(|e| PagemapEntryInfo { vaddr: big(e.vaddr), nr_pages: e.nr_pages, flags: e.flags }).collect()
}

#[napi(object)]
pub struct PreparePreDumpOptions {
    /// As dumpMemory's: pages of the parent images written since its tracking are read again,
    /// the others are PE_PARENT entries.
    pub parent: Option<ParentPages>,
    /// The parent run's userfaultfd in the task: closed in this freeze (if it still is one).
    pub close_fd: Option<i32>,
    /// Start tracking writes in this freeze (a pre-dump always does).
    pub arm: Option<TrackingMethod>,
}

#[napi(object)]
pub struct PreDumpShmemMapping {
    pub start: BigInt,
    pub end: BigInt,
    /// The object's inode (CRIU's shmid).
    pub inode: BigInt,
}

#[napi(object)]
pub struct PreparedPreDump {
    /// What `readPreDump` takes.
    pub id: u32,
    pub pages_scanned: i64,
    pub pages_zero: i64,
    /// Pages to read after the release.
    pub pages_planned: i64,
    pub pages_in_parent: i64,
    pub scan_ns: i64,
    /// Shared anonymous mappings (MAP_SHARED|MAP_ANONYMOUS) seen by the scan.
    pub shmem: Vec<PreDumpShmemMapping>,
    pub tracking: Option<TrackingInfo>,
}

#[napi(object)]
pub struct ReadPreDumpOptions {
    pub pages_id: u32,
    /// Send to this page server (the session's connection, as dumpMemory's) instead.
    pub page_server: Option<PageServerAddress>,
}

#[napi(object)]
pub struct PreDumpReadResult {
    pub pid: i32,
    pub pages_file: String,
    /// What the pages image (or the server's pagemap) holds, by address.
    pub entries: Vec<PagemapEntryInfo>,
    pub pages_written: i64,
    /// Planned pages that could not be read any more (unmapped since the scan): left out.
    pub pages_lost: i64,
    pub pages_in_parent: i64,
    /// The task exited during the read: nothing of it was kept.
    pub gone: bool,
    pub read_ns: i64,
    pub readv_calls: i64,
}

#[napi]
impl Session {
    /// Scans `pid` (seized by this session) for a read-mode pre-dump and, in the same freeze,
    /// ends the parent's tracking and arms the new one. Read the pages with `readPreDump` once
    /// the tree is released.
    #[napi]
    pub async fn prepare_pre_dump_read(&self, pid: i32, opts: PreparePreDumpOptions) -> Result<PreparedPreDump> {
        let incremental = opts.parent.as_ref().map(ParentPages::incremental);
        let arm = opts.arm.map(Into::into);
        let close_fd = opts.close_fd;
        let (p, armed) = self
            .run(move |_| {
                check_traced_by_us(pid, pid)?;
                with_parasite(pid, |inj| {
                    let p = predump::prepare(pid, Some(&*inj), incremental.as_ref())?;
                    let armed = track::retrack(inj, close_fd, arm, &p.vmas)?;
                    Ok((p, armed))
                })
            })
            .await?;
        let shmem = p
            .vmas
            .iter()
            .filter(|r| r.decision == mem::Decision::Shmem && r.vma.path.starts_with("/dev/zero"))
            .map(|r| PreDumpShmemMapping { start: big(r.vma.start), end: big(r.vma.end), inode: big(r.vma.inode) })
            .collect();
        let out = PreparedPreDump {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            pages_scanned: p.counts.scanned as i64,
            pages_zero: p.counts.zero as i64,
            pages_planned: p.pages_planned() as i64,
            pages_in_parent: p.pages_in_parent() as i64,
            scan_ns: p.scan_ns as i64,
            shmem,
            tracking: armed.map(TrackingInfo::of),
        };
        pending().insert(out.id, p);
        Ok(out)
    }

    /// Reads the pages `preparePreDumpRead` planned (the task runs meanwhile) into
    /// pages-<pagesId>.img, or to the page server.
    #[napi]
    pub async fn read_pre_dump(&self, id: u32, opts: ReadPreDumpOptions) -> Result<PreDumpReadResult> {
        let p = pending()
            .remove(&id)
            .ok_or_else(|| Error::from_reason(format!("USAGE: no pending pre-dump read {id} (read or discarded already)")))?;
        let pages = self.pages_file(format!("pages-{}.img", opts.pages_id))?;
        let server = match &opts.page_server {
            Some(s) => Some((s.address.clone(), port(s)?)),
            None => None,
        };
        self.run(move |state| {
            let mut p = p;
            let pid = p.pid();
            let (out, file) = match &server {
                Some((address, port)) => {
                    let mut c = take_client(state, address, *port)?;
                    // holes only where the server has the parent (as a dump's OPEN2 decides)
                    if !c.open(ImageKind::Task, pid as u64)? {
                        p.read_everything();
                    }
                    let out = p.read(&mut c)?;
                    // kept only once the task went through (an error drops the connection)
                    state.page_server = Some(c);
                    (out, format!("page-server://{address}:{port}"))
                }
                None => {
                    let mut sink = FdSink::create_file(&pages)?;
                    let out = p.read(&mut sink).inspect_err(|_| pages.remove())?;
                    if out.gone && sink.written() > 0 {
                        // not the task's pages any more: an empty image, like its pagemap
                        drop(sink);
                        pages.remove();
                        FdSink::create_file(&pages)?;
                    }
                    (out, pages.display())
                }
            };
            Ok(PreDumpReadResult {
                pid,
                pages_file: file,
                entries: entries_js(&out.entries),
                pages_written: out.pages_read as i64,
                pages_lost: out.pages_lost as i64,
                pages_in_parent: out.pages_in_parent as i64,
                gone: out.gone,
                read_ns: out.read_ns as i64,
                readv_calls: out.readv_calls as i64,
            })
        })
        .await
    }

    /// A pre-dump's copy of the shared anonymous object mapped at `[start, end)` in `pid`, into
    /// pages-<pagesId>.img (the task need not be seized: pre-dumps read it after the release, see
    /// pre-dump.ts).
    #[napi]
    pub async fn pre_dump_shmem(&self, pid: i32, opts: PreDumpShmemOptions) -> Result<ShmemDumpInfo> {
        let (start, end) = (opts.start.get_u64().1, opts.end.get_u64().1);
        let pages = self.pages_file(format!("pages-{}.img", opts.pages_id))?;
        let (d, file) = self
            .run(move |_| {
                let d = mem::shmem::dump_shmem(pid, start, end, &pages).inspect_err(|_| pages.remove())?;
                Ok((d, pages.display()))
            })
            .await?;
        Ok(ShmemDumpInfo { shmid: big(d.ino), size: big(d.size), pages_file: file, entries: entries_js(&d.entries), pages_written: d.pages_written as i64 })
    }
}

#[napi(object)]
pub struct PreDumpShmemOptions {
    pub pages_id: u32,
    pub start: BigInt,
    pub end: BigInt,
}

/// Drops a prepared read that will not be read (a pre-dump that failed before reading).
#[napi]
#[cfg_attr(test, allow(dead_code))] // called from JavaScript only
pub fn discard_pre_dump_read(id: u32) -> bool {
    pending().remove(&id).is_some()
}
