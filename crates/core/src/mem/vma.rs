//! A task's VMAs from /proc/PID/smaps and the per-VMA dump decision, following CRIU's rules:
//! special kernel mappings ([vvar], [vvar_vclock], [vsyscall]) and VM_IO mappings are not dumped,
//! [vdso] is dumped whole, private mappings are dumped page by page (file-backed ones only where
//! pages were copied-on-write), shared file mappings live in their file, and shared anonymous
//! memory (MAP_SHARED|MAP_ANONYMOUS, memfd, SysV shm) is dumped once per object elsewhere.

use crate::error::{Error, ErrorCode, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// PROT_* bits.
    pub prot: u32,
    pub shared: bool,
    pub offset: u64,
    pub dev: String,
    pub inode: u64,
    /// The path column: file path, `[heap]`, `[vdso]`, `/dev/zero (deleted)`, `` for anon...
    pub path: String,
    /// Two-letter VmFlags mnemonics (`rd`, `io`, `dd`, `ht`...).
    pub vm_flags: Vec<String>,
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    pub fn pages(&self) -> u64 {
        self.len() / page_size()
    }
    pub fn has_flag(&self, f: &str) -> bool {
        self.vm_flags.iter().any(|x| x == f)
    }
    pub fn readable(&self) -> bool {
        self.prot & libc::PROT_READ as u32 != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Private anonymous memory: pages present or swapped, minus zero pages.
    Anon,
    /// Private file mapping: only pages that are no longer the file's (copied-on-write).
    FileCow,
    /// Dumped whole ([vdso]).
    Whole,
    /// Shared anonymous object (MAP_SHARED|MAP_ANONYMOUS, memfd, SysV shm): dumped once per
    /// inode as pagemap-shmem-INO.img, not in the task's pages.
    Shmem,
    /// Shared file mapping: contents live in the file.
    FileShared,
    /// Not dumped at all: [vvar], [vvar_vclock], [vsyscall], VM_IO.
    Skip,
    /// A mapping tsdump cannot dump yet (io_uring rings, AIO rings, other anon_inode mappings):
    /// the dump refuses the task, naming it.
    Unsupported,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Anon => "anon",
            Decision::FileCow => "file-cow",
            Decision::Whole => "whole",
            Decision::Shmem => "shmem",
            Decision::FileShared => "file-shared",
            Decision::Skip => "skip",
            Decision::Unsupported => "unsupported",
        }
    }
    /// Whether this VMA's pages go into the task's own pages image.
    pub fn dumps_private_pages(self) -> bool {
        matches!(self, Decision::Anon | Decision::FileCow | Decision::Whole)
    }
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// What a user can do about a mapping `decide` calls Unsupported (appended to the refusal).
pub fn unsupported_advice(v: &Vma) -> &'static str {
    if v.path.starts_with("anon_inode:[io_uring]") {
        "; neither tsdump nor CRIU 4.1.1 can checkpoint an io_uring instance: run the program without io_uring \
         (Node.js/libuv: UV_USE_IO_URING=0), or leave the process out of the tree"
    } else if v.path.starts_with("/[aio]") {
        "; tsdump cannot dump Linux AIO contexts (io_setup) yet: leave the process out of the tree"
    } else {
        "; tsdump cannot dump it yet: unmap it or leave the process out of the tree"
    }
}

/// The decision for one VMA, and a short reason when it is not dumped as private pages.
pub fn decide(v: &Vma) -> (Decision, &'static str) {
    match v.path.as_str() {
        "[vvar]" | "[vvar_vclock]" => return (Decision::Skip, "kernel data page"),
        "[vsyscall]" => return (Decision::Skip, "legacy vsyscall page"),
        "[vdso]" => return (Decision::Whole, "vdso code"),
        _ => {}
    }
    if v.end > crate::arch::TASK_SIZE {
        return (Decision::Skip, "above the task size");
    }
    if v.has_flag("io") {
        return (Decision::Skip, "VM_IO device mapping");
    }
    if v.path.starts_with("anon_inode:[io_uring]") {
        return (Decision::Unsupported, "io_uring ring mapping");
    }
    if v.path.starts_with("/[aio]") {
        return (Decision::Unsupported, "AIO ring mapping");
    }
    if v.path.starts_with("anon_inode:") {
        return (Decision::Unsupported, "anon_inode mapping");
    }
    let anonymous_object = v.inode == 0
        || v.path.starts_with("/dev/zero")
        || v.path.starts_with("/SYSV")
        || v.path.starts_with("/memfd:");
    if v.shared {
        if anonymous_object {
            return (Decision::Shmem, "shared anonymous object");
        }
        return (Decision::FileShared, "shared file mapping");
    }
    if v.inode != 0 && !v.path.starts_with("/dev/zero") {
        return (Decision::FileCow, "private file mapping");
    }
    (Decision::Anon, "private anonymous")
}

fn parse_prot(perms: &str) -> (u32, bool) {
    let b = perms.as_bytes();
    let mut prot = 0;
    if b.first() == Some(&b'r') {
        prot |= libc::PROT_READ as u32;
    }
    if b.get(1) == Some(&b'w') {
        prot |= libc::PROT_WRITE as u32;
    }
    if b.get(2) == Some(&b'x') {
        prot |= libc::PROT_EXEC as u32;
    }
    (prot, b.get(3) == Some(&b's'))
}

/// Parses one maps/smaps header line: `start-end perms offset dev inode   path`.
pub fn parse_header(line: &str) -> Option<Vma> {
    let mut rest = line;
    let mut next = || {
        let t = rest.trim_start();
        let end = t.find(char::is_whitespace).unwrap_or(t.len());
        let (tok, r) = t.split_at(end);
        rest = r;
        tok
    };
    let range = next();
    let perms = next();
    let offset = next();
    let dev = next().to_string();
    let inode = next();
    let (s, e) = range.split_once('-')?;
    let start = u64::from_str_radix(s, 16).ok()?;
    let end = u64::from_str_radix(e, 16).ok()?;
    if perms.len() != 4 || !dev.contains(':') {
        return None;
    }
    let (prot, shared) = parse_prot(perms);
    Some(Vma {
        start,
        end,
        prot,
        shared,
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev,
        inode: inode.parse().ok()?,
        path: rest.trim_start().to_string(),
        vm_flags: Vec::new(),
    })
}

/// Parses /proc/PID/smaps text (headers plus VmFlags; other fields are ignored).
pub fn parse_smaps(text: &str) -> Result<Vec<Vma>> {
    let mut out: Vec<Vma> = Vec::new();
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            let v = out
                .last_mut()
                .ok_or_else(|| Error::new(ErrorCode::Procfs, "smaps: VmFlags before any mapping"))?;
            v.vm_flags = flags.split_whitespace().map(str::to_string).collect();
            continue;
        }
        // Field lines are "Key:   value"; header lines start with a hex range.
        let first = line.split_whitespace().next().unwrap_or("");
        if first.ends_with(':') {
            continue;
        }
        if let Some(v) = parse_header(line) {
            out.push(v);
        } else if !line.trim().is_empty() {
            return Err(Error::new(ErrorCode::Procfs, format!("smaps: unexpected line {line:?}")));
        }
    }
    Ok(out)
}

fn read_proc(pid: i32, name: &str) -> Result<String> {
    let path = format!("/proc/{pid}/{name}");
    std::fs::read_to_string(&path).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound { ErrorCode::EsrchTarget } else { ErrorCode::Procfs };
        Error::new(code, format!("pid {pid}: reading {path}: {e}"))
    })
}

/// Whether a mapping may be a device mapping (VM_IO/VM_PFNMAP), which only smaps' VmFlags show.
fn may_be_device(v: &Vma) -> bool {
    v.path.starts_with("/dev/") && !v.path.starts_with("/dev/zero") && !v.path.starts_with("/dev/shm/")
}

/// The task's VMAs. /proc/PID/maps is enough for ordinary tasks; smaps (which also walks every
/// page table to count RSS, ~30 ms per GiB) is read only when a device mapping needs VmFlags.
pub fn read_vmas(pid: i32) -> Result<Vec<Vma>> {
    let vmas = parse_smaps(&read_proc(pid, "maps")?)?;
    if vmas.iter().any(may_be_device) {
        return parse_smaps(&read_proc(pid, "smaps")?);
    }
    Ok(vmas)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0001000 r--p 00000000 fd:01 1234                       /usr/bin/prog with space
Size:                  4 kB
VmFlags: rd mr mw me dw sd
7f0000000000-7f0000100000 rw-s 00000000 00:01 99                         /dev/zero (deleted)
VmFlags: rd wr sh mr mw me ms sd
7f0000200000-7f0000300000 rw-p 00000000 00:00 0 
VmFlags: rd wr mr mw me ac sd
7ffd00000000-7ffd00002000 r--p 00000000 00:00 0                          [vvar]
VmFlags: rd mr pf io de dd sd
7ffd00002000-7ffd00004000 r-xp 00000000 00:00 0                          [vdso]
VmFlags: rd ex mr mw me de sd
7f0000400000-7f0000500000 rw-s 00000000 00:01 1055                       /memfd:buf (deleted)
VmFlags: rd wr sh mr mw me ms sd
7f0000600000-7f0000700000 rw-s 00000000 fd:01 77                         /tmp/data
VmFlags: rd wr sh mr mw me ms sd
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
VmFlags: ex
7f0000800000-7f0000804000 rw-s 00000000 00:10 2061                       anon_inode:[io_uring]
VmFlags: rd wr sh mr mw me ms sd
";

    #[test]
    fn parses_and_decides_like_criu() {
        let v = parse_smaps(SMAPS).unwrap();
        assert_eq!(v.len(), 9);
        assert_eq!(v[0].path, "/usr/bin/prog with space");
        assert_eq!(v[0].prot, libc::PROT_READ as u32);
        assert!(!v[0].shared);
        assert!(v[1].shared);
        assert!(v[3].has_flag("io"));
        let d: Vec<_> = v.iter().map(|x| decide(x).0).collect();
        assert_eq!(
            d,
            [
                Decision::FileCow,
                Decision::Shmem,
                Decision::Anon,
                Decision::Skip,
                Decision::Whole,
                Decision::Shmem,
                Decision::FileShared,
                Decision::Skip,
                Decision::Unsupported
            ]
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_smaps("hello world\n").is_err());
        assert!(parse_smaps("VmFlags: rd\n").is_err());
    }
}
