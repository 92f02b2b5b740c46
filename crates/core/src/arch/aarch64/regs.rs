//! aarch64 registers of a stopped tracee, in the shape of CRIU's `user_aarch64_regs_entry`,
//! `user_aarch64_fpsimd_context_entry`, the TLS register (NT_ARM_TLS) and the pointer
//! authentication keys (`pac_keys`). Same item names as the x86_64 module so callers stay
//! architecture-neutral where they can.

use crate::arch::getregset;

use crate::error::{Error, Result};

pub const NT_PRSTATUS: u32 = 1;
pub const NT_PRFPREG: u32 = 2;
pub const NT_ARM_TLS: u32 = 0x401;
pub const NT_ARM_SYSTEM_CALL: u32 = 0x404;
pub const NT_ARM_PACA_KEYS: u32 = 0x407;
pub const NT_ARM_PACG_KEYS: u32 = 0x408;
pub const NT_ARM_PAC_ENABLED_KEYS: u32 = 0x40a;
/// AT_HWCAP bits: the CPU has address (PACA) and generic (PACG) authentication.
const HWCAP_PACA: u64 = 1 << 30;
const HWCAP_PACG: u64 = 1 << 31;
/// PSTATE.nRW: the task runs AArch32 code (a compat task).
pub const PSR_MODE32_BIT: u64 = 1 << 4;

pub const ERESTARTSYS: i64 = 512;
pub const ERESTARTNOINTR: i64 = 513;
pub const ERESTARTNOHAND: i64 = 514;
pub const ERESTART_RESTARTBLOCK: i64 = 516;

/// `struct user_pt_regs` (NT_PRSTATUS): x0-x30, sp, pc, pstate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpRegs {
    pub regs: [u64; 31],
    pub sp: u64,
    pub pc: u64,
    pub pstate: u64,
}

pub const GP_REGS_SIZE: usize = 34 * 8;

impl GpRegs {
    pub fn from_bytes(b: &[u8]) -> Option<GpRegs> {
        if b.len() < GP_REGS_SIZE {
            return None;
        }
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        let mut regs = [0u64; 31];
        for (i, r) in regs.iter_mut().enumerate() {
            *r = w(i);
        }
        Some(GpRegs {
            regs,
            sp: w(31),
            pc: w(32),
            pstate: w(33),
        })
    }

    pub fn ip(&self) -> u64 {
        self.pc
    }

    pub fn sp(&self) -> u64 {
        self.sp
    }
}

/// `struct user_fpsimd_state` (NT_PRFPREG): 32 128-bit V registers, fpsr, fpcr (then 8 reserved
/// bytes, not read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FpRegs {
    /// V0-V31 as 64 little-endian u64 words (low half first), as CRIU stores them.
    pub vregs: Vec<u64>,
    pub fpsr: u32,
    pub fpcr: u32,
}

pub const FPSIMD_SIZE: usize = 32 * 16 + 8;

impl FpRegs {
    pub fn from_bytes(b: &[u8]) -> Option<FpRegs> {
        if b.len() < FPSIMD_SIZE {
            return None;
        }
        let vregs = b[..512]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let fpsr = u32::from_le_bytes(b[512..516].try_into().unwrap());
        let fpcr = u32::from_le_bytes(b[516..520].try_into().unwrap());
        Some(FpRegs { vregs, fpsr, fpcr })
    }
}

/// See the x86_64 module: what the stop means for an interrupted system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallRestart {
    pub in_syscall: bool,
    pub syscall_nr: i64,
    pub result: i64,
    pub action: &'static str,
    /// PC and x0 to store in the image.
    pub ip: u64,
    pub ax: u64,
}

pub const SYSCALL_INSN_LEN: u64 = 4;

/// `orig_x0` is not in user_pt_regs; the kernel restarts with the original first argument, which
/// the caller passes in (from the parasite or the syscall-entry stop). `syscall_nr` comes from
/// NT_ARM_SYSTEM_CALL (-1 when not in a syscall).
pub fn syscall_restart_with(r: &GpRegs, syscall_nr: i64, orig_x0: u64) -> SyscallRestart {
    let res = r.regs[0] as i64;
    let mut out = SyscallRestart {
        in_syscall: syscall_nr >= 0,
        syscall_nr,
        result: res,
        action: "none",
        ip: r.pc,
        ax: r.regs[0],
    };
    if syscall_nr >= 0 {
        match -res {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                out.action = "restart";
                out.ax = orig_x0;
                out.ip = r.pc.wrapping_sub(SYSCALL_INSN_LEN);
            }
            ERESTART_RESTARTBLOCK => {
                out.action = "eintr";
                out.ax = (-(libc::EINTR as i64)) as u64;
            }
            _ => {}
        }
    }
    out
}

/// A 128-bit key as CRIU stores it: (low, high) 64-bit halves.
pub type Key128 = (u64, u64);

/// The thread's pointer-authentication keys, read as CRIU 4.1 reads them: the address keys
/// (with the enabled-keys mask) where the CPU has PACA, the generic key where it has PACG. A
/// task's keys are random per exec; without them its signed return addresses fail to
/// authenticate after restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacKeys {
    /// APIA, APIB, APDA, APDB keys and PR_PAC_ENABLED_KEYS's mask.
    pub address: Option<([Key128; 4], u64)>,
    /// APGA key.
    pub generic: Option<Key128>,
}

fn key128(b: &[u8]) -> Key128 {
    (u64::from_le_bytes(b[..8].try_into().unwrap()), u64::from_le_bytes(b[8..16].try_into().unwrap()))
}

/// The CPU features tsdump itself runs with (same machine, same kernel as the tracee).
fn hwcap() -> u64 {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_HWCAP) }
}

fn read_pac_keys(tid: i32) -> Result<Option<PacKeys>> {
    let caps = hwcap();
    if caps & (HWCAP_PACA | HWCAP_PACG) == 0 {
        return Ok(None);
    }
    let read = |note: u32, len: usize, what: &str| {
        let b = getregset(tid, note, len).map_err(|e| Error::from_errno(e, tid, format_args!("PTRACE_GETREGSET({what})")))?;
        if b.len() < len {
            return Err(Error::new(crate::ErrorCode::Ptrace, format!("tid {tid}: {what} short ({} bytes)", b.len())));
        }
        Ok(b)
    };
    let mut keys = PacKeys { address: None, generic: None };
    if caps & HWCAP_PACA != 0 {
        let b = read(NT_ARM_PACA_KEYS, 64, "NT_ARM_PACA_KEYS")?;
        let enabled = read(NT_ARM_PAC_ENABLED_KEYS, 8, "NT_ARM_PAC_ENABLED_KEYS")?;
        let k = [key128(&b[0..16]), key128(&b[16..32]), key128(&b[32..48]), key128(&b[48..64])];
        keys.address = Some((k, u64::from_le_bytes(enabled[..8].try_into().unwrap())));
    }
    if caps & HWCAP_PACG != 0 {
        keys.generic = Some(key128(&read(NT_ARM_PACG_KEYS, 16, "NT_ARM_PACG_KEYS")?));
    }
    Ok(Some(keys))
}

#[derive(Debug, Clone)]
pub struct ThreadRegs {
    pub gp: GpRegs,
    pub gp_raw: Vec<u8>,
    pub fp: FpRegs,
    pub fp_raw: Vec<u8>,
    /// TPIDR_EL0 (NT_ARM_TLS).
    pub tls: u64,
    /// None when the CPU has no pointer authentication.
    pub pac: Option<PacKeys>,
    pub restart: SyscallRestart,
}

pub fn read_thread_regs(tid: i32) -> Result<ThreadRegs> {
    let short = |what: &str, n: usize| {
        Error::new(
            crate::ErrorCode::Ptrace,
            format!("tid {tid}: {what} short ({n} bytes)"),
        )
    };
    let gp_raw = getregset(tid, NT_PRSTATUS, GP_REGS_SIZE)
        .map_err(|e| Error::from_errno(e, tid, "PTRACE_GETREGSET(NT_PRSTATUS)"))?;
    // An AArch32 task's NT_PRSTATUS is the 18-word compat set: refuse it by name.
    let compat = gp_raw.len() < GP_REGS_SIZE || GpRegs::from_bytes(&gp_raw).is_some_and(|g| g.pstate & PSR_MODE32_BIT != 0);
    if compat {
        return Err(crate::arch::compat_task_error(tid));
    }
    let gp = GpRegs::from_bytes(&gp_raw).ok_or_else(|| short("NT_PRSTATUS", gp_raw.len()))?;
    let fp_raw = getregset(tid, NT_PRFPREG, FPSIMD_SIZE + 8)
        .map_err(|e| Error::from_errno(e, tid, "PTRACE_GETREGSET(NT_PRFPREG)"))?;
    let fp = FpRegs::from_bytes(&fp_raw).ok_or_else(|| short("NT_PRFPREG", fp_raw.len()))?;
    let tls_raw = getregset(tid, NT_ARM_TLS, 8)
        .map_err(|e| Error::from_errno(e, tid, "PTRACE_GETREGSET(NT_ARM_TLS)"))?;
    let tls = tls_raw
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .unwrap_or(0);
    let nr = getregset(tid, NT_ARM_SYSTEM_CALL, 4)
        .ok()
        .and_then(|b| {
            b.get(..4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64)
        })
        .unwrap_or(-1);
    // orig_x0 is not visible from outside; x0 is the best available stand-in.
    let restart = syscall_restart_with(&gp, nr, gp.regs[0]);
    let pac = read_pac_keys(tid)?;
    Ok(ThreadRegs {
        gp,
        gp_raw,
        fp,
        fp_raw,
        tls,
        pac,
        restart,
    })
}
