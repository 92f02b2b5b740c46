//! Which pages of a VMA to dump, from /proc/PID/pagemap (one u64 per page: bit 63 present, 62
//! swapped, 61 file-page or shared-anon, 0..54 the PFN, visible to CAP_SYS_ADMIN).
//!
//! The shared zero page is recognised by its PFN, learnt once by mapping a private read-only
//! page in tsdump itself and faulting it in; the huge zero page (THP) likewise, when the kernel
//! hands one out. Dumping either would write zeros the restore gets for free.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use crate::error::{Error, ErrorCode, Result};

use super::vma::{page_size, Decision, Vma};

pub const PM_PRESENT: u64 = 1 << 63;
pub const PM_SWAP: u64 = 1 << 62;
pub const PM_FILE: u64 = 1 << 61;
pub const PM_PFN_MASK: u64 = (1 << 55) - 1;
/// The swap type of PTE markers (uffd-wp on an unpopulated page, guard, poison): the last of
/// the 5-bit swap types. A marker is "swapped" in pagemap but holds no data.
const SWP_PTE_MARKER: u64 = 31;

/// A PTE marker's pagemap entry (type in bits 0..4, shown to CAP_SYS_ADMIN like PFNs).
pub fn is_pte_marker(e: u64) -> bool {
    e & PM_PRESENT == 0 && e & PM_SWAP != 0 && e & 0x1f == SWP_PTE_MARKER
}

/// Pages per pagemap read: bounds the buffer to 512 KiB whatever the VMA size.
const CHUNK: usize = 64 * 1024;

/// PFNs that are the kernel's zero pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZeroPfns {
    pub zero: u64,
    /// First PFN of the huge zero page (512 PFNs on x86_64), if the kernel gave us one.
    pub huge: Option<u64>,
    pub huge_pages: u64,
}

impl ZeroPfns {
    pub fn is_zero(&self, pfn: u64) -> bool {
        pfn == self.zero || self.huge.is_some_and(|h| pfn >= h && pfn < h + self.huge_pages)
    }
}

fn self_pfn(addr: u64) -> Result<u64> {
    let f = File::open("/proc/self/pagemap")
        .map_err(|e| Error::new(ErrorCode::Procfs, format!("opening /proc/self/pagemap: {e}")))?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, addr / page_size() * 8)
        .map_err(|e| Error::new(ErrorCode::Procfs, format!("reading /proc/self/pagemap: {e}")))?;
    let e = u64::from_ne_bytes(b);
    Ok(if e & PM_PRESENT != 0 { e & PM_PFN_MASK } else { 0 })
}

/// Maps `len` bytes private read-only, aligned to `align`, reads one byte at the aligned start
/// and returns the PFN behind it.
fn probe_zero(len: usize, align: usize, huge: bool) -> Result<u64> {
    // SAFETY: a fresh private anonymous mapping, read only, unmapped before returning.
    unsafe {
        let p = libc::mmap(std::ptr::null_mut(), len + align, libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
        if p == libc::MAP_FAILED {
            return Err(Error::new(ErrorCode::Kernel, "mmap for the zero-page probe failed"));
        }
        let a = (p as usize).div_ceil(align) * align;
        if huge {
            libc::madvise(a as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
        std::ptr::read_volatile(a as *const u8);
        let pfn = self_pfn(a as u64);
        libc::munmap(p, len + align);
        pfn
    }
}

/// The zero-page PFNs, probed once per process. Errors when PFNs are hidden (no CAP_SYS_ADMIN).
pub fn zero_pfns() -> Result<ZeroPfns> {
    static ZERO: OnceLock<std::result::Result<ZeroPfns, Error>> = OnceLock::new();
    ZERO.get_or_init(|| {
        let ps = page_size() as usize;
        let zero = probe_zero(ps, ps, false)?;
        if zero == 0 {
            return Err(Error::new(ErrorCode::EpermPtrace, "pagemap hides PFNs (needs CAP_SYS_ADMIN): cannot tell zero pages"));
        }
        let hps = 2 << 20;
        let h = probe_zero(hps, hps, true)?;
        let huge = (h != 0 && h != zero).then_some(h);
        Ok(ZeroPfns { zero, huge, huge_pages: (hps / ps) as u64 })
    })
    .clone()
}

/// Page counts of one scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Pages whose pagemap entries were examined.
    pub scanned: u64,
    /// Pages selected for the pages image.
    pub dump: u64,
    /// Present pages that are the zero page (not dumped).
    pub zero: u64,
    /// Pages of VMAs not dumped as private pages (special, shared, VM_IO).
    pub skipped: u64,
    /// Examined but absent, or still the file's page (restored from the file).
    pub absent: u64,
}

/// A run of consecutive pages to dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub vaddr: u64,
    pub nr_pages: u64,
}

/// Whether the page with pagemap entry `e` goes into the dump for a VMA with decision `d`.
pub fn page_wanted(d: Decision, e: u64, zero: &ZeroPfns, counts: &mut Counts) -> bool {
    if d == Decision::Whole {
        return true;
    }
    if e & (PM_PRESENT | PM_SWAP) == 0 || is_pte_marker(e) {
        counts.absent += 1;
        return false;
    }
    if d == Decision::FileCow && e & PM_FILE != 0 {
        counts.absent += 1;
        return false;
    }
    if e & PM_PRESENT != 0 && zero.is_zero(e & PM_PFN_MASK) {
        counts.zero += 1;
        return false;
    }
    true
}

/// Appends the runs of pages to dump from `vma` to `runs`.
pub fn scan_vma(pagemap: &File, vma: &Vma, d: Decision, zero: &ZeroPfns, runs: &mut Vec<Run>, counts: &mut Counts) -> Result<()> {
    let ps = page_size();
    let first = vma.start / ps;
    let total = vma.pages();
    let mut buf = vec![0u8; CHUNK.min(total as usize) * 8];
    let mut done = 0u64;
    let mut open: Option<Run> = None;
    while done < total {
        let n = CHUNK.min((total - done) as usize);
        let b = &mut buf[..n * 8];
        pagemap.read_exact_at(b, (first + done) * 8).map_err(|e| {
            Error::new(ErrorCode::Procfs, format!("reading pagemap at {:#x}: {e}", vma.start + done * ps))
        })?;
        for i in 0..n {
            let e = u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            let addr = vma.start + (done + i as u64) * ps;
            if page_wanted(d, e, zero, counts) {
                counts.dump += 1;
                match &mut open {
                    Some(r) if r.vaddr + r.nr_pages * ps == addr => r.nr_pages += 1,
                    _ => {
                        if let Some(r) = open.take() {
                            runs.push(r);
                        }
                        open = Some(Run { vaddr: addr, nr_pages: 1 });
                    }
                }
            }
        }
        done += n as u64;
    }
    counts.scanned += total;
    if let Some(r) = open {
        runs.push(r);
    }
    Ok(())
}

// PAGEMAP_SCAN (Linux 6.7+): the kernel walks the page tables and returns ranges of pages
// matching category masks, so a 1 GiB VMA costs a handful of ranges instead of 262144 entries.
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;
const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// _IOWR('f', 16, struct pm_scan_arg)
const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;

#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// Ranges of `[start, end)` whose pages match; Ok(None) when the kernel has no PAGEMAP_SCAN.
pub(crate) fn pagemap_scan(pm: &File, start: u64, end: u64, inverted: u64, mask: u64, anyof: u64) -> Result<Option<Vec<(u64, u64)>>> {
    pagemap_scan_upto(pm, start, end, inverted, mask, anyof, 0)
}

/// `pagemap_scan` stopping once `max_pages` pages matched (0: no limit).
fn pagemap_scan_upto(pm: &File, start: u64, end: u64, inverted: u64, mask: u64, anyof: u64, max_pages: u64) -> Result<Option<Vec<(u64, u64)>>> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut regions = vec![PageRegion::default(); 1024];
    let mut at = start;
    while at < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start: at,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            category_inverted: inverted,
            category_mask: mask,
            category_anyof_mask: anyof,
            max_pages,
            ..Default::default()
        };
        // SAFETY: `arg` describes `regions`, which outlives the call; the kernel writes at most
        // vec_len entries.
        let n = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(pm), PAGEMAP_SCAN as _, &mut arg as *mut PmScanArg) };
        if n < 0 {
            let e = nix::errno::Errno::last();
            if matches!(e, nix::errno::Errno::ENOTTY | nix::errno::Errno::EINVAL | nix::errno::Errno::EOPNOTSUPP) && out.is_empty() && at == start {
                return Ok(None);
            }
            return Err(Error::new(ErrorCode::Procfs, format!("PAGEMAP_SCAN at {at:#x}: {}", e.desc())));
        }
        for r in &regions[..n as usize] {
            match out.last_mut() {
                Some(last) if last.1 == r.start => last.1 = r.end,
                _ => out.push((r.start, r.end)),
            }
        }
        if arg.walk_end <= at || (max_pages != 0 && !out.is_empty()) {
            break;
        }
        at = arg.walk_end;
    }
    Ok(Some(out))
}

/// Wanted: present or swapped, and not these categories: the zero page, and for private file
/// mappings the file's own page. ("not X" is X inverted and then required.)
fn unwanted(d: Decision) -> u64 {
    if d == Decision::FileCow {
        PAGE_IS_PFNZERO | PAGE_IS_FILE
    } else {
        PAGE_IS_PFNZERO
    }
}

/// Whether `vma` holds a page a scan would select (PAGEMAP_SCAN stops at the first; PTE markers
/// count: a false yes costs a scan, never a page). Without PAGEMAP_SCAN, a whole `scan_vma`.
pub fn holds_pages(pm: &File, vma: &Vma, d: Decision) -> Result<bool> {
    let not = unwanted(d);
    if let Some(found) = pagemap_scan_upto(pm, vma.start, vma.end, not, not, PAGE_IS_PRESENT | PAGE_IS_SWAPPED, 1)? {
        return Ok(!found.is_empty());
    }
    let mut counts = Counts::default();
    scan_vma(pm, vma, d, &zero_pfns()?, &mut Vec::new(), &mut counts)?;
    Ok(counts.dump > 0)
}

/// `scan_vma` through PAGEMAP_SCAN. Ok(false) when the kernel lacks it (use `scan_vma`).
pub fn scan_vma_fast(pm: &File, vma: &Vma, d: Decision, runs: &mut Vec<Run>, counts: &mut Counts) -> Result<bool> {
    let ps = page_size();
    if d == Decision::Whole {
        runs.push(Run { vaddr: vma.start, nr_pages: vma.pages() });
        counts.dump += vma.pages();
        counts.scanned += vma.pages();
        return Ok(true);
    }
    let not = unwanted(d);
    let Some(want) = pagemap_scan(pm, vma.start, vma.end, not, not, PAGE_IS_PRESENT | PAGE_IS_SWAPPED)? else {
        return Ok(false);
    };
    let Some(zero) = pagemap_scan(pm, vma.start, vma.end, 0, PAGE_IS_PFNZERO, 0)? else { return Ok(false) };
    // Swapped-and-not-present pages may be PTE markers (uffd-wp tracking installs them on
    // untouched pages): those are holes, told apart by their pagemap entries.
    let Some(swapped) = pagemap_scan(pm, vma.start, vma.end, PAGE_IS_PRESENT, PAGE_IS_PRESENT | PAGE_IS_SWAPPED, 0)? else {
        return Ok(false);
    };
    let want = if swapped.is_empty() { want } else { without(&want, &markers(pm, &swapped)?) };
    let mut dumped = 0;
    for (s, e) in want {
        runs.push(Run { vaddr: s, nr_pages: (e - s) / ps });
        dumped += (e - s) / ps;
    }
    let zeros: u64 = zero.iter().map(|(s, e)| (e - s) / ps).sum();
    counts.scanned += vma.pages();
    counts.dump += dumped;
    counts.zero += zeros;
    counts.absent += vma.pages() - dumped - zeros;
    Ok(true)
}

/// The PTE-marker pages among `ranges`, as sorted ranges.
fn markers(pm: &File, ranges: &[(u64, u64)]) -> Result<Vec<(u64, u64)>> {
    let ps = page_size();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(s, e) in ranges {
        let mut at = s;
        while at < e {
            let n = (CHUNK as u64).min((e - at) / ps) as usize;
            let mut buf = vec![0u8; n * 8];
            pm.read_exact_at(&mut buf, at / ps * 8)
                .map_err(|err| Error::new(ErrorCode::Procfs, format!("reading pagemap at {at:#x}: {err}")))?;
            for i in 0..n {
                let entry = u64::from_ne_bytes(buf[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
                if !is_pte_marker(entry) {
                    continue;
                }
                let a = at + i as u64 * ps;
                match out.last_mut() {
                    Some(l) if l.1 == a => l.1 = a + ps,
                    _ => out.push((a, a + ps)),
                }
            }
            at += n as u64 * ps;
        }
    }
    Ok(out)
}

/// Sorted ranges `a` minus sorted ranges `b`.
fn without(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(s, e) in a {
        let mut at = s;
        while j < b.len() && b[j].1 <= at {
            j += 1;
        }
        let mut k = j;
        while k < b.len() && b[k].0 < e {
            if b[k].0 > at {
                out.push((at, b[k].0));
            }
            at = at.max(b[k].1);
            k += 1;
        }
        if at < e {
            out.push((at, e));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_cuts_ranges() {
        assert_eq!(without(&[(0, 10), (20, 30)], &[(2, 4), (8, 22), (25, 26)]), vec![(0, 2), (4, 8), (22, 25), (26, 30)]);
        assert_eq!(without(&[(0, 10)], &[]), vec![(0, 10)]);
        assert_eq!(without(&[(0, 10)], &[(0, 10)]), vec![]);
    }

    #[test]
    fn page_rules() {
        let z = ZeroPfns { zero: 100, huge: Some(1000), huge_pages: 512 };
        let mut c = Counts::default();
        assert!(!page_wanted(Decision::Anon, 0, &z, &mut c));
        assert!(page_wanted(Decision::Anon, PM_PRESENT | 5, &z, &mut c));
        assert!(page_wanted(Decision::Anon, PM_SWAP, &z, &mut c));
        assert!(!page_wanted(Decision::Anon, PM_PRESENT | 100, &z, &mut c));
        assert!(!page_wanted(Decision::Anon, PM_PRESENT | 1511, &z, &mut c));
        assert!(page_wanted(Decision::Anon, PM_PRESENT | 1512, &z, &mut c));
        assert!(!page_wanted(Decision::FileCow, PM_PRESENT | PM_FILE | 7, &z, &mut c));
        assert!(page_wanted(Decision::FileCow, PM_PRESENT | 7, &z, &mut c));
        assert!(page_wanted(Decision::Whole, 0, &z, &mut c));
        assert_eq!(c.zero, 2);
        assert_eq!(c.absent, 2);
    }

    /// A private anonymous mapping of `pages` of our own (no THP), and its Vma.
    fn own_mapping(pages: usize) -> (*mut u8, Vma) {
        let ps = page_size() as usize;
        // SAFETY: a private anonymous mapping of our own, unmapped by the caller.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), pages * ps, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        } as *mut u8;
        // SAFETY: advice on the mapping just made.
        unsafe { libc::madvise(p.cast(), pages * ps, libc::MADV_NOHUGEPAGE) };
        let v = Vma {
            start: p as u64,
            end: p as u64 + (pages * ps) as u64,
            prot: 3,
            shared: false,
            offset: 0,
            dev: "00:00".into(),
            inode: 0,
            path: String::new(),
            vm_flags: vec![],
        };
        (p, v)
    }

    #[test]
    fn pagemap_scan_agrees_with_pagemap() {
        let ps = page_size() as usize;
        let (p, v) = own_mapping(64);
        // SAFETY: all offsets are inside the mapping.
        unsafe {
            for i in [1usize, 2, 3, 10, 40, 41] {
                *p.add(i * ps) = 7;
            }
            for i in [20usize, 21] {
                std::ptr::read_volatile(p.add(i * ps));
            }
        }
        let pm = File::open("/proc/self/pagemap").unwrap();
        let (mut r1, mut c1, mut r2, mut c2) = (vec![], Counts::default(), vec![], Counts::default());
        assert!(scan_vma_fast(&pm, &v, Decision::Anon, &mut r1, &mut c1).unwrap(), "kernel has PAGEMAP_SCAN");
        scan_vma(&pm, &v, Decision::Anon, &zero_pfns().unwrap(), &mut r2, &mut c2).unwrap();
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(p.cast(), 64 * ps) };
        assert_eq!(r1, r2);
        assert_eq!(c1, c2);
        assert_eq!(c1.dump, 6);
        assert_eq!(c1.zero, 2);
    }

    #[test]
    fn holds_pages_counts_only_pages_to_dump() {
        let ps = page_size() as usize;
        let (p, v) = own_mapping(64);
        let pm = File::open("/proc/self/pagemap").unwrap();
        let holds = || holds_pages(&pm, &v, Decision::Anon).unwrap();
        assert!(!holds(), "untouched");
        // SAFETY: offsets inside the mapping.
        unsafe { std::ptr::read_volatile(p.add(20 * ps)) };
        assert!(!holds(), "only the zero page");
        // SAFETY: as above.
        unsafe { *p.add(63 * ps) = 1 };
        assert!(holds(), "one written page, the last");
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(p.cast(), 64 * ps) };
    }

    #[test]
    fn zero_page_is_found_as_root() {
        let z = zero_pfns().unwrap();
        assert_ne!(z.zero, 0);
    }
}
