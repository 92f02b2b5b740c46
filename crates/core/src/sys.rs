//! System calls whose glibc wrappers are newer than the glibc the released binaries are built
//! against (2.17, see scripts/pack-local.sh): called through syscall(2), so the .node loads on
//! any glibc from 2.17 on (the kernel decides whether the call exists, as it would anyway).
//! __test__/pack.test.ts checks the released binaries' symbol versions.

use std::ffi::CStr;

/// memfd_create(2) (glibc 2.27): the new descriptor or -1 with errno set.
pub fn memfd_create(name: &CStr, flags: libc::c_uint) -> libc::c_int {
    // SAFETY: name is NUL-terminated and outlives the call; the kernel only reads it.
    unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), flags) as libc::c_int }
}

/// getrandom(2) (glibc 2.25): fills `buf` (up to 256 bytes never come short); bytes or -1.
pub fn getrandom(buf: &mut [u8]) -> isize {
    // SAFETY: the kernel writes at most buf.len() bytes into buf.
    unsafe { libc::syscall(libc::SYS_getrandom, buf.as_mut_ptr(), buf.len(), 0) as isize }
}

/// renameat2(2) (glibc 2.28; nix has it for glibc only): `old` under `old_dir` to `new` under
/// `new_dir`, `flags` libc::RENAME_*.
pub fn renameat2<Fd1: std::os::fd::AsFd, Fd2: std::os::fd::AsFd>(
    old_dir: Fd1,
    old: &std::ffi::OsStr,
    new_dir: Fd2,
    new: &std::ffi::OsStr,
    flags: libc::c_uint,
) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let old = std::ffi::CString::new(old.as_bytes()).map_err(|_| nix::errno::Errno::EINVAL)?;
    let new = std::ffi::CString::new(new.as_bytes()).map_err(|_| nix::errno::Errno::EINVAL)?;
    let (od, nd) = (old_dir.as_fd().as_raw_fd(), new_dir.as_fd().as_raw_fd());
    // SAFETY: both names are NUL-terminated and outlive the call; the kernel only reads them.
    let r = unsafe { libc::syscall(libc::SYS_renameat2, od, old.as_ptr(), nd, new.as_ptr(), flags) };
    nix::errno::Errno::result(r).map(drop)
}

/// statx(2) (glibc 2.28) into `buf`: 0, or -1 with errno set.
pub fn statx(dir: libc::c_int, path: &CStr, flags: libc::c_int, mask: libc::c_uint, buf: &mut libc::statx) -> libc::c_int {
    // SAFETY: path is NUL-terminated; the kernel writes at most one struct statx into buf.
    unsafe { libc::syscall(libc::SYS_statx, dir, path.as_ptr(), flags, mask, buf as *mut libc::statx) as libc::c_int }
}
