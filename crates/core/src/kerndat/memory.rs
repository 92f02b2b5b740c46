//! Memory probes: dirty tracking (soft-dirty, PAGEMAP_SCAN, userfaultfd write-protect) and the
//! page-moving primitives (vmsplice, memfd).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

use super::Probe;

fn page_len() -> usize {
    crate::mem::vma::page_size() as usize
}

const PM_SOFT_DIRTY: u64 = 1 << 55;
// _IOWR('f', 16, struct pm_scan_arg) with the 96-byte v1 argument
const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;
const PAGE_IS_PRESENT: u64 = 1 << 3;
// _IOWR(0xAA, 0x3F, struct uffdio_api)
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
const UFFD_API: u64 = 0xAA;
const UFFD_FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;

/// An anonymous private page of our own, touched so it is present.
struct ScratchPage(*mut libc::c_void);

impl ScratchPage {
    fn new() -> Result<Self, Errno> {
        // SAFETY: fresh anonymous mapping, owned by the returned guard.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page_len(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        // SAFETY: p is a writable page we just mapped.
        unsafe { std::ptr::write_volatile(p as *mut u8, 1) };
        Ok(ScratchPage(p))
    }
    fn addr(&self) -> u64 {
        self.0 as u64
    }
}

impl Drop for ScratchPage {
    fn drop(&mut self) {
        // SAFETY: unmapping the page this guard owns.
        unsafe { libc::munmap(self.0, page_len()) };
    }
}

/// A freshly faulted page carries the soft-dirty bit in pagemap only when the kernel tracks it.
pub(super) fn soft_dirty() -> Probe {
    const NAME: &str = "mem_dirty_track";
    let page = match ScratchPage::new() {
        Ok(p) => p,
        Err(e) => return Probe::from_errno(NAME, "mmap", e),
    };
    let mut f = match File::open("/proc/self/pagemap") {
        Ok(f) => f,
        Err(e) => return Probe::no(NAME, format!("/proc/self/pagemap: {e}")),
    };
    let mut entry = [0u8; 8];
    let read = f
        .seek(SeekFrom::Start(page.addr() / page_len() as u64 * 8))
        .and_then(|_| f.read_exact(&mut entry));
    if let Err(e) = read {
        return Probe::no(NAME, format!("/proc/self/pagemap: {e}"));
    }
    let pme = u64::from_le_bytes(entry);
    if pme & PM_SOFT_DIRTY != 0 {
        Probe::yes(NAME, "soft-dirty bit set on a freshly written page")
    } else {
        Probe::no(NAME, "soft-dirty bit never set (CONFIG_MEM_SOFT_DIRTY off)")
    }
}

pub(super) fn pagemap_scan() -> Probe {
    const NAME: &str = "pagemap_scan";
    let page = match ScratchPage::new() {
        Ok(p) => p,
        Err(e) => return Probe::from_errno(NAME, "mmap", e),
    };
    let f = match File::open("/proc/self/pagemap") {
        Ok(f) => f,
        Err(e) => return Probe::no(NAME, format!("/proc/self/pagemap: {e}")),
    };
    let mut regions = [0u64; 3]; // one struct page_region {start, end, categories}
    let mut arg: [u64; 12] = [0; 12];
    arg[0] = 96; // size
    arg[2] = page.addr(); // start
    arg[3] = page.addr() + page_len() as u64; // end
    arg[5] = regions.as_mut_ptr() as u64; // vec
    arg[6] = 1; // vec_len
    arg[11] = PAGE_IS_PRESENT; // return_mask
    // SAFETY: PAGEMAP_SCAN with a correctly sized argument and a one-entry output vector.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), PAGEMAP_SCAN as _, arg.as_mut_ptr()) };
    if r < 0 {
        return Probe::from_errno(NAME, "ioctl(PAGEMAP_SCAN)", Errno::last());
    }
    if r == 1 && regions[2] & PAGE_IS_PRESENT != 0 {
        Probe::yes(NAME, "ioctl(PAGEMAP_SCAN) found the probe page present")
    } else {
        Probe::no(NAME, format!("ioctl(PAGEMAP_SCAN) answered {r} regions, not the probe page"))
    }
}

/// Returns the `uffd` and `uffd_wp_async` probes.
pub(super) fn userfaultfd() -> [Probe; 2] {
    const UFFD: &str = "uffd";
    const WP: &str = "uffd_wp_async";
    // As the tracking opens it (mem::track): user-mode faults only, which is all write-protect
    // tracking needs and all an unprivileged user gets when vm.unprivileged_userfaultfd is 0.
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | crate::mem::track::UFFD_USER_MODE_ONLY;
    // SAFETY: userfaultfd takes only flags; the fd is owned right after.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags as libc::c_long) };
    if fd < 0 {
        let e = Errno::last();
        return [Probe::from_errno(UFFD, "userfaultfd", e), Probe::from_errno(WP, "userfaultfd", e)];
    }
    // SAFETY: fd was just returned by the kernel and is ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut api: [u64; 3] = [UFFD_API, 0, 0];
    // SAFETY: UFFDIO_API with a 24-byte struct uffdio_api.
    if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API as _, api.as_mut_ptr()) } < 0 {
        let e = Errno::last();
        return [Probe::from_errno(UFFD, "UFFDIO_API", e), Probe::from_errno(WP, "UFFDIO_API", e)];
    }
    let features = api[1];
    let want = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
    let wp = if features & want == want {
        Probe::yes(WP, format!("features {features:#x}"))
    } else {
        Probe::no(WP, format!("features {features:#x} lack WP_ASYNC/WP_UNPOPULATED"))
    };
    [Probe::yes(UFFD, format!("features {features:#x}")), wp]
}

pub(super) fn vmsplice() -> Probe {
    const NAME: &str = "vmsplice";
    let page = match ScratchPage::new() {
        Ok(p) => p,
        Err(e) => return Probe::from_errno(NAME, "mmap", e),
    };
    let (r, w) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => return Probe::from_errno(NAME, "pipe", e),
    };
    let iov = libc::iovec { iov_base: page.0, iov_len: page_len() };
    // SAFETY: vmsplice of one live page into our own pipe.
    let n = unsafe { libc::vmsplice(w.as_raw_fd(), &iov, 1, libc::SPLICE_F_NONBLOCK) };
    drop((r, w));
    if n < 0 {
        Probe::from_errno(NAME, "vmsplice", Errno::last())
    } else {
        Probe::yes(NAME, format!("moved {n} bytes into a pipe"))
    }
}

pub(super) fn memfd() -> Probe {
    const NAME: &str = "memfd";
    let fd = crate::sys::memfd_create(c"tsdump-probe", libc::MFD_CLOEXEC);
    if fd < 0 {
        return Probe::from_errno(NAME, "memfd_create", Errno::last());
    }
    // SAFETY: closing the fd we just created.
    unsafe { libc::close(fd) };
    Probe::yes(NAME, "memfd_create works")
}
