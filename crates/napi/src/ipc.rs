//! SysV IPC objects (shared memory, semaphores, message queues) and the IPC sysctls of the
//! namespace of a given pid (`nsPid`; ours when omitted), for ipcns-*.img.

use std::path::Path;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tsdump_core::{ipc, mem, pageserver, ErrorCode};

use crate::errors::to_napi;
use crate::memory::{PageServerAddress, PagemapEntryInfo, ShmemDumpInfo};
use crate::session::Session;

#[napi(object)]
pub struct IpcDescInfo {
    pub key: u32,
    pub id: u32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    pub mode: u32,
}

#[napi(object)]
pub struct ShmSegmentInfo {
    pub desc: IpcDescInfo,
    pub size: BigInt,
    /// One per VMA mapping it, in any process of the namespace.
    pub nattch: i64,
    pub cpid: i32,
    pub lpid: i32,
}

#[napi(object)]
pub struct SemSetInfo {
    pub desc: IpcDescInfo,
    pub values: Vec<u32>,
    /// The last process to operate on each semaphore (0: none yet).
    pub pids: Vec<i32>,
}

#[napi(object)]
pub struct MsgQueueInfo {
    pub desc: IpcDescInfo,
    pub qbytes: i64,
    pub qnum: i64,
    pub lspid: i32,
    pub lrpid: i32,
}

#[napi(object)]
pub struct UnreadableIpcInfo {
    /// "shm", "sem" or "msg".
    pub kind: String,
    pub id: u32,
}

#[napi(object)]
pub struct SysvObjectsInfo {
    pub shm: Vec<ShmSegmentInfo>,
    pub sem: Vec<SemSetInfo>,
    pub msg: Vec<MsgQueueInfo>,
    /// Listed, but IPC_STAT refused us (another user's objects).
    pub unreadable: Vec<UnreadableIpcInfo>,
}

fn desc(d: ipc::IpcDesc) -> IpcDescInfo {
    IpcDescInfo { key: d.key, id: d.id, uid: d.uid, gid: d.gid, cuid: d.cuid, cgid: d.cgid, mode: d.mode }
}

/// Every SysV object of the IPC namespace of `nsPid` (ours if omitted).
#[napi]
pub fn sysv_objects(ns_pid: Option<i32>) -> Result<SysvObjectsInfo> {
    let o = ipc::objects(ns_pid).map_err(to_napi)?;
    Ok(SysvObjectsInfo {
        shm: o
            .shm
            .into_iter()
            .map(|s| ShmSegmentInfo { desc: desc(s.desc), size: BigInt::from(s.size), nattch: s.nattch as i64, cpid: s.cpid, lpid: s.lpid })
            .collect(),
        sem: o
            .sem
            .into_iter()
            .map(|s| SemSetInfo { desc: desc(s.desc), values: s.values.into_iter().map(u32::from).collect(), pids: s.pids })
            .collect(),
        msg: o
            .msg
            .into_iter()
            .map(|q| MsgQueueInfo { desc: desc(q.desc), qbytes: q.qbytes as i64, qnum: q.qnum as i64, lspid: q.lspid, lrpid: q.lrpid })
            .collect(),
        unreadable: o.unreadable.into_iter().map(|u| UnreadableIpcInfo { kind: u.kind.to_string(), id: u.id }).collect(),
    })
}

#[napi(object)]
pub struct SysvMessage {
    pub mtype: i64,
    pub text: Buffer,
}

/// The `qnum` messages of queue `msqid`, oldest first; they stay queued.
#[napi]
pub fn sysv_messages(ns_pid: Option<i32>, msqid: i32, qnum: i64) -> Result<Vec<SysvMessage>> {
    let m = ipc::messages(ns_pid, msqid, qnum.max(0) as u64).map_err(to_napi)?;
    Ok(m.into_iter().map(|m| SysvMessage { mtype: m.mtype, text: m.text.into() }).collect())
}

#[napi(object)]
pub struct IpcVarsInfo {
    pub sem_ctls: Vec<u32>,
    pub msg_ctlmax: u32,
    pub msg_ctlmnb: u32,
    pub msg_ctlmni: u32,
    pub auto_msgmni: u32,
    pub shm_ctlmax: BigInt,
    pub shm_ctlall: BigInt,
    pub shm_ctlmni: u32,
    pub shm_rmid_forced: u32,
    pub mq_queues_max: u32,
    pub mq_msg_max: u32,
    pub mq_msgsize_max: u32,
    pub mq_msg_default: Option<u32>,
    pub mq_msgsize_default: Option<u32>,
    /// None while at the initial -1.
    pub msg_next_id: Option<u32>,
    pub sem_next_id: Option<u32>,
    pub shm_next_id: Option<u32>,
}

/// The IPC sysctls of the namespace of `nsPid` (ours if omitted).
#[napi]
pub fn ipc_vars(ns_pid: Option<i32>) -> Result<IpcVarsInfo> {
    let v = ipc::vars(ns_pid).map_err(to_napi)?;
    Ok(IpcVarsInfo {
        sem_ctls: v.sem_ctls,
        msg_ctlmax: v.msg_ctlmax,
        msg_ctlmnb: v.msg_ctlmnb,
        msg_ctlmni: v.msg_ctlmni,
        auto_msgmni: v.auto_msgmni,
        shm_ctlmax: BigInt::from(v.shm_ctlmax),
        shm_ctlall: BigInt::from(v.shm_ctlall),
        shm_ctlmni: v.shm_ctlmni,
        shm_rmid_forced: v.shm_rmid_forced,
        mq_queues_max: v.mq_queues_max,
        mq_msg_max: v.mq_msg_max,
        mq_msgsize_max: v.mq_msgsize_max,
        mq_msg_default: v.mq_msg_default,
        mq_msgsize_default: v.mq_msgsize_default,
        msg_next_id: v.msg_next_id,
        sem_next_id: v.sem_next_id,
        shm_next_id: v.shm_next_id,
    })
}

#[napi(object)]
pub struct ShmAttachmentInfo {
    pub start: BigInt,
    pub end: BigInt,
    pub pgoff: BigInt,
    pub shmid: u32,
    pub key: u32,
}

/// The SysV segments task `pid` has attached (its /SYSV mappings), in address order.
#[napi]
pub fn sysv_attachments(pid: i32) -> Result<Vec<ShmAttachmentInfo>> {
    let a = ipc::attachments(pid).map_err(to_napi)?;
    Ok(a.into_iter()
        .map(|a| ShmAttachmentInfo { start: BigInt::from(a.start), end: BigInt::from(a.end), pgoff: BigInt::from(a.pgoff), shmid: a.shmid as u32, key: a.key })
        .collect())
}

/// Processes, other than `exclude`, of the IPC namespace with inode `nsInode` that attach
/// segment `shmid`.
#[napi]
pub fn sysv_attached_by(shmid: u32, ns_inode: BigInt, exclude: Vec<i32>) -> Result<Vec<i32>> {
    ipc::attached_by(u64::from(shmid), ns_inode.get_u64().1, &exclude).map_err(to_napi)
}

#[napi(object)]
pub struct DumpSysvShmOptions {
    /// Whose IPC namespace the segment is in (ours if omitted).
    pub ns_pid: Option<i32>,
    pub shmid: i32,
    pub size: BigInt,
    /// Local dump: `pages-<pagesId>.img` in the session's images directory.
    pub pages_id: Option<u32>,
    /// Or to the page server, over the session's connection.
    pub page_server: Option<PageServerAddress>,
}

#[napi]
impl Session {
    /// Dumps a SysV segment's contents (its allocated pages, `vaddr` counted from its start:
    /// pagemap-shmem-<shmid>) through a read-only attachment of our own, detached after. On the
    /// tracer thread, which holds the page-server connection.
    #[napi]
    pub async fn dump_sysv_shm(&self, opts: DumpSysvShmOptions) -> Result<ShmemDumpInfo> {
        let size = opts.size.get_u64().1;
        let (ns_pid, shmid) = (opts.ns_pid, opts.shmid);
        let server = match &opts.page_server {
            Some(s) => Some((s.address.clone(), crate::memory::port(s)?)),
            None => None,
        };
        let local = match (&server, opts.pages_id) {
            (None, Some(id)) => Some(self.pages_file(format!("pages-{id}.img"))?),
            (None, None) => return Err(Error::from_reason("USAGE: dumpSysvShm needs pagesId or pageServer")),
            (Some(_), _) => None,
        };
        let (d, file) = self
            .run(move |state| {
                let att = ipc::OwnAttachment::attach(ns_pid, shmid, size)?;
                if ipc::on_hugetlbfs(Path::new(&att.path()))? {
                    return Err(tsdump_core::Error::new(
                        ErrorCode::Unsupported,
                        format!("SysV shared memory segment shmid {shmid} lives in huge pages (SHM_HUGETLB): tsdump cannot dump it yet"),
                    ));
                }
                let me = std::process::id() as i32;
                if let Some((address, port)) = server {
                    let mut c = crate::pageserver::take_client(state, &address, port)?;
                    let before = c.bytes_sent();
                    let r = pageserver::send_shmem(&mut c, me, att.start, att.end);
                    // as send_shmem_to_page_server: a connection that sent part of it is dropped
                    if r.is_ok() || c.bytes_sent() == before {
                        state.page_server = Some(c);
                    }
                    return Ok((r?, "page-server".to_string()));
                }
                let pages = local.expect("checked above");
                let d = mem::shmem::dump_shmem(me, att.start, att.end, &pages).inspect_err(|_| pages.remove())?;
                Ok((d, pages.display()))
            })
            .await?;
        Ok(ShmemDumpInfo {
            shmid: BigInt::from(d.ino),
            size: BigInt::from(d.size),
            pages_file: file,
            entries: d
                .entries
                .into_iter()
                .map(|e| PagemapEntryInfo { vaddr: BigInt::from(e.vaddr), nr_pages: e.nr_pages, flags: e.flags })
                .collect(),
            pages_written: d.pages_written as i64,
        })
    }
}
