//! Syscall injection conventions on aarch64: `svc #0` then `brk #0`, number in x8, arguments in
//! x0..x5, result in x0. Registers move through PTRACE_GETREGSET/SETREGSET(NT_PRSTATUS).
//!
//! Unlike x86_64 there is no orig_ax to clear: arm64 applies syscall-restart fix-ups before the
//! task enters its signal/ptrace stop, so the registers we see are already post-fix-up and the
//! ones we set are run as they are.
//!
//! Return frames: the scratch holds an rt_sigframe (`build_sigframe`) and the code is
//! `svc #0; rt_sigreturn`, so a thread left in our code by a dead tsdump goes home by itself.

use super::regs::{FPSIMD_SIZE, NT_PRFPREG, NT_PRSTATUS, PSR_MODE32_BIT};
use crate::error::{Error, Result};

pub type SyscallRegs = libc::user_regs_struct;

/// `svc #0` (0xd4000001) then `brk #0` (0xd4200000), little-endian.
pub const SYSCALL_CODE: [u8; 8] = [0x01, 0x00, 0x00, 0xd4, 0x00, 0x00, 0x20, 0xd4];

/// `si_code` of the SIGTRAP raised by `brk` (TRAP_BRKPT).
pub const TRAP_SI_CODE: i32 = 1;

/// Code run from the scratch mapping when a return frame is in place: the injected `svc #0`,
/// then `mov x8, #139; svc #0` (rt_sigreturn, which takes the task back to its own code if nobody
/// is tracing it any more), then `brk #0`, never reached.
pub const FRAME_CODE: [u8; 16] = [
    0x01, 0x00, 0x00, 0xd4, 0x68, 0x11, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4, 0x00, 0x00, 0x20, 0xd4,
];
/// Bytes below the stack pointer that a leaf function may use without moving it: AAPCS64 has
/// no red zone.
pub const RED_ZONE: u64 = 0;

// struct rt_sigframe { siginfo_t info; struct ucontext uc; } (arch/arm64/kernel/signal.c), with
// struct ucontext and struct sigcontext from the uapi headers.
const UC_OFF: usize = 128;
/// Offset of the frame's uc_stack (a stack_t, as sigaltstack(2) writes it).
pub const SIGFRAME_ALTSTACK_OFF: usize = UC_OFF + 16;
const SIGMASK_OFF: usize = UC_OFF + 40;
/// uc_mcontext: after 1024 bits of sigset, 16-byte aligned.
const MCONTEXT_OFF: usize = UC_OFF + 176;
const REGS_OFF: usize = MCONTEXT_OFF + 8;
const SP_OFF: usize = REGS_OFF + 31 * 8;
const PC_OFF: usize = SP_OFF + 8;
const PSTATE_OFF: usize = PC_OFF + 8;
/// sigcontext.__reserved: the records (fpsimd_context first, a zero header ends them).
const RESERVED_OFF: usize = MCONTEXT_OFF + 288;
const RESERVED_LEN: usize = 4096;
const FRAME_LEN: usize = RESERVED_OFF + RESERVED_LEN;
const FPSIMD_MAGIC: u32 = 0x4650_8001;
/// struct fpsimd_context: header (magic, size), fpsr, fpcr, 32 128-bit V registers.
const FPSIMD_CONTEXT_LEN: usize = 16 + 32 * 16;

/// The thread's FP/SIMD registers (NT_PRFPREG, `struct user_fpsimd_state`): what a return frame
/// carries back. SVE/SME state beyond the V registers is not carried: like every syscall, the
/// injected ones discard it, as CRIU's do.
pub fn read_xstate(tid: i32) -> Result<Vec<u8>> {
    crate::arch::getregset(tid, NT_PRFPREG, FPSIMD_SIZE + 8)
        .map_err(|e| Error::from_errno(e, tid, "PTRACE_GETREGSET(NT_PRFPREG)"))
}

/// Whether a frame can be built from `fpstate` (as read_xstate returned it) within `slot` bytes.
pub fn frame_fits(fpstate: &[u8], slot: usize) -> bool {
    fpstate.len() >= FPSIMD_SIZE && FRAME_LEN <= slot
}

/// An rt_sigframe at remote address `at` (16-byte aligned) that rt_sigreturn turns back into the
/// thread's own state: registers, signal mask, sigaltstack and FP/SIMD registers. Returns the
/// bytes and the stack pointer rt_sigreturn expects (the frame itself).
///
/// No restart rules to apply: arm64 rewinds an interrupted syscall (pc back over the svc, x0 =
/// orig_x0) before the thread enters the stop we found it in, so its registers already say how
/// to resume. (The one thing the kernel does later, turning an -ERESTART_RESTARTBLOCK restart
/// into restart_syscall, cannot be seen from here: such a sleep restarts whole, as after CRIU.)
pub fn build_sigframe(regs: &SyscallRegs, fpstate: &[u8], sigmask: u64, altstack: (u64, i32, u64), at: u64) -> (Vec<u8>, u64) {
    debug_assert_eq!(at % 16, 0, "rt_sigreturn wants a 16-byte aligned frame");
    let mut f = vec![0u8; FRAME_LEN];
    let put64 = |f: &mut Vec<u8>, off: usize, v: u64| f[off..off + 8].copy_from_slice(&v.to_le_bytes());
    let put32 = |f: &mut Vec<u8>, off: usize, v: u32| f[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put64(&mut f, SIGFRAME_ALTSTACK_OFF, altstack.0);
    put32(&mut f, SIGFRAME_ALTSTACK_OFF + 8, altstack.1 as u32);
    put64(&mut f, SIGFRAME_ALTSTACK_OFF + 16, altstack.2);
    put64(&mut f, SIGMASK_OFF, sigmask);
    for (i, v) in regs.regs.iter().enumerate() {
        put64(&mut f, REGS_OFF + i * 8, *v);
    }
    put64(&mut f, SP_OFF, regs.sp);
    put64(&mut f, PC_OFF, regs.pc);
    put64(&mut f, PSTATE_OFF, regs.pstate);
    put32(&mut f, RESERVED_OFF, FPSIMD_MAGIC);
    put32(&mut f, RESERVED_OFF + 4, FPSIMD_CONTEXT_LEN as u32);
    f[RESERVED_OFF + 8..RESERVED_OFF + 16].copy_from_slice(&fpstate[512..520]); // fpsr, fpcr
    f[RESERVED_OFF + 16..RESERVED_OFF + FPSIMD_CONTEXT_LEN].copy_from_slice(&fpstate[..512]);
    // the terminating null record is already zero
    (f, at)
}

pub fn get_regs(tid: i32) -> Result<SyscallRegs> {
    // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
    let mut regs: SyscallRegs = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: (&mut regs as *mut SyscallRegs).cast(),
        iov_len: std::mem::size_of::<SyscallRegs>(),
    };
    // SAFETY: the kernel writes at most iov_len bytes into `regs`.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETREGSET, tid, NT_PRSTATUS as usize, &mut iov as *mut libc::iovec) };
    if r < 0 {
        return Err(Error::from_errno(nix::errno::Errno::last(), tid, "PTRACE_GETREGSET"));
    }
    // An AArch32 task's NT_PRSTATUS is the shorter compat register set.
    if iov.iov_len < std::mem::size_of::<SyscallRegs>() || !is_native(&regs) {
        return Err(crate::arch::compat_task_error(tid));
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
    let r = unsafe { libc::ptrace(libc::PTRACE_SETREGSET, tid, NT_PRSTATUS as usize, &mut iov as *mut libc::iovec) };
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
    regs.pstate & PSR_MODE32_BIT == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zero_regs() -> SyscallRegs {
        // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn syscall_regs_puts_arguments_in_the_abi_registers() {
        let r = syscall_regs(&zero_regs(), 0x1000, 222, &[1, 2, 3, 4, 5, 6]);
        assert_eq!((r.pc, r.regs[8]), (0x1000, 222));
        assert_eq!(&r.regs[..6], &[1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn sigframe_layout_matches_the_kernels() {
        let mut r = zero_regs();
        for (i, x) in r.regs.iter_mut().enumerate() {
            *x = 0x100 + i as u64;
        }
        r.sp = 0x7000;
        r.pc = 0x4000;
        r.pstate = 0x6000_0000;
        let mut fp = vec![0u8; FPSIMD_SIZE];
        fp[0] = 0xaa; // V0's low byte
        fp[511] = 0xbb; // V31's high byte
        fp[512..516].copy_from_slice(&0x11u32.to_le_bytes()); // fpsr
        fp[516..520].copy_from_slice(&0x22u32.to_le_bytes()); // fpcr
        let (f, sp) = build_sigframe(&r, &fp, 0x8001, (0x9000, 0, 0x2000), 0x10000);
        assert_eq!(sp, 0x10000);
        assert_eq!(f.len(), 4688, "sizeof(struct rt_sigframe)");
        let rd = |o: usize| u64::from_le_bytes(f[o..o + 8].try_into().unwrap());
        let rd32 = |o: usize| u32::from_le_bytes(f[o..o + 4].try_into().unwrap());
        // uc_stack, uc_sigmask, then uc_mcontext at 128 + 176
        assert_eq!((rd(144), rd32(152), rd(160)), (0x9000, 0, 0x2000));
        assert_eq!(rd(168), 0x8001);
        assert_eq!(rd(304 + 8), 0x100, "x0");
        assert_eq!(rd(304 + 8 + 30 * 8), 0x100 + 30, "x30");
        assert_eq!((rd(304 + 256), rd(304 + 264), rd(304 + 272)), (0x7000, 0x4000, 0x6000_0000));
        // __reserved at 304 + 288: fpsimd_context {magic, size = 528, fpsr, fpcr, vregs}
        assert_eq!((rd32(592), rd32(596), rd32(600), rd32(604)), (FPSIMD_MAGIC, 528, 0x11, 0x22));
        assert_eq!((f[608], f[608 + 511]), (0xaa, 0xbb));
        assert_eq!(rd(592 + 528), 0, "terminating record");
    }

    #[test]
    fn a_frame_needs_fpsr_and_fpcr_and_the_whole_frame_slot() {
        assert!(frame_fits(&[0; FPSIMD_SIZE], FRAME_LEN));
        assert!(!frame_fits(&[0; FPSIMD_SIZE - 8], FRAME_LEN), "V registers without fpsr/fpcr");
        assert!(!frame_fits(&[0; FPSIMD_SIZE + 8], FRAME_LEN - 1));
    }

    #[test]
    fn frame_code_is_svc_then_rt_sigreturn() {
        let words: Vec<u32> = FRAME_CODE.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
        // svc #0; movz x8, #139 (__NR_rt_sigreturn); svc #0; brk #0
        assert_eq!(words, [0xd400_0001, 0xd280_0000 | (139 << 5) | 8, 0xd400_0001, 0xd420_0000]);
        assert_eq!(libc::SYS_rt_sigreturn, 139);
    }
}
