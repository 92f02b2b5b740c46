//! Syscall injection conventions on x86_64: the instruction bytes planted in the task, where the
//! syscall number and arguments go, and how the trap that ends an injected call looks.
//!
//! The general registers are handled as `libc::user_regs_struct` (PTRACE_GETREGS/SETREGS); the
//! capture work owns the full register/FPU model in `regs.rs`, injection only needs these.

use nix::sys::ptrace;
use nix::unistd::Pid;

use super::regs::SYSCALL_INSN_LEN;
use crate::error::{Error, Result};

/// General registers as PTRACE_GETREGS returns them.
pub type SyscallRegs = libc::user_regs_struct;

/// `syscall` followed by `int3` traps: one 8-byte word, so a single PTRACE_POKEDATA plants it.
pub const SYSCALL_CODE: [u8; 8] = [0x0f, 0x05, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc];

/// `si_code` of the SIGTRAP raised by `int3` (the kernel reports it as SI_KERNEL).
pub const TRAP_SI_CODE: i32 = 0x80;

/// EFLAGS bits cleared before running injected code: trap flag, direction flag, interrupt flag,
/// so the code runs with a known flag state whatever the task was doing.
const EFLAGS_CLEAR: u64 = (1 << 8) | (1 << 10) | (1 << 9);

pub fn get_regs(tid: i32) -> Result<SyscallRegs> {
    ptrace::getregs(Pid::from_raw(tid)).map_err(|e| Error::from_errno(e, tid, "PTRACE_GETREGS"))
}

pub fn set_regs(tid: i32, regs: &SyscallRegs) -> Result<()> {
    ptrace::setregs(Pid::from_raw(tid), *regs).map_err(|e| Error::from_errno(e, tid, "PTRACE_SETREGS"))
}

/// Registers that run syscall `nr` with `args` from code planted at `ip`, derived from the
/// task's saved registers (segment and TLS registers stay as they are).
pub fn syscall_regs(saved: &SyscallRegs, ip: u64, nr: i64, args: &[u64; 6]) -> SyscallRegs {
    let mut r = *saved;
    r.rip = ip;
    r.rax = nr as u64;
    r.rdi = args[0];
    r.rsi = args[1];
    r.rdx = args[2];
    r.r10 = args[3];
    r.r8 = args[4];
    r.r9 = args[5];
    // Not inside a syscall any more: keeps the kernel's restart logic away from our registers.
    r.orig_rax = u64::MAX;
    r.eflags &= !EFLAGS_CLEAR;
    r
}

/// The injected syscall's return value (negative errno on failure).
pub fn syscall_result(regs: &SyscallRegs) -> i64 {
    regs.rax as i64
}

/// Points the stack at `sp` (the return frame) for framed calls.
pub fn set_sp(regs: &mut SyscallRegs, sp: u64) {
    regs.rsp = sp;
}

/// The stack pointer.
pub fn stack_pointer(regs: &SyscallRegs) -> u64 {
    regs.rsp
}

pub fn instruction_pointer(regs: &SyscallRegs) -> u64 {
    regs.rip
}

/// True when the registers are still those of a 64-bit task (a 32-bit compat task has a
/// different code segment and syscall table; injection refuses it).
pub fn is_native(regs: &SyscallRegs) -> bool {
    regs.cs == 0x33
}

/// Code run from the scratch mapping when a return frame is in place: the injected `syscall`,
/// then `mov $15, %eax; syscall` (rt_sigreturn) which takes the task back to its own code if
/// nobody is tracing it any more, then traps that are never reached.
pub const FRAME_CODE: [u8; 16] = [0x0f, 0x05, 0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc];
/// Bytes below the stack pointer that a leaf function may use without moving it (the ABI's red
/// zone): a frame put on a thread's stack goes below them.
pub const RED_ZONE: u64 = 128;
/// Offset of the frame's uc_stack (a stack_t, as sigaltstack(2) writes it).
pub const SIGFRAME_ALTSTACK_OFF: usize = UC_OFF + 16;

const NT_X86_XSTATE: libc::c_int = 0x202;
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
const UC_FP_XSTATE: u64 = 1;
const UC_SIGCONTEXT_SS: u64 = 2;
const UC_STRICT_RESTORE_SS: u64 = 4;
/// `struct ucontext` is 304 bytes, `siginfo` 128, after the 8-byte return address.
const UC_OFF: usize = 8;
const MCONTEXT_OFF: usize = UC_OFF + 40;
const SIGMASK_OFF: usize = UC_OFF + 296;
const FPSTATE_OFF: usize = 448;

/// The thread's full XSAVE image (NT_X86_XSTATE, standard format), as long as the kernel says.
pub fn read_xstate(tid: i32) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: the kernel writes at most iov_len bytes into `buf` and shrinks iov_len to match.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETREGSET, tid, NT_X86_XSTATE, &mut iov as *mut libc::iovec) };
    if r < 0 {
        return Err(Error::from_errno(nix::errno::Errno::last(), tid, "PTRACE_GETREGSET(NT_X86_XSTATE)"));
    }
    buf.truncate(iov.iov_len);
    Ok(buf)
}

/// Whether a frame can be built from `xstate` (as read_xstate returned it) within `slot` bytes.
pub fn frame_fits(xstate: &[u8], slot: usize) -> bool {
    xstate.len() >= 576 && FPSTATE_OFF + xstate.len() + 4 <= slot
}

/// What a return to the task's own code must do with a thread stopped inside a syscall: the
/// kernel's no-handler restart rules (rewind over the syscall instruction, number back in rax).
pub fn restart_fixup(regs: &SyscallRegs) -> SyscallRegs {
    let mut r = *regs;
    if (r.orig_rax as i64) < 0 {
        return r;
    }
    match -(r.rax as i64) {
        512..=514 => {
            r.rax = r.orig_rax;
            r.rip -= SYSCALL_INSN_LEN;
        }
        516 => {
            r.rax = libc::SYS_restart_syscall as u64;
            r.rip -= SYSCALL_INSN_LEN;
        }
        _ => {}
    }
    r.orig_rax = u64::MAX;
    r
}

/// An rt_sigframe at remote address `at` (64-byte aligned) that rt_sigreturn turns back into the
/// thread's own state: registers (restart rules applied), signal mask, sigaltstack and the
/// XSAVE image `xstate`. Returns the bytes and the stack pointer rt_sigreturn expects.
pub fn build_sigframe(regs: &SyscallRegs, xstate: &[u8], sigmask: u64, altstack: (u64, i32, u64), at: u64) -> (Vec<u8>, u64) {
    let r = restart_fixup(regs);
    let mut f = vec![0u8; FPSTATE_OFF + xstate.len() + 4];
    let put64 = |f: &mut Vec<u8>, off: usize, v: u64| f[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    let put32 = |f: &mut Vec<u8>, off: usize, v: u32| f[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    put64(&mut f, UC_OFF, UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS);
    put64(&mut f, UC_OFF + 16, altstack.0);
    put32(&mut f, UC_OFF + 24, altstack.1 as u32);
    put64(&mut f, UC_OFF + 32, altstack.2);
    let gprs = [
        r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi, r.rsi, r.rbp, r.rbx, r.rdx, r.rax, r.rcx, r.rsp, r.rip, r.eflags,
    ];
    for (i, v) in gprs.iter().enumerate() {
        put64(&mut f, MCONTEXT_OFF + i * 8, *v);
    }
    // cs, gs, fs, ss as u16s; gs/fs are not restored on 64-bit (the bases stay as they are).
    let segs = MCONTEXT_OFF + 144;
    f[segs..segs + 2].copy_from_slice(&(r.cs as u16).to_ne_bytes());
    f[segs + 6..segs + 8].copy_from_slice(&(r.ss as u16).to_ne_bytes());
    put64(&mut f, MCONTEXT_OFF + 184, at + FPSTATE_OFF as u64);
    put64(&mut f, SIGMASK_OFF, sigmask);
    f[FPSTATE_OFF..FPSTATE_OFF + xstate.len()].copy_from_slice(xstate);
    // The ptrace image keeps XCR0 in the software-reserved bytes; a signal frame wants the
    // fx_sw_bytes there instead (magic, sizes, feature mask) and a second magic after the image.
    let sw = FPSTATE_OFF + 464;
    let xcr0 = u64::from_ne_bytes(xstate[464..472].try_into().expect("8 bytes"));
    f[sw..sw + 48].fill(0);
    put32(&mut f, sw, FP_XSTATE_MAGIC1);
    put32(&mut f, sw + 4, xstate.len() as u32 + 4);
    put64(&mut f, sw + 8, xcr0);
    put32(&mut f, sw + 16, xstate.len() as u32);
    put32(&mut f, FPSTATE_OFF + xstate.len(), FP_XSTATE_MAGIC2);
    (f, at + UC_OFF as u64)
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_regs_puts_arguments_in_the_abi_registers() {
        // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
        let saved: SyscallRegs = unsafe { std::mem::zeroed() };
        let r = syscall_regs(&saved, 0x1000, 9, &[1, 2, 3, 4, 5, 6]);
        assert_eq!((r.rip, r.rax, r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9), (0x1000, 9, 1, 2, 3, 4, 5, 6));
        assert_eq!(r.orig_rax, u64::MAX);
    }

    #[test]
    fn restart_rules_match_the_kernel_without_a_handler() {
        // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
        let mut r: SyscallRegs = unsafe { std::mem::zeroed() };
        r.orig_rax = 34; // pause
        r.rax = (-512i64) as u64;
        r.rip = 0x1002;
        let f = restart_fixup(&r);
        assert_eq!((f.rax, f.rip, f.orig_rax), (34, 0x1000, u64::MAX));
        r.rax = (-516i64) as u64;
        assert_eq!(restart_fixup(&r).rax, libc::SYS_restart_syscall as u64);
        r.rax = (-4i64) as u64; // EINTR stays EINTR
        assert_eq!(restart_fixup(&r).rip, 0x1002);
    }

    #[test]
    fn sigframe_layout() {
        // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
        let mut r: SyscallRegs = unsafe { std::mem::zeroed() };
        r.orig_rax = u64::MAX;
        r.rip = 0x4000;
        r.rsp = 0x7000;
        r.cs = 0x33;
        r.ss = 0x2b;
        let mut xs = vec![0u8; 832];
        xs[464] = 7;
        let (f, sp) = build_sigframe(&r, &xs, 1, (0x9000, 0, 0x1000), 0x10000);
        assert_eq!(sp, 0x10008);
        let rd = |o: usize| u64::from_ne_bytes(f[o..o + 8].try_into().unwrap());
        assert_eq!(rd(MCONTEXT_OFF + 16 * 8), 0x4000);
        assert_eq!(rd(MCONTEXT_OFF + 15 * 8), 0x7000);
        assert_eq!(rd(MCONTEXT_OFF + 184), 0x10000 + 448);
        assert_eq!(rd(SIGMASK_OFF), 1);
        assert_eq!(rd(UC_OFF + 16), 0x9000);
        assert_eq!(&f[448 + 464..448 + 468], &FP_XSTATE_MAGIC1.to_ne_bytes());
        assert_eq!(rd(448 + 472), 7, "xfeatures from XCR0");
        assert_eq!(&f[448 + 832..448 + 836], &FP_XSTATE_MAGIC2.to_ne_bytes());
    }
}
