// aarch64 core images: thread_info_aarch64 (x0-x30, sp, pc, pstate; the FP/SIMD registers;
// TPIDR_EL0; the pointer-authentication keys), as CRIU 4.1 writes them.
import { core_entry_march } from '../images/gen/core_pb.js';
import type { PacKeysInfo } from '../../native/index.js';
import { repeated, type CpuArch, type Restart, type ThreadRegs } from './types.js';

/**
 * CRIU records a pac_keys message for every thread, empty on a CPU without pointer
 * authentication; restore then sets whichever kind of key is there.
 */
function pacKeys(keys: PacKeysInfo | undefined) {
  const a = keys?.address;
  const g = keys?.generic;
  return {
    ...(a
      ? {
          pacAddressKeys: {
            apiakeyLo: a.apiakey.lo, apiakeyHi: a.apiakey.hi,
            apibkeyLo: a.apibkey.lo, apibkeyHi: a.apibkey.hi,
            apdakeyLo: a.apdakey.lo, apdakeyHi: a.apdakey.hi,
            apdbkeyLo: a.apdbkey.lo, apdbkeyHi: a.apdbkey.hi,
            pacEnabledKey: a.enabledKeys,
          },
        }
      : {}),
    ...(g ? { pacGenericKeys: { apgakeyLo: g.lo, apgakeyHi: g.hi } } : {}),
  };
}

export const aarch64: CpuArch = {
  mtype: core_entry_march.AARCH64,
  threadInfo(regs: ThreadRegs, restart: Restart, clearTidAddr: bigint) {
    if (regs.arch !== 'aarch64') throw new Error(`aarch64 core image from ${regs.arch} registers`);
    // The kernel already rewinds an interrupted syscall before a thread enters its stop (pc back
    // over the svc, x0 = orig_x0); a restart the freezer still found is applied here.
    const fixed = restart.action === 'none' ? {} : { pc: restart.ip, x0: restart.ax };
    const x = [...regs.regs];
    if (fixed.x0 !== undefined) x[0] = fixed.x0;
    return {
      tiAarch64: {
        clearTidAddr,
        tls: regs.tls,
        gpregs: { regs: x, sp: regs.sp, pc: fixed.pc ?? regs.pc, pstate: regs.pstate },
        fpsimd: { vregs: repeated(regs.vregs), fpsr: regs.fpsr, fpcr: regs.fpcr },
        pacKeys: pacKeys(regs.pacKeys),
      },
    };
  },
};
