// core-TID.img: one per thread. Registers, FPU state and TLS (thread_info), the per-thread
// kernel state (thread_core), and for the leader the process-wide task state (tc).
import { create } from '@bufbuild/protobuf';
import { core_entrySchema, core_entry_march, type core_entry } from '../images/gen/core_pb.js';
import { user_x86_regs_mode } from '../images/gen/core-x86_pb.js';
import type {
  FpRegsInfo,
  GpRegsInfo,
  ParasiteInfo,
  PendingSignalInfo,
  ProcessInspection,
  ThreadParasiteInfo,
  ThreadStateInfo,
  TimeValue,
  UserDescInfo,
  ZombieInfo,
} from '../../native/index.js';
import type { ThreadSeccomp } from './write-seccomp.js';

/** task_core.task_state values (CRIU's criu/include/pid.h; crit labels 3 "Zombie", which is wrong). */
export const TASK_ALIVE = 1;
/** What CRIU records for a zombie: restore makes it exit with the recorded status. */
export const TASK_DEAD = 2;
export const TASK_STOPPED = 3;

const SIGKILL = 9;
const SIGEV_THREAD_ID = 4;
const SIGSTOP = 19;
const U32 = 0xffffffffn;

/** A 64-bit capability set as the two 32-bit words CRIU stores. */
const capWords = (v: bigint): number[] => [Number(v & U32), Number((v >> 32n) & U32)];

const signalQueue = (list: readonly PendingSignalInfo[]) => ({
  signals: list.map((s) => ({ siginfo: new Uint8Array(s.siginfo) })),
});

function gpregs(regs: GpRegsInfo, restart: ThreadStateInfo['syscallRestart']) {
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
    mxcsr: fp.mxcsr, mxcsrMask: fp.mxcsrMask, stSpace: fp.stSpace, xmmSpace: fp.xmmSpace,
    ...(fp.xsave
      ? {
          xsave: {
            xstateBv: fp.xsave.xstateBv,
            ymmhSpace: fp.xsave.ymmhSpace,
            bndregState: fp.xsave.bndregState,
            bndcsrState: fp.xsave.bndcsrState,
            opmaskReg: fp.xsave.opmaskReg,
            zmmUpper: fp.xsave.zmmUpper,
            hi16Zmm: fp.xsave.hi16Zmm,
            pkru: fp.xsave.pkru,
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

const itimer = (t: { interval: TimeValue; value: TimeValue }) => ({
  isec: BigInt(t.interval.sec),
  iusec: BigInt(t.interval.frac),
  vsec: BigInt(t.value.sec),
  vusec: BigInt(t.value.frac),
});

export interface ThreadFacts {
  state: ThreadStateInfo;
  parasite: ThreadParasiteInfo;
  robustList: { head: bigint; len: number };
  /** What the seccomp stage (write-seccomp.ts) recorded for this thread, if anything. */
  seccomp?: ThreadSeccomp | undefined;
  /** The thread's cgroup set id (write-cgroup.ts). */
  cgSet?: number | undefined;
}

/**
 * The thread_info + thread_core part every thread has. The leader's signal mask lives in
 * task_core (as CRIU records it); other threads carry theirs in thread_core.
 */
function threadParts(t: ThreadFacts, leader: boolean) {
  const { state, parasite: p } = t;
  const creds = p.creds;
  return {
    mtype: core_entry_march.X86_64,
    threadInfo: {
      clearTidAddr: p.clearTidAddr,
      gpregs: gpregs(state.regs.gpregs, state.syscallRestart),
      fpregs: fpregs(state.regs.fpregs),
      tls: state.regs.tls.map(tls),
    },
    threadCore: {
      futexRla: t.robustList.head,
      futexRlaLen: t.robustList.len,
      schedNice: state.sched.nice,
      schedPolicy: state.sched.policy,
      ...(state.sched.priority ? { schedPrio: state.sched.priority } : {}),
      ...(leader ? {} : { blkSigset: state.blocked }),
      sas: { ssSp: p.altstackSp, ssSize: p.altstackSize, ssFlags: p.altstackFlags },
      ...(p.pdeathSig ? { pdeathSig: p.pdeathSig } : {}),
      signalsP: signalQueue(state.pending),
      creds: {
        uid: creds.uid, gid: creds.gid, euid: creds.euid, egid: creds.egid,
        suid: creds.suid, sgid: creds.sgid, fsuid: creds.fsuid, fsgid: creds.fsgid,
        capInh: capWords(creds.capInh), capPrm: capWords(creds.capPrm),
        capEff: capWords(creds.capEff), capBnd: capWords(creds.capBnd),
        secbits: creds.securebits, groups: creds.groups, capAmb: capWords(creds.capAmb),
        ...(creds.noNewPrivs ? { noNewPrivs: 1 } : {}),
      },
      // from the seccomp stage, not state.seccompMode: a TSYNC chain lives on the leader only
      ...(t.seccomp ? { seccompMode: t.seccomp.mode } : {}),
      ...(t.seccomp?.filter !== undefined ? { seccompFilter: t.seccomp.filter } : {}),
      ...(t.cgSet !== undefined ? { cgSet: t.cgSet } : {}),
      comm: p.name,
      ...(state.rseq
        ? {
            rseqEntry: {
              rseqAbiPointer: state.rseq.rseqAbiPointer,
              rseqAbiSize: state.rseq.rseqAbiSize,
              signature: state.rseq.signature,
            },
          }
        : {}),
    },
  };
}

export function threadCore(t: ThreadFacts): core_entry {
  return create(core_entrySchema, threadParts(t, false));
}

export interface LeaderFacts {
  proc: ProcessInspection;
  parasite: ParasiteInfo;
  /** Task was in a job-control stop when seized. */
  stopped: boolean;
  stopSignal?: number;
}

export function leaderCore(t: ThreadFacts, l: LeaderFacts): core_entry {
  const { proc, parasite } = l;
  const sigactions = parasite.sigactions
    .filter((s) => s.signo !== SIGKILL && s.signo !== SIGSTOP)
    .sort((a, b) => a.signo - b.signo)
    .map((s) => ({ sigaction: s.handler, flags: s.flags, restorer: s.restorer, mask: s.mask, compatSigaction: false }));
  return create(core_entrySchema, {
    ...threadParts(t, true),
    tc: {
      taskState: l.stopped ? TASK_STOPPED : TASK_ALIVE,
      exitCode: 0,
      personality: proc.personality,
      flags: proc.flags,
      blkSigset: t.state.blocked,
      comm: proc.comm,
      timers: {
        real: itimer(parasite.itimers.real),
        virt: itimer(parasite.itimers.virt),
        prof: itimer(parasite.itimers.prof),
        posix: [...parasite.posixTimers].sort((a, b) => a.id - b.id).map((p) => ({
          itId: p.id,
          clockId: p.clockId,
          siSigno: p.signo,
          itSigevNotify: p.notify,
          sivalPtr: p.sigevValue,
          overrun: p.overrun,
          isec: BigInt(p.interval.sec),
          insec: BigInt(p.interval.frac),
          vsec: BigInt(p.value.sec),
          vnsec: BigInt(p.value.frac),
          ...(p.notify & SIGEV_THREAD_ID ? { notifyThreadId: p.notifyTid } : {}),
        })),
      },
      rlimits: { rlimits: proc.rlimits.sort((a, b) => a.resource - b.resource).map((r) => ({ cur: r.soft, max: r.hard })) },
      signalsS: signalQueue(t.state.sharedPending),
      ...(proc.loginuid !== undefined ? { loginuid: proc.loginuid } : {}),
      oomScoreAdj: proc.oomScoreAdj,
      sigactions,
      childSubreaper: parasite.misc.childSubreaper,
      ...(l.stopped && l.stopSignal ? { stopSigno: l.stopSignal } : {}),
    },
  });
}

/** A zombie's core image: no threads to restore, only how it died. */
export function zombieCore(z: ZombieInfo): core_entry {
  return create(core_entrySchema, {
    mtype: core_entry_march.X86_64,
    tc: { taskState: TASK_DEAD, exitCode: z.exitCode, personality: 0, flags: 0, blkSigset: 0n, comm: z.comm },
  });
}
