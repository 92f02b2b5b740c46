//! The registers of a thread (what core-TID.img's thread_info holds), mirrored for every CPU
//! tsdump ships for: x86_64 `user_x86_regs_entry`, `user_x86_fpregs_entry` with its xsave
//! extension, GDT TLS slots; aarch64 x0-x30, sp, pc, pstate, V0-V31, TPIDR_EL0, PAC keys. Both
//! architectures' types are declared on every build, so the generated index.d.ts carries both and
//! TypeScript narrows on `arch`; only the conversion from the core's registers is per-architecture.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use tsdump_core::arch::regs as aregs;

use crate::convert::{big, U32s, U64s};

/// A thread's registers, tagged with the CPU they come from.
pub type ThreadRegsInfo = Either<X86ThreadRegs, Aarch64ThreadRegs>;

// ---------------------------------------------------------------- x86_64

/// `user_x86_xsave_entry`: arrays are empty for components the kernel does not expose. Typed
/// arrays, not arrays: one napi call each instead of one per element (with AVX-512, ~300
/// elements a thread, most of a thread's hand-over to TypeScript).
#[napi(object)]
pub struct XsaveInfo {
    pub xstate_bv: BigInt,
    pub xcomp_bv: BigInt,
    /// Components the kernel exposes to user space (fx_sw_bytes.xfeatures).
    pub xfeatures: BigInt,
    pub xstate_size: u32,
    #[napi(ts_type = "Uint32Array")]
    pub ymmh_space: U32s,
    #[napi(ts_type = "BigUint64Array")]
    pub bndreg_state: U64s,
    #[napi(ts_type = "BigUint64Array")]
    pub bndcsr_state: U64s,
    #[napi(ts_type = "BigUint64Array")]
    pub opmask_reg: U64s,
    #[napi(ts_type = "BigUint64Array")]
    pub zmm_upper: U64s,
    #[napi(ts_type = "BigUint64Array")]
    pub hi16_zmm: U64s,
    #[napi(ts_type = "Uint32Array")]
    pub pkru: U32s,
    /// The NT_X86_XSTATE buffer as read.
    pub raw: Buffer,
}

/// `user_x86_fpregs_entry` (the FXSAVE area) plus the xsave extension.
#[napi(object)]
pub struct FpRegsInfo {
    pub cwd: u32,
    pub swd: u32,
    pub twd: u32,
    pub fop: u32,
    pub rip: BigInt,
    pub rdp: BigInt,
    pub mxcsr: u32,
    pub mxcsr_mask: u32,
    #[napi(ts_type = "Uint32Array")]
    pub st_space: U32s,
    #[napi(ts_type = "Uint32Array")]
    pub xmm_space: U32s,
    #[napi(ts_type = "Uint32Array")]
    pub padding: U32s,
    pub xsave: Option<XsaveInfo>,
}

/// `user_desc_t`: one GDT TLS slot.
#[napi(object)]
pub struct UserDescInfo {
    pub entry_number: u32,
    pub base_addr: u32,
    pub limit: u32,
    pub seg_32bit: bool,
    pub contents: u32,
    pub read_exec_only: bool,
    pub limit_in_pages: bool,
    pub seg_not_present: bool,
    pub usable: bool,
}

#[napi(object)]
pub struct X86ThreadRegs {
    #[napi(ts_type = "'x86_64'")]
    pub arch: String,
    /// `struct user_regs_struct` (NT_PRSTATUS) as 27 words in its order: one napi value instead
    /// of 27 BigInts and their names (src/arch/x86_64.ts names them).
    #[napi(ts_type = "BigUint64Array")]
    pub gpregs: U64s,
    pub fpregs: FpRegsInfo,
    pub tls: Vec<UserDescInfo>,
    /// NT_PRSTATUS and NT_PRFPREG as read.
    pub gpregs_raw: Buffer,
    pub fpregs_raw: Buffer,
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn regs_info(r: aregs::ThreadRegs) -> ThreadRegsInfo {
    Either::A(X86ThreadRegs {
        arch: "x86_64".into(),
        gpregs: r.gp.words().to_vec().into(),
        fpregs: FpRegsInfo {
            cwd: r.fp.cwd as u32,
            swd: r.fp.swd as u32,
            twd: r.fp.twd as u32,
            fop: r.fp.fop as u32,
            rip: big(r.fp.rip),
            rdp: big(r.fp.rdp),
            mxcsr: r.fp.mxcsr,
            mxcsr_mask: r.fp.mxcsr_mask,
            st_space: r.fp.st_space.clone().into(),
            xmm_space: r.fp.xmm_space.clone().into(),
            padding: r.fp.padding.clone().into(),
            xsave: r.xsave.map(|x| XsaveInfo {
                xstate_bv: big(x.xstate_bv),
                xcomp_bv: big(x.xcomp_bv),
                xfeatures: big(x.xfeatures),
                xstate_size: x.xstate_size,
                ymmh_space: x.ymmh_space.into(),
                bndreg_state: x.bndreg_state.into(),
                bndcsr_state: x.bndcsr_state.into(),
                opmask_reg: x.opmask_reg.into(),
                zmm_upper: x.zmm_upper.into(),
                hi16_zmm: x.hi16_zmm.into(),
                pkru: x.pkru.into(),
                raw: x.raw.into(),
            }),
        },
        tls: r
            .tls
            .iter()
            .map(|d| UserDescInfo {
                entry_number: d.entry_number,
                base_addr: d.base_addr,
                limit: d.limit,
                seg_32bit: d.seg_32bit,
                contents: d.contents,
                read_exec_only: d.read_exec_only,
                limit_in_pages: d.limit_in_pages,
                seg_not_present: d.seg_not_present,
                usable: d.usable,
            })
            .collect(),
        gpregs_raw: r.gp_raw.into(),
        fpregs_raw: r.fp_raw.into(),
    })
}

// ---------------------------------------------------------------- aarch64

/// A 128-bit key as CRIU stores it, in two 64-bit halves.
#[napi(object)]
pub struct PacKeyInfo {
    pub lo: BigInt,
    pub hi: BigInt,
}

/// Address-authentication keys (NT_ARM_PACA_KEYS) and which are enabled
/// (NT_ARM_PAC_ENABLED_KEYS, PR_PAC_ENABLED_KEYS's mask).
#[napi(object)]
pub struct PacAddressKeysInfo {
    pub apiakey: PacKeyInfo,
    pub apibkey: PacKeyInfo,
    pub apdakey: PacKeyInfo,
    pub apdbkey: PacKeyInfo,
    pub enabled_keys: BigInt,
}

/// Pointer-authentication keys, each kind present where the CPU has it (HWCAP_PACA,
/// HWCAP_PACG), as CRIU's `pac_keys`.
#[napi(object)]
pub struct PacKeysInfo {
    pub address: Option<PacAddressKeysInfo>,
    /// The generic key (NT_ARM_PACG_KEYS).
    pub generic: Option<PacKeyInfo>,
}

/// aarch64 registers: x0-x30, sp, pc, pstate; V0-V31 as 64 words (low half first); TPIDR_EL0.
#[napi(object)]
pub struct Aarch64ThreadRegs {
    #[napi(ts_type = "'aarch64'")]
    pub arch: String,
    #[napi(ts_type = "BigUint64Array")]
    pub regs: U64s,
    pub sp: BigInt,
    pub pc: BigInt,
    pub pstate: BigInt,
    #[napi(ts_type = "BigUint64Array")]
    pub vregs: U64s,
    pub fpsr: u32,
    pub fpcr: u32,
    pub tls: BigInt,
    /// Absent when the CPU has no pointer authentication.
    pub pac_keys: Option<PacKeysInfo>,
    /// NT_PRSTATUS and NT_PRFPREG as read.
    pub gpregs_raw: Buffer,
    pub fpregs_raw: Buffer,
}

#[cfg(target_arch = "aarch64")]
pub(crate) fn regs_info(r: aregs::ThreadRegs) -> ThreadRegsInfo {
    let key = |k: aregs::Key128| PacKeyInfo { lo: big(k.0), hi: big(k.1) };
    let pac_keys = r.pac.map(|p| PacKeysInfo {
        address: p.address.map(|([ia, ib, da, db], enabled)| PacAddressKeysInfo {
            apiakey: key(ia),
            apibkey: key(ib),
            apdakey: key(da),
            apdbkey: key(db),
            enabled_keys: big(enabled),
        }),
        generic: p.generic.map(key),
    });
    Either::B(Aarch64ThreadRegs {
        arch: "aarch64".into(),
        regs: r.gp.regs.to_vec().into(),
        sp: big(r.gp.sp),
        pc: big(r.gp.pc),
        pstate: big(r.gp.pstate),
        vregs: r.fp.vregs.to_vec().into(),
        fpsr: r.fp.fpsr,
        fpcr: r.fp.fpcr,
        tls: big(r.tls),
        pac_keys,
        gpregs_raw: r.gp_raw.into(),
        fpregs_raw: r.fp_raw.into(),
    })
}
