//! File-descriptor facts that need no tracer thread: kcmp identity, queued pipe data, robust
//! futex lists. (Both kcmp and pidfd_getfd check ptrace *access*, not tracer identity.)

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tsdump_core::files::{self, KcmpType};

use tsdump_core::inspect::FdEntry;

use crate::errors::to_napi;
use crate::convert::big;
use crate::inspect::{EpollTargetInfo, FdInfoEntry, InotifyWatchInfo, TimerfdStateInfo};

/// Kernel objects kcmp(2) compares.
#[napi(string_enum = "lowercase")]
pub enum KcmpKind {
    File,
    Vm,
    Files,
    Fs,
    Sighand,
    Io,
    Sysvsem,
}

impl From<KcmpKind> for KcmpType {
    fn from(k: KcmpKind) -> KcmpType {
        match k {
            KcmpKind::File => KcmpType::File,
            KcmpKind::Vm => KcmpType::Vm,
            KcmpKind::Files => KcmpType::Files,
            KcmpKind::Fs => KcmpType::Fs,
            KcmpKind::Sighand => KcmpType::Sighand,
            KcmpKind::Io => KcmpType::Io,
            KcmpKind::Sysvsem => KcmpType::Sysvsem,
        }
    }
}

/// Whether two tasks share a kernel object (for `file`, `idx1`/`idx2` are their fds).
#[napi]
pub fn kcmp(pid1: i32, pid2: i32, kind: KcmpKind, idx1: Option<u32>, idx2: Option<u32>) -> Result<bool> {
    files::kcmp_same(pid1, pid2, kind.into(), idx1.unwrap_or(0).into(), idx2.unwrap_or(0).into()).map_err(to_napi)
}

/// Where `pid`'s object of `kind` sits among `sorted` (tasks whose objects of that kind all
/// differ, kept in kcmp(2)'s order by the caller, which inserts where this says): `i` when it is
/// `sorted[i]`'s, else `-(i + 1)` for the place it would take. The log n comparisons in one call.
#[napi]
pub fn kcmp_find(pid: i32, kind: KcmpKind, sorted: Int32Array) -> Result<i32> {
    let at = files::kcmp_find(pid, kind.into(), &sorted).map_err(to_napi)?;
    Ok(match at {
        Ok(i) => i as i32,
        Err(i) => -(i as i32) - 1,
    })
}

/// Whether fd `fd` of `pid` is the file the epoll set at fd `efd` of `epollPid` watches as
/// target fd number `tfd` (its `toff`-th registration under that number): kcmp KCMP_EPOLL_TFD.
#[napi]
pub fn kcmp_epoll_target(pid: i32, fd: i32, epoll_pid: i32, efd: i32, tfd: i32, toff: u32) -> Result<bool> {
    files::kcmp_epoll_target(pid, fd, epoll_pid, efd, tfd, toff).map_err(to_napi)
}

#[napi(object)]
pub struct DataExtent {
    pub offset: BigInt,
    pub length: BigInt,
}

/// The data extents of the file at `path` below `size` (SEEK_DATA/SEEK_HOLE): what a sparse
/// file holds, without its holes.
#[napi]
pub fn data_extents(path: String, size: BigInt) -> Result<Vec<DataExtent>> {
    let (_, size, _) = size.get_u64();
    let extents = files::data_extents(&path, size).map_err(to_napi)?;
    Ok(extents
        .into_iter()
        .map(|(o, l)| DataExtent { offset: BigInt::from(o), length: BigInt::from(l) })
        .collect())
}

/// CRIU's link remap: hard-links the file behind `source` (/proc/PID/fd/N or map_files) as
/// `name` in the directory `path` sat in (or the nearest one above that exists), following no
/// symlink; answers the new link's path.
#[napi]
pub fn link_remap(source: String, path: String, name: String) -> Result<String> {
    files::link_remap(&source, &path, &name).map_err(to_napi)
}

/// Removes a link made by linkRemap, if `path` still names that inode.
#[napi]
pub fn unlink_remap(path: String, dev: BigInt, ino: BigInt) -> Result<()> {
    files::unlink_remap(&path, dev.get_u64().1, ino.get_u64().1).map_err(to_napi)
}

/// Whether fd `fd` of `pid` has data to read (poll on a pidfd_getfd duplicate).
#[napi]
pub fn fd_readable(pid: i32, fd: i32) -> Result<bool> {
    files::readable(pid, fd).map_err(to_napi)
}

#[napi(object)]
pub struct PipeContents {
    /// The queued bytes (a pipe holds at most pipe-max-size, so this stays small).
    pub data: Buffer,
    /// The pipe's buffer size (F_GETPIPE_SZ).
    pub capacity: u32,
}

/// The bytes queued in the pipe or FIFO behind `fd` of `pid`, left in place.
#[napi]
pub fn peek_pipe(pid: i32, fd: i32) -> Result<PipeContents> {
    let p = files::peek_pipe(pid, fd).map_err(to_napi)?;
    Ok(PipeContents { data: p.data.into(), capacity: p.capacity })
}

/// The /proc/PID/stat fields TypeScript asks about.
#[napi(object)]
pub struct ProcStat {
    pub state: String,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// Controlling terminal as the kernel encodes it (new_encode_dev), 0 for none.
    pub tty_nr: i32,
    /// Foreground process group of that terminal (-1 for none).
    pub tpgid: i32,
    /// Clock ticks after boot when the process started.
    pub start_time: BigInt,
}

/// /proc/PID/stat, parsed (null when `pid` cannot be read: gone, or not ours to see).
#[napi]
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let s = tsdump_core::freezer::procinfo::stat(pid).ok()?;
    Some(ProcStat {
        state: s.state.to_string(),
        ppid: s.ppid,
        pgid: s.pgrp,
        sid: s.session,
        tty_nr: s.tty_nr,
        tpgid: s.tpgid,
        start_time: BigInt::from(s.starttime),
    })
}

/// TracerPid of task `pid` (/proc/PID/status): 0 when untraced, null when unreadable.
#[napi]
pub fn tracer_pid(pid: i32) -> Option<i32> {
    tsdump_core::freezer::procinfo::tracer_pid(pid)
}

#[napi(object)]
pub struct RobustList {
    pub head: BigInt,
    pub len: u32,
}

/// Thread `tid`'s robust futex list (get_robust_list).
#[napi]
pub fn robust_list(tid: i32) -> Result<RobustList> {
    let (head, len) = files::robust_list(tid).map_err(to_napi)?;
    Ok(RobustList { head: BigInt::from(head), len: len as u32 })
}

#[napi(object)]
pub struct FdOwnerInfo {
    /// F_OWNER_TID (0), F_OWNER_PID (1) or F_OWNER_PGRP (2).
    pub pid_type: u32,
    /// 0 when nobody owns the file.
    pub pid: i32,
    /// F_GETSIG: 0 means SIGIO.
    pub signum: u32,
    /// F_GETOWNER_UIDS: the credentials recorded with the owner.
    pub uid: u32,
    pub euid: u32,
}

/// F_GETOWN_EX and F_GETSIG of fd `fd` of `pid`, read on a pidfd_getfd duplicate.
#[napi]
pub fn fd_owner(pid: i32, fd: i32) -> Result<FdOwnerInfo> {
    let o = files::fd_owner(pid, fd).map_err(to_napi)?;
    Ok(FdOwnerInfo { pid_type: o.pid_type, pid: o.pid, signum: o.signum, uid: o.uid, euid: o.euid })
}

#[napi(object)]
pub struct TimerfdSettled {
    pub value_sec: i64,
    pub value_nsec: i64,
    pub interval_sec: i64,
    pub interval_nsec: i64,
}

/// timerfd_gettime on a duplicate of fd `fd` of `pid`: re-arms a periodic timer that expired
/// unread (counting the missed periods into its ticks, as the task's own gettime or read would)
/// and answers the time to its next expiry.
#[napi]
pub fn timerfd_settle(pid: i32, fd: i32) -> Result<TimerfdSettled> {
    let ((value_sec, value_nsec), (interval_sec, interval_nsec)) = files::timerfd_settle(pid, fd).map_err(to_napi)?;
    Ok(TimerfdSettled { value_sec, value_nsec, interval_sec, interval_nsec })
}

/// Bytes waiting to be read from `fd` of `pid` (FIONREAD on a pidfd_getfd duplicate).
#[napi]
pub fn fd_queued_bytes(pid: i32, fd: i32) -> Result<u32> {
    files::queued_bytes(pid, fd).map_err(to_napi)
}

/// The path (as `pid` sees it) of the inode an inotify watch's file handle names, or null.
/// `sdev` is fdinfo's kernel device number; `handle` the handle's bytes.
#[napi]
pub fn path_by_handle(pid: i32, sdev: u32, ino: BigInt, handle_type: i32, handle: Buffer) -> Result<Option<String>> {
    let (_, ino, _) = ino.get_u64();
    files::path_by_handle(pid, sdev, ino, handle_type, &handle).map_err(to_napi)
}

#[napi(object)]
pub struct TermiosInfo {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub line: u32,
    /// The 19 control characters of the kernel's termios.
    pub cc: Vec<u32>,
}

#[napi(object)]
pub struct TtyStateInfo {
    pub termios: TermiosInfo,
    pub termios_locked: TermiosInfo,
    pub ws_row: u32,
    pub ws_col: u32,
    pub ws_xpixel: u32,
    pub ws_ypixel: u32,
    pub exclusive: bool,
}

fn termios_info(t: &files::KernelTermios) -> TermiosInfo {
    TermiosInfo {
        iflag: t.iflag,
        oflag: t.oflag,
        cflag: t.cflag,
        lflag: t.lflag,
        line: t.line.into(),
        cc: t.cc.iter().map(|&c| c.into()).collect(),
    }
}

/// Termios, locked termios, window size and TIOCGEXCL of the tty behind fd `fd` of `pid`.
#[napi]
pub fn tty_state(pid: i32, fd: i32) -> Result<TtyStateInfo> {
    let s = files::tty_state(pid, fd).map_err(to_napi)?;
    Ok(TtyStateInfo {
        termios: termios_info(&s.termios),
        termios_locked: termios_info(&s.termios_locked),
        ws_row: s.winsize[0].into(),
        ws_col: s.winsize[1].into(),
        ws_xpixel: s.winsize[2].into(),
        ws_ypixel: s.winsize[3].into(),
        exclusive: s.exclusive,
    })
}

/// The device (st_dev) of the kernel's internal shmem mount: memfds and MAP_SHARED|MAP_ANONYMOUS
/// objects live on it, so an fd or mapping named "/memfd:..." is a memfd only if it is there.
#[napi]
pub fn shmem_device() -> Result<ShmemDevice> {
    let dev = tsdump_core::mem::memfd::shmem_device().map_err(to_napi)?;
    let (major, minor) = tsdump_core::mem::memfd::split_device(dev);
    Ok(ShmemDevice { dev: BigInt::from(dev), major, minor })
}

#[napi(object)]
pub struct ShmemDevice {
    /// As stat() reports it (FdInfoEntry.dev).
    pub dev: BigInt,
    /// As /proc/PID/maps prints it (VmaInfo.devMajor/devMinor).
    pub major: u32,
    pub minor: u32,
}

impl From<FdEntry> for FdInfoEntry {
    fn from(f: FdEntry) -> Self {
        let ino = f.file_ino();
        let i = f.info;
        FdInfoEntry {
            fd: f.fd,
            target: f.target,
            pos: big(i.pos),
            flags: i.flags,
            mnt_id: i.mnt_id,
            mode: f.mode,
            dev: big(f.dev),
            rdev: big(f.rdev),
            ino: big(ino),
            size: big(f.size),
            uid: f.uid,
            gid: f.gid,
            eventfd_count: i.eventfd_count.map(big),
            eventfd_id: i.eventfd_id.map(big),
            epoll_targets: i
                .epoll
                .iter()
                .map(|e| EpollTargetInfo {
                    tfd: e.tfd,
                    events: e.events,
                    data: big(e.data),
                    pos: big(e.pos),
                    ino: big(e.ino),
                    sdev: big(e.sdev),
                })
                .collect(),
            signalfd_mask: i.signalfd_mask.map(big),
            inotify_watches: i
                .inotify
                .iter()
                .map(|w| InotifyWatchInfo {
                    wd: w.wd,
                    ino: big(w.ino),
                    sdev: big(w.sdev),
                    mask: w.mask,
                    ignored_mask: w.ignored_mask,
                    fhandle_bytes: w.fhandle_bytes,
                    fhandle_type: w.fhandle_type,
                    f_handle: w.f_handle.clone(),
                })
                .collect(),
            timerfd: i.timerfd.as_ref().map(|t| TimerfdStateInfo {
                clockid: t.clockid,
                ticks: big(t.ticks),
                settime_flags: t.settime_flags,
                value_sec: big(t.it_value.0),
                value_nsec: big(t.it_value.1),
                interval_sec: big(t.it_interval.0),
                interval_nsec: big(t.it_interval.1),
            }),
            locks: i.locks.clone(),
            extra: i
                .other
                .iter()
                .map(|(k, v)| vec![k.clone(), v.clone()])
                .collect(),
        }
    }
}

/// Fd `fd` of `pid` as the fd table lists it (fdinfo and a stat of the open file): for files
/// outside any table, such as descriptors in flight in a socket queue, received here.
#[napi]
pub fn inspect_fd(pid: i32, fd: i32) -> Result<FdInfoEntry> {
    let entry = tsdump_core::inspect::read_fd(pid, fd).map_err(to_napi)?;
    entry.map(FdInfoEntry::from).ok_or_else(|| Error::from_reason(format!("ESRCH_TARGET: pid {pid}: fd {fd} is not open")))
}
