//! x86_64 registers of a stopped tracee, in the shape CRIU's core image wants them
//! (`user_x86_regs_entry`, `user_x86_fpregs_entry` with its `user_x86_xsave_entry`, `user_desc_t`).
//!
//! General registers come from NT_PRSTATUS, the legacy FXSAVE area from NT_PRFPREG, and the full
//! XSAVE image from NT_X86_XSTATE (standard, non-compacted format: component offsets and sizes are
//! those CPUID leaf 0xD reports, which is also how the kernel lays out the ptrace buffer).

use nix::errno::Errno;
use crate::arch::getregset;

use crate::error::{Error, Result};

pub const NT_PRSTATUS: u32 = 1;
pub const NT_PRFPREG: u32 = 2;
pub const NT_X86_XSTATE: u32 = 0x202;
const PTRACE_GET_THREAD_AREA: libc::c_uint = 25;
/// First of the three GDT TLS slots on x86_64 (GDT_ENTRY_TLS_MIN).
pub const GDT_ENTRY_TLS_MIN: u32 = 12;
pub const GDT_ENTRY_TLS_ENTRIES: u32 = 3;

/// Kernel-internal "restart me" return values a tracee can be stopped with.
pub const ERESTARTSYS: i64 = 512;
pub const ERESTARTNOINTR: i64 = 513;
pub const ERESTARTNOHAND: i64 = 514;
pub const ERESTART_RESTARTBLOCK: i64 = 516;

/// `struct user_regs_struct`, field for field (NT_PRSTATUS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub bp: u64,
    pub bx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub ax: u64,
    pub cx: u64,
    pub dx: u64,
    pub si: u64,
    pub di: u64,
    pub orig_ax: u64,
    pub ip: u64,
    pub cs: u64,
    pub flags: u64,
    pub sp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

/// Size of `struct user_regs_struct` on x86_64.
pub const GP_REGS_SIZE: usize = 27 * 8;

impl GpRegs {
    /// Decodes the NT_PRSTATUS buffer (27 little-endian u64 words in the kernel's order).
    pub fn from_bytes(b: &[u8]) -> Option<GpRegs> {
        if b.len() < GP_REGS_SIZE {
            return None;
        }
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        Some(GpRegs {
            r15: w(0),
            r14: w(1),
            r13: w(2),
            r12: w(3),
            bp: w(4),
            bx: w(5),
            r11: w(6),
            r10: w(7),
            r9: w(8),
            r8: w(9),
            ax: w(10),
            cx: w(11),
            dx: w(12),
            si: w(13),
            di: w(14),
            orig_ax: w(15),
            ip: w(16),
            cs: w(17),
            flags: w(18),
            sp: w(19),
            ss: w(20),
            fs_base: w(21),
            gs_base: w(22),
            ds: w(23),
            es: w(24),
            fs: w(25),
            gs: w(26),
        })
    }

    pub fn ip(&self) -> u64 {
        self.ip
    }

    pub fn sp(&self) -> u64 {
        self.sp
    }

    /// True for a 32-bit (compat) task: CRIU records the regs mode from the code segment.
    pub fn is_compat(&self) -> bool {
        self.cs == 0x23
    }

    /// The registers as words in `struct user_regs_struct` order (NT_PRSTATUS): what goes to
    /// JavaScript, as one array.
    pub fn words(&self) -> [u64; 27] {
        [
            self.r15, self.r14, self.r13, self.r12, self.bp, self.bx, self.r11, self.r10, self.r9, self.r8, self.ax, self.cx,
            self.dx, self.si, self.di, self.orig_ax, self.ip, self.cs, self.flags, self.sp, self.ss, self.fs_base,
            self.gs_base, self.ds, self.es, self.fs, self.gs,
        ]
    }
}

/// The legacy FXSAVE area (`struct user_fpregs_struct`, 512 bytes), as `user_x86_fpregs_entry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FpRegs {
    pub cwd: u16,
    pub swd: u16,
    pub twd: u16,
    pub fop: u16,
    pub rip: u64,
    pub rdp: u64,
    pub mxcsr: u32,
    pub mxcsr_mask: u32,
    /// 8 x87 registers, 16 bytes each, as 32 words.
    pub st_space: Vec<u32>,
    /// 16 XMM registers as 64 words.
    pub xmm_space: Vec<u32>,
    /// Bytes 416..512 as 24 words (the kernel keeps its fx_sw_bytes in the last 48).
    pub padding: Vec<u32>,
}

pub const FXSAVE_SIZE: usize = 512;

fn words32(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn words64(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

impl FpRegs {
    pub fn from_bytes(b: &[u8]) -> Option<FpRegs> {
        if b.len() < FXSAVE_SIZE {
            return None;
        }
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        Some(FpRegs {
            cwd: u16_at(0),
            swd: u16_at(2),
            twd: u16_at(4),
            fop: u16_at(6),
            rip: u64_at(8),
            rdp: u64_at(16),
            mxcsr: u32_at(24),
            mxcsr_mask: u32_at(28),
            st_space: words32(&b[32..160]),
            xmm_space: words32(&b[160..416]),
            padding: words32(&b[416..512]),
        })
    }
}

/// XSAVE feature bits CRIU's image carries.
pub mod xfeature {
    pub const FP: u32 = 0;
    pub const SSE: u32 = 1;
    pub const YMM: u32 = 2;
    pub const BNDREGS: u32 = 3;
    pub const BNDCSR: u32 = 4;
    pub const OPMASK: u32 = 5;
    pub const ZMM_HI256: u32 = 6;
    pub const HI16_ZMM: u32 = 7;
    pub const PKRU: u32 = 9;
}

/// Where one XSAVE component sits in the standard-format buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XComponent {
    pub offset: usize,
    pub size: usize,
}

/// Layout of the standard XSAVE format on this CPU, from CPUID leaf 0xD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XsaveLayout {
    /// Indexed by feature bit; None if the CPU does not report the component.
    pub components: Vec<Option<XComponent>>,
}

impl XsaveLayout {
    /// This CPU's layout, asked once (each CPUID is a VM exit under a hypervisor).
    pub fn this_cpu() -> &'static XsaveLayout {
        static LAYOUT: std::sync::OnceLock<XsaveLayout> = std::sync::OnceLock::new();
        LAYOUT.get_or_init(XsaveLayout::from_cpuid)
    }

    pub fn from_cpuid() -> XsaveLayout {
        let mut components = vec![None; 20];
        // CPUID exists on every x86_64 CPU; leaf 0xD is only asked when the max leaf allows it.
        let max_leaf = core::arch::x86_64::__cpuid(0).eax;
        if max_leaf >= 0xD {
            for (bit, slot) in components.iter_mut().enumerate().skip(2) {
                let r = core::arch::x86_64::__cpuid_count(0xD, bit as u32);
                // ECX bit 0 set means a supervisor component, which ptrace never shows.
                if r.eax != 0 && r.ecx & 1 == 0 {
                    *slot = Some(XComponent {
                        offset: r.ebx as usize,
                        size: r.eax as usize,
                    });
                }
            }
        }
        XsaveLayout { components }
    }

    pub fn get(&self, bit: u32) -> Option<XComponent> {
        self.components.get(bit as usize).copied().flatten()
    }
}

/// The NT_X86_XSTATE buffer, with the parts CRIU's `user_x86_xsave_entry` holds picked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XsaveState {
    /// The raw buffer as the kernel returned it (its length is the xstate size).
    pub raw: Vec<u8>,
    /// XSTATE_BV of the XSAVE header: components that hold non-initial values.
    pub xstate_bv: u64,
    pub xcomp_bv: u64,
    /// Features enabled for user space (XCR0), from the buffer's software-reserved bytes.
    pub xfeatures: u64,
    /// Length of the buffer the kernel returned.
    pub xstate_size: u32,
    /// Upper halves of YMM0-15 (64 words), if the CPU has AVX.
    pub ymmh_space: Vec<u32>,
    pub bndreg_state: Vec<u64>,
    pub bndcsr_state: Vec<u64>,
    pub opmask_reg: Vec<u64>,
    pub zmm_upper: Vec<u64>,
    pub hi16_zmm: Vec<u64>,
    pub pkru: Vec<u32>,
}

/// Where NT_X86_XSTATE keeps XCR0 (`USER_XSTATE_XCR0_WORD` of the software-reserved area).
pub const USER_XSTATE_XCR0_OFFSET: usize = 464;

impl XsaveState {
    /// Parses an NT_X86_XSTATE buffer using `layout` for component offsets. Components the
    /// kernel does not enable for user space (per XCR0) stay empty, as CRIU leaves them unset.
    pub fn parse(raw: Vec<u8>, layout: &XsaveLayout) -> Option<XsaveState> {
        if raw.len() < 576 {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(raw[o..o + 8].try_into().unwrap());
        // In the ptrace/core-dump layout the first software-reserved word holds XCR0 (the
        // features enabled for user space), not the signal frame's fx_sw_bytes.
        let xfeatures = u64_at(USER_XSTATE_XCR0_OFFSET);
        let xstate_size = raw.len() as u32;
        let slice = |bit: u32, want: usize| -> Option<&[u8]> {
            if xfeatures & (1u64 << bit) == 0 {
                return None;
            }
            let c = layout.get(bit)?;
            let n = want.min(c.size);
            raw.get(c.offset..c.offset + n)
        };
        let w32 = |bit, want| slice(bit, want).map(words32).unwrap_or_default();
        let w64 = |bit, want| slice(bit, want).map(words64).unwrap_or_default();
        Some(XsaveState {
            xstate_bv: u64_at(512),
            xcomp_bv: u64_at(520),
            xfeatures,
            xstate_size,
            ymmh_space: w32(xfeature::YMM, 256),
            bndreg_state: w64(xfeature::BNDREGS, 64),
            bndcsr_state: w64(xfeature::BNDCSR, 16),
            opmask_reg: w64(xfeature::OPMASK, 64),
            zmm_upper: w64(xfeature::ZMM_HI256, 512),
            hi16_zmm: w64(xfeature::HI16_ZMM, 1024),
            pkru: w32(xfeature::PKRU, 8),
            raw,
        })
    }
}

/// One GDT TLS slot (`struct user_desc`, `user_desc_t` in the image).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserDesc {
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

impl UserDesc {
    pub fn from_words(w: [u32; 4]) -> UserDesc {
        let f = w[3];
        UserDesc {
            entry_number: w[0],
            base_addr: w[1],
            limit: w[2],
            seg_32bit: f & 1 != 0,
            contents: (f >> 1) & 3,
            read_exec_only: f & (1 << 3) != 0,
            limit_in_pages: f & (1 << 4) != 0,
            seg_not_present: f & (1 << 5) != 0,
            usable: f & (1 << 6) != 0,
        }
    }
}

/// What the stop position means for an interrupted system call, and the register values the
/// image should carry so that the restored task re-issues (or fails) it the way the kernel would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallRestart {
    /// The task stopped on the way out of a system call (orig_ax >= 0).
    pub in_syscall: bool,
    pub syscall_nr: i64,
    /// The return value register as the kernel left it (signed).
    pub result: i64,
    /// "none", "restart" (-ERESTARTSYS/-ERESTARTNOINTR/-ERESTARTNOHAND: re-run it), or "eintr"
    /// (-ERESTART_RESTARTBLOCK: a restart block cannot be carried over, so it fails with EINTR).
    pub action: &'static str,
    /// IP and AX to store in the image.
    pub ip: u64,
    pub ax: u64,
}

/// The instruction length of `syscall`; a restarted call re-executes it.
pub const SYSCALL_INSN_LEN: u64 = 2;

pub fn syscall_restart(r: &GpRegs) -> SyscallRestart {
    let nr = r.orig_ax as i64;
    let res = r.ax as i64;
    let mut out = SyscallRestart {
        in_syscall: nr >= 0,
        syscall_nr: nr,
        result: res,
        action: "none",
        ip: r.ip,
        ax: r.ax,
    };
    if nr >= 0 {
        match -res {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                out.action = "restart";
                out.ax = r.orig_ax;
                out.ip = r.ip.wrapping_sub(SYSCALL_INSN_LEN);
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

/// Everything register-like of one stopped thread.
#[derive(Debug, Clone)]
pub struct ThreadRegs {
    pub gp: GpRegs,
    /// NT_PRSTATUS raw bytes.
    pub gp_raw: Vec<u8>,
    pub fp: FpRegs,
    /// NT_PRFPREG raw bytes (512).
    pub fp_raw: Vec<u8>,
    pub xsave: Option<XsaveState>,
    /// GDT TLS slots 12..14 (what CRIU stores in thread_info.tls).
    pub tls: Vec<UserDesc>,
    pub restart: SyscallRestart,
}

fn get_thread_area(tid: i32, idx: u32) -> std::result::Result<UserDesc, Errno> {
    let mut w = [0u32; 4];
    // SAFETY: the kernel writes one struct user_desc (16 bytes) into `w`.
    let rc = unsafe {
        libc::ptrace(
            PTRACE_GET_THREAD_AREA as _,
            tid,
            idx as usize as *mut libc::c_void,
            w.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(UserDesc::from_words(w))
}

/// Reads all registers of a thread in a ptrace stop.
pub fn read_thread_regs(tid: i32) -> Result<ThreadRegs> {
    let gp_raw = getregset(tid, NT_PRSTATUS, GP_REGS_SIZE)
        .map_err(|e| Error::from_errno(e, tid, "PTRACE_GETREGSET(NT_PRSTATUS)"))?;
    let gp = GpRegs::from_bytes(&gp_raw).ok_or_else(|| {
        Error::new(
            crate::ErrorCode::Ptrace,
            format!("tid {tid}: NT_PRSTATUS short ({} bytes)", gp_raw.len()),
        )
    })?;
    if gp.is_compat() {
        return Err(crate::arch::compat_task_error(tid));
    }
    let fp_raw = getregset(tid, NT_PRFPREG, FXSAVE_SIZE)
        .map_err(|e| Error::from_errno(e, tid, "PTRACE_GETREGSET(NT_PRFPREG)"))?;
    let fp = FpRegs::from_bytes(&fp_raw).ok_or_else(|| {
        Error::new(
            crate::ErrorCode::Ptrace,
            format!("tid {tid}: NT_PRFPREG short ({} bytes)", fp_raw.len()),
        )
    })?;
    let xsave = match getregset(tid, NT_X86_XSTATE, 64 * 1024) {
        Ok(raw) => XsaveState::parse(raw, XsaveLayout::this_cpu()),
        Err(Errno::ENODEV) | Err(Errno::EINVAL) => None,
        Err(e) => return Err(Error::from_errno(e, tid, "PTRACE_GETREGSET(NT_X86_XSTATE)")),
    };
    let mut tls = Vec::new();
    for i in 0..GDT_ENTRY_TLS_ENTRIES {
        let idx = GDT_ENTRY_TLS_MIN + i;
        match get_thread_area(tid, idx) {
            Ok(mut d) => {
                d.entry_number = idx;
                tls.push(d);
            }
            // Kernels without IA32 emulation have no GDT TLS to report.
            Err(Errno::EIO) => break,
            Err(e) => {
                return Err(Error::from_errno(
                    e,
                    tid,
                    format!("PTRACE_GET_THREAD_AREA({idx})"),
                ))
            }
        }
    }
    let restart = syscall_restart(&gp);
    Ok(ThreadRegs {
        gp,
        gp_raw,
        fp,
        fp_raw,
        xsave,
        tls,
        restart,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs_with(orig_ax: i64, ax: i64, ip: u64) -> GpRegs {
        GpRegs {
            orig_ax: orig_ax as u64,
            ax: ax as u64,
            ip,
            ..Default::default()
        }
    }

    #[test]
    fn restart_decisions() {
        let r = syscall_restart(&regs_with(230, -ERESTARTNOHAND, 0x1000));
        assert_eq!((r.action, r.ip, r.ax), ("restart", 0xffe, 230));
        let r = syscall_restart(&regs_with(35, -ERESTART_RESTARTBLOCK, 0x1000));
        assert_eq!((r.action, r.ip, r.ax as i64), ("eintr", 0x1000, -4));
        let r = syscall_restart(&regs_with(-1, 5, 0x1000));
        assert!(!r.in_syscall);
        assert_eq!(r.action, "none");
        let r = syscall_restart(&regs_with(0, 12, 0x1000));
        assert_eq!(r.action, "none");
    }

    #[test]
    fn gp_layout() {
        let mut b = vec![0u8; GP_REGS_SIZE];
        b[16 * 8..17 * 8].copy_from_slice(&0x4011_2233u64.to_le_bytes());
        b[19 * 8..20 * 8].copy_from_slice(&0x7ffd_0000u64.to_le_bytes());
        b[21 * 8..22 * 8].copy_from_slice(&0x7f00_1234u64.to_le_bytes());
        let g = GpRegs::from_bytes(&b).unwrap();
        assert_eq!(
            (g.ip, g.sp, g.fs_base),
            (0x4011_2233, 0x7ffd_0000, 0x7f00_1234)
        );
        assert!(GpRegs::from_bytes(&b[..100]).is_none());
    }

    #[test]
    fn fxsave_and_xsave_layout() {
        let mut raw = vec![0u8; 1024];
        raw[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        raw[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        raw[160..164].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        raw[464..472].copy_from_slice(&0b111u64.to_le_bytes());
        raw[512..520].copy_from_slice(&0b110u64.to_le_bytes());
        raw[576..580].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        let fp = FpRegs::from_bytes(&raw).unwrap();
        assert_eq!(
            (fp.cwd, fp.mxcsr, fp.xmm_space[0]),
            (0x037f, 0x1f80, 0xdead_beef)
        );
        assert_eq!(
            (fp.st_space.len(), fp.xmm_space.len(), fp.padding.len()),
            (32, 64, 24)
        );
        let mut layout = XsaveLayout {
            components: vec![None; 20],
        };
        layout.components[2] = Some(XComponent {
            offset: 576,
            size: 256,
        });
        layout.components[9] = Some(XComponent {
            offset: 2688,
            size: 8,
        });
        let x = XsaveState::parse(raw, &layout).unwrap();
        assert_eq!(
            (x.xstate_bv, x.xfeatures, x.xstate_size),
            (0b110, 0b111, 1024)
        );
        assert_eq!(x.ymmh_space.len(), 64);
        assert_eq!(x.ymmh_space[0], 0x1234_5678);
        // PKRU is not in xfeatures here, so it stays empty.
        assert!(x.pkru.is_empty());
    }

    #[test]
    fn user_desc_bits() {
        let d = UserDesc::from_words([12, 0x1000, 0xfffff, 1 | (1 << 4) | (1 << 6)]);
        assert!(d.seg_32bit && d.limit_in_pages && d.usable && !d.read_exec_only);
        assert_eq!(d.contents, 0);
    }
}
