//! Syscall injection conventions on aarch64: `svc #0` then `brk #0`, number in x8, arguments in
//! x0..x5, result in x0. Registers move through PTRACE_GETREGSET/SETREGSET(NT_PRSTATUS).
//!
//! Unlike x86_64 there is no orig_ax to clear: arm64 applies syscall-restart fix-ups before the
//! task enters its signal/ptrace stop, so the registers we see are already post-fix-up and the
//! ones we set are run as they are.

use crate::error::{Error, Result};

pub type SyscallRegs = libc::user_regs_struct;

/// `svc #0` (0xd4000001) then `brk #0` (0xd4200000), little-endian.
pub const SYSCALL_CODE: [u8; 8] = [0x01, 0x00, 0x00, 0xd4, 0x00, 0x00, 0x20, 0xd4];

/// `si_code` of the SIGTRAP raised by `brk` (TRAP_BRKPT).
pub const TRAP_SI_CODE: i32 = 1;

const NT_PRSTATUS: libc::c_int = 1;

/// Return frames (rt_sigreturn to the task's own code if the tracer dies) are designed but not
/// built for arm64 yet: injection falls back to trap-only code there.
pub const SIGFRAME_SUPPORTED: bool = false;
/// Offset of the frame's uc_stack (struct rt_sigframe: siginfo 128 bytes, then ucontext with
/// uc_flags and uc_link before it); unused until the frame is built.
pub const SIGFRAME_ALTSTACK_OFF: usize = 128 + 16;
pub const FRAME_CODE: [u8; 16] = [0; 16];
pub const SYSCALL_INSN_LEN: u64 = 4;

pub fn read_xstate(_tid: i32) -> Result<Vec<u8>> {
    Ok(Vec::new())
}

pub fn build_sigframe(_regs: &SyscallRegs, _x: &[u8], _mask: u64, _alt: (u64, i32, u64), at: u64) -> (Vec<u8>, u64) {
    (Vec::new(), at)
}

pub fn get_regs(tid: i32) -> Result<SyscallRegs> {
    // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
    let mut regs: SyscallRegs = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: (&mut regs as *mut SyscallRegs).cast(),
        iov_len: std::mem::size_of::<SyscallRegs>(),
    };
    // SAFETY: the kernel writes at most iov_len bytes into `regs`.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETREGSET, tid, NT_PRSTATUS, &mut iov as *mut libc::iovec) };
    if r < 0 {
        return Err(Error::from_errno(nix::errno::Errno::last(), tid, "PTRACE_GETREGSET"));
    }
    Ok(regs)
}

pub fn set_regs(tid: i32, regs: &SyscallRegs) -> Result<()> {
    let mut copy = *regs;
    let mut iov = libc::iovec {
        iov_base: (&mut copy as *mut SyscallRegs).cast(),
        iov_len: std::mem::size_of::<SyscallRegs>(),
    };
    // SAFETY: the kernel reads iov_len bytes from `copy`.
    let r = unsafe { libc::ptrace(libc::PTRACE_SETREGSET, tid, NT_PRSTATUS, &mut iov as *mut libc::iovec) };
    if r < 0 {
        return Err(Error::from_errno(nix::errno::Errno::last(), tid, "PTRACE_SETREGSET"));
    }
    Ok(())
}

pub fn syscall_regs(saved: &SyscallRegs, ip: u64, nr: i64, args: &[u64; 6]) -> SyscallRegs {
    let mut r = *saved;
    r.pc = ip;
    r.regs[8] = nr as u64;
    r.regs[..6].copy_from_slice(args);
    r
}

pub fn syscall_result(regs: &SyscallRegs) -> i64 {
    regs.regs[0] as i64
}

pub fn set_sp(regs: &mut SyscallRegs, sp: u64) {
    regs.sp = sp;
}

/// The stack pointer.
pub fn stack_pointer(regs: &SyscallRegs) -> u64 {
    regs.sp
}

pub fn instruction_pointer(regs: &SyscallRegs) -> u64 {
    regs.pc
}

/// AArch32 tasks have PSTATE.nRW set; injection only supports AArch64 tasks.
pub fn is_native(regs: &SyscallRegs) -> bool {
    regs.pstate & (1 << 4) == 0
}

