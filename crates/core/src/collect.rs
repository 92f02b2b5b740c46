//! One visit to one seized process: everything the dump needs from it, gathered in one go on the
//! tracer thread (what CRIU's dump_one_task does between the seize and the image writes).
//!
//! The order matters for what the task looks like to each reader:
//! 1. from outside, before anything is injected: procfs (`inspect`), the leader's registers,
//!    masks, queued signals, seccomp and rseq state (`inspect::thread`), its robust futex list;
//! 2. one infection for everything the task itself must answer: the resident parasite answers
//!    the process-wide questions in one round trip and each thread answers its own in one trip
//!    (`parasite::info`). The other threads go in batches: a batch is read from outside just
//!    before it answers (nothing injected has touched it yet: only the leader runs the parasite
//!    until then) and is handed over at once, so that the dump writes its images while the
//!    next batch is visited. Then the memory is drained through the same parasite (`mem`), and
//!    the tracking of an incremental run is ended and started in the same freeze (`mem::track`);
//! 3. the cure.
//!
//! A task the blob cannot run in (no image for this architecture, another network namespace,
//! TSDUMP_PARASITE=inject) is asked with single injected syscalls instead, as before.

use crate::error::{Error, ErrorCode, Result};
use crate::inspect::{self, thread::ThreadState, ProcessInfo};
use crate::mem::{self, snapshot, track, DumpOpts, Infected, MemDump};
use crate::pageserver::PageServerClient;
use crate::parasite::blob::Blob;
use crate::parasite::info::{self, TaskInfo, TaskKnown, ThreadKnown};
use crate::parasite::{inject, Injector};

/// Threads that answer at once, one scratch slot each (inject::THREAD_SLOT), and are handed
/// over together. Small, so that the dump's main thread starts on their images early: with 16,
/// a 200-thread process is frozen ~20% shorter than with 64, and 8 gains nothing more
/// (bench/README.md, "A process of many threads").
const THREAD_BATCH: usize = 16;

/// The task's memory, as part of the visit.
pub struct MemoryRequest<'a> {
    pub opts: DumpOpts,
    /// Send the pages to this page server instead of `opts.pages_path`.
    pub page_server: Option<&'a mut PageServerClient>,
    /// The previous run's userfaultfd in the task, closed in this freeze (if it still is one).
    pub close_fd: Option<i32>,
    /// Start tracking writes after the drain.
    pub arm: Option<track::Method>,
    /// --snapshot: take a copy-on-write snapshot instead of draining (`mem::snapshot`).
    pub snapshot: Option<snapshot::Mode>,
}

/// One thread, from outside.
#[derive(Debug, Clone)]
pub struct ThreadFacts {
    pub state: ThreadState,
    /// get_robust_list: head and length.
    pub robust_list: (u64, u64),
}

/// A thread other than the leader, handed over as soon as it has answered.
#[derive(Debug, Clone)]
pub struct VisitedThread {
    pub facts: ThreadFacts,
    pub info: crate::parasite::info::ThreadInfo,
}

/// Where a visit hands over the threads other than the leader: a batch at a time, in `tids`
/// order, each batch once it has answered (see the module doc).
pub type ThreadSink<'a> = &'a mut dyn FnMut(Vec<VisitedThread>);

/// Where a visit's time went, nanoseconds (bench/profile.ts prints them).
#[derive(Debug, Clone, Copy, Default)]
pub struct VisitTimings {
    /// procfs, thread states and robust lists (the leader's before infecting, the other
    /// threads' batch by batch).
    pub outside_ns: u64,
    /// The scratch mapping and the resident parasite's start.
    pub infect_ns: u64,
    /// The process's and the threads' answers.
    pub ask_ns: u64,
    /// The page drain (scan included) and tracking.
    pub memory_ns: u64,
    /// Stopping the parasite and unmapping the scratch.
    pub cure_ns: u64,
}

pub struct TaskFacts {
    pub proc: ProcessInfo,
    /// The leader from outside (the other threads went to the visit's ThreadSink).
    pub leader: ThreadFacts,
    /// What the process answered; `threads` holds the leader's answers only.
    pub info: TaskInfo,
    pub memory: Option<MemDump>,
    /// The drain's counter as the visit ended: this task's last count, which the dump reports
    /// as its copy's end (the next task's drain may have begun by the time it looks).
    pub drained: crate::progress::Snapshot,
    pub tracking: Option<(track::Method, track::Armed)>,
    /// Syscalls the visit injected (a blob round trip counts once).
    pub injected: u64,
    pub timings: VisitTimings,
    /// The scratch mapping, left in the task (see `Injector::leave`).
    pub leftover: inject::Leftover,
    /// --snapshot: the pages still to copy after the release.
    pub snapshot: Option<snapshot::Pending>,
}

/// Visits process `pid` (every thread in `tids` seized by the calling thread, leader first);
/// the threads after the leader go to `sink`.
pub fn collect_task(pid: i32, tids: &[i32], memory: Option<MemoryRequest>, sink: ThreadSink) -> Result<TaskFacts> {
    // smaps walks every page table of the task (~10 ms a GiB) for what only it tells, the
    // VmFlags: read on a thread of its own while this one does the rest; /proc/PID/maps has
    // everything else. It walks them under the task's mmap lock, which the infection's mmap and
    // a snapshot's fork wait for: with --snapshot, the VmFlags are read from the snapshot's
    // holder after the release where it tells them all (mem::snapshot::vm_flags_may_wait).
    let maps = crate::mem::vma::read_vmas(pid)?;
    let smaps_later = memory.as_ref().is_some_and(|m| m.snapshot.is_some()) && snapshot::vm_flags_may_wait(pid)?;
    std::thread::scope(|scope| {
        let smaps = (!smaps_later).then(|| scope.spawn(|| inspect::read_smaps(pid)));
        let facts = collect_with(pid, tids, maps, memory, sink);
        let smaps = match smaps {
            Some(s) => Some(s.join().map_err(|_| crate::Error::new(ErrorCode::Kernel, format!("pid {pid}: the smaps reader panicked")))?),
            None => None,
        };
        let (mut facts, taken) = facts?;
        let later = match &taken {
            Some(t) if smaps_later => t.vm_flags_later()?,
            _ => false,
        };
        if !later {
            let smaps = match smaps {
                Some(s) => s?,
                None => inspect::read_smaps(pid)?,
            };
            inspect::add_vm_flags(pid, &mut facts.proc, &smaps, (facts.leftover.scratch, facts.leftover.len))?;
        }
        if let Some(m) = facts.memory.as_mut() {
            m.vm_flags_after_release = later;
        }
        if let Some(taken) = taken {
            facts.snapshot = Some(taken.copy_unforked(later)?);
        }
        Ok(facts)
    })
}

fn collect_with(pid: i32, tids: &[i32], maps: Vec<crate::mem::Vma>, memory: Option<MemoryRequest>, sink: ThreadSink) -> Result<(TaskFacts, Option<snapshot::Taken>)> {
    let mut clock = Clock::start();
    let proc = inspect::inspect_process_with(pid, &maps)?;
    let Some((&leader_tid, others)) = tids.split_first().filter(|(&t, _)| t == pid) else {
        return Err(Error::new(ErrorCode::Parasite, format!("pid {pid}: a visit wants the leader first in its threads")));
    };
    let leader = outside(pid, leader_tid)?;
    refuse_pending_sigtrap(pid, std::slice::from_ref(&leader))?;
    let known = TaskKnown {
        umask: proc.umask.unwrap_or(0o022),
        timers: info::parse_proc_timers(&std::fs::read_to_string(format!("/proc/{pid}/timers")).map_err(|e| inspect::io_err(pid, "timers", e))?)?,
        threads: vec![known_of(&leader)],
    };
    let mut timings = VisitTimings { outside_ns: clock.lap(), ..Default::default() };
    let slots = others.len().min(THREAD_BATCH);
    let mut inj = Injector::infect_known(pid, inject::DEFAULT_SCRATCH, slots, maps.clone())?;
    let memory = memory.map(|mut m| {
        m.opts.vmas = Some(maps);
        m
    });
    let others = Others { tids: others, sink, under_seccomp: (leader.state.seccomp_mode != 0).then_some(pid) };
    let visited = visit(&mut inj, &known, Some(others), memory, &mut timings, &mut clock).and_then(|v| refuse_ran_free(&inj).map(|_| v));
    let (info, memory, tracking, taken) = match visited {
        Ok(v) => v,
        Err(e) => {
            // a failed dump releases the tree: no scratch may stay behind
            let _ = inj.cure();
            return Err(e);
        }
    };
    let drained = crate::progress::current().snapshot();
    let injected = inj.calls;
    let leftover = inj.leave()?;
    timings.cure_ns += clock.lap();
    Ok((TaskFacts { proc, leader, info, memory, drained, tracking, injected, timings, leftover, snapshot: None }, taken))
}

/// Thread `tid` from outside.
fn outside(pid: i32, tid: i32) -> Result<ThreadFacts> {
    // the seccomp stage read the filters; the process-wide queue goes with the leader
    let extras = inspect::thread::Extras { seccomp_filters: false, shared_pending: tid == pid };
    Ok(ThreadFacts { state: inspect::thread::thread_state_with(pid, tid, extras)?, robust_list: crate::files::robust_list(tid)? })
}

fn known_of(t: &ThreadFacts) -> ThreadKnown {
    ThreadKnown { tid: t.state.tid, cap_bnd: t.state.creds.cap_bnd, cap_amb: t.state.creds.cap_amb }
}

/// The threads after the leader, still to visit.
struct Others<'a> {
    tids: &'a [i32],
    sink: ThreadSink<'a>,
    /// A thread seen running under seccomp (a snapshot's processes would run under its filters,
    /// which may forbid or kill them).
    under_seccomp: Option<i32>,
}

impl Others<'_> {
    /// Each batch from outside, then its answers, then handed over (see the module doc).
    fn visit(mut self, inj: &mut Injector, mut blob: Option<&mut Blob>, t: &mut VisitTimings, clock: &mut Clock) -> Result<Option<i32>> {
        let pid = inj.pid();
        for batch in self.tids.chunks(THREAD_BATCH) {
            let facts = batch.iter().map(|&tid| outside(pid, tid)).collect::<Result<Vec<_>>>()?;
            refuse_pending_sigtrap(pid, &facts)?;
            if self.under_seccomp.is_none() {
                self.under_seccomp = facts.iter().find(|f| f.state.seccomp_mode != 0).map(|f| f.state.tid);
            }
            t.outside_ns += clock.lap();
            let known: Vec<ThreadKnown> = facts.iter().map(known_of).collect();
            let answers = info::ask_threads(inj, blob.as_deref_mut(), &known)?;
            t.ask_ns += clock.lap();
            (self.sink)(facts.into_iter().zip(answers).map(|(facts, info)| VisitedThread { facts, info }).collect());
        }
        Ok(self.under_seccomp)
    }
}

/// Laps of a monotonic clock.
struct Clock(std::time::Instant);

impl Clock {
    fn start() -> Clock {
        Clock(std::time::Instant::now())
    }
    /// Nanoseconds since the last lap.
    fn lap(&mut self) -> u64 {
        let now = std::time::Instant::now();
        let ns = (now - self.0).as_nanos() as u64;
        self.0 = now;
        ns
    }
}

/// Only what the task itself answers (process-wide, and each of `tids`), with the number of
/// syscalls injected.
pub fn ask_task(pid: i32, tids: &[i32]) -> Result<(TaskInfo, u64)> {
    let known = TaskKnown::read(pid, tids)?;
    let slots = tids.len().saturating_sub(1).min(THREAD_BATCH);
    let mut inj = Injector::infect_with_slots(pid, inject::DEFAULT_SCRATCH, slots)?;
    let visited = visit(&mut inj, &known, None, None, &mut VisitTimings::default(), &mut Clock::start());
    let cured = inj.cure();
    let (info, ..) = visited?;
    cured?;
    refuse_ran_free(&inj)?;
    Ok((info, inj.calls))
}

/// A SIGTRAP pending for a thread (or the process) would be recorded, but restore stops the
/// restored tasks with traps of its own and the signal is consumed there (CRIU 4.1.1's does, and
/// CRIU's dump refuses it for its own traps): refused before the thread is touched (the cure
/// then leaves the task as it was).
fn refuse_pending_sigtrap(pid: i32, threads: &[ThreadFacts]) -> Result<()> {
    for t in threads {
        if t.state.pending.iter().chain(&t.state.shared_pending).any(|s| s.signo == libc::SIGTRAP) {
            return Err(crate::Error::new(
                ErrorCode::Unsupported,
                format!("pid {pid} tid {}: a SIGTRAP is pending; the restore's own traps would consume it (wait until it is delivered)", t.state.tid),
            ));
        }
    }
    Ok(())
}

/// A thread that ran its own code in the middle of the visit makes its answers worthless.
fn refuse_ran_free(inj: &Injector) -> Result<()> {
    match inj.ran_free {
        Some(tid) => Err(crate::Error::new(
            ErrorCode::Parasite,
            format!("pid {} tid {tid}: the thread ran its own code during the dump (tsdump took it back too late)", inj.pid()),
        )),
        None => Ok(()),
    }
}

type Visit = (TaskInfo, Option<MemDump>, Option<(track::Method, track::Armed)>, Option<snapshot::Taken>);
/// The answers, and the memory with the request it answered.
type Served<'a> = (TaskInfo, Option<(MemDump, MemoryRequest<'a>)>, Option<snapshot::Taken>);

/// The infected part: answers (the process's, `known`'s threads', then `others`'), drain (or
/// snapshot), tracking; the blob is stopped whatever happens.
fn visit(inj: &mut Injector, known: &TaskKnown, others: Option<Others>, memory: Option<MemoryRequest>, t: &mut VisitTimings, clock: &mut Clock) -> Result<Visit> {
    let pid = inj.pid();
    let mut blob = if std::env::var("TSDUMP_PARASITE").as_deref() == Ok("inject") {
        None
    } else {
        match Blob::start(inj) {
            Ok(b) => Some(b),
            Err(e) if e.code == ErrorCode::TargetGone => return Err(e),
            Err(_) => None,
        }
    };
    t.infect_ns += clock.lap();
    let served = (|| -> Result<Served> {
        let info = info::collect(inj, blob.as_mut(), known)?;
        t.ask_ns += clock.lap();
        let under_seccomp = match others {
            Some(o) => o.visit(inj, blob.as_mut(), t, clock)?,
            None => None,
        };
        let Some(mut req) = memory else { return Ok((info, None, None)) };
        let no_snapshot = under_seccomp.map(|tid| Error::new(ErrorCode::Unsupported, format!("pid {pid} tid {tid}: runs under seccomp; no snapshot is forked")));
        let mut taken = None;
        let d = match (req.page_server.as_deref_mut(), req.snapshot) {
            (server, Some(mode)) => {
                let (d, tk) = snapshot::take(pid, &req.opts, Infected { inj: &mut *inj, blob: blob.as_mut() }, mode, no_snapshot, server)?;
                taken = tk;
                d
            }
            (Some(c), None) => mem::dump_memory_to_page_server(pid, &req.opts, Some(Infected { inj: &mut *inj, blob: blob.as_mut() }), c)?,
            (None, None) => mem::dump_memory(pid, &req.opts, Some(Infected { inj: &mut *inj, blob: blob.as_mut() }))?,
        };
        t.memory_ns += clock.lap();
        Ok((info, Some((d, req)), taken))
    })();
    let stopped = blob.take().map_or(Ok(()), |b| b.stop(inj));
    t.cure_ns += clock.lap();
    let (info, drained, taken) = served?;
    stopped?;
    let Some((d, req)) = drained else { return Ok((info, None, None, None)) };
    let tracking = track::retrack(inj, req.close_fd, req.arm, &d.vmas)?;
    t.memory_ns += clock.lap();
    Ok((info, Some(d), tracking, taken))
}
