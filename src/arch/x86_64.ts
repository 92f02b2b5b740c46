// x86_64 core images: thread_info_x86 (user_x86_regs_entry, the FXSAVE area with its xsave
// extension, the GDT TLS slots), as CRIU 4.1 writes them.
import { core_entry_march } from '../images/gen/core_pb.js';
import { user_x86_regs_mode } from '../images/gen/core-x86_pb.js';
import type { FpRegsInfo, GpRegsInfo, UserDescInfo } from '../../native/index.js';
import { repeated, type CpuArch, type Restart, type ThreadRegs } from './types.js';

function gpregs(regs: GpRegsInfo, restart: Restart) {
  // A thread stopped inside an interrupted syscall resumes by re-executing it (or failing it with
  // EINTR); the freezer worked out which, and with which ip/ax.
  const fixed = restart.action === 'none' ? {} : { ip: restart.ip, ax: restart.ax };
  return {
    r15: regs.r15, r14: regs.r14, r13: regs.r13, r12: regs.r12, bp: regs.bp, bx: regs.bx,
    r11: regs.r11, r10: regs.r10, r9: regs.r9, r8: regs.r8, ax: regs.ax, cx: regs.cx,
    dx: regs.dx, si: regs.si, di: regs.di, origAx: regs.origAx, ip: regs.ip, cs: regs.cs,
    flags: regs.flags, sp: regs.sp, ss: regs.ss, fsBase: regs.fsBase, gsBase: regs.gsBase,
    ds: regs.ds, es: regs.es, fs: regs.fs, gs: regs.gs,
    mode: regs.mode === 'native' ? user_x86_regs_mode.NATIVE : user_x86_regs_mode.COMPAT,
    ...fixed,
  };
}

function fpregs(fp: FpRegsInfo) {
  return {
    cwd: fp.cwd, swd: fp.swd, twd: fp.twd, fop: fp.fop, rip: fp.rip, rdp: fp.rdp,
    mxcsr: fp.mxcsr, mxcsrMask: fp.mxcsrMask, stSpace: repeated(fp.stSpace), xmmSpace: repeated(fp.xmmSpace),
    ...(fp.xsave
      ? {
          xsave: {
            xstateBv: fp.xsave.xstateBv,
            ymmhSpace: repeated(fp.xsave.ymmhSpace),
            bndregState: repeated(fp.xsave.bndregState),
            bndcsrState: repeated(fp.xsave.bndcsrState),
            opmaskReg: repeated(fp.xsave.opmaskReg),
            zmmUpper: repeated(fp.xsave.zmmUpper),
            hi16Zmm: repeated(fp.xsave.hi16Zmm),
            pkru: repeated(fp.xsave.pkru),
            // CET user state (a supervisor xfeature, so not in XCR0): no task here enables shadow
            // stacks, so this is the reset state, recorded as CRIU 4.1 records it.
            cet: { cet: 0n, ssp: 0n },
          },
        }
      : {}),
  };
}

const tls = (d: UserDescInfo) => ({
  entryNumber: d.entryNumber,
  baseAddr: d.baseAddr,
  limit: d.limit,
  seg32bit: d.seg32Bit,
  contentsH: (d.contents & 2) !== 0,
  contentsL: (d.contents & 1) !== 0,
  readExecOnly: d.readExecOnly,
  limitInPages: d.limitInPages,
  segNotPresent: d.segNotPresent,
  usable: d.usable,
});

export const x86_64: CpuArch = {
  mtype: core_entry_march.X86_64,
  threadInfo(regs: ThreadRegs, restart: Restart, clearTidAddr: bigint) {
    if (regs.arch !== 'x86_64') throw new Error(`x86_64 core image from ${regs.arch} registers`);
    return {
      threadInfo: {
        clearTidAddr,
        gpregs: gpregs(regs.gpregs, restart),
        fpregs: fpregs(regs.fpregs),
        tls: regs.tls.map(tls),
      },
    };
  },
};
