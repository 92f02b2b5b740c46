//! Dirty-page tracking between a pre-dump and the next (pre-)dump.
//!
//! Two methods:
//! - soft-dirty: write "4" to /proc/PID/clear_refs, later pages with PM_SOFT_DIRTY (bit 55) in
//!   pagemap were written. Needs CONFIG_MEM_SOFT_DIRTY (never on arm64).
//! - uffd-wp: a userfaultfd created *inside the task* (injected syscalls) in async write-protect
//!   mode (UFFD_FEATURE_WP_ASYNC): every private writable VMA is registered for WP and
//!   write-protected; the kernel resolves write faults itself, clearing the PTE's uffd-wp bit,
//!   and PAGEMAP_SCAN's PAGE_IS_WRITTEN reports exactly those pages. The userfaultfd stays open
//!   in the task between the pre-dump and the dump (closing it would drop the protection); the
//!   dump skips it in the fd table and closes it by an injected close.
//!
//! Whatever a method cannot vouch for counts as written: a VMA that could not be registered
//! (or appeared after the arm) has no uffd-wp bits, so all its pages read as written.
//!
//! Only private anonymous memory is tracked. Both methods keep their bits in one mapping's page
//! tables, and a shared object is written through other mappings too: another task's, or a child
//! forked after the arm (its copy of the mapping is not armed) that may be gone by the dump. No
//! bit anywhere then says the page changed (measured: `uffd_wp_cannot_vouch_for_shared_memory`),
//! so shared memory is written whole by every dump, as CRIU does unless CRIU_TRACK_SHMEM is set.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use nix::errno::Errno;

use crate::arch::nr;
use crate::error::{Error, ErrorCode, Result};
use crate::parasite::Injector;

use super::pagemap::{pagemap_scan, Run};
use super::vma::{page_size, Decision};
use super::{PagemapEntry, VmaReport, PE_PARENT, PE_PRESENT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    SoftDirty,
    UffdWp,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::SoftDirty => "soft-dirty",
            Method::UffdWp => "uffd-wp",
        }
    }
    pub fn parse(s: &str) -> Option<Method> {
        match s {
            "soft-dirty" => Some(Method::SoftDirty),
            "uffd-wp" => Some(Method::UffdWp),
            _ => None,
        }
    }
}

const PM_SOFT_DIRTY: u64 = 1 << 55;
const PAGE_IS_WRITTEN: u64 = 1 << 1;

const UFFD_API: u64 = 0xAA;
pub(crate) const UFFD_USER_MODE_ONLY: u64 = 1;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
// _IOWR(0xAA, 0x3F, struct uffdio_api): 24 bytes
const UFFDIO_API: u64 = 0xC018_AA3F;
// _IOWR(0xAA, 0x00, struct uffdio_register): 32 bytes
const UFFDIO_REGISTER: u64 = 0xC020_AA00;
// _IOWR(0xAA, 0x06, struct uffdio_writeprotect): 24 bytes
const UFFDIO_WRITEPROTECT: u64 = 0xC018_AA06;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;

/// userfaultfd features this kernel offers (asked on a userfaultfd of our own).
pub fn uffd_features() -> Result<u64> {
    // SAFETY: userfaultfd takes only flags; the fd is owned right after.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, (libc::O_CLOEXEC as u64 | UFFD_USER_MODE_ONLY) as libc::c_long) };
    if fd < 0 {
        return Err(Error::new(ErrorCode::Kernel, format!("userfaultfd: {}", Errno::last().desc())));
    }
    // SAFETY: the kernel just returned this fd to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut api: [u64; 3] = [UFFD_API, 0, 0];
    // SAFETY: UFFDIO_API with a 24-byte struct uffdio_api.
    if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API as _, api.as_mut_ptr()) } < 0 {
        return Err(Error::new(ErrorCode::Kernel, format!("UFFDIO_API: {}", Errno::last().desc())));
    }
    Ok(api[1])
}

/// The method this kernel supports: soft-dirty where it tracks (CRIU's way), else uffd-wp async
/// with PAGEMAP_SCAN. None when neither works.
pub fn pick_method(soft_dirty: bool) -> Option<Method> {
    if soft_dirty {
        return Some(Method::SoftDirty);
    }
    match uffd_features() {
        Ok(f) if f & UFFD_FEATURE_WP_ASYNC != 0 => Some(Method::UffdWp),
        _ => None,
    }
}

/// What an arm left behind in the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Armed {
    /// The userfaultfd's number in the task (uffd-wp).
    pub fd: Option<i32>,
    /// VMAs (pieces) registered and write-protected.
    pub vmas: u64,
    /// VMAs the kernel refused to register (always dumped whole next time).
    pub refused: u64,
}

/// Whether a VMA is tracked: private anonymous memory, where the data is. (The kernel turns
/// WP_UNPOPULATED on with WP_ASYNC, so untouched pages get PTE markers; the scan treats markers
/// as holes, see pagemap::is_pte_marker.) Other VMAs are dumped whole every time.
fn trackable(r: &VmaReport) -> bool {
    r.decision == Decision::Anon && r.vma.inode == 0 && !r.vma.shared
}

/// Starts tracking `pid`'s writes from now on. `vmas` come from the plan of the same freeze
/// (the parasite's own scratch already left out).
pub fn arm(inj: &mut Injector, method: Method, vmas: &[VmaReport]) -> Result<Armed> {
    match method {
        Method::SoftDirty => arm_soft_dirty(inj.pid(), vmas),
        Method::UffdWp => arm_uffd(inj, vmas),
    }
}

/// What a run does with tracking in the freeze that scanned the task: end the previous run's
/// (its userfaultfd `close_fd` in the task, if that still is one) and start `arm`'s, so that no
/// write falls between two trackings. `vmas` come from this freeze's scan.
pub fn retrack(inj: &mut Injector, close_fd: Option<i32>, arm_with: Option<Method>, vmas: &[VmaReport]) -> Result<Option<(Method, Armed)>> {
    let pid = inj.pid();
    if let Some(fd) = close_fd.filter(|&fd| is_tracking_uffd(pid, fd)) {
        disarm(inj, fd)?;
    }
    match arm_with {
        Some(m) => Ok(Some((m, arm(inj, m, vmas)?))),
        None => Ok(None),
    }
}

/// Soft-dirty needs no injection: clearing the bits of the whole address space restarts it.
fn arm_soft_dirty(pid: i32, vmas: &[VmaReport]) -> Result<Armed> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "4").map_err(|e| Error::new(ErrorCode::Procfs, format!("pid {pid}: writing 4 to {path}: {e}")))?;
    Ok(Armed { fd: None, vmas: vmas.iter().filter(|r| trackable(r)).count() as u64, refused: 0 })
}

fn arm_uffd(inj: &mut Injector, vmas: &[VmaReport]) -> Result<Armed> {
    let pid = inj.pid();
    let features = uffd_features()?;
    if features & UFFD_FEATURE_WP_ASYNC == 0 {
        return Err(Error::new(ErrorCode::Unsupported, format!("pid {pid}: this kernel's userfaultfd lacks WP_ASYNC")));
    }
    let want = UFFD_FEATURE_WP_ASYNC;
    let flags = libc::O_CLOEXEC as u64 | UFFD_USER_MODE_ONLY;
    let fd = inj.syscall_ok(pid, libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0], "userfaultfd")?;
    let r = (|| -> Result<Armed> {
        let off = Injector::DATA_OFFSET;
        let mut api = Vec::with_capacity(24);
        for v in [UFFD_API, want, 0] {
            api.extend_from_slice(&v.to_ne_bytes());
        }
        inj.write(off, &api)?;
        inj.syscall_ok(pid, libc::SYS_ioctl, [fd as u64, UFFDIO_API, inj.remote(off), 0, 0, 0], "ioctl(UFFDIO_API)")?;
        let (mut done, mut refused) = (0, 0);
        for r in vmas.iter().filter(|r| trackable(r)) {
            let (start, len) = (r.vma.start, r.vma.len());
            let mut reg = Vec::with_capacity(32);
            for v in [start, len, UFFDIO_REGISTER_MODE_WP, 0] {
                reg.extend_from_slice(&v.to_ne_bytes());
            }
            inj.write(off, &reg)?;
            let rc = inj.syscall(pid, libc::SYS_ioctl, [fd as u64, UFFDIO_REGISTER, inj.remote(off), 0, 0, 0])?;
            if rc < 0 {
                refused += 1;
                continue;
            }
            let mut wp = Vec::with_capacity(24);
            for v in [start, len, UFFDIO_WRITEPROTECT_MODE_WP] {
                wp.extend_from_slice(&v.to_ne_bytes());
            }
            inj.write(off, &wp)?;
            let what = format!("ioctl(UFFDIO_WRITEPROTECT) {start:#x}-{:#x}", start + len);
            inj.syscall_ok(pid, libc::SYS_ioctl, [fd as u64, UFFDIO_WRITEPROTECT, inj.remote(off), 0, 0, 0], &what)?;
            done += 1;
        }
        Ok(Armed { fd: Some(fd as i32), vmas: done, refused })
    })();
    if r.is_err() {
        let _ = inj.syscall(pid, nr::CLOSE, [fd as u64, 0, 0, 0, 0, 0]);
    }
    r
}

/// Whether fd `fd` of `pid` is a userfaultfd in async write-protect mode (ours, from an arm):
/// a recorded number is checked before the task's fd is skipped or closed.
pub fn is_tracking_uffd(pid: i32, fd: i32) -> bool {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}"));
    if !link.is_ok_and(|l| l.to_string_lossy() == "anon_inode:[userfaultfd]") {
        return false;
    }
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("API:"))
        // "API:\taa:8000a000:80000000000001ff": api, features, ioctls in hex
        .and_then(|v| v.trim().split(':').nth(1))
        .and_then(|f| u64::from_str_radix(f, 16).ok())
        .is_some_and(|f| f & UFFD_FEATURE_WP_ASYNC != 0)
}

/// Closes the task's userfaultfd `fd` (which ends the tracking).
pub fn disarm(inj: &mut Injector, fd: i32) -> Result<()> {
    let pid = inj.pid();
    inj.syscall_ok(pid, nr::CLOSE, [fd as u64, 0, 0, 0, 0, 0], "close(userfaultfd)").map(|_| ())
}

/// An incremental scan: what the parent images hold, and how to tell written pages.
#[derive(Debug, Clone)]
pub struct Incremental {
    pub method: Method,
    /// Pages the parent images can give (their pagemap entries, present or in a grandparent),
    /// sorted by address.
    pub parent: Vec<Run>,
}

/// Written ranges of `[start, end)` since the arm.
fn written(pm: &File, method: Method, start: u64, end: u64) -> Result<Vec<(u64, u64)>> {
    match method {
        Method::UffdWp => pagemap_scan(pm, start, end, 0, PAGE_IS_WRITTEN, 0)?
            .ok_or_else(|| Error::new(ErrorCode::Unsupported, "PAGEMAP_SCAN is missing: cannot read uffd-wp tracking")),
        Method::SoftDirty => {
            let ps = page_size();
            let n = ((end - start) / ps) as usize;
            let mut buf = vec![0u8; n * 8];
            pm.read_exact_at(&mut buf, start / ps * 8)
                .map_err(|e| Error::new(ErrorCode::Procfs, format!("reading pagemap at {start:#x}: {e}")))?;
            let entries: Vec<u64> = buf.chunks_exact(8).map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes"))).collect();
            Ok(soft_dirty_ranges(start, ps, &entries))
        }
    }
}

/// The soft-dirty pages among pagemap entries `entries` of consecutive pages from `start`, as
/// sorted ranges. Pure, so the soft-dirty path is unit-tested on kernels without soft-dirty.
fn soft_dirty_ranges(start: u64, ps: u64, entries: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e & PM_SOFT_DIRTY == 0 {
            continue;
        }
        let a = start + i as u64 * ps;
        match out.last_mut() {
            Some(l) if l.1 == a => l.1 = a + ps,
            _ => out.push((a, a + ps)),
        }
    }
    out
}

/// Cuts `[s, e)` by the sorted ranges `cover` into (piece, covered) in address order.
fn cut(s: u64, e: u64, cover: &[(u64, u64)]) -> Vec<(u64, u64, bool)> {
    let mut out = Vec::new();
    let mut at = s;
    let first = cover.partition_point(|c| c.1 <= s);
    for &(cs, ce) in &cover[first..] {
        if cs >= e {
            break;
        }
        let (cs, ce) = (cs.max(at), ce.min(e));
        if cs > at {
            out.push((at, cs, false));
        }
        if ce > cs {
            out.push((cs, ce, true));
            at = ce;
        }
    }
    if at < e {
        out.push((at, e, false));
    }
    out
}

/// Splits the runs of a scan into pages to drain (written since the arm, or not in the parent)
/// and pages left in the parent (PE_PARENT entries, no data). Returns (runs to drain, pagemap
/// entries in address order, pages left in the parent).
pub fn split(pid: i32, runs: &[Run], inc: &Incremental) -> Result<(Vec<Run>, Vec<PagemapEntry>, u64)> {
    let path = format!("/proc/{pid}/pagemap");
    let pm = File::open(&path).map_err(|e| Error::new(ErrorCode::Procfs, format!("pid {pid}: opening {path}: {e}")))?;
    split_with(runs, &inc.parent, |s, e| {
        written(&pm, inc.method, s, e).map_err(|err| Error::new(err.code, format!("pid {pid}: tracking scan: {}", err.message)))
    })
}

/// `split` with the written ranges of `[start, end)` given by `written` (whatever the method).
fn split_with(
    runs: &[Run],
    parent: &[Run],
    mut written: impl FnMut(u64, u64) -> Result<Vec<(u64, u64)>>,
) -> Result<(Vec<Run>, Vec<PagemapEntry>, u64)> {
    let ps = page_size();
    let parent: Vec<(u64, u64)> = parent.iter().map(|r| (r.vaddr, r.vaddr + r.nr_pages * ps)).collect();
    let (mut drain, mut entries, mut in_parent) = (Vec::new(), Vec::<PagemapEntry>::new(), 0u64);
    let push = |entries: &mut Vec<PagemapEntry>, s: u64, e: u64, flags: u32| {
        let n = (e - s) / ps;
        match entries.last_mut() {
            Some(l) if l.flags == flags && l.vaddr + l.nr_pages as u64 * ps == s && l.nr_pages as u64 + n <= u32::MAX as u64 => {
                l.nr_pages += n as u32
            }
            _ => entries.push(PagemapEntry { vaddr: s, nr_pages: n as u32, flags }),
        }
    };
    for r in runs {
        let (s, e) = (r.vaddr, r.vaddr + r.nr_pages * ps);
        let w = written(s, e)?;
        for (ps_, pe, dirty) in cut(s, e, &w) {
            // Clean pages come from the parent only where the parent really has them.
            let pieces = if dirty { vec![(ps_, pe, false)] } else { cut(ps_, pe, &parent) };
            for (a, b, from_parent) in pieces {
                if from_parent {
                    in_parent += (b - a) / ps;
                    push(&mut entries, a, b, PE_PARENT);
                } else {
                    match drain.last_mut() {
                        Some(Run { vaddr, nr_pages }) if *vaddr + *nr_pages * ps == a => *nr_pages += (b - a) / ps,
                        _ => drain.push(Run { vaddr: a, nr_pages: (b - a) / ps }),
                    }
                    push(&mut entries, a, b, PE_PRESENT);
                }
            }
        }
    }
    Ok((drain, entries, in_parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_marks_covered_pieces() {
        assert_eq!(cut(0, 10, &[]), vec![(0, 10, false)]);
        assert_eq!(cut(0, 10, &[(2, 4), (6, 12)]), vec![(0, 2, false), (2, 4, true), (4, 6, false), (6, 10, true)]);
        assert_eq!(cut(5, 8, &[(0, 6)]), vec![(5, 6, true), (6, 8, false)]);
    }

    /// Arms uffd-wp on a mapping of our own (no injection: same ioctls), writes a few pages and
    /// checks PAGE_IS_WRITTEN reports exactly those.
    #[test]
    fn uffd_wp_async_reports_written_pages() {
        let f = match uffd_features() {
            Ok(f) if f & UFFD_FEATURE_WP_ASYNC != 0 => f,
            _ => return, // the kernel lacks it: nothing to test here
        };
        let _ = f;
        let ps = page_size() as usize;
        let n = 64;
        // SAFETY: a private anonymous mapping of our own, unmapped at the end.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), n * ps, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        } as *mut u8;
        // SAFETY: inside the mapping.
        unsafe {
            libc::madvise(p.cast(), n * ps, libc::MADV_NOHUGEPAGE);
            for i in 0..48 {
                *p.add(i * ps) = 1;
            }
        }
        // SAFETY: userfaultfd takes only flags.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, (libc::O_CLOEXEC as u64 | UFFD_USER_MODE_ONLY) as libc::c_long) } as i32;
        assert!(fd >= 0);
        // SAFETY: ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut api = [UFFD_API, UFFD_FEATURE_WP_ASYNC, 0];
        let mut reg = [p as u64, (n * ps) as u64, UFFDIO_REGISTER_MODE_WP, 0];
        let mut wp = [p as u64, (n * ps) as u64, UFFDIO_WRITEPROTECT_MODE_WP];
        // SAFETY: the uffd ioctls with their structs of the right size.
        unsafe {
            assert_eq!(libc::ioctl(fd.as_raw_fd(), UFFDIO_API as _, api.as_mut_ptr()), 0);
            assert_eq!(libc::ioctl(fd.as_raw_fd(), UFFDIO_REGISTER as _, reg.as_mut_ptr()), 0);
            assert_eq!(libc::ioctl(fd.as_raw_fd(), UFFDIO_WRITEPROTECT as _, wp.as_mut_ptr()), 0);
            for i in [3usize, 4, 40] {
                *p.add(i * ps) = 2;
            }
        }
        let pm = File::open("/proc/self/pagemap").unwrap();
        let w = written(&pm, Method::UffdWp, p as u64, p as u64 + (n * ps) as u64).unwrap();
        // Untouched pages stay out of the scan (no markers read as swapped pages).
        let v = super::super::Vma {
            start: p as u64,
            end: p as u64 + (n * ps) as u64,
            prot: 3,
            shared: false,
            offset: 0,
            dev: "00:00".into(),
            inode: 0,
            path: String::new(),
            vm_flags: vec![],
        };
        let (mut runs, mut counts) = (Vec::new(), super::super::Counts::default());
        assert!(super::super::pagemap::scan_vma_fast(&pm, &v, Decision::Anon, &mut runs, &mut counts).unwrap());
        assert_eq!(counts.dump, 48);
        let runs = [Run { vaddr: p as u64, nr_pages: 48 }];
        let inc = Incremental { method: Method::UffdWp, parent: runs.to_vec() };
        let (drain, entries, in_parent) = split(std::process::id() as i32, &runs, &inc).unwrap();
        assert!(is_tracking_uffd(std::process::id() as i32, fd.as_raw_fd()));
        drop(fd);
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(p.cast(), n * ps) };
        let b = p as u64;
        assert_eq!(w, vec![(b + 3 * ps as u64, b + 5 * ps as u64), (b + 40 * ps as u64, b + 41 * ps as u64)]);
        assert_eq!(drain, vec![Run { vaddr: b + 3 * ps as u64, nr_pages: 2 }, Run { vaddr: b + 40 * ps as u64, nr_pages: 1 }]);
        assert_eq!(in_parent, 45);
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[0], PagemapEntry { vaddr: b, nr_pages: 3, flags: PE_PARENT });
        assert_eq!(entries[1], PagemapEntry { vaddr: b + 3 * ps as u64, nr_pages: 2, flags: PE_PRESENT });
    }

    #[test]
    fn soft_dirty_pages_group_into_ranges() {
        let sd = PM_SOFT_DIRTY | (1 << 63);
        let entries = [0, sd, sd, 1 << 63, sd, 0, sd];
        assert_eq!(soft_dirty_ranges(0x10000, 0x1000, &entries), vec![(0x11000, 0x13000), (0x14000, 0x15000), (0x16000, 0x17000)]);
        assert_eq!(soft_dirty_ranges(0x10000, 0x1000, &[]), vec![]);
    }

    /// The soft-dirty decision path (this kernel has no soft-dirty, so it cannot run live): the
    /// method is picked where the kernel tracks, and pagemap entries carrying bit 55 decide which
    /// pages are drained and which stay in the parent, exactly like uffd-wp's written ranges do.
    #[test]
    fn soft_dirty_decides_what_is_drained() {
        assert_eq!(pick_method(true), Some(Method::SoftDirty));
        let ps = page_size();
        let base = 0x7f00_0000_0000u64;
        // 8 pages: pages 2 and 5 soft-dirty; the parent holds pages 0..6 only.
        let mut pm = [1u64 << 63; 8];
        pm[2] |= PM_SOFT_DIRTY;
        pm[5] |= PM_SOFT_DIRTY;
        let runs = [Run { vaddr: base, nr_pages: 8 }];
        let parent = [Run { vaddr: base, nr_pages: 6 }];
        let (drain, entries, in_parent) =
            split_with(&runs, &parent, |s, e| Ok(soft_dirty_ranges(base, ps, &pm[((s - base) / ps) as usize..((e - base) / ps) as usize]))).unwrap();
        let at = |i: u64| base + i * ps;
        assert_eq!(drain, vec![Run { vaddr: at(2), nr_pages: 1 }, Run { vaddr: at(5), nr_pages: 3 }]);
        assert_eq!(in_parent, 4);
        assert_eq!(
            entries,
            vec![
                PagemapEntry { vaddr: at(0), nr_pages: 2, flags: PE_PARENT },
                PagemapEntry { vaddr: at(2), nr_pages: 1, flags: PE_PRESENT },
                PagemapEntry { vaddr: at(3), nr_pages: 2, flags: PE_PARENT },
                PagemapEntry { vaddr: at(5), nr_pages: 3, flags: PE_PRESENT },
            ]
        );
    }

    #[test]
    fn soft_dirty_arm_writes_clear_refs() {
        // Accepted whether or not the kernel tracks soft-dirty (without it the write is a no-op).
        let a = arm_soft_dirty(std::process::id() as i32, &[]).unwrap();
        assert_eq!(a, Armed { fd: None, vmas: 0, refused: 0 });
    }

    /// Why shared anonymous memory is not tracked (the dump writes it whole, as CRIU does unless
    /// CRIU_TRACK_SHMEM is set): uffd-wp bits live in one mapping's page tables, so a write
    /// through another mapping of the same object (another task, or a child forked after the arm
    /// that exits before the dump) leaves the armed mapping's pages looking clean. A write
    /// followed by a zap (MADV_DONTNEED) is caught on this kernel: the hole reads as written.
    #[test]
    fn uffd_wp_cannot_vouch_for_shared_memory() {
        if !uffd_features().is_ok_and(|f| f & UFFD_FEATURE_WP_ASYNC != 0) {
            return;
        }
        let ps = page_size() as usize;
        let n = 8;
        let len = n * ps;
        // SAFETY: a shared anonymous mapping of our own, unmapped at the end.
        let a = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0) } as *mut u8;
        assert_ne!(a as *mut libc::c_void, libc::MAP_FAILED);
        // SAFETY: inside the mapping; mremap with old_size 0 maps the same object a second time.
        let b = unsafe {
            for i in 0..n {
                *a.add(i * ps) = 1;
            }
            libc::mremap(a.cast(), 0, len, libc::MREMAP_MAYMOVE)
        } as *mut u8;
        assert_ne!(b as *mut libc::c_void, libc::MAP_FAILED);
        // SAFETY: userfaultfd takes only flags.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, (libc::O_CLOEXEC as u64 | UFFD_USER_MODE_ONLY) as libc::c_long) } as i32;
        assert!(fd >= 0);
        // SAFETY: ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut api = [UFFD_API, UFFD_FEATURE_WP_ASYNC, 0];
        let mut reg = [a as u64, len as u64, UFFDIO_REGISTER_MODE_WP, 0];
        let mut wp = [a as u64, len as u64, UFFDIO_WRITEPROTECT_MODE_WP];
        // SAFETY: the uffd ioctls with their structs of the right size.
        unsafe {
            assert_eq!(libc::ioctl(fd.as_raw_fd(), UFFDIO_API as _, api.as_mut_ptr()), 0);
            assert_eq!(libc::ioctl(fd.as_raw_fd(), UFFDIO_REGISTER as _, reg.as_mut_ptr()), 0, "shmem registers with WP_ASYNC");
            assert_eq!(libc::ioctl(fd.as_raw_fd(), UFFDIO_WRITEPROTECT as _, wp.as_mut_ptr()), 0);
        }
        let pm = File::open("/proc/self/pagemap").unwrap();
        let page = |i: usize| (a as u64 + (i * ps) as u64, a as u64 + ((i + 1) * ps) as u64);
        let is_written = |i: usize| !written(&pm, Method::UffdWp, page(i).0, page(i).1).unwrap().is_empty();
        assert!(!is_written(0));
        // SAFETY: inside the mappings.
        unsafe {
            *a.add(ps) = 2;
            *b.add(2 * ps) = 3;
            *a.add(3 * ps) = 4;
            libc::madvise(a.add(3 * ps).cast(), ps, libc::MADV_DONTNEED);
        }
        assert!(is_written(1), "a write through the armed mapping is seen");
        assert!(!is_written(2), "a write through another mapping of the object is not");
        assert!(is_written(3), "a written page zapped since reads as written");
        // SAFETY: the child only stores to memory and exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: inside the mapping; _exit is async-signal-safe.
            unsafe {
                *a.add(4 * ps) = 9;
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        // SAFETY: inside the mapping.
        assert_eq!(unsafe { std::ptr::read_volatile(a.add(4 * ps)) }, 9);
        assert!(!is_written(4), "a forked child's write, the child gone, leaves no trace");
        drop(fd);
        // SAFETY: unmapping what we mapped.
        unsafe {
            libc::munmap(a.cast(), len);
            libc::munmap(b.cast(), len);
        }
    }

    #[test]
    fn only_private_anonymous_memory_is_tracked() {
        let v = |shared: bool, inode: u64| super::super::Vma {
            start: 0x1000,
            end: 0x2000,
            prot: 3,
            shared,
            offset: 0,
            dev: "00:00".into(),
            inode,
            path: String::new(),
            vm_flags: vec![],
        };
        let r = |vma, decision| VmaReport { vma, decision, reason: "", pages_dumped: 0 };
        assert!(trackable(&r(v(false, 0), Decision::Anon)));
        assert!(!trackable(&r(v(true, 5), Decision::Shmem)));
        assert!(!trackable(&r(v(false, 7), Decision::FileCow)));
    }
}
