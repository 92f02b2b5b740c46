//! SysV IPC objects — shared memory segments, semaphore sets, message queues — and the IPC
//! namespace's sysctls, read as CRIU's ipc_ns.c reads them for ipcns-{shm,sem,msg,var}-N.img.
//!
//! Every SysV call answers for the caller's IPC namespace. The objects of another namespace are
//! read from a short-lived thread that joined it (setns(CLONE_NEWIPC) acts on the calling
//! thread only), so the process itself never changes namespace. A segment's contents are read
//! through an attachment of our own (SHM_RDONLY), opened as /proc/self/map_files/START-END — a
//! shmem file like any shared anonymous object — and detached when done.

mod sysvipc;
#[cfg(test)]
mod tests;

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::errno::Errno;

use crate::error::{Error, ErrorCode, Result};

pub use sysvipc::{IpcDesc, IpcVars, Msg, MsgQueue, SemSet, ShmSegment, SysvObjects};

/// A segment attached by a task: one VMA of `/proc/PID/maps` named `/SYSV<key>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmAttachment {
    pub start: u64,
    pub end: u64,
    /// Offset of the VMA in the segment (bytes).
    pub pgoff: u64,
    /// The segment's id (the inode /proc shows) and key.
    pub shmid: u64,
    pub key: u32,
}

/// Runs `f` in the IPC namespace of `ns_pid` (our own if None): on a thread that joined it.
pub fn in_namespace<T: Send>(ns_pid: Option<i32>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let Some(pid) = ns_pid else { return f() };
    let path = format!("/proc/{pid}/ns/ipc");
    let ns = fs::File::open(&path).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound { ErrorCode::EsrchTarget } else { ErrorCode::Procfs };
        Error::new(code, format!("opening {path}: {e}"))
    })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a namespace fd we hold; it changes this (scoped) thread only.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWIPC) } != 0 {
                return Err(Error::new(ErrorCode::Kernel, format!("setns({path}): {}", Errno::last().desc())));
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(Error::new(ErrorCode::Kernel, "the IPC namespace thread panicked")))
    })
}

/// Every SysV object of the IPC namespace of `ns_pid` (ours if None), with semaphore values.
pub fn objects(ns_pid: Option<i32>) -> Result<SysvObjects> {
    in_namespace(ns_pid, sysvipc::objects)
}

/// The `qnum` messages queued in message queue `msqid`, oldest first, left queued (MSG_COPY).
pub fn messages(ns_pid: Option<i32>, msqid: i32, qnum: u64) -> Result<Vec<Msg>> {
    in_namespace(ns_pid, move || sysvipc::messages(msqid, qnum))
}

/// The namespace's IPC sysctls (CRIU's ipc_var_entry).
pub fn vars(ns_pid: Option<i32>) -> Result<IpcVars> {
    in_namespace(ns_pid, sysvipc::vars)
}

/// The SysV segments task `pid` has attached, in address order. Asked of every task of every
/// dump while it is frozen, so only the lines naming a segment are parsed.
pub fn attachments(pid: i32) -> Result<Vec<ShmAttachment>> {
    let path = format!("/proc/{pid}/maps");
    let text = fs::read_to_string(&path).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound { ErrorCode::EsrchTarget } else { ErrorCode::Procfs };
        Error::new(code, format!("pid {pid}: reading {path}: {e}"))
    })?;
    text.lines()
        .filter(|l| l.contains(" /SYSV"))
        .map(|l| parse_attachment(l).ok_or_else(|| Error::new(ErrorCode::Procfs, format!("{path}: unexpected line {l:?}"))))
        .collect()
}

/// "START-END PERMS OFFSET DEV INODE /SYSV<key hex> (deleted)".
fn parse_attachment(line: &str) -> Option<ShmAttachment> {
    let mut f = line.split_whitespace();
    let (start, end) = f.next()?.split_once('-')?;
    let _perms = f.next()?;
    let pgoff = f.next()?;
    let _dev = f.next()?;
    let inode = f.next()?;
    let key = f.next()?.strip_prefix("/SYSV")?;
    Some(ShmAttachment {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        pgoff: u64::from_str_radix(pgoff, 16).ok()?,
        shmid: inode.parse().ok()?,
        key: u32::from_str_radix(key, 16).ok()?,
    })
}

/// Processes other than `exclude` that attach segment `shmid` of the IPC namespace whose inode
/// is `ns_inode` (a pid with no /proc entry any more is simply not listed).
pub fn attached_by(shmid: u64, ns_inode: u64, exclude: &[i32]) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    let all = procfs::process::all_processes().map_err(|e| Error::new(ErrorCode::Procfs, format!("listing /proc: {e}")))?;
    for p in all.flatten() {
        if exclude.contains(&p.pid) {
            continue;
        }
        let same_ns = fs::metadata(format!("/proc/{}/ns/ipc", p.pid)).map(|m| std::os::unix::fs::MetadataExt::ino(&m) == ns_inode);
        if !matches!(same_ns, Ok(true)) {
            continue;
        }
        if attachments(p.pid).is_ok_and(|a| a.iter().any(|a| a.shmid == shmid)) {
            out.push(p.pid);
        }
    }
    Ok(out)
}

/// A read-only attachment of a segment in our own address space, detached on drop.
#[derive(Debug)]
pub struct OwnAttachment {
    pub start: u64,
    pub end: u64,
}

impl OwnAttachment {
    /// Attaches segment `shmid` of the IPC namespace of `ns_pid` (ours if None), `size` bytes.
    pub fn attach(ns_pid: Option<i32>, shmid: i32, size: u64) -> Result<OwnAttachment> {
        let start = in_namespace(ns_pid, move || {
            // SAFETY: shmat with a null address lets the kernel pick a free range; the mapping
            // is only ever read (through /proc/self/map_files), and Drop detaches it.
            let addr = unsafe { libc::shmat(shmid, std::ptr::null(), libc::SHM_RDONLY) };
            if addr as isize == -1 {
                return Err(Error::new(ErrorCode::Kernel, format!("shmat(shmid {shmid}, SHM_RDONLY): {}", Errno::last().desc())));
            }
            Ok(addr as u64)
        })?;
        let page = crate::mem::vma::page_size();
        let att = OwnAttachment { start, end: start + size.div_ceil(page) * page };
        // A process we fork meanwhile (Node's child_process, a test) would inherit it and count
        // in the segment's nattch: not ours to give.
        // SAFETY: madvise on the range shmat just mapped for us.
        if unsafe { libc::madvise(start as *mut libc::c_void, (att.end - att.start) as usize, libc::MADV_DONTFORK) } != 0 {
            return Err(Error::new(ErrorCode::Kernel, format!("madvise(MADV_DONTFORK) on our attachment of shmid {shmid}: {}", Errno::last().desc())));
        }
        Ok(att)
    }

    /// Where the segment is reachable as a file: /proc/self/map_files/START-END.
    pub fn path(&self) -> String {
        format!("/proc/self/map_files/{:x}-{:x}", self.start, self.end)
    }
}

impl Drop for OwnAttachment {
    fn drop(&mut self) {
        // SAFETY: detaches the attachment `attach` made at this address; nothing refers to it.
        unsafe { libc::shmdt(self.start as *const libc::c_void) };
    }
}

/// True if the file at `path` (a segment's map_files entry) lives on hugetlbfs.
pub fn on_hugetlbfs(path: &Path) -> Result<bool> {
    let st = nix::sys::statfs::statfs(path).map_err(|e| Error::new(ErrorCode::Procfs, format!("statfs {}: {}", path.display(), e.desc())))?;
    Ok(st.filesystem_type() == nix::sys::statfs::HUGETLBFS_MAGIC)
}
