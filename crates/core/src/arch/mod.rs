//! Architecture-specific code, one module per architecture with the same item names, so the
//! rest of the crate says `arch::Regs` and never `cfg(target_arch)`.
//!
//! Each architecture module has:
//! - `regs`: general registers, FPU/vector state, TLS, as read with PTRACE_GETREGSET.
//! - `syscall`: how to run one syscall inside a stopped task (instruction bytes, argument
//!   registers, return value) and the parasite blob's entry conventions.
//! - `TASK_SIZE`: the end of the user address space.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use self::aarch64::*;

/// Syscall numbers used by injection; libc carries each architecture's own table.
pub mod nr {
    pub const MMAP: i64 = libc::SYS_mmap;
    pub const MUNMAP: i64 = libc::SYS_munmap;
    pub const MPROTECT: i64 = libc::SYS_mprotect;
    pub const RT_SIGACTION: i64 = libc::SYS_rt_sigaction;
    pub const GETITIMER: i64 = libc::SYS_getitimer;
    pub const TIMER_GETTIME: i64 = libc::SYS_timer_gettime;
    pub const TIMER_GETOVERRUN: i64 = libc::SYS_timer_getoverrun;
    pub const SIGALTSTACK: i64 = libc::SYS_sigaltstack;
    pub const PRCTL: i64 = libc::SYS_prctl;
    pub const UMASK: i64 = libc::SYS_umask;
    pub const MEMBARRIER: i64 = libc::SYS_membarrier;
    pub const GETGROUPS: i64 = libc::SYS_getgroups;
    pub const GETRESUID: i64 = libc::SYS_getresuid;
    pub const GETRESGID: i64 = libc::SYS_getresgid;
    pub const SETFSUID: i64 = libc::SYS_setfsuid;
    pub const SETFSGID: i64 = libc::SYS_setfsgid;
    pub const CAPGET: i64 = libc::SYS_capget;
    pub const PIPE2: i64 = libc::SYS_pipe2;
    pub const CLOSE: i64 = libc::SYS_close;
    pub const VMSPLICE: i64 = libc::SYS_vmsplice;
    pub const GETTID: i64 = libc::SYS_gettid;
    pub const GETPID: i64 = libc::SYS_getpid;
    pub const NANOSLEEP: i64 = libc::SYS_nanosleep;
}

use nix::errno::Errno;

/// The refusal for a 32-bit (compat) task, whatever the architecture: tsdump's core images,
/// injected code and parasite are 64-bit only (CRIU's own compat support is x86-only and
/// optional).
pub fn compat_task_error(tid: i32) -> crate::error::Error {
    crate::error::Error::new(
        crate::ErrorCode::Unsupported,
        format!("tid {tid}: a 32-bit (compat) task; tsdump dumps 64-bit tasks only"),
    )
}

/// PTRACE_GETREGSET into a buffer of `cap` bytes; returns the bytes the kernel filled.
pub fn getregset(tid: i32, note: u32, cap: usize) -> std::result::Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; cap];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: iov points at `buf`, which outlives the call; the kernel writes at most iov_len bytes.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            tid,
            note as usize as *mut libc::c_void,
            &mut iov,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    buf.truncate(iov.iov_len);
    Ok(buf)
}
