//! Running single syscalls inside a ptrace-stopped task.
//!
//! Where the code runs: the first call (the scratch `mmap`) and the last (its `munmap`) run from
//! bytes borrowed in padding of the task's text, with their return frame on the thread's stack
//! (`borrow`: put back right after); every other call runs from the scratch mapping.
//!
//! How a call runs: registers and signal mask are saved on first contact with a thread and put
//! back after every call, on success and on failure. Two protocols:
//! - framed (x86_64, aarch64): a return frame (an rt_sigframe rebuilt from the thread's saved state:
//!   registers with the kernel's restart rules applied, mask, XSAVE image; its sigaltstack left
//!   as it is) sits in the scratch (or on the stack for the borrowed calls) and the code is
//!   `syscall; rt_sigreturn`. tsdump steps it with PTRACE_SYSCALL (enter, exit), then
//!   PTRACE_INTERRUPT + PTRACE_CONT to catch the thread in a signal-path stop before it reaches
//!   the rt_sigreturn, and puts the saved registers back there. If tsdump dies at any point (even
//!   SIGKILL), the kernel detaches the thread and it either returns from that stop with its own
//!   registers (syscall restart handled by the kernel as usual) or runs the rt_sigreturn into its
//!   own code: the task carries on, with the scratch mapping as the only trace.
//! - trap: `syscall; int3`, PTRACE_CONT, wait for the SIGTRAP (what CRIU's compel does). Used
//!   only where no frame can be had (a borrowed call on a thread whose stack has no room for
//!   one), and there a tsdump killed mid-call leaves the task to die of the trap instruction.
//!
//! Threads can also run code on their own (`start_resident`, `start_thread`: the resident
//! parasite and its thread entries) with their frame in place; `park` takes them back.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::borrow;
use crate::arch::nr;
use crate::arch::syscall::{self as sc, SyscallRegs};
use crate::error::{Error, ErrorCode, Result};

/// Default scratch size: room for result structs, a few thousand iovecs and the return frame.
pub const DEFAULT_SCRATCH: usize = 256 * 1024;
/// Scratch bytes kept for the return frame (XSAVE images with AMX are ~11 KiB).
const FRAME_SLOT: usize = 32 * 1024;
/// Room for one thread running parasite code on its own (`start_thread`): its arguments,
/// answers, stack and return frame. Thread slots follow the frame slot.
pub const THREAD_SLOT: usize = 16 * 1024;
/// Scratch offset of the trap-protocol code (`syscall; int3`).
const TRAP_CODE_OFF: usize = 16;
/// A stack_t whose mode (SS_ONSTACK|SS_DISABLE) sigaltstack() rejects: written as a frame's
/// uc_stack, rt_sigreturn leaves the thread's alternate stack as it is.
const KEEP_ALTSTACK: (u64, i32, u64) = (0, 3, 0);

const PTRACE_EVENT_STOP: i32 = 128;

fn get_sigmask(tid: i32) -> Result<u64> {
    let mut mask: u64 = 0;
    // SAFETY: PTRACE_GETSIGMASK writes exactly 8 bytes (the size we pass) into `mask`.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETSIGMASK as _, tid, 8usize, &mut mask as *mut u64) };
    if r < 0 {
        return Err(Error::from_errno(Errno::last(), tid, "PTRACE_GETSIGMASK"));
    }
    Ok(mask)
}

/// SIGTRAP's bit in a signal mask.
const SIGTRAP_BIT: u64 = 1 << (libc::SIGTRAP - 1);

/// The trap protocol leaves SIGTRAP unblocked, so a SIGTRAP already pending for the thread would
/// be delivered (and consumed) by our trap: refused, as CRIU refuses it.
fn refuse_pending_sigtrap(pid: i32, tid: i32) -> Result<()> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound { ErrorCode::TargetGone } else { ErrorCode::Procfs };
            Error::new(code, format!("pid {pid} tid {tid}: reading status: {e}"))
        })?;
    let pending = status
        .lines()
        .filter(|l| l.starts_with("SigPnd:") || l.starts_with("ShdPnd:"))
        .filter_map(|l| u64::from_str_radix(l[7..].trim(), 16).ok())
        .fold(0, |a, b| a | b);
    if pending & SIGTRAP_BIT != 0 {
        return Err(Error::new(
            ErrorCode::Unsupported,
            format!("pid {pid} tid {tid}: a SIGTRAP is pending; the dump's trap would consume it (wait until it is delivered)"),
        ));
    }
    Ok(())
}

fn set_sigmask(tid: i32, mask: u64) -> Result<()> {
    // SAFETY: PTRACE_SETSIGMASK reads exactly 8 bytes from `mask`.
    let r = unsafe { libc::ptrace(libc::PTRACE_SETSIGMASK as _, tid, 8usize, &mask as *const u64) };
    if r < 0 {
        return Err(Error::from_errno(Errno::last(), tid, "PTRACE_SETSIGMASK"));
    }
    Ok(())
}

fn peek_word(tid: i32, addr: u64) -> Result<[u8; 8]> {
    let w = ptrace::read(Pid::from_raw(tid), addr as ptrace::AddressType)
        .map_err(|e| Error::from_errno(e, tid, format_args!("PTRACE_PEEKDATA at {addr:#x}")))?;
    Ok((w as u64).to_ne_bytes())
}

fn poke_word(tid: i32, addr: u64, bytes: [u8; 8]) -> Result<()> {
    let w = u64::from_ne_bytes(bytes) as libc::c_long;
    ptrace::write(Pid::from_raw(tid), addr as ptrace::AddressType, w)
        .map_err(|e| Error::from_errno(e, tid, format_args!("PTRACE_POKEDATA at {addr:#x}")))
}

/// What one thread looked like before we touched it.
#[derive(Clone)]
struct Saved {
    regs: SyscallRegs,
    sigmask: u64,
    /// The return frame for this thread, once built.
    frame: Option<(Vec<u8>, u64)>,
}

/// What stopped a thread we resumed.
enum Stop {
    /// A syscall-enter/exit stop, or the SIGTRAP of our trap code (`si_code` given).
    Trap(Option<i32>),
    /// PTRACE_EVENT_STOP (our PTRACE_INTERRUPT, or a group stop).
    EventStop,
}

/// An infected process: a scratch mapping in it and the means to run syscalls in any of its
/// threads that are in a ptrace stop owned by the calling thread.
pub struct Injector {
    pid: i32,
    /// The task's mappings when infected (before the scratch), for the borrowed calls.
    vmas: Vec<crate::mem::Vma>,
    spot: Option<borrow::Spot>,
    scratch: u64,
    scratch_len: usize,
    /// Where the thread slots begin (the end of the frame slot).
    slots_at: usize,
    saved: HashMap<i32, Saved>,
    /// The thread whose frame is currently written in the scratch's frame slot.
    frame_of: Option<i32>,
    /// Use return frames where the architecture has them.
    framed: bool,
    /// Stop signals that arrived while our code ran; re-sent after the cure so they are not lost.
    pending_stops: Vec<(i32, Signal)>,
    /// The thread running the resident blob (its way home is the main frame slot).
    resident: Option<i32>,
    /// Threads running our code freely (the resident blob, thread entries), and whether each is
    /// in a ptrace stop.
    running: HashMap<i32, bool>,
    /// Wait events of running threads met while waiting for another thread.
    stash: Vec<(i32, WaitStatus)>,
    /// A thread went home through its frame while tsdump was alive and ran its own code before
    /// it was taken back (the dump cannot vouch for a consistent picture of that task).
    pub ran_free: Option<i32>,
    /// Syscalls run (for stats and tests).
    pub calls: u64,
    cured: bool,
}

impl Injector {
    /// Maps the scratch area in `pid` (which must be ptrace-stopped by this thread) and plants
    /// the code at its start.
    pub fn infect(pid: i32, scratch_len: usize) -> Result<Injector> {
        Self::infect_with_slots(pid, scratch_len, 0)
    }

    /// `infect`, with room for `slots` threads running parasite code at once (THREAD_SLOT each).
    pub fn infect_with_slots(pid: i32, scratch_len: usize, slots: usize) -> Result<Injector> {
        Self::infect_known(pid, scratch_len, slots, crate::mem::vma::read_vmas(pid)?)
    }

    /// `infect_with_slots`, the task's mappings read already.
    pub fn infect_known(pid: i32, scratch_len: usize, slots: usize, vmas: Vec<crate::mem::Vma>) -> Result<Injector> {
        let slots_at = scratch_len.max(FRAME_SLOT * 2).div_ceil(4096) * 4096;
        let scratch_len = slots_at + slots * THREAD_SLOT;
        let mut inj = Self::bare(pid, 0, scratch_len, slots_at, vmas);
        let prot = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let addr = inj.borrowed_syscall(nr::MMAP, [0, scratch_len as u64, prot, flags, u64::MAX, 0])?;
        if (-4095..0).contains(&addr) {
            inj.cured = true;
            return Err(Error::new(
                ErrorCode::Parasite,
                format!("pid {pid}: remote mmap of {scratch_len} bytes: {}", Errno::from_raw(-addr as i32).desc()),
            ));
        }
        inj.scratch = addr as u64;
        let planted = inj.write_at(0, &sc::FRAME_CODE).and_then(|_| inj.write_at(TRAP_CODE_OFF, &sc::SYSCALL_CODE));
        if let Err(e) = planted {
            let _ = inj.cure();
            return Err(e);
        }
        Ok(inj)
    }

    /// Takes over the scratch mapping a visit left in `pid` (`leave`), to unmap it with `cure`.
    pub fn adopt(left: Leftover) -> Result<Injector> {
        let mut inj = Self::bare(left.pid, left.scratch, left.len, left.len, crate::mem::vma::read_vmas(left.pid)?);
        // the scratch is among the mappings now: never a place for the code (anonymous), and
        // no stack lives in it
        inj.vmas.retain(|v| v.end <= left.scratch || v.start >= left.scratch + left.len as u64);
        Ok(inj)
    }

    fn bare(pid: i32, scratch: u64, scratch_len: usize, slots_at: usize, vmas: Vec<crate::mem::Vma>) -> Injector {
        Injector {
            pid,
            vmas,
            spot: None,
            scratch,
            scratch_len,
            slots_at,
            saved: HashMap::new(),
            frame_of: None,
            framed: true,
            pending_stops: Vec::new(),
            resident: None,
            running: HashMap::new(),
            stash: Vec::new(),
            ran_free: None,
            calls: 0,
            cured: false,
        }
    }

    /// Turns return frames off (trap protocol only), e.g. to compare the two.
    pub fn set_framed(&mut self, on: bool) {
        self.framed = on;
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Address of the scratch mapping in the task.
    pub fn scratch_addr(&self) -> u64 {
        self.scratch
    }

    pub fn scratch_len(&self) -> usize {
        self.scratch_len
    }

    /// First scratch offset free for data (after the code, 64-byte aligned).
    pub const DATA_OFFSET: usize = 64;

    /// End of the data area (the return frame lives above it).
    pub fn data_limit(&self) -> usize {
        self.slots_at - FRAME_SLOT
    }

    /// How many thread slots the scratch has.
    pub fn thread_slots(&self) -> usize {
        (self.scratch_len - self.slots_at) / THREAD_SLOT
    }

    /// Scratch offset of thread slot `i`.
    pub fn thread_slot(&self, i: usize) -> usize {
        self.slots_at + i * THREAD_SLOT
    }

    /// Writes `data` at scratch offset `off` (data area only).
    pub fn write(&self, off: usize, data: &[u8]) -> Result<()> {
        if off < Self::DATA_OFFSET || off + data.len() > self.data_limit() {
            return Err(self.unexpected(self.pid, format!("scratch write {off}+{} outside the data area", data.len())));
        }
        self.write_at(off, data)
    }

    /// Writes `data` at scratch offset `off` inside the thread slots.
    pub(crate) fn write_slot(&self, off: usize, data: &[u8]) -> Result<()> {
        if off < self.slots_at {
            return Err(self.unexpected(self.pid, format!("scratch write {off}+{} outside the thread slots", data.len())));
        }
        self.write_at(off, data)
    }

    fn write_at(&self, off: usize, data: &[u8]) -> Result<()> {
        self.check_range(off, data.len())?;
        let remote = [RemoteIoVec { base: (self.scratch as usize) + off, len: data.len() }];
        let n = process_vm_writev(Pid::from_raw(self.pid), &[IoSlice::new(data)], &remote)
            .map_err(|e| Error::from_errno(e, self.pid, format_args!("writing scratch at {:#x}", self.scratch)))?;
        if n != data.len() {
            return Err(Error::new(ErrorCode::Parasite, format!("pid {}: short scratch write", self.pid)));
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes from scratch offset `off`.
    pub fn read(&self, off: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(off, buf.len())?;
        let remote = [RemoteIoVec { base: (self.scratch as usize) + off, len: buf.len() }];
        let len = buf.len();
        let n = process_vm_readv(Pid::from_raw(self.pid), &mut [IoSliceMut::new(buf)], &remote)
            .map_err(|e| Error::from_errno(e, self.pid, format_args!("reading scratch at {:#x}", self.scratch)))?;
        if n != len {
            return Err(Error::new(ErrorCode::Parasite, format!("pid {}: short scratch read", self.pid)));
        }
        Ok(())
    }

    fn check_range(&self, off: usize, len: usize) -> Result<()> {
        if self.cured || off + len > self.scratch_len {
            return Err(Error::new(
                ErrorCode::Parasite,
                format!("pid {}: scratch access {off}+{len} outside {} bytes", self.pid, self.scratch_len),
            ));
        }
        Ok(())
    }

    /// Remote address of scratch offset `off` (to pass as a syscall argument).
    pub fn remote(&self, off: usize) -> u64 {
        self.scratch + off as u64
    }

    /// The signal mask `tid` had before injection touched it.
    pub fn original_sigmask(&mut self, tid: i32) -> Result<u64> {
        Ok(self.saved_for(tid)?.sigmask)
    }

    /// The registers `tid` had before injection touched it.
    pub fn original_regs(&mut self, tid: i32) -> Result<SyscallRegs> {
        Ok(self.saved_for(tid)?.regs)
    }

    /// Runs syscall `nr` in thread `tid` from the scratch code; returns the raw result
    /// (negative errno on failure).
    pub fn syscall(&mut self, tid: i32, nr: i64, args: [u64; 6]) -> Result<i64> {
        if self.cured {
            return Err(Error::new(ErrorCode::Parasite, format!("pid {}: parasite already cured", self.pid)));
        }
        if self.running.contains_key(&tid) {
            return Err(self.unexpected(tid, "the thread is running parasite code".into()));
        }
        if self.framed && self.ensure_frame(tid)? {
            return self.run_framed(tid, nr, args);
        }
        self.run_trap(tid, self.scratch + TRAP_CODE_OFF as u64, nr, args)
    }

    /// Like `syscall` but turns a negative result into an error naming `what`.
    pub fn syscall_ok(&mut self, tid: i32, nr: i64, args: [u64; 6], what: &str) -> Result<i64> {
        let r = self.syscall(tid, nr, args)?;
        if (-4095..0).contains(&r) {
            return Err(Error::new(
                ErrorCode::Parasite,
                format!("pid {} tid {tid}: {what} in the task: {}", self.pid, Errno::from_raw(-r as i32).desc()),
            ));
        }
        Ok(r)
    }

    /// Runs a syscall in the main thread without the scratch (its own mmap and munmap): the
    /// code in borrowed bytes of the task's text and the return frame on its stack (see
    /// `borrow`), both put back whatever happens.
    fn borrowed_syscall(&mut self, nr: i64, args: [u64; 6]) -> Result<i64> {
        let pid = self.pid;
        let spot = match self.spot {
            Some(s) => s,
            None => *self.spot.insert(borrow::find_spot(pid, &self.vmas)?),
        };
        let frame = if self.framed { self.stack_frame(pid)? } else { None };
        let mut code = [0xccu8; borrow::CODE_LEN];
        match frame {
            Some(_) => code.copy_from_slice(&sc::FRAME_CODE),
            None => code[..8].copy_from_slice(&sc::SYSCALL_CODE),
        }
        let words = [spot.at, spot.at + 8];
        let orig = [peek_word(pid, words[0])?, peek_word(pid, words[1])?];
        let planted = poke_word(pid, words[0], code[..8].try_into().expect("8"))
            .and_then(|_| poke_word(pid, words[1], code[8..].try_into().expect("8")));
        let r = planted.and_then(|_| match &frame {
            Some((at, bytes, home)) => {
                let old = read_remote(pid, *at, bytes.len())?;
                let r = write_remote(pid, *at, bytes).and_then(|_| self.run_framed_at(pid, spot.at, *home, nr, args, Some(if nr == nr::MMAP { "mmap" } else { "munmap" })));
                let restored = write_remote(pid, *at, &old);
                let r = r?;
                restored.map(|_| r)
            }
            None => self.run_trap(pid, spot.at, nr, args),
        });
        if let Err(e) = &r {
            if e.code == ErrorCode::TargetGone {
                return r;
            }
        }
        let restored = poke_word(pid, words[0], orig[0]).and_then(|_| poke_word(pid, words[1], orig[1]));
        let r = r?;
        restored?;
        Ok(r)
    }

    /// A return frame for `tid` below its stack pointer (address, bytes, the stack pointer that
    /// takes it home), or None when its stack has no room for one (see `borrow::frame_below`).
    fn stack_frame(&mut self, tid: i32) -> Result<Option<(u64, Vec<u8>, u64)>> {
        let saved = self.saved_for(tid)?;
        let Ok(xstate) = sc::read_xstate(tid) else { return Ok(None) };
        let len = sc::build_sigframe(&saved.regs, &xstate, saved.sigmask, KEEP_ALTSTACK, 0).0.len();
        let Some(at) = borrow::frame_below(sc::stack_pointer(&saved.regs), len, &self.vmas).filter(|&at| borrow::in_memory(tid, at, len)) else {
            return Ok(None);
        };
        let (bytes, home) = sc::build_sigframe(&saved.regs, &xstate, saved.sigmask, KEEP_ALTSTACK, at);
        Ok(Some((at, bytes, home)))
    }

    fn saved_for(&mut self, tid: i32) -> Result<Saved> {
        if let Some(s) = self.saved.get(&tid) {
            return Ok(s.clone());
        }
        let regs = sc::get_regs(tid)?;
        if !sc::is_native(&regs) {
            return Err(crate::arch::compat_task_error(tid));
        }
        let s = Saved { regs, sigmask: get_sigmask(tid)?, frame: None };
        self.saved.insert(tid, s.clone());
        Ok(s)
    }

    /// Builds (once) and writes (when another thread's is there) `tid`'s return frame. False
    /// when no frame can be had for this thread (the trap protocol is used then).
    fn ensure_frame(&mut self, tid: i32) -> Result<bool> {
        if let Some(owner) = self.resident.filter(|owner| *owner != tid) {
            // The resident thread's way home lives in the frame slot.
            return Err(self.unexpected(tid, format!("the return frame slot belongs to resident thread {owner}")));
        }
        let saved = self.saved_for(tid)?;
        let frame_off = self.data_limit();
        if let Some((bytes, _)) = saved.frame {
            if self.frame_of != Some(tid) {
                self.write_at(frame_off, &bytes)?;
                self.frame_of = Some(tid);
            }
            return Ok(true);
        }
        let Some(f) = self.build_frame(tid, self.remote(frame_off), FRAME_SLOT)? else { return Ok(false) };
        self.write_at(frame_off, &f.0)?;
        self.frame_of = Some(tid);
        self.set_frame(tid, Some(f));
        Ok(true)
    }

    /// `tid`'s return frame for remote address `at` (at most `room` bytes), or None when this
    /// thread cannot have one. Its uc_stack carries an invalid mode, which rt_sigreturn's
    /// restore_altstack() refuses and ignores: the thread's sigaltstack stays as it is, so the
    /// frame needs no injected sigaltstack() to learn it.
    fn build_frame(&mut self, tid: i32, at: u64, room: usize) -> Result<Option<(Vec<u8>, u64)>> {
        let saved = self.saved_for(tid)?;
        let Ok(xstate) = sc::read_xstate(tid) else { return Ok(None) };
        if !sc::frame_fits(&xstate, room) {
            return Ok(None);
        }
        Ok(Some(sc::build_sigframe(&saved.regs, &xstate, saved.sigmask, KEEP_ALTSTACK, at)))
    }

    fn set_frame(&mut self, tid: i32, frame: Option<(Vec<u8>, u64)>) {
        if let Some(s) = self.saved.get_mut(&tid) {
            s.frame = frame;
        }
    }

    /// The stack pointer with which rt_sigreturn takes `tid` home (its frame is written).
    pub(crate) fn frame_sp(&mut self, tid: i32) -> Result<u64> {
        if !self.framed || !self.ensure_frame(tid)? {
            return Err(Error::new(ErrorCode::Unsupported, format!("pid {} tid {tid}: no return frame", self.pid)));
        }
        let frame = self.saved.get(&tid).and_then(|s| s.frame.as_ref()).map(|f| f.1);
        frame.ok_or_else(|| self.unexpected(tid, "return frame missing".into()))
    }

    /// Trap protocol: registers, PTRACE_CONT, wait for the SIGTRAP of `int3`, registers back.
    fn run_trap(&mut self, tid: i32, ip: u64, nr: i64, args: [u64; 6]) -> Result<i64> {
        let saved = self.saved_for(tid)?;
        refuse_pending_sigtrap(self.pid, tid)?;
        // Everything blocked but SIGTRAP: the trap instruction forces a SIGTRAP, and a forced
        // signal that is blocked makes the kernel reset its handler to SIG_DFL for good (the
        // task's own SIGTRAP handler would be lost, and restored as address 0).
        set_sigmask(tid, !SIGTRAP_BIT)?;
        let outcome = sc::set_regs(tid, &sc::syscall_regs(&saved.regs, ip, nr, &args)).and_then(|_| {
            match self.resume_until(tid, ptrace::Request::PTRACE_CONT, |s| matches!(s, Stop::Trap(Some(_))))? {
                Stop::Trap(Some(code)) if code == sc::TRAP_SI_CODE => Ok(sc::syscall_result(&sc::get_regs(tid)?)),
                Stop::Trap(code) => Err(self.unexpected(tid, format!("SIGTRAP with si_code {code:?}"))),
                Stop::EventStop => Err(self.unexpected(tid, "unexpected PTRACE_EVENT_STOP".into())),
            }
        });
        self.calls += 1;
        self.finish(tid, &saved, outcome)
    }

    /// Framed protocol (see the module doc).
    fn run_framed(&mut self, tid: i32, nr: i64, args: [u64; 6]) -> Result<i64> {
        let (_, sp) = self.saved_for(tid)?.frame.expect("frame built by ensure_frame");
        self.run_framed_at(tid, self.scratch, sp, nr, args, None)
    }

    /// The framed protocol with the code at `ip` and the frame at `sp`; `fault` names the call
    /// for the fault points the tests kill tsdump at.
    fn run_framed_at(&mut self, tid: i32, ip: u64, sp: u64, nr: i64, args: [u64; 6], fault: Option<&str>) -> Result<i64> {
        let saved = self.saved_for(tid)?;
        let mut regs = sc::syscall_regs(&saved.regs, ip, nr, &args);
        sc::set_sp(&mut regs, sp);
        // Registers before the mask: dying in between leaves a thread that runs our syscall
        // with its own mask and then sigreturns, never one stuck with everything blocked.
        let outcome = sc::set_regs(tid, &regs).and_then(|_| set_sigmask(tid, u64::MAX)).and_then(|_| {
            let is_sys = |s: &Stop| matches!(s, Stop::Trap(None));
            self.resume_until(tid, ptrace::Request::PTRACE_SYSCALL, is_sys)?;
            if let Some(f) = fault {
                borrow::fault_point(&format!("{f}-entered"));
            }
            self.resume_until(tid, ptrace::Request::PTRACE_SYSCALL, is_sys)?;
            if let Some(f) = fault {
                borrow::fault_point(&format!("{f}-exited"));
            }
            let result = sc::syscall_result(&sc::get_regs(tid)?);
            // Park the thread in a signal-path stop before it reaches the rt_sigreturn.
            ptrace::interrupt(Pid::from_raw(tid)).map_err(|e| Error::from_errno(e, tid, "PTRACE_INTERRUPT"))?;
            self.resume_until(tid, ptrace::Request::PTRACE_CONT, |s| matches!(s, Stop::EventStop))?;
            Ok(result)
        });
        self.calls += 1;
        self.finish(tid, &saved, outcome)
    }

    /// Puts mask and registers back (mask first: see run_framed) unless the thread is gone.
    fn finish(&mut self, tid: i32, saved: &Saved, outcome: Result<i64>) -> Result<i64> {
        if let Err(e) = &outcome {
            if e.code == ErrorCode::TargetGone {
                self.saved.remove(&tid);
                return outcome;
            }
        }
        let r1 = set_sigmask(tid, saved.sigmask);
        let r2 = sc::set_regs(tid, &saved.regs);
        let ret = outcome?;
        r1?;
        r2?;
        Ok(ret)
    }

    /// Resumes `tid` with `req` until a stop `want` accepts. Stop signals met on the way are
    /// kept for after the cure; group stops are stepped over.
    fn resume_until(&mut self, tid: i32, req: ptrace::Request, want: impl Fn(&Stop) -> bool) -> Result<Stop> {
        self.run_until(tid, Some(req), req, want)
    }

    /// `resume_until` for a thread that may already be running (`first` = None: just wait);
    /// later resumes use `then`.
    fn run_until(&mut self, tid: i32, first: Option<ptrace::Request>, then: ptrace::Request, want: impl Fn(&Stop) -> bool) -> Result<Stop> {
        let p = Pid::from_raw(tid);
        let mut next = first;
        loop {
            let req = next.unwrap_or(then);
            if next.is_some() {
                // SAFETY: PTRACE_CONT/PTRACE_SYSCALL with no signal on a tracee we hold.
                let r = unsafe { libc::ptrace(req as _, tid, 0usize, 0usize) };
                if r < 0 {
                    return Err(Error::from_errno(Errno::last(), tid, format_args!("{req:?} into injected code")));
                }
            }
            next = Some(then);
            let st = self.next_event(tid);
            let stop = match st {
                Ok(WaitStatus::PtraceSyscall(_)) => Stop::Trap(None),
                Ok(WaitStatus::Stopped(_, Signal::SIGTRAP)) => {
                    let si = ptrace::getsiginfo(p).map_err(|e| Error::from_errno(e, tid, "PTRACE_GETSIGINFO"))?;
                    // Without PTRACE_O_TRACESYSGOOD a syscall stop is a plain SIGTRAP too.
                    if req == ptrace::Request::PTRACE_SYSCALL && (si.si_code == libc::SIGTRAP || si.si_code == libc::SIGTRAP | 0x80) {
                        Stop::Trap(None)
                    } else {
                        Stop::Trap(Some(si.si_code))
                    }
                }
                Ok(WaitStatus::PtraceEvent(_, _, PTRACE_EVENT_STOP)) => Stop::EventStop,
                Ok(WaitStatus::Stopped(_, s @ (Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU))) => {
                    // A stop signal cannot be blocked; keep it for after the cure and go on.
                    self.pending_stops.push((tid, s));
                    continue;
                }
                Ok(WaitStatus::Stopped(_, s)) => {
                    return Err(self.unexpected(tid, format!("signal {s} while running injected code")));
                }
                Ok(WaitStatus::PtraceEvent(..)) => continue,
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => {
                    return Err(Error::new(
                        ErrorCode::TargetGone,
                        format!("pid {} tid {tid}: exited while running injected code", self.pid),
                    ));
                }
                Ok(other) => return Err(self.unexpected(tid, format!("wait status {other:?}"))),
                Err(e) => return Err(Error::from_errno(e, tid, "waiting for injected code")),
            };
            if want(&stop) {
                return Ok(stop);
            }
            if matches!(stop, Stop::EventStop) {
                continue;
            }
            return Err(self.unexpected(tid, "unexpected trap while running injected code".into()));
        }
    }

    /// Hands thread `tid` to resident code at `ip` (in the scratch) with stack pointer `sp` and
    /// first argument `arg`: the thread's return frame in place, every signal blocked. The first
    /// `checked` syscalls the code makes are stepped and their results returned; if they all
    /// succeed the thread is left running (call `park` to get it back), otherwise it is parked
    /// and its registers and mask are put back before returning.
    pub(crate) fn start_resident(&mut self, tid: i32, ip: u64, sp: u64, arg: u64, checked: usize) -> Result<(Vec<i64>, bool)> {
        if !self.framed || !self.ensure_frame(tid)? {
            return Err(Error::new(ErrorCode::Unsupported, format!("pid {} tid {tid}: no return frame for resident code", self.pid)));
        }
        let saved = self.saved_for(tid)?;
        let mut regs = sc::syscall_regs(&saved.regs, ip, 0, &[arg, 0, 0, 0, 0, 0]);
        sc::set_sp(&mut regs, sp);
        self.resident = Some(tid);
        self.running.insert(tid, true);
        let is_sys = |s: &Stop| matches!(s, Stop::Trap(None));
        let stepped = sc::set_regs(tid, &regs).and_then(|_| set_sigmask(tid, u64::MAX)).and_then(|_| {
            let mut results = Vec::new();
            for _ in 0..checked {
                self.resume_until(tid, ptrace::Request::PTRACE_SYSCALL, is_sys)?;
                self.resume_until(tid, ptrace::Request::PTRACE_SYSCALL, is_sys)?;
                let r = sc::syscall_result(&sc::get_regs(tid)?);
                results.push(r);
                if r < 0 {
                    break;
                }
            }
            Ok(results)
        });
        self.calls += 1;
        match stepped {
            Ok(results) if results.len() == checked && results.iter().all(|&r| r >= 0) => {
                if let Err(e) = cont(tid) {
                    self.park(tid)?;
                    return Err(e);
                }
                self.running.insert(tid, false);
                Ok((results, true))
            }
            Ok(results) => {
                self.park(tid)?;
                Ok((results, false))
            }
            Err(e) => {
                let parked = self.park(tid);
                if e.code != ErrorCode::TargetGone {
                    parked?;
                }
                Err(e)
            }
        }
    }

    /// Writes thread `tid`'s return frame for the remote address `frame_at` (at most `room`
    /// bytes there) and returns the stack pointer that takes it home, or None when this thread
    /// can have no frame (it is left untouched). Then `start_thread`.
    pub(crate) fn prepare_thread(&mut self, tid: i32, frame_at: u64, room: usize) -> Result<Option<u64>> {
        if self.cured {
            return Err(Error::new(ErrorCode::Parasite, format!("pid {}: parasite already cured", self.pid)));
        }
        if self.running.contains_key(&tid) {
            return Err(self.unexpected(tid, "the thread is running parasite code".into()));
        }
        if !self.framed {
            return Ok(None);
        }
        let Some((frame, home)) = self.build_frame(tid, frame_at, room)? else { return Ok(None) };
        self.write_at((frame_at - self.scratch) as usize, &frame)?;
        Ok(Some(home))
    }

    /// Lets thread `tid` (its frame written by `prepare_thread`) run code at `ip` on its own,
    /// with stack pointer `sp`, `arg` as its first argument and every signal blocked. Get it
    /// back with `park`.
    pub(crate) fn start_thread(&mut self, tid: i32, ip: u64, sp: u64, arg: u64) -> Result<()> {
        let saved = self.saved_for(tid)?;
        let mut regs = sc::syscall_regs(&saved.regs, ip, 0, &[arg, 0, 0, 0, 0, 0]);
        sc::set_sp(&mut regs, sp);
        self.running.insert(tid, true);
        // Registers before the mask, as in run_framed.
        let started = sc::set_regs(tid, &regs).and_then(|_| set_sigmask(tid, u64::MAX)).and_then(|_| cont(tid));
        self.calls += 1;
        match started {
            Ok(()) => {
                self.running.insert(tid, false);
                Ok(())
            }
            Err(e) => {
                let parked = self.park(tid);
                if e.code != ErrorCode::TargetGone {
                    parked?;
                }
                Err(e)
            }
        }
    }

    /// Looks, without blocking, at every thread running our code: stop signals are kept for
    /// after the cure and the thread resumed; a fault or an exit is an error.
    pub(crate) fn check_running(&mut self) -> Result<()> {
        let tids: Vec<i32> = self.running.iter().filter(|(_, stopped)| !**stopped).map(|(t, _)| *t).collect();
        for tid in tids {
            let st = match self.stash.iter().position(|(t, _)| *t == tid) {
                Some(i) => Ok(self.stash.remove(i).1),
                None => waitpid(Pid::from_raw(tid), Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)),
            };
            match st {
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
                Ok(WaitStatus::Stopped(_, s @ (Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU))) => {
                    self.pending_stops.push((tid, s));
                    cont(tid)?;
                }
                Ok(WaitStatus::PtraceEvent(..)) | Ok(WaitStatus::PtraceSyscall(_)) => cont(tid)?,
                Ok(WaitStatus::Stopped(_, s)) => {
                    self.running.insert(tid, true);
                    let ip = sc::get_regs(tid).map(|r| sc::instruction_pointer(&r)).unwrap_or(0);
                    return Err(self.unexpected(tid, format!("parasite code stopped by {s} at {ip:#x}")));
                }
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => {
                    self.gone(tid);
                    return Err(Error::new(ErrorCode::TargetGone, format!("pid {} tid {tid}: exited while running parasite code", self.pid)));
                }
                Ok(other) => return Err(self.unexpected(tid, format!("wait status {other:?}"))),
                Err(e) => return Err(Error::from_errno(e, tid, "waiting for parasite code")),
            }
        }
        Ok(())
    }

    /// Forgets a thread that exited.
    fn gone(&mut self, tid: i32) {
        self.running.remove(&tid);
        self.saved.remove(&tid);
        if self.resident == Some(tid) {
            self.resident = None;
        }
    }

    /// Brings thread `tid`, running our code, back into a ptrace stop and puts its registers and
    /// mask back. If the code already went home by itself (rt_sigreturn through its frame: its
    /// channel closed), the thread holds its own state again and is only stopped.
    pub(crate) fn park(&mut self, tid: i32) -> Result<()> {
        let Some(stopped) = self.running.remove(&tid) else { return Ok(()) };
        if self.resident == Some(tid) {
            self.resident = None;
        }
        if !stopped {
            ptrace::interrupt(Pid::from_raw(tid)).map_err(|e| Error::from_errno(e, tid, "PTRACE_INTERRUPT"))?;
            let r = self.run_until(tid, None, ptrace::Request::PTRACE_CONT, |s| matches!(s, Stop::EventStop));
            if let Err(e) = r {
                if e.code == ErrorCode::TargetGone {
                    self.saved.remove(&tid);
                }
                return Err(e);
            }
        }
        let regs = sc::get_regs(tid)?;
        if !(self.scratch..self.scratch + self.scratch_len as u64).contains(&sc::instruction_pointer(&regs)) {
            // Home already, running its own code since: that is its state now.
            self.ran_free.get_or_insert(tid);
            let sigmask = get_sigmask(tid)?;
            self.saved.insert(tid, Saved { regs, sigmask, frame: None });
            if self.frame_of == Some(tid) {
                self.frame_of = None;
            }
            return Ok(());
        }
        let saved = self.saved_for(tid)?;
        self.finish(tid, &saved, Ok(0)).map(|_| ())
    }

    /// Parks the thread running the resident blob, if any.
    pub(crate) fn park_resident(&mut self) -> Result<()> {
        match self.resident {
            Some(tid) => self.park(tid),
            None => Ok(()),
        }
    }

    /// The next wait event of `tid`. Events of other threads running our code are kept for
    /// their turn; other tracees' are dropped (they stay in their ptrace stop), exits included
    /// so that a dying group leader can be reported (see `wait_any`).
    fn next_event(&mut self, tid: i32) -> nix::Result<WaitStatus> {
        if let Some(i) = self.stash.iter().position(|(t, _)| *t == tid) {
            return Ok(self.stash.remove(i).1);
        }
        loop {
            let st = wait_any()?;
            match st.pid() {
                Some(p) if p.as_raw() == tid => return Ok(st),
                Some(p) if self.running.get(&p.as_raw()) == Some(&false) => self.stash.push((p.as_raw(), st)),
                _ => {}
            }
        }
    }

    fn unexpected(&self, tid: i32, what: String) -> Error {
        Error::new(ErrorCode::Parasite, format!("pid {} tid {tid}: {what}", self.pid))
    }

    /// Unmaps the scratch area and re-sends stop signals caught while our code ran. Registers and
    /// signal masks are already back (each call restores them). Idempotent.
    pub fn cure(&mut self) -> Result<()> {
        if self.cured {
            return Ok(());
        }
        // Normally parked by their owners already; never unmap code a thread may still run.
        let tids: Vec<i32> = self.running.keys().copied().collect();
        for tid in tids {
            self.park(tid)?;
        }
        let r = self.borrowed_syscall(nr::MUNMAP, [self.scratch, self.scratch_len as u64, 0, 0, 0, 0]);
        self.cured = true;
        for (tid, s) in self.pending_stops.drain(..) {
            // SAFETY: plain tgkill on a task we trace.
            unsafe { libc::syscall(libc::SYS_tgkill, self.pid, tid, s as i32) };
        }
        match r {
            Ok(0) => Ok(()),
            Ok(e) => Err(Error::new(
                ErrorCode::Parasite,
                format!("pid {}: remote munmap at {:#x}: {}", self.pid, self.scratch, Errno::from_raw(-e as i32).desc()),
            )),
            Err(e) => Err(e),
        }
    }
}

/// A scratch mapping a visit left in a task (`Injector::leave`): unmapped later, if the task
/// lives on (`Injector::adopt` then `cure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leftover {
    pub pid: i32,
    pub scratch: u64,
    pub len: usize,
}

impl Injector {
    /// Ends the infection but for the scratch mapping, which stays (nothing runs there any more:
    /// every thread is parked and holds its own state): a tree that is killed after the dump needs
    /// no munmap, one that lives on gets it at its release.
    pub fn leave(mut self) -> Result<Leftover> {
        let tids: Vec<i32> = self.running.keys().copied().collect();
        for tid in tids {
            self.park(tid)?;
        }
        self.cured = true;
        for (tid, s) in self.pending_stops.drain(..) {
            // SAFETY: plain tgkill on a task we trace.
            unsafe { libc::syscall(libc::SYS_tgkill, self.pid, tid, s as i32) };
        }
        Ok(Leftover { pid: self.pid, scratch: self.scratch, len: self.scratch_len })
    }
}

fn read_remote(pid: i32, at: u64, len: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    let remote = [RemoteIoVec { base: at as usize, len }];
    match process_vm_readv(Pid::from_raw(pid), &mut [IoSliceMut::new(&mut b)], &remote) {
        Ok(n) if n == len => Ok(b),
        Ok(_) => Err(Error::new(ErrorCode::Parasite, format!("pid {pid}: short read at {at:#x}"))),
        Err(e) => Err(Error::from_errno(e, pid, format_args!("reading {len} bytes at {at:#x}"))),
    }
}

fn write_remote(pid: i32, at: u64, data: &[u8]) -> Result<()> {
    let remote = [RemoteIoVec { base: at as usize, len: data.len() }];
    match process_vm_writev(Pid::from_raw(pid), &[IoSlice::new(data)], &remote) {
        Ok(n) if n == data.len() => Ok(()),
        Ok(_) => Err(Error::new(ErrorCode::Parasite, format!("pid {pid}: short write at {at:#x}"))),
        Err(e) => Err(Error::from_errno(e, pid, format_args!("writing {} bytes at {at:#x}", data.len()))),
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.cure();
    }
}

/// Resumes a stopped tracee (no signal).
fn cont(tid: i32) -> Result<()> {
    // SAFETY: PTRACE_CONT with no signal on a tracee we hold.
    if unsafe { libc::ptrace(libc::PTRACE_CONT, tid, 0usize, 0usize) } < 0 {
        return Err(Error::from_errno(Errno::last(), tid, "PTRACE_CONT into parasite code"));
    }
    Ok(())
}

/**
 * The next event of any of this tracer thread's tracees.
 *
 * A killed thread-group leader is reported only after its other (traced) threads are reaped, so
 * waiting on the leader alone deadlocks when the whole task dies mid-call: waiting on any tracee
 * reaps those exits meanwhile. `__WNOTHREAD` keeps the wait to this tracer thread's tracees: the
 * Node process's own children are left to libuv.
 */
fn wait_any() -> nix::Result<WaitStatus> {
    loop {
        match waitpid(None, Some(WaitPidFlag::__WALL | WaitPidFlag::__WNOTHREAD)) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}
