// x86_64 core images: thread_info_x86 (user_x86_regs_entry, the FXSAVE area with its xsave
// extension, the GDT TLS slots), as CRIU 4.1 writes them.
import { core_entry_march } from '../images/gen/core_pb.js';
import { user_x86_regs_mode } from '../images/gen/core-x86_pb.js';
import type { FpRegsInfo, UserDescInfo } from '../../native/index.js';
import { repeated, type CpuArch, type Restart, type ThreadRegs } from './types.js';

/** The general registers by name, from the words the core hands over in user_regs_struct order. */
export function x86GpRegs(g: BigUint64Array) {
  return {
    r15: g[0]!, r14: g[1]!, r13: g[2]!, r12: g[3]!, bp: g[4]!, bx: g[5]!, r11: g[6]!, r10: g[7]!,
    r9: g[8]!, r8: g[9]!, ax: g[10]!, cx: g[11]!, dx: g[12]!, si: g[13]!, di: g[14]!, origAx: g[15]!,
    ip: g[16]!, cs: g[17]!, flags: g[18]!, sp: g[19]!, ss: g[20]!, fsBase: g[21]!, gsBase: g[22]!,
    ds: g[23]!, es: g[24]!, fs: g[25]!, gs: g[26]!,
    // CRIU records the mode from the code segment: 0x23 is the 32-bit one
    mode: g[17] === 0x23n ? ('compat' as const) : ('native' as const),
  };
}

function gpregs(words: BigUint64Array, restart: Restart) {
  // A thread stopped inside an interrupted syscall resumes by re-executing it (or failing it with
  // EINTR); the freezer worked out which, and with which ip/ax.
  const fixed = restart.action === 'none' ? {} : { ip: restart.ip, ax: restart.ax };
  const regs = x86GpRegs(words);
  return { ...regs, mode: regs.mode === 'native' ? user_x86_regs_mode.NATIVE : user_x86_regs_mode.COMPAT, ...fixed };
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
