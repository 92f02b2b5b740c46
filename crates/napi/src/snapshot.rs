//! `session.drainSnapshots()`: the copy after the release for `dump --snapshot`
//! (tsdump_core::mem::snapshot).

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::convert::big;
use crate::memory::{counts_to_js, entries_to_js, MemoryCounts, PagemapEntryInfo};
use crate::session::Session;

/// One mapping's VmFlags (smaps mnemonics, space-separated, as `VmaInfo.vmFlags`).
#[napi(object)]
pub struct MappingFlagsInfo {
    pub start: BigInt,
    pub end: BigInt,
    pub vm_flags: String,
}

#[napi(object)]
pub struct SnapshotDrainInfo {
    pub pid: i32,
    /// pagemap-PID.img's entries, in address order.
    pub entries: Vec<PagemapEntryInfo>,
    /// The task's page counts (the pages copied while frozen included).
    pub counts: MemoryCounts,
    /// Pages copied after the release.
    pub pages: i64,
    /// Pages copied while frozen (fork does not carry MADV_DONTFORK / MADV_WIPEONFORK ranges).
    pub frozen_pages: i64,
    /// Scanning the holder's pagemap (part of `drain_ns`).
    pub scan_ns: i64,
    pub drain_ns: i64,
    /// What the snapshot cost in memory at the end of the copy (its peak), if it could be read.
    pub extra_bytes: Option<i64>,
    /// The task exited during the copy (its images hold it as it was at the snapshot).
    pub task_exited: bool,
    /// False in the torn test mode (no holder: the live task was read).
    pub held: bool,
    /// The task's mappings' VmFlags as the snapshot tells them, when the visit left them for
    /// after the release (`MemoryDump.vmFlagsAfterRelease`).
    pub vm_flags: Option<Vec<MappingFlagsInfo>>,
}

#[napi]
impl Session {
    /// Scans and copies every snapshot taken by this session's `startVisit(pid, { memory: { snapshot } })`
    /// calls into its pages image, in the order taken, killing each holder when done. On a
    /// failure the holders left are killed too.
    #[napi]
    pub async fn drain_snapshots(&self) -> Result<Vec<SnapshotDrainInfo>> {
        self.run(|state| {
            let pending = std::mem::take(&mut state.snapshots);
            let mut out = Vec::with_capacity(pending.len());
            for p in pending {
                let (pid, frozen_pages, held) = (p.pid, p.frozen_pages, p.has_holder());
                let d = p.drain(state.page_server.as_mut())?;
                out.push(SnapshotDrainInfo {
                    pid,
                    counts: counts_to_js(&d.counts, d.counts.dump),
                    entries: entries_to_js(d.entries),
                    scan_ns: d.scan_ns as i64,
                    pages: d.pages as i64,
                    frozen_pages: frozen_pages as i64,
                    drain_ns: d.ns as i64,
                    extra_bytes: d.extra_bytes.map(|b| b as i64),
                    task_exited: d.task_exited,
                    held,
                    vm_flags: d.vm_flags.map(|vmas| {
                        vmas.into_iter().map(|v| MappingFlagsInfo { start: big(v.start), end: big(v.end), vm_flags: v.vm_flags.join(" ") }).collect()
                    }),
                });
            }
            Ok(out)
        })
        .await
    }
}
