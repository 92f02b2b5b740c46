//! `session.startVisit(pid, opts)`: one visit to one seized process (tsdump_core::collect), in
//! one job on the tracer thread: what procfs shows, each thread's state, what the task itself
//! answers, and its memory drained, with a single infection. The dump starts one per process;
//! the threads after the leader come out in batches while the visit goes on (`threads`), so
//! that their images are written meanwhile, and the rest when it is over (`facts`).

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tokio::sync::{mpsc, oneshot, Mutex};
use tsdump_core::collect::{self, MemoryRequest, VisitedThread};

use crate::files::RobustList;
use crate::memory::{DumpMemoryOptions, MemoryDump, MemoryOptions};
use crate::parasite::{check_traced_by_us, thread_answers, ParasiteInfo, ThreadParasiteInfo};
use crate::session::{drain_progress, outcome, DrainProgress, Session};
use crate::inspect::ProcessInspection;
use crate::thread::ThreadStateInfo;

#[napi(object)]
pub struct VisitOptions {
    /// The process's threads, leader first (all seized by this session).
    pub tids: Vec<i32>,
    /// Drain the memory too (as dumpMemory, through the same infection).
    pub memory: Option<DumpMemoryOptions>,
}

#[napi(object)]
pub struct VisitedThreadInfo {
    pub state: ThreadStateInfo,
    pub robust_list: RobustList,
    /// What the thread answered itself.
    pub answers: ThreadParasiteInfo,
}

fn visited_thread(t: VisitedThread) -> VisitedThreadInfo {
    VisitedThreadInfo {
        state: crate::thread::thread_info(t.facts.state),
        robust_list: RobustList { head: BigInt::from(t.facts.robust_list.0), len: t.facts.robust_list.1 as u32 },
        answers: thread_answers(t.info),
    }
}

/// Where the visit's time went, nanoseconds.
#[napi(object)]
pub struct VisitTimingsInfo {
    /// procfs, thread states and robust lists.
    pub outside_ns: i64,
    /// The scratch mapping and the resident parasite's start.
    pub infect_ns: i64,
    /// The process's and the threads' answers.
    pub ask_ns: i64,
    /// The page drain (scan included) and tracking.
    pub memory_ns: i64,
    /// Stopping the parasite and unmapping the scratch.
    pub cure_ns: i64,
}

#[napi(object, object_from_js = false)]
pub struct TaskFactsInfo {
    pub proc: ProcessInspection,
    pub leader: VisitedThreadInfo,
    /// What the process answered (`threads` is empty: each thread comes with its own answers).
    pub parasite: ParasiteInfo,
    pub memory: Option<MemoryDump>,
    /// The drain's progress as the visit ended: this task's last count (0 pid: nothing drained).
    pub drained: DrainProgress,
    pub timings: VisitTimingsInfo,
}

type Visited = (collect::TaskFacts, Option<MemoryDump>);

/// A visit started by `startVisit`: its threads as the tracer thread gets to them, then its end.
#[napi]
pub struct TaskVisitJob {
    threads: Mutex<mpsc::UnboundedReceiver<Vec<VisitedThread>>>,
    end: Mutex<Option<oneshot::Receiver<tsdump_core::Result<Visited>>>>,
}

#[napi]
impl TaskVisitJob {
    /// The next threads after the leader the visit has got to, in `tids` order; null once all
    /// are out (or the visit failed: `facts` tells why). Each thread comes out once, and a
    /// process of a thousand threads is never all in JavaScript at once.
    #[napi]
    pub async fn threads(&self) -> Result<Option<Vec<VisitedThreadInfo>>> {
        Ok(self.threads.lock().await.recv().await.map(|batch| batch.into_iter().map(visited_thread).collect()))
    }

    /// The rest of what the visit found, once it is over.
    #[napi]
    pub async fn facts(&self) -> Result<TaskFactsInfo> {
        let end = self.end.lock().await.take().ok_or_else(|| Error::from_reason("USAGE: a visit's facts are handed out once"))?;
        let (mut facts, memory) = outcome(end).await?;
        let t = facts.timings;
        let timings = VisitTimingsInfo {
            outside_ns: t.outside_ns as i64,
            infect_ns: t.infect_ns as i64,
            ask_ns: t.ask_ns as i64,
            memory_ns: t.memory_ns as i64,
            cure_ns: t.cure_ns as i64,
        };
        let leader_info = facts.info.threads.pop().ok_or_else(|| Error::from_reason("PARASITE: the visit brought no answers of the leader"))?;
        let leader = visited_thread(VisitedThread { facts: facts.leader, info: leader_info });
        let parasite = crate::parasite::to_js(facts.info, facts.injected);
        let drained = drain_progress(facts.drained);
        Ok(TaskFactsInfo { proc: crate::inspect::process_inspection(facts.proc), leader, parasite, memory, drained, timings })
    }
}

#[napi]
impl Session {
    /// Starts the visit of process `pid`, seized by this session (see the module doc).
    #[napi]
    pub fn start_visit(&self, pid: i32, opts: VisitOptions) -> Result<TaskVisitJob> {
        let memory = opts.memory.map(|m| MemoryOptions::parse(self, m)).transpose()?;
        let tids = opts.tids;
        let (tx, rx) = mpsc::unbounded_channel();
        let end = self.submit(move |state| {
            check_traced_by_us(pid, pid)?;
            // a batch the dump no longer wants (it failed meanwhile) is dropped
            let mut sink = |batch| drop(tx.send(batch));
            let (mut facts, js) = match &memory {
                None => (collect::collect_task(pid, &tids, None, &mut sink)?, None),
                Some(m) => {
                    let mut facts = None;
                    let js = m.run(state, |req: MemoryRequest| {
                        let mut f = collect::collect_task(pid, &tids, Some(req), &mut sink)?;
                        let d = f.memory.take().expect("memory was asked for");
                        let armed = f.tracking.take();
                        facts = Some(f);
                        Ok((d, armed))
                    })?;
                    (facts.expect("set by the drain"), Some(js))
                }
            };
            state.leftovers.push(facts.leftover);
            state.snapshots.extend(facts.snapshot.take());
            Ok((facts, js))
        })?;
        Ok(TaskVisitJob { threads: Mutex::new(rx), end: Mutex::new(Some(end)) })
    }
}
