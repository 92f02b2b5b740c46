//! Dumps of a real child, both sources, checked against the child's memory read directly.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use super::*;
use crate::parasite::tests::{release, seize, spawn};

const MIB: usize = 1 << 20;
static mut REGIONS: [usize; 4] = [0; 4];

fn target() -> ! {
    // SAFETY (whole body): plain libc calls in a freshly forked single-threaded child.
    unsafe {
        let map = |len| {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) as *mut u8
        };
        let data = map(8 * MIB);
        for i in 0..8 * MIB / 8 {
            *(data as *mut u64).add(i) = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
        let untouched = map(MIB);
        let zeros = map(MIB);
        for i in (0..MIB).step_by(4096) {
            std::ptr::read_volatile(zeros.add(i));
        }
        let hidden = map(64 * 1024);
        std::ptr::write_bytes(hidden, 0x5a, 64 * 1024);
        libc::mprotect(hidden as *mut libc::c_void, 64 * 1024, libc::PROT_NONE);
        REGIONS = [data as usize, untouched as usize, zeros as usize, hidden as usize];
        loop {
            libc::pause();
        }
    }
}

fn read_regions(pid: i32) -> [usize; 4] {
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut b = [0u8; 32];
    f.read_exact_at(&mut b, &raw const REGIONS as u64).unwrap();
    std::array::from_fn(|i| usize::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap()))
}

/// Rebuilds the dumped pages as a map vaddr -> page bytes.
fn load(dump: &MemDump, path: &std::path::Path) -> HashMap<u64, Vec<u8>> {
    let data = std::fs::read(path).unwrap();
    let mut out = HashMap::new();
    let mut off = 0;
    for e in &dump.entries {
        assert_eq!(e.flags, PE_PRESENT);
        for p in 0..e.nr_pages as u64 {
            out.insert(e.vaddr + p * 4096, data[off..off + 4096].to_vec());
            off += 4096;
        }
    }
    assert_eq!(off, data.len(), "pages file holds exactly the pagemap's pages");
    out
}

fn check(mode: Mode) {
    let child = spawn(target);
    let pid = child.0;
    // The child publishes its regions last; wait for that before freezing it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while read_regions(pid)[3] == 0 {
        assert!(std::time::Instant::now() < deadline, "target never set up");
        std::thread::sleep(Duration::from_millis(10));
    }
    seize(pid);
    let r = read_regions(pid);
    let dir = std::env::temp_dir().join(format!("tsdump-mem-{}-{mode:?}", std::process::id()));
    let images = std::sync::Arc::new(crate::images_dir::ImagesDir::open(&dir, crate::images_dir::OpenOptions::CREATE).unwrap());
    let path = dir.join("pages-1.img");
    let maps_before = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let opts = DumpOpts { pages: crate::images_dir::NewFile::new(&images, "pages-1.img"), vmas: None, mode, pipes: 4, incremental: None };
    let dump = match mode {
        Mode::Read => dump_memory(pid, &opts, None).unwrap(),
        Mode::Vmsplice => {
            let mut inj = Injector::infect(pid, crate::parasite::inject::DEFAULT_SCRATCH).unwrap();
            let d = dump_memory(pid, &opts, Some((&mut inj).into()));
            inj.cure().unwrap();
            d.unwrap()
        }
    };
    assert_eq!(std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap(), maps_before);
    let before: Vec<_> = vma::parse_smaps(&maps_before).unwrap().iter().map(|v| (v.start, v.end)).collect();
    let reported: Vec<_> = dump.vmas.iter().map(|r| (r.vma.start, r.vma.end)).collect();
    assert_eq!(reported, before, "the parasite's scratch mapping is not part of the dump");
    let pages = load(&dump, &path);
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut page = vec![0u8; 4096];
    for a in (r[0]..r[0] + 8 * MIB).step_by(4096) {
        mem.read_exact_at(&mut page, a as u64).unwrap();
        assert_eq!(pages.get(&(a as u64)), Some(&page), "data page {a:#x}");
    }
    for base in [r[1], r[2]] {
        for a in (base..base + MIB).step_by(4096) {
            assert!(!pages.contains_key(&(a as u64)), "untouched/zero page {a:#x} was dumped");
        }
    }
    assert_eq!(pages.get(&(r[3] as u64)), Some(&vec![0x5a; 4096]), "PROT_NONE data");
    assert!(dump.counts.zero >= 256, "{:?}", dump.counts);
    assert_eq!(dump.pages_written, dump.counts.dump);
    let vdso = dump.vmas.iter().find(|v| v.vma.path == "[vdso]").unwrap();
    assert_eq!(vdso.pages_dumped, vdso.vma.pages());
    assert!(dump.vmas.iter().filter(|v| v.vma.path == "[vvar]").all(|v| v.pages_dumped == 0));
    if mode == Mode::Vmsplice {
        assert!(dump.vmsplice_calls >= 8);
        assert_eq!(dump.blob_refused, None, "the resident parasite drained");
    }
    release(pid);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn read_mode_reproduces_memory() {
    check(Mode::Read);
}

#[test]
fn vmsplice_mode_reproduces_memory() {
    check(Mode::Vmsplice);
}
