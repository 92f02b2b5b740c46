//! `session.dumpTask(pid, opts)`: one visit to one seized process (tsdump_core::collect), in one
//! call: what procfs shows, each thread's state, what the task itself answers, and its memory
//! drained, with a single infection. The dump calls this once per process.

use napi::bindgen_prelude::*;
use napi_derive::napi;
use tsdump_core::collect::{self, MemoryRequest};
use tsdump_core::{Error as CoreError, ErrorCode};

use crate::files::RobustList;
use crate::memory::{DumpMemoryOptions, MemoryDump, MemoryOptions};
use crate::parasite::{check_traced_by_us, ParasiteInfo};
use crate::session::Session;
use crate::inspect::ProcessInspection;
use crate::thread::ThreadStateInfo;

#[napi(object)]
pub struct DumpTaskOptions {
    /// The process's threads, leader first (all seized by this session).
    pub tids: Vec<i32>,
    /// Drain the memory too (as dumpMemory, through the same infection).
    pub memory: Option<DumpMemoryOptions>,
}

#[napi(object)]
pub struct TaskThreadInfo {
    pub state: ThreadStateInfo,
    pub robust_list: RobustList,
}

/// Where the visit's time went, nanoseconds.
#[napi(object)]
pub struct VisitTimingsInfo {
    /// procfs, thread states and robust lists, before infecting.
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

/// The visited threads, as `tids` listed them, handed to JavaScript one at a time: a process of
/// a thousand threads is never all in JavaScript objects at once (each thread is some hundreds
/// of BigInts), so tsdump's memory stays flat in the number of threads.
#[napi]
pub struct VisitedThreads {
    threads: Vec<Option<collect::ThreadFacts>>,
}

#[napi]
impl VisitedThreads {
    #[napi(getter)]
    pub fn length(&self) -> u32 {
        self.threads.len() as u32
    }

    /// Thread `i`, once: its state leaves the native side with it.
    #[napi]
    pub fn take(&mut self, i: u32) -> Result<TaskThreadInfo> {
        let t = self
            .threads
            .get_mut(i as usize)
            .and_then(Option::take)
            .ok_or_else(|| Error::from_reason(format!("USAGE: visited thread {i} taken already or out of range")))?;
        Ok(TaskThreadInfo {
            state: crate::thread::thread_info(t.state),
            robust_list: RobustList { head: BigInt::from(t.robust_list.0), len: t.robust_list.1 as u32 },
        })
    }
}

#[napi(object, object_from_js = false)]
pub struct TaskFactsInfo {
    pub proc: ProcessInspection,
    /// As `tids` listed them.
    pub threads: VisitedThreads,
    /// What the task answered itself; `parasite.threads[i]` is `threads[i]`'s.
    pub parasite: ParasiteInfo,
    pub memory: Option<MemoryDump>,
    pub timings: VisitTimingsInfo,
}

#[napi]
impl Session {
    /// Everything the dump needs from process `pid`, seized by this session: see the module doc.
    #[napi]
    pub async fn dump_task(&self, pid: i32, opts: DumpTaskOptions) -> Result<TaskFactsInfo> {
        let memory = opts.memory.map(|m| MemoryOptions::parse(self, m)).transpose()?;
        let tids = opts.tids;
        let (facts, memory) = self
            .run(move |state| {
                if tids.first() != Some(&pid) {
                    return Err(CoreError::new(ErrorCode::Parasite, format!("pid {pid}: dumpTask wants the leader first in tids")));
                }
                check_traced_by_us(pid, pid)?;
                let (facts, js) = match &memory {
                    None => (collect::collect_task(pid, &tids, None)?, None),
                    Some(m) => {
                        let mut facts = None;
                        let js = m.run(state, |req: MemoryRequest| {
                            let mut f = collect::collect_task(pid, &tids, Some(req))?;
                            let d = f.memory.take().expect("memory was asked for");
                            let armed = f.tracking.take();
                            facts = Some(f);
                            Ok((d, armed))
                        })?;
                        (facts.expect("set by the drain"), Some(js))
                    }
                };
                state.leftovers.push(facts.leftover);
                let mut facts = facts;
                state.snapshots.extend(facts.snapshot.take());
                Ok((facts, js))
            })
            .await?;
        let t = facts.timings;
        let timings = VisitTimingsInfo {
            outside_ns: t.outside_ns as i64,
            infect_ns: t.infect_ns as i64,
            ask_ns: t.ask_ns as i64,
            memory_ns: t.memory_ns as i64,
            cure_ns: t.cure_ns as i64,
        };
        let parasite = crate::parasite::to_js(facts.info, facts.injected);
        let threads = VisitedThreads { threads: facts.threads.into_iter().map(Some).collect() };
        Ok(TaskFactsInfo { proc: crate::inspect::process_inspection(facts.proc), threads, parasite, memory, timings })
    }
}
