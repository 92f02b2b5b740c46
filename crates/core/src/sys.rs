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
