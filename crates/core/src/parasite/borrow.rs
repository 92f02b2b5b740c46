//! Where a syscall runs when there is no scratch mapping: its own mmap, and its munmap.
//!
//! The code (`syscall; rt_sigreturn`) goes into the first page of the task's first private
//! executable file mapping, the page CRIU's compel borrows too (writing it copies it: the page
//! then shows in the dump as a private page, as in CRIU's): over the ELF header's identification
//! bytes when the mapping starts with the header (arm64 links and Go binaries map headers and
//! text together; nothing reads e_ident once the program is loaded, while a run of zeros in that
//! page may be a symbol table the dynamic linker still reads), else at a run of zero or int3
//! padding in that page when it has one. A MAP_SHARED mapping is never written to (its page cache, and the
//! file, would get the bytes). The return frame goes on the thread's own stack, below the red
//! zone, where the kernel itself would put a signal frame, in pages that are already in memory
//! (a page touched only by us would show in the dump). If tsdump dies anywhere in the call, the
//! thread finishes the syscall and rt_sigreturns home through that frame.
//!
//! What remains: the 16 bytes of code stay in that page if tsdump dies mid-call (in padding the
//! task never runs when the page has some, else at the mapping's start: for an executable, the
//! `_init` that ran at its start-up), and a thread whose stack has no room or no pages in memory
//! below its stack pointer (or whose stack pointer is in the heap, where a signal handler's
//! alternate stack may sit right above live data) runs the call with the trap protocol, whose
//! `int3` kills the task if tsdump dies mid-call (as with CRIU).

use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;
use std::io::IoSliceMut;

use crate::error::{Error, ErrorCode, Result};
use crate::mem::Vma;

/// Bytes of text the code takes (two words, so that two PTRACE_POKEDATA plant it).
pub const CODE_LEN: usize = 16;
use crate::arch::syscall::RED_ZONE;

/// Where the code goes: an address of CODE_LEN bytes of the task's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spot {
    pub at: u64,
    /// Bytes the task never runs (padding, or the ELF header's), else the start of a text
    /// mapping (put back after the call either way).
    pub padding: bool,
}

/// Whether the code may go into `v`: a private, readable, executable file mapping (not [vdso],
/// not an anonymous one such as a JIT's code or tsdump's own scratch).
fn private_text(v: &Vma) -> bool {
    v.prot & libc::PROT_EXEC as u32 != 0
        && v.prot & libc::PROT_READ as u32 != 0
        && !v.shared
        && v.inode != 0
        && v.end - v.start >= 4096
}

/// The last CODE_LEN-aligned run of CODE_LEN bytes, all 0x00 or all 0xcc, in `page`.
pub fn padding_in(page: &[u8]) -> Option<usize> {
    (0..page.len() / CODE_LEN).rev().map(|i| i * CODE_LEN).find(|&off| {
        let w = &page[off..off + CODE_LEN];
        w.iter().all(|&b| b == 0) || w.iter().all(|&b| b == 0xcc)
    })
}

/// Finds the spot in `pid`'s text for the code (see the module doc).
pub fn find_spot(pid: i32, vmas: &[Vma]) -> Result<Spot> {
    let Some(v) = vmas.iter().find(|v| private_text(v)) else {
        return Err(Error::new(ErrorCode::Parasite, format!("pid {pid}: no private executable mapping to run a syscall from")));
    };
    let mut page = vec![0u8; 4096];
    let remote = [RemoteIoVec { base: v.start as usize, len: page.len() }];
    let read = process_vm_readv(Pid::from_raw(pid), &mut [IoSliceMut::new(&mut page)], &remote) == Ok(page.len());
    Ok(match padding_in(&page).filter(|_| read) {
        _ if read && page.starts_with(b"\x7fELF") => Spot { at: v.start, padding: true },
        Some(off) => Spot { at: v.start + off as u64, padding: true },
        None => Spot { at: v.start, padding: false },
    })
}

/// Whether every page of `[at, at + len)` of `pid` is in memory (/proc/PID/pagemap).
pub fn in_memory(pid: i32, at: u64, len: usize) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(pm) = std::fs::File::open(format!("/proc/{pid}/pagemap")) else { return false };
    let ps = crate::mem::vma::page_size();
    let (first, last) = (at / ps, (at + len as u64 - 1) / ps);
    let mut buf = vec![0u8; ((last - first + 1) * 8) as usize];
    if pm.read_exact_at(&mut buf, first * 8).is_err() {
        return false;
    }
    // bit 63: present (a swapped page would be read back in by the write, which is as good)
    buf.chunks_exact(8).all(|e| u64::from_ne_bytes(e.try_into().expect("8 bytes")) & (3 << 62) != 0)
}

/// Where a return frame of `len` bytes goes below stack pointer `sp` (64-byte aligned, below the
/// red zone), when the mapping holding `sp` is private, writable, not the heap, and has the room.
pub fn frame_below(sp: u64, len: usize, vmas: &[Vma]) -> Option<u64> {
    let at = sp.checked_sub(RED_ZONE + len as u64)? & !63;
    let v = vmas.iter().find(|v| v.start <= sp.saturating_sub(1) && sp.saturating_sub(1) < v.end)?;
    let writable = v.prot & libc::PROT_WRITE as u32 != 0 && v.prot & libc::PROT_READ as u32 != 0;
    (writable && !v.shared && v.path != "[heap]" && v.inode == 0 && at >= v.start).then_some(at)
}

/// The points `fault_point` knows; TSDUMP_FAULT_STALL names one of them.
const FAULT_POINTS: [&str; 4] = ["mmap-entered", "mmap-exited", "munmap-entered", "munmap-exited"];
/// 0: not read yet; 1: no stall; 2 + i: stall at FAULT_POINTS[i]. An atomic, not a lock: the
/// tests fork "tsdump" processes while other threads may be here.
static STALL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn point_code(name: Option<&str>) -> usize {
    name.and_then(|n| FAULT_POINTS.iter().position(|p| *p == n)).map_or(1, |i| i + 2)
}

/// Makes `fault_point(name)` stall (what TSDUMP_FAULT_STALL=name does).
pub fn stall_at(name: Option<&str>) {
    STALL.store(point_code(name), std::sync::atomic::Ordering::Relaxed);
}

/// Stalls here forever when TSDUMP_FAULT_STALL names this point (for the fault tests, which kill
/// tsdump there), saying so on stderr first: `mmap-entered`, `mmap-exited` (the scratch's
/// mmap), `munmap-entered`, `munmap-exited` (its munmap).
pub fn fault_point(name: &str) {
    use std::sync::atomic::Ordering;
    let mut code = STALL.load(Ordering::Relaxed);
    if code == 0 {
        code = point_code(std::env::var("TSDUMP_FAULT_STALL").ok().as_deref());
        STALL.store(code, Ordering::Relaxed);
    }
    if code >= 2 && FAULT_POINTS[code - 2] == name {
        let line = format!("tsdump: fault point {name}: stalled\n");
        // SAFETY: one write(2) of a local buffer to stderr (no std lock: see STALL).
        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
        loop {
            std::thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(start: u64, end: u64, perms: &str, path: &str, inode: u64) -> Vma {
        crate::mem::vma::parse_header(&format!("{start:x}-{end:x} {perms} 00000000 00:00 {inode} {path}")).unwrap()
    }

    #[test]
    fn padding_is_the_last_run_of_zeros_or_traps() {
        let mut page = vec![0x90u8; 4096];
        assert_eq!(padding_in(&page), None);
        page[4096 - 32..].fill(0);
        assert_eq!(padding_in(&page), Some(4096 - 16));
        page[4096 - 16..].fill(0x90);
        assert_eq!(padding_in(&page), Some(4096 - 32));
        page[64..80].fill(0xcc);
        page[4096 - 32..].fill(0x90);
        assert_eq!(padding_in(&page), Some(64));
    }

    #[test]
    fn frames_go_below_the_red_zone_of_a_private_stack_only() {
        let vmas = [
            vma(0x1000, 0x9000, "rw-p", "[heap]", 0),
            vma(0x10000, 0x20000, "rw-p", "[stack]", 0),
            vma(0x30000, 0x31000, "rw-s", "/dev/shm/x", 7),
        ];
        assert_eq!(frame_below(0x1f000, 3000, &vmas), Some((0x1f000 - RED_ZONE - 3000) & !63));
        assert_eq!(frame_below(0x10100, 3000, &vmas), None, "no room above the mapping's start");
        assert_eq!(frame_below(0x8000, 100, &vmas), None, "the heap may hold an alternate stack");
        assert_eq!(frame_below(0x30800, 100, &vmas), None, "shared");
    }

    #[test]
    fn shared_text_is_never_chosen() {
        let vmas = [vma(0x400000, 0x401000, "r-xs", "/tmp/shared", 9), vma(0x500000, 0x502000, "r-xp", "/bin/x", 10)];
        let me = std::process::id() as i32;
        // not readable in this process: the private mapping's start
        assert_eq!(find_spot(me, &vmas).unwrap(), Spot { at: 0x500000, padding: false });
    }

    #[test]
    fn pages_in_memory() {
        let v = vec![7u8; 8192];
        let me = std::process::id() as i32;
        assert!(in_memory(me, v.as_ptr() as u64, v.len()));
        // SAFETY: a fresh anonymous mapping, never touched, unmapped below.
        let m = unsafe { libc::mmap(std::ptr::null_mut(), 8192, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        assert!(!in_memory(me, m as u64, 8192));
        // SAFETY: unmapping what was mapped above.
        unsafe { libc::munmap(m, 8192) };
    }

    #[test]
    fn an_elf_header_is_chosen_over_zeros_in_its_page() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let me = std::process::id() as i32;
        let spot_in = |bytes: &[u8]| {
            let mut f = tempfile_in_tmp();
            f.write_all(bytes).unwrap();
            // SAFETY: a private read+exec mapping of a file we own, unmapped below.
            let m = unsafe { libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_EXEC, libc::MAP_PRIVATE, f.as_raw_fd(), 0) };
            assert_ne!(m, libc::MAP_FAILED);
            let start = m as u64;
            let spot = find_spot(me, &[vma(start, start + 4096, "r-xp", "/tmp/x", 99)]).unwrap();
            // SAFETY: unmapping what was mapped above.
            unsafe { libc::munmap(m, 4096) };
            (start, spot)
        };
        let mut page = vec![0x90u8; 4096];
        page[2048..2064].fill(0);
        let (start, spot) = spot_in(&page);
        assert_eq!(spot, Spot { at: start + 2048, padding: true });
        page[..4].copy_from_slice(b"\x7fELF");
        let (start, spot) = spot_in(&page);
        assert_eq!(spot, Spot { at: start, padding: true }, "e_ident, not the zeros after it");
    }

    fn tempfile_in_tmp() -> std::fs::File {
        let path = std::env::temp_dir().join(format!("tsdump-borrow-{}-{:?}", std::process::id(), std::thread::current().id()));
        let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }
}
