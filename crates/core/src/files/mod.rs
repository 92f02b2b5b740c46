//! Reading what a task's file descriptors hold without running code in the task: queued pipe
//! data, kernel-object identity (kcmp), and duplicating a task's fd (pidfd_getfd, Linux 5.6+),
//! which replaces the parasite's SCM_RIGHTS round trip for every fd kind that needs one.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::errno::Errno;

use crate::{Error, ErrorCode, Result};

pub mod pty;

/// Kernel objects `kcmp` can compare (values from linux/kcmp.h).
#[derive(Debug, Clone, Copy)]
#[repr(i32)]
pub enum KcmpType {
    File = 0,
    Vm = 1,
    Files = 2,
    Fs = 3,
    Sighand = 4,
    Io = 5,
    Sysvsem = 6,
}

/// Whether two tasks share the object (`idx1`/`idx2` are fds for `KcmpType::File`).
pub fn kcmp_same(pid1: i32, pid2: i32, kind: KcmpType, idx1: u64, idx2: u64) -> Result<bool> {
    // SAFETY: kcmp only reads kernel state; all arguments are plain integers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, kind as i32, idx1, idx2) };
    if r < 0 {
        let e = Errno::last();
        return Err(Error::from_errno(e, pid1, format!("kcmp({kind:?}) with pid {pid2}")));
    }
    Ok(r == 0)
}

/// linux/kcmp.h's KCMP_EPOLL_TFD and struct kcmp_epoll_slot.
const KCMP_EPOLL_TFD: i32 = 7;
#[repr(C)]
struct KcmpEpollSlot {
    efd: u32,
    tfd: u32,
    toff: u32,
}

/// Whether fd `fd` of `pid` is the file registered in the epoll set at fd `efd` of `epoll_pid`
/// as target fd number `tfd`, the `toff`-th registration under that number (kcmp
/// KCMP_EPOLL_TFD): how a registration made through an fd closed since is found again.
pub fn kcmp_epoll_target(pid: i32, fd: i32, epoll_pid: i32, efd: i32, tfd: i32, toff: u32) -> Result<bool> {
    let slot = KcmpEpollSlot { efd: efd as u32, tfd: tfd as u32, toff };
    // SAFETY: kcmp reads the slot struct we pass by pointer; the rest are integers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid, epoll_pid, KCMP_EPOLL_TFD, fd, &slot as *const KcmpEpollSlot) };
    if r < 0 {
        let e = Errno::last();
        // EBADF: `fd` is closed; ENOENT: no such registration.
        if e == Errno::EBADF || e == Errno::ENOENT {
            return Ok(false);
        }
        return Err(Error::from_errno(e, epoll_pid, format!("kcmp(KCMP_EPOLL_TFD) of epoll fd {efd} target {tfd} with pid {pid} fd {fd}")));
    }
    Ok(r == 0)
}

/// How two tasks' objects compare in the kernel's (obfuscated, but stable) order: Equal when
/// shared. Sorting by this order finds an object among n in log n calls (as CRIU's kid trees).
pub fn kcmp_order(pid1: i32, pid2: i32, kind: KcmpType, idx1: u64, idx2: u64) -> Result<std::cmp::Ordering> {
    // SAFETY: kcmp only reads kernel state; all arguments are plain integers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, kind as i32, idx1, idx2) };
    match r {
        0 => Ok(std::cmp::Ordering::Equal),
        1 => Ok(std::cmp::Ordering::Less),
        2 => Ok(std::cmp::Ordering::Greater),
        r if r < 0 => Err(Error::from_errno(Errno::last(), pid1, format!("kcmp({kind:?}) with pid {pid2}"))),
        _ => Err(Error::new(ErrorCode::Kernel, format!("pid {pid1}: kcmp({kind:?}) with pid {pid2} gave no order"))),
    }
}

/// Where task `pid`'s object of `kind` sits among `sorted` (tasks whose objects of that kind all
/// differ, in `kcmp_order`): Ok(i) when it is `sorted[i]`'s, else Err(i), the place it would
/// take. log n calls of kcmp, in one go.
pub fn kcmp_find(pid: i32, kind: KcmpType, sorted: &[i32]) -> Result<std::result::Result<usize, usize>> {
    let (mut lo, mut hi) = (0, sorted.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        match kcmp_order(sorted[mid], pid, kind, 0, 0)? {
            std::cmp::Ordering::Equal => return Ok(Ok(mid)),
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    Ok(Err(lo))
}

/// Duplicates fd `fd` of task `pid` into this process (needs ptrace access to `pid`).
pub fn steal_fd(pid: i32, fd: i32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(Error::from_errno(Errno::last(), pid, "pidfd_open"));
    }
    // SAFETY: pidfd was just returned by the kernel and is owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd returns a new fd or -1; arguments are plain integers.
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if dup < 0 {
        return Err(Error::from_errno(Errno::last(), pid, format!("pidfd_getfd of fd {fd}")));
    }
    // SAFETY: a fresh fd from the kernel, owned only here.
    Ok(unsafe { OwnedFd::from_raw_fd(dup as i32) })
}

/// Who gets SIGIO/SIGURG for an open file (F_SETOWN/F_SETOWN_EX) and with which signal (F_SETSIG).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FdOwner {
    /// F_OWNER_TID (0), F_OWNER_PID (1) or F_OWNER_PGRP (2).
    pub pid_type: u32,
    /// 0 when nobody owns the file.
    pub pid: i32,
    /// 0 means the default SIGIO.
    pub signum: u32,
    /// Credentials recorded when the owner was set (F_GETOWNER_UIDS); 0 without an owner.
    pub uid: u32,
    pub euid: u32,
}

// linux/fcntl.h values the libc crate does not carry.
const F_GETSIG: libc::c_int = 11;
const F_GETOWN_EX: libc::c_int = 16;
const F_GETOWNER_UIDS: libc::c_int = 17;

/// struct f_owner_ex.
#[repr(C)]
struct OwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// The owner settings of fd `fd` of task `pid`, read on a duplicate of the fd (they belong to
/// the open file description, so the duplicate sees the same).
pub fn fd_owner(pid: i32, fd: i32) -> Result<FdOwner> {
    let dup = steal_fd(pid, fd)?;
    let mut owner = OwnerEx { kind: 0, pid: 0 };
    // SAFETY: F_GETOWN_EX fills the struct f_owner_ex (two ints) we pass.
    let r = unsafe { libc::fcntl(dup.as_raw_fd(), F_GETOWN_EX, &mut owner as *mut OwnerEx) };
    if r < 0 {
        return Err(Error::from_errno(Errno::last(), pid, format!("F_GETOWN_EX on fd {fd}")));
    }
    // SAFETY: F_GETSIG takes no argument and returns the signal number or -1.
    let sig = unsafe { libc::fcntl(dup.as_raw_fd(), F_GETSIG) };
    if sig < 0 {
        return Err(Error::from_errno(Errno::last(), pid, format!("F_GETSIG on fd {fd}")));
    }
    let mut uids = [0u32; 2];
    if owner.pid != 0 {
        // SAFETY: F_GETOWNER_UIDS writes two uid_t values to the array we pass.
        let r = unsafe { libc::fcntl(dup.as_raw_fd(), F_GETOWNER_UIDS, uids.as_mut_ptr()) };
        if r < 0 {
            return Err(Error::from_errno(Errno::last(), pid, format!("F_GETOWNER_UIDS on fd {fd}")));
        }
    }
    Ok(FdOwner { pid_type: owner.kind as u32, pid: owner.pid, signum: sig as u32, uid: uids[0], euid: uids[1] })
}

/// Brings the timerfd behind fd `fd` of task `pid` up to date, as the task's own
/// timerfd_gettime would: a periodic timer that expired unread is re-armed for its next period
/// and the periods it missed are added to its unread tick count. Answers (value, interval) as
/// (sec, nsec) pairs; fdinfo read afterwards shows the settled ticks.
pub fn timerfd_settle(pid: i32, fd: i32) -> Result<((i64, i64), (i64, i64))> {
    let dup = steal_fd(pid, fd)?;
    let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    let mut cur = libc::itimerspec { it_interval: zero, it_value: zero };
    // SAFETY: timerfd_gettime writes one itimerspec to the pointer we pass.
    let r = unsafe { libc::timerfd_gettime(dup.as_raw_fd(), &mut cur) };
    if r < 0 {
        return Err(Error::from_errno(Errno::last(), pid, format!("timerfd_gettime on fd {fd}")));
    }
    Ok((
        (cur.it_value.tv_sec, cur.it_value.tv_nsec),
        (cur.it_interval.tv_sec, cur.it_interval.tv_nsec),
    ))
}

/// The kernel's `struct termios` (NCCS = 19, no speed fields), as TCGETS fills it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelTermios {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub line: u8,
    pub cc: [u8; 19],
}

/// Terminal settings of a tty: what restore needs to put the terminal back as it was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TtyState {
    pub termios: KernelTermios,
    /// TIOCGLCKTRMIOS: the bits a non-root process may not change.
    pub termios_locked: KernelTermios,
    /// rows, cols, xpixel, ypixel.
    pub winsize: [u16; 4],
    /// TIOCGEXCL: exclusive mode (TIOCEXCL).
    pub exclusive: bool,
}

const TCGETS: libc::c_ulong = 0x5401;
const TIOCGWINSZ_REQ: libc::c_ulong = 0x5413;
const TIOCGLCKTRMIOS: libc::c_ulong = 0x5456;
const TIOCGEXCL: libc::c_ulong = 0x8004_5440;

fn get_termios(fd: i32, req: libc::c_ulong) -> std::result::Result<KernelTermios, Errno> {
    // Room for the kernel's 36-byte termios with slack.
    let mut raw = [0u8; 64];
    // SAFETY: TCGETS/TIOCGLCKTRMIOS write one kernel termios (36 bytes) into the 64-byte buffer.
    let r = unsafe { libc::ioctl(fd, req as _, raw.as_mut_ptr()) };
    if r < 0 {
        return Err(Errno::last());
    }
    let word = |i: usize| u32::from_ne_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
    let mut cc = [0u8; 19];
    cc.copy_from_slice(&raw[17..36]);
    Ok(KernelTermios { iflag: word(0), oflag: word(4), cflag: word(8), lflag: word(12), line: raw[16], cc })
}

/// Termios, locked termios, window size and exclusive mode of the tty behind fd `fd` of `pid`,
/// read on a pidfd_getfd duplicate (none of these need the tty to be our controlling terminal).
pub fn tty_state(pid: i32, fd: i32) -> Result<TtyState> {
    let dup = steal_fd(pid, fd)?;
    let raw = dup.as_raw_fd();
    let termios = get_termios(raw, TCGETS).map_err(|e| Error::from_errno(e, pid, format!("TCGETS on fd {fd}")))?;
    let termios_locked =
        get_termios(raw, TIOCGLCKTRMIOS).map_err(|e| Error::from_errno(e, pid, format!("TIOCGLCKTRMIOS on fd {fd}")))?;
    let mut ws = [0u16; 4];
    // SAFETY: TIOCGWINSZ writes one struct winsize (four u16) into the array.
    let r = unsafe { libc::ioctl(raw, TIOCGWINSZ_REQ as _, ws.as_mut_ptr()) };
    if r < 0 {
        return Err(Error::from_errno(Errno::last(), pid, format!("TIOCGWINSZ on fd {fd}")));
    }
    let mut excl: libc::c_int = 0;
    // SAFETY: TIOCGEXCL writes one int.
    let r = unsafe { libc::ioctl(raw, TIOCGEXCL as _, &mut excl as *mut libc::c_int) };
    if r < 0 {
        return Err(Error::from_errno(Errno::last(), pid, format!("TIOCGEXCL on fd {fd}")));
    }
    Ok(TtyState { termios, termios_locked, winsize: ws, exclusive: excl != 0 })
}

/// Bytes waiting to be read from fd `fd` of task `pid` (FIONREAD on a duplicate): unread
/// inotify events, for instance.
pub fn queued_bytes(pid: i32, fd: i32) -> Result<u32> {
    let dup = steal_fd(pid, fd)?;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer we pass.
    let r = unsafe { libc::ioctl(dup.as_raw_fd(), libc::FIONREAD, &mut n) };
    if r < 0 {
        return Err(Error::from_errno(Errno::last(), pid, format!("FIONREAD on fd {fd}")));
    }
    Ok(n.max(0) as u32)
}

/// Whether fd `fd` of task `pid` has something to read (poll on a duplicate, without waiting):
/// for files FIONREAD knows nothing of, such as netlink sockets.
pub fn readable(pid: i32, fd: i32) -> Result<bool> {
    let dup = steal_fd(pid, fd)?;
    let mut p = libc::pollfd { fd: dup.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll reads and writes the one pollfd we pass; timeout 0 never blocks.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    if r < 0 {
        return Err(Error::from_errno(Errno::last(), pid, format!("poll on fd {fd}")));
    }
    Ok(r > 0 && p.revents & libc::POLLIN != 0)
}

/// The path, as task `pid` sees it, of the inode a file handle names (an inotify watch's
/// `f_handle`). `sdev` is the kernel's device number from fdinfo (minor in the low 20 bits);
/// each of the task's mounts of that device is tried as the handle's mount, and the answer is
/// checked against `ino`. None when no mount opens it to that inode.
pub fn path_by_handle(pid: i32, sdev: u32, ino: u64, handle_type: i32, handle: &[u8]) -> Result<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let dev = format!("{}:{}", sdev >> 20, sdev & 0xfffff);
    let mountinfo_path = format!("/proc/{pid}/mountinfo");
    let mountinfo = std::fs::read_to_string(&mountinfo_path)
        .map_err(|e| Error::new(ErrorCode::Kernel, format!("pid {pid}: read {mountinfo_path}: {e}")))?;
    // struct file_handle: u32 handle_bytes, i32 handle_type, then the opaque bytes.
    let mut fh = Vec::with_capacity(8 + handle.len());
    fh.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
    fh.extend_from_slice(&handle_type.to_ne_bytes());
    fh.extend_from_slice(handle);
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 5 || fields[2] != dev {
            continue;
        }
        let mount_point = unescape_mountinfo(fields[4]);
        // Not O_PATH: open_by_handle_at wants a real open fd on the mount (EBADF otherwise).
        let Ok(mnt) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(format!("/proc/{pid}/root{mount_point}"))
        else {
            continue;
        };
        // SAFETY: open_by_handle_at reads a struct file_handle of the size its header states
        // (fh holds exactly that) and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_open_by_handle_at, mnt.as_raw_fd(), fh.as_mut_ptr(), libc::O_PATH) };
        if fd < 0 {
            continue;
        }
        // SAFETY: a fresh fd from the kernel, owned only here.
        let opened = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let link = format!("/proc/self/fd/{}", opened.as_raw_fd());
        let (Ok(path), Ok(meta)) = (std::fs::read_link(&link), std::fs::metadata(&link)) else {
            continue;
        };
        if meta.ino() == ino {
            return Ok(Some(path.to_string_lossy().into_owned()));
        }
    }
    Ok(None)
}

/// mountinfo escapes space, tab, newline and backslash as \ooo octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a pipe holds: its queued bytes and its buffer size.
#[derive(Debug, Clone, Default)]
pub struct PipeContents {
    pub data: Vec<u8>,
    pub capacity: u32,
}

/// The bytes queued in the pipe (or FIFO) behind fd `fd` of task `pid`, left in place.
///
/// The pipe is reopened read-only through /proc (works for either end), and `tee` copies its
/// contents into a private pipe without consuming them.
pub fn peek_pipe(pid: i32, fd: i32) -> Result<PipeContents> {
    let path = format!("/proc/{pid}/fd/{fd}");
    let src = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| Error::new(ErrorCode::Kernel, format!("pid {pid}: open {path}: {e}")))?;
    let queued = fionread(&src).map_err(|e| Error::from_errno(e, pid, format!("FIONREAD on fd {fd}")))?;
    let capacity = pipe_size(&src).map_err(|e| Error::from_errno(e, pid, format!("F_GETPIPE_SZ on fd {fd}")))?;
    if queued == 0 {
        return Ok(PipeContents { data: Vec::new(), capacity: capacity as u32 });
    }
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::from_errno(e, pid, "pipe2"))?;
    // SAFETY: F_SETPIPE_SZ on our own pipe; the result is checked below.
    let grown = unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, capacity) };
    if grown < 0 || (grown as usize) < queued {
        return Err(Error::new(
            ErrorCode::Unsupported,
            format!(
                "pid {pid}: fd {fd}: pipe holds {queued} bytes, more than a pipe of ours can take \
                 (pipe-max-size, no CAP_SYS_RESOURCE)"
            ),
        ));
    }
    // SAFETY: tee between two pipe fds we own; length bounded by the queued byte count.
    let n = unsafe {
        libc::tee(src.as_raw_fd(), wr.as_raw_fd(), queued, libc::SPLICE_F_NONBLOCK)
    };
    if n < 0 {
        return Err(Error::from_errno(Errno::last(), pid, format!("tee from fd {fd}")));
    }
    drop(wr);
    let mut data = Vec::with_capacity(n as usize);
    File::from(rd)
        .read_to_end(&mut data)
        .map_err(|e| Error::new(ErrorCode::Kernel, format!("pid {pid}: reading peeked pipe data: {e}")))?;
    Ok(PipeContents { data, capacity: capacity as u32 })
}

fn fionread(f: &File) -> std::result::Result<usize, Errno> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer we pass.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) };
    Errno::result(r).map(|_| n as usize)
}

fn pipe_size(f: &File) -> std::result::Result<libc::c_int, Errno> {
    // SAFETY: F_GETPIPE_SZ takes no argument and returns the size or -1.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETPIPE_SZ) };
    Errno::result(r)
}

/// The robust futex list head of thread `tid` (address, length), as get_robust_list reports it.
pub fn robust_list(tid: i32) -> Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: libc::size_t = 0;
    // SAFETY: get_robust_list writes one pointer and one size_t to the locations we pass.
    let r = unsafe { libc::syscall(libc::SYS_get_robust_list, tid, &mut head as *mut u64, &mut len as *mut libc::size_t) };
    if r < 0 {
        return Err(Error::from_errno(Errno::last(), tid, "get_robust_list"));
    }
    Ok((head, len as u64))
}

/// The data extents (offset, length) of the file at `path` below `size`, as SEEK_DATA and
/// SEEK_HOLE report them: holes are left out, so a sparse file is copied as what it holds. A file
/// system without the two reports the whole file as data.
pub fn data_extents(path: &str, size: u64) -> Result<Vec<(u64, u64)>> {
    let file = File::open(path).map_err(|e| Error::new(ErrorCode::Kernel, format!("{path}: open: {e}")))?;
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut hole: u64 = 0;
    while hole < size {
        // SAFETY: lseek on an fd we own; no memory is passed.
        let data = unsafe { libc::lseek(fd, hole as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            match Errno::last() {
                Errno::ENXIO => break, // nothing but hole from here
                Errno::EINVAL if hole == 0 => return Ok(vec![(0, size)]),
                e => return Err(Error::new(ErrorCode::Kernel, format!("{path}: lseek(SEEK_DATA, {hole}): {}", e.desc()))),
            }
        }
        let data = data as u64;
        if data >= size {
            break;
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        if end < 0 {
            return Err(Error::new(ErrorCode::Kernel, format!("{path}: lseek(SEEK_HOLE, {data}): {}", Errno::last().desc())));
        }
        hole = (end as u64).min(size);
        out.push((data, hole - data));
    }
    Ok(out)
}

/// Opens directory `dir` (absolute) without following any symlink on the way: a path the kernel
/// printed (d_path) has none, so one met now is something swapped in since.
fn open_dir_nofollow(dir: &str) -> std::result::Result<OwnedFd, Errno> {
    let path = std::ffi::CString::new(dir).map_err(|_| Errno::EINVAL)?;
    // SAFETY: open_how is plain data; zeroed is valid and then filled in.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads the path and the open_how of the stated size.
    let fd = unsafe {
        libc::syscall(libc::SYS_openat2, libc::AT_FDCWD, path.as_ptr(), &how as *const libc::open_how, std::mem::size_of::<libc::open_how>())
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a fresh fd from the kernel, owned only here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The directory part of an absolute path ("/" for a top-level name).
fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// CRIU's link remap: a new hard link named `name` to the file behind `source` (a /proc link of
/// the task's: /proc/PID/fd/N or map_files), in the directory `path` sat in, or the nearest
/// existing directory above it. The file must still have a link somewhere (a file with none is
/// a ghost). Answers the new link's path.
pub fn link_remap(source: &str, path: &str, name: &str) -> Result<String> {
    let fail = |what: String, e: Errno| Error::new(ErrorCode::Kernel, format!("{source}: link remap of {path}: {what}: {}", e.desc()));
    // O_RDONLY is 0: with O_PATH this opens the file for reference only
    let src = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(source)
        .map_err(|e| Error::new(ErrorCode::Kernel, format!("{source}: open: {e}")))?;
    let cname = std::ffi::CString::new(name).map_err(|_| fail(format!("bad name {name:?}"), Errno::EINVAL))?;
    let mut dir = parent_of(path);
    loop {
        match open_dir_nofollow(dir) {
            Ok(dirfd) => {
                // SAFETY: linkat with AT_EMPTY_PATH links the file of `src` (an fd we own).
                let r = unsafe { libc::linkat(src.as_raw_fd(), c"".as_ptr(), dirfd.as_raw_fd(), cname.as_ptr(), libc::AT_EMPTY_PATH) };
                if r < 0 {
                    return Err(fail(format!("linkat into {dir}"), Errno::last()));
                }
                return Ok(if dir == "/" { format!("/{name}") } else { format!("{dir}/{name}") });
            }
            Err(Errno::ENOENT) if dir != "/" => dir = parent_of(dir),
            Err(e) => return Err(fail(format!("opening {dir} (no symlinks followed)"), e)),
        }
    }
}

/// Removes a link `link_remap` made, if `path` still names the inode (`dev`, `ino`) it linked.
pub fn unlink_remap(path: &str, dev: u64, ino: u64) -> Result<()> {
    let fail = |what: &str, e: Errno| Error::new(ErrorCode::Kernel, format!("{path}: removing the link remap: {what}: {}", e.desc()));
    let dirfd = open_dir_nofollow(parent_of(path)).map_err(|e| fail("opening its directory", e))?;
    let name = std::ffi::CString::new(&path[path.rfind('/').map_or(0, |i| i + 1)..]).map_err(|_| fail("bad name", Errno::EINVAL))?;
    // SAFETY: stat is plain data, filled by fstatat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat writes one struct stat into `st`.
    if unsafe { libc::fstatat(dirfd.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } < 0 {
        let e = Errno::last();
        return if e == Errno::ENOENT { Ok(()) } else { Err(fail("stat", e)) };
    }
    if st.st_dev != dev || st.st_ino != ino {
        return Ok(()); // someone else's file by now: not ours to remove
    }
    // SAFETY: unlinkat on a name in a directory fd we own.
    if unsafe { libc::unlinkat(dirfd.as_raw_fd(), name.as_ptr(), 0) } < 0 {
        return Err(fail("unlinkat", Errno::last()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn link_remap_links_the_open_file_and_unlinks_only_it() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("tsdump-remap-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let keep = dir.join("keep");
        std::fs::write(&keep, b"data").unwrap();
        let f = File::open(&keep).unwrap();
        let gone = dir.join("sub/gone"); // its directory does not exist: the link goes one up
        let made = link_remap(&format!("/proc/self/fd/{}", f.as_raw_fd()), gone.to_str().unwrap(), "link_remap.7").unwrap();
        assert_eq!(made, dir.join("link_remap.7").to_str().unwrap());
        let md = std::fs::metadata(&made).unwrap();
        assert_eq!((md.dev(), md.ino(), md.nlink()), (f.metadata().unwrap().dev(), f.metadata().unwrap().ino(), 2));
        // another inode there is left alone; ours is removed
        unlink_remap(&made, md.dev(), md.ino() + 1).unwrap();
        assert!(std::path::Path::new(&made).exists());
        unlink_remap(&made, md.dev(), md.ino()).unwrap();
        assert!(!std::path::Path::new(&made).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn data_extents_skip_holes() {
        let dir = std::env::temp_dir().join(format!("tsdump-extents-{}", std::process::id()));
        let mut f = File::create(&dir).unwrap();
        f.set_len(1 << 24).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[1u8; 4096], 1 << 20).unwrap();
        f.write_all_at(&[2u8; 10], (1 << 24) - 10).unwrap();
        f.flush().unwrap();
        let got = data_extents(dir.to_str().unwrap(), 1 << 24);
        std::fs::remove_file(&dir).unwrap();
        let got = got.unwrap();
        // block granularity depends on the file system; the holes between must stay holes
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].0 <= 1 << 20 && got[0].0 + got[0].1 >= (1 << 20) + 4096 && got[0].1 < 1 << 20, "{got:?}");
        assert_eq!(got[1].0 + got[1].1, 1 << 24, "{got:?}");
        assert!(got[1].1 < 1 << 20, "{got:?}");
    }

    #[test]
    fn peek_leaves_pipe_data_in_place() {
        let (rd, wr) = nix::unistd::pipe().unwrap();
        let mut w = File::from(wr);
        w.write_all(b"queued bytes").unwrap();
        let me = std::process::id() as i32;
        let got = peek_pipe(me, rd.as_raw_fd()).unwrap();
        assert_eq!(got.data, b"queued bytes");
        assert!(got.capacity >= 4096);
        let mut again = [0u8; 12];
        File::from(rd).read_exact(&mut again).unwrap();
        assert_eq!(&again, b"queued bytes");
    }

    #[test]
    fn mountinfo_paths_unescape() {
        assert_eq!(unescape_mountinfo("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/end\\"), "/end\\");
    }

    #[test]
    fn kcmp_sees_own_vm() {
        let me = std::process::id() as i32;
        assert!(kcmp_same(me, me, KcmpType::Vm, 0, 0).unwrap());
    }
}
