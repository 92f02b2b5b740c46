//! Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, memfd), dumped once per object rather
//! than per task, as CRIU does: the object is opened through /proc/PID/map_files/START-END (a
//! memfd also through /proc/PID/fd/N, see `super::memfd`), its allocated ranges found with
//! SEEK_DATA/SEEK_HOLE (holes read as zeros on restore and are not written), and the pages
//! written in order. Pagemap entries count `vaddr` from the start of the
//! object (CRIU's pagemap-shmem-INO.img), so every task mapping it, at any address, restores it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};

use nix::errno::Errno;

use crate::error::{Error, ErrorCode, Result};
use crate::images_dir::NewFile;

use super::drain::{FdSink, PageSink};
use super::vma::page_size;
use super::{PagemapEntry, PE_PRESENT};

#[derive(Debug, Clone)]
pub struct ShmemDump {
    /// The object's inode: CRIU's shmid, naming pagemap-shmem-INO.img.
    pub ino: u64,
    /// Object size in bytes.
    pub size: u64,
    pub entries: Vec<PagemapEntry>,
    pub pages_written: u64,
}

/// Opens the object behind the mapping `[start, end)` of `pid`.
pub fn open_object(pid: i32, start: u64, end: u64) -> Result<File> {
    let path = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
    File::open(&path).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound { ErrorCode::EsrchTarget } else { ErrorCode::Procfs };
        Error::new(code, format!("pid {pid}: opening {path}: {e}"))
    })
}

fn seek(f: &File, off: u64, whence: libc::c_int) -> Result<Option<u64>> {
    // SAFETY: lseek on an fd we own.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, whence) };
    if r < 0 {
        let e = Errno::last();
        if e == Errno::ENXIO {
            return Ok(None);
        }
        return Err(Error::new(ErrorCode::Kernel, format!("lseek on a shared memory object: {}", e.desc())));
    }
    Ok(Some(r as u64))
}

/// Allocated page ranges `[from, to)` (page-aligned byte offsets) of a shmem file of `size`.
pub fn data_ranges(f: &File, size: u64) -> Result<Vec<(u64, u64)>> {
    let ps = page_size();
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut off = 0;
    while off < size {
        let Some(data) = seek(f, off, libc::SEEK_DATA)? else { break };
        if data >= size {
            break;
        }
        let hole = seek(f, data, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
        let (from, to) = (data / ps * ps, hole.div_ceil(ps) * ps);
        match out.last_mut() {
            Some(last) if last.1 >= from => last.1 = last.1.max(to),
            _ => out.push((from, to)),
        }
        off = to.max(off + ps);
    }
    Ok(out)
}

/// Dumps the object mapped at `[start, end)` in `pid` into `pages`.
pub fn dump_shmem(pid: i32, start: u64, end: u64, pages: &NewFile) -> Result<ShmemDump> {
    let f = open_object(pid, start, end)?;
    let meta = f.metadata().map_err(|e| Error::new(ErrorCode::Procfs, format!("pid {pid}: fstat of shared mapping {start:#x}: {e}")))?;
    let size = meta.size();
    let (entries, pages_written) = write_pages(&f, size, pages, &format!("pid {pid}: shared object mapped at {start:#x}"))?;
    Ok(ShmemDump { ino: meta.ino(), size, entries, pages_written })
}

/// Writes the allocated pages of the shmem file `f` (`size` bytes) into `pages`, in order;
/// the pagemap entries count `vaddr` from the start of the object. `what` names the object in
/// errors. Returns the entries and the number of pages written.
pub fn write_pages(f: &File, size: u64, pages: &NewFile, what: &str) -> Result<(Vec<PagemapEntry>, u64)> {
    let ps = page_size();
    let ranges = data_ranges(f, size)?;
    let mut sink = FdSink::create_file(pages)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut entries = Vec::new();
    for &(from, to) in &ranges {
        let mut off = from;
        while off < to {
            let n = (buf.len() as u64).min(to - off) as usize;
            // The last page may run past the end of a size that is not page-aligned: zeros.
            let avail = size.saturating_sub(off).min(n as u64) as usize;
            f.read_exact_at(&mut buf[..avail], off)
                .map_err(|e| Error::new(ErrorCode::Kernel, format!("{what}: reading at {off:#x}: {e}")))?;
            buf[avail..n].fill(0);
            sink.write_buf(&buf[..n])?;
            off += n as u64;
        }
        entries.push(PagemapEntry { vaddr: from, nr_pages: ((to - from) / ps) as u32, flags: PE_PRESENT });
    }
    Ok((entries, sink.written() / ps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_data_and_holes_of_a_memfd() {
        let fd = crate::sys::memfd_create(c"t", 0);
        assert!(fd >= 0);
        // SAFETY: fd is a fresh, owned descriptor.
        let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        f.set_len(64 * 4096).unwrap();
        f.write_at(&[1u8; 4096], 4 * 4096).unwrap();
        f.write_at(&[2u8; 8192], 10 * 4096).unwrap();
        assert_eq!(data_ranges(&f, 64 * 4096).unwrap(), vec![(4 * 4096, 5 * 4096), (10 * 4096, 12 * 4096)]);
    }
}
