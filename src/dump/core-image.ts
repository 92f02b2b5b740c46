// core-TID.img: one per thread. Registers, FPU state and TLS (thread_info), the per-thread
// kernel state (thread_core), and for the leader the process-wide task state (tc).
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { core_entrySchema } from '../images/gen/core_pb.js';
import { hostArch } from '../arch/index.js';
import type {
  ParasiteInfo,
  PendingSignalInfo,
  ProcessInspection,
  ThreadParasiteInfo,
  ThreadStateInfo,
  TimeValue,
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
    mtype: hostArch().mtype,
    ...hostArch().threadInfo(state.regs, state.syscallRestart, p.clearTidAddr),
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

/** A core entry as the init object create() takes: the image encoder reads it as it is. */
export type CoreEntryInit = MessageInitShape<typeof core_entrySchema>;

export function threadCore(t: ThreadFacts): CoreEntryInit {
  return threadParts(t, false);
}

export interface LeaderFacts {
  proc: ProcessInspection;
  parasite: ParasiteInfo;
  /** Task was in a job-control stop when seized. */
  stopped: boolean;
  stopSignal?: number;
}

/** Four words a signal (handler, flags, restorer, mask), 1..64 in order; CRIU leaves out the two nobody can change. */
function sigactionEntries(words: BigUint64Array): { sigaction: bigint; flags: bigint; restorer: bigint; mask: bigint; compatSigaction: boolean }[] {
  const entries = [];
  for (let signo = 1; signo * 4 <= words.length; signo++) {
    if (signo === SIGKILL || signo === SIGSTOP) continue;
    const at = (signo - 1) * 4;
    entries.push({ sigaction: words[at]!, flags: words[at + 1]!, restorer: words[at + 2]!, mask: words[at + 3]!, compatSigaction: false });
  }
  return entries;
}

/** Soft and hard limit of each resource in RLIMIT_* order. */
function rlimitEntries(words: BigUint64Array): { cur: bigint; max: bigint }[] {
  const entries = [];
  for (let at = 0; at + 1 < words.length; at += 2) entries.push({ cur: words[at]!, max: words[at + 1]! });
  return entries;
}

export function leaderCore(t: ThreadFacts, l: LeaderFacts): CoreEntryInit {
  const { proc, parasite } = l;
  const sigactions = sigactionEntries(parasite.sigactions);
  return {
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
      rlimits: { rlimits: rlimitEntries(proc.rlimits) },
      signalsS: signalQueue(t.state.sharedPending),
      ...(proc.loginuid !== undefined ? { loginuid: proc.loginuid } : {}),
      oomScoreAdj: proc.oomScoreAdj,
      sigactions,
      childSubreaper: parasite.misc.childSubreaper,
      ...(l.stopped && l.stopSignal ? { stopSigno: l.stopSignal } : {}),
    },
  };
}

/** A zombie's core image: no threads to restore, only how it died. */
export function zombieCore(z: ZombieInfo): CoreEntryInit {
  return {
    mtype: hostArch().mtype,
    tc: { taskState: TASK_DEAD, exitCode: z.exitCode, personality: 0, flags: 0, blkSigset: 0n, comm: z.comm },
  };
}
