//! memfd files (memfd_create). A memfd is one shmem inode, however many fds (in any task) and
//! mappings (with or without an fd left) refer to it, and CRIU dumps it once: a memfd.img entry
//! with its name, owner, size and seals, and its contents in the shared-memory page format
//! (pagemap-shmem-SHMID.img + a pages image, see `super::shmem`) where the shmid is the inode
//! number. The inode is reached through a task that holds it: /proc/PID/fd/N, or
//! /proc/PID/map_files/START-END when only a mapping is left. Page data never leaves Rust.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use nix::errno::Errno;

use crate::error::{Error, ErrorCode, Result};
use crate::images_dir::NewFile;

use super::shmem::write_pages;
use super::PagemapEntry;

/// Where the memfd is reached in the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An open descriptor of the task.
    Fd(i32),
    /// A mapping `[start, end)` of the task.
    Mapping { start: u64, end: u64 },
}

impl Source {
    fn proc_path(self, pid: i32) -> String {
        match self {
            Source::Fd(fd) => format!("/proc/{pid}/fd/{fd}"),
            Source::Mapping { start, end } => format!("/proc/{pid}/map_files/{start:x}-{end:x}"),
        }
    }

    fn unsupported(self) -> ErrorCode {
        match self {
            Source::Fd(_) => ErrorCode::UnsupportedFd,
            Source::Mapping { .. } => ErrorCode::UnsupportedVma,
        }
    }
}

#[derive(Debug, Clone)]
pub struct MemfdDump {
    /// The inode: CRIU's shmid for the contents (pagemap-shmem-INO.img).
    pub ino: u64,
    pub size: u64,
    /// st_mode, owner and F_GET_SEALS of the inode.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub seals: u32,
    /// Pagemap entries of the contents, `vaddr` counted from the start of the file.
    pub entries: Vec<PagemapEntry>,
    pub pages_written: u64,
    /// False for an empty memfd: like CRIU, no pages image and no pagemap are written for it.
    pub wrote_pages: bool,
}

/// The device of the kernel's internal shmem mount, which every (non-hugetlb) memfd and every
/// MAP_SHARED|MAP_ANONYMOUS object lives on: found once by creating a memfd of our own.
pub fn shmem_device() -> Result<u64> {
    static DEV: OnceLock<u64> = OnceLock::new();
    if let Some(d) = DEV.get() {
        return Ok(*d);
    }
    let fd = crate::sys::memfd_create(c"tsdump-shmem-dev", libc::MFD_CLOEXEC);
    if fd < 0 {
        return Err(Error::new(ErrorCode::Kernel, format!("memfd_create: {}", Errno::last().desc())));
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let dev = f.metadata().map_err(|e| Error::new(ErrorCode::Kernel, format!("fstat of our own memfd: {e}")))?.dev();
    Ok(*DEV.get_or_init(|| dev))
}

/// A device number as /proc/PID/maps prints it: (major, minor).
pub fn split_device(dev: u64) -> (u32, u32) {
    (libc::major(dev), libc::minor(dev))
}

fn seals_of(f: &File, what: &str) -> Result<u32> {
    // SAFETY: fcntl(F_GET_SEALS) on an fd we own; no pointers involved.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    if r < 0 {
        return Err(Error::new(ErrorCode::Kernel, format!("{what}: F_GET_SEALS: {}", Errno::last().desc())));
    }
    Ok(r as u32)
}

/// Dumps the memfd `source` of `pid`: its metadata, and its allocated pages into `pages`
/// (not created for an empty memfd).
pub fn dump_memfd(pid: i32, source: Source, pages: &NewFile) -> Result<MemfdDump> {
    let path = source.proc_path(pid);
    let f = File::open(&path).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound { ErrorCode::EsrchTarget } else { ErrorCode::Procfs };
        Error::new(code, format!("pid {pid}: opening {path}: {e}"))
    })?;
    let what = format!("pid {pid}: memfd at {path}");
    let meta = f.metadata().map_err(|e| Error::new(ErrorCode::Procfs, format!("{what}: fstat: {e}")))?;
    if meta.dev() != shmem_device()? || !meta.file_type().is_file() {
        // hugetlbfs memfds (MFD_HUGETLB) need CRIU's hugetlb flag and page sizes
        return Err(Error::new(
            source.unsupported(),
            format!("{what}: not a shmem memfd (device {:#x}; a MFD_HUGETLB memfd?): tsdump cannot dump it yet", meta.dev()),
        ));
    }
    let seals = seals_of(&f, &what)?;
    let size = meta.size();
    let (entries, pages_written) = if size == 0 { (Vec::new(), 0) } else { write_pages(&f, size, pages, &what)? };
    Ok(MemfdDump {
        ino: meta.ino(),
        size,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        seals,
        entries,
        pages_written,
        wrote_pages: size != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images_dir::{ImagesDir, OpenOptions};
    use crate::mem::PE_PRESENT;
    use std::os::unix::fs::FileExt;

    fn memfd(name: &std::ffi::CStr, flags: libc::c_uint) -> File {
        let fd = crate::sys::memfd_create(name, flags);
        assert!(fd >= 0);
        // SAFETY: fd is a fresh, owned descriptor.
        unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    }

    #[test]
    fn dumps_a_sealed_sparse_memfd_with_an_unaligned_size() {
        let f = memfd(c"t-sealed", libc::MFD_ALLOW_SEALING);
        f.set_len(5 * 4096 + 100).unwrap();
        f.write_at(&[7u8; 4096], 4096).unwrap();
        f.write_at(b"tail", 5 * 4096 + 10).unwrap();
        // SAFETY: fcntl on an fd we own.
        assert_eq!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_GROW | libc::F_SEAL_SEAL) }, 0);
        let dir = std::env::temp_dir().join(format!("tsdump-memfd-{}", std::process::id()));
        let images = std::sync::Arc::new(ImagesDir::open(&dir, OpenOptions::CREATE).unwrap());
        let pages = dir.join("pages-1.img");
        let d = dump_memfd(std::process::id() as i32, Source::Fd(f.as_raw_fd()), &NewFile::new(&images, "pages-1.img")).unwrap();
        assert_eq!(d.ino, f.metadata().unwrap().ino());
        assert_eq!(d.size, 5 * 4096 + 100);
        assert_eq!(d.seals, (libc::F_SEAL_GROW | libc::F_SEAL_SEAL) as u32);
        assert_eq!(d.entries, vec![
            PagemapEntry { vaddr: 4096, nr_pages: 1, flags: PE_PRESENT },
            PagemapEntry { vaddr: 5 * 4096, nr_pages: 1, flags: PE_PRESENT },
        ]);
        let data = std::fs::read(&pages).unwrap();
        assert_eq!(data.len(), 2 * 4096);
        assert!(data[..4096].iter().all(|&b| b == 7));
        assert_eq!(&data[4096 + 10..4096 + 14], b"tail");
        assert!(data[4096 + 100..].iter().all(|&b| b == 0), "past the end of the file reads as zeros");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_memfd_writes_no_pages_and_sealing_off_reads_as_seal_seal() {
        let f = memfd(c"t-empty", 0);
        let dir = std::env::temp_dir().join(format!("tsdump-memfd-empty-{}", std::process::id()));
        let images = std::sync::Arc::new(ImagesDir::open(&dir, OpenOptions::CREATE).unwrap());
        let d = dump_memfd(std::process::id() as i32, Source::Fd(f.as_raw_fd()), &NewFile::new(&images, "pages-1.img")).unwrap();
        assert!(!d.wrote_pages && d.entries.is_empty() && !dir.join("pages-1.img").exists());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(d.seals, libc::F_SEAL_SEAL as u32);
    }

    #[test]
    fn a_regular_file_is_not_a_memfd() {
        let path = std::env::temp_dir().join(format!("tsdump-not-memfd-{}", std::process::id()));
        let f = File::create(&path).unwrap();
        let dir = std::env::temp_dir().join(format!("tsdump-not-memfd-d-{}", std::process::id()));
        let images = std::sync::Arc::new(ImagesDir::open(&dir, OpenOptions::CREATE).unwrap());
        let err = dump_memfd(std::process::id() as i32, Source::Fd(f.as_raw_fd()), &NewFile::new(&images, "pages-1.img")).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(err.code, ErrorCode::UnsupportedFd, "{err}");
    }
}
