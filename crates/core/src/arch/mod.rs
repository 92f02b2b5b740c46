//! Architecture-specific code, one module per architecture with the same item names, so the
//! rest of the crate says `arch::Regs` and never `cfg(target_arch)`.
//!
//! Each architecture module has:
//! - `regs`: general registers, FPU/vector state, TLS, as read with PTRACE_GETREGSET.
//! - `syscall`: how to run one syscall inside a stopped task (instruction bytes, argument
//!   registers, return value) and the parasite blob's entry conventions.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use self::aarch64::*;
