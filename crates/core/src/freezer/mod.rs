//! Taking hold of a live process tree and letting it go again.
//!
//! `seize_tree` stops every thread of every process below a root PID with PTRACE_SEIZE +
//! PTRACE_INTERRUPT, re-reading /proc until no new thread or child shows up, and records how each
//! task was found (running, or already in a job-control stop) so that `release` can put it back
//! exactly so. Zombies are recorded, not seized.
//!
//! If tsdump dies while holding the tree, the kernel detaches every tracee when the tracer thread
//! goes away: running tasks resume, group-stopped ones stay stopped. A cgroup freezer does not
//! have that property (a frozen cgroup stays frozen after its freezer exits), so `cgroup` only
//! keeps the cgroup frozen for the few milliseconds it takes to seize its tasks, then thaws it
//! before any dump work starts; from then on ptrace alone holds the tree.

pub mod cgroup;
pub mod identity;
pub mod procinfo;
pub mod task;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::error::{Error, ErrorCode, Result};
use procinfo::Brief;
use task::{StopKind, WaitOutcome};

/// How the caller wants the tree seized.
#[derive(Debug, Clone, Default)]
pub struct SeizeOptions {
    /// Give up (and release everything) if a task does not stop within this long. Default 10 s.
    pub timeout: Option<Duration>,
    /// Freeze this cgroup (v2 directory with `cgroup.freeze`, or v1 freezer directory) first.
    pub freeze_cgroup: Option<PathBuf>,
    /// Set PTRACE_O_SUSPEND_SECCOMP on tasks running under seccomp (as CRIU does). Default off.
    pub suspend_seccomp: bool,
}

/// One seized thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeizedThread {
    pub tid: i32,
    /// The job-control stop signal if the thread was already stopped when seized.
    pub stop_signal: Option<i32>,
    /// 0 disabled, 1 strict, 2 filter (seccomp is per thread).
    pub seccomp_mode: u32,
}

/// One seized process (all of its threads are stopped).
#[derive(Debug, Clone)]
pub struct SeizedProcess {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub comm: String,
    /// State letter from /proc/PID/stat just before seizing (R, S, D, T, ...).
    pub state_before: char,
    /// True if the process was in a job-control stop; it stays stopped on release.
    pub stopped: bool,
    pub seccomp_mode: u32,
    pub threads: Vec<SeizedThread>,
}

/// A zombie found in the tree: recorded for pstree/core images, never seized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zombie {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub comm: String,
    /// Raw wait status from /proc/PID/stat (`exit_code` field): exit status << 8 | signal.
    pub exit_code: i32,
}

impl Zombie {
    /// exit(2) status if it exited normally.
    pub fn exit_status(&self) -> Option<i32> {
        (self.exit_code & 0x7f == 0).then_some((self.exit_code >> 8) & 0xff)
    }

    /// The signal that killed it, if one did.
    pub fn exit_signal(&self) -> Option<i32> {
        let sig = self.exit_code & 0x7f;
        (sig != 0).then_some(sig)
    }
}

/// The seized tree, root first, parents before children.
#[derive(Debug, Clone, Default)]
pub struct SeizedTree {
    pub root: i32,
    pub processes: Vec<SeizedProcess>,
    pub zombies: Vec<Zombie>,
    /// Time spent seizing (from the first PTRACE_SEIZE to the last stop), microseconds.
    pub seize_time_us: u64,
    /// Time the cgroup freezer took to report the cgroup frozen, microseconds (0 if unused).
    pub cgroup_freeze_time_us: u64,
}

impl SeizedTree {
    pub fn process(&self, pid: i32) -> Option<&SeizedProcess> {
        self.processes.iter().find(|p| p.pid == pid)
    }

    /// The process a thread belongs to.
    pub fn owner_of(&self, tid: i32) -> Option<&SeizedProcess> {
        self.processes
            .iter()
            .find(|p| p.threads.iter().any(|t| t.tid == tid))
    }

    pub fn thread_count(&self) -> usize {
        self.processes.iter().map(|p| p.threads.len()).sum()
    }
}

/// What `release` does with the tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseMode {
    /// Detach: running tasks resume, tasks found stopped stay stopped.
    Resume,
    /// Detach leaving every process in a job-control stop (SIGSTOP).
    Stop,
    /// SIGKILL every process (the default after a completed dump).
    Kill,
}

/// Refuses early, with a clear message, a task the calling (tracer) thread does not hold: one
/// that exited meanwhile (ESRCH_TARGET) or that another tracer holds (PTRACE).
pub fn check_held(pid: i32, tid: i32) -> Result<()> {
    let path = format!("/proc/{pid}/task/{tid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|e| Error::new(ErrorCode::EsrchTarget, format!("pid {pid} tid {tid}: reading {path}: {e}")))?;
    // TracerPid names the tracing thread: this one.
    let tracer = crate::inspect::parse::tracer_pid(&status).unwrap_or(0);
    if tracer == nix::unistd::gettid().as_raw() {
        return Ok(());
    }
    if matches!(crate::inspect::parse::status_field(&status, "State").and_then(|s| s.chars().next()), Some('Z' | 'X')) {
        return Err(Error::new(ErrorCode::EsrchTarget, format!("pid {pid} tid {tid}: exited during the dump")));
    }
    Err(Error::new(ErrorCode::Ptrace, format!("pid {pid} tid {tid}: not seized by this session (tracer pid {tracer})")))
}

/// Seizes the tree rooted at `root`. On any error every task seized so far is released as found.
pub fn seize_tree(root: i32, opts: &SeizeOptions) -> Result<SeizedTree> {
    let root_brief = procinfo::check_root(root)?;
    let timeout = opts.timeout.unwrap_or(Duration::from_secs(10));
    let mut walk = Walk {
        tree: SeizedTree {
            root,
            ..Default::default()
        },
        opts,
        timeout,
        preseized: BTreeSet::new(),
    };
    let started = Instant::now();
    if let Some(path) = &opts.freeze_cgroup {
        let mut f = cgroup::Freezer::open(path)?;
        f.mark_frozen();
        walk.tree.cgroup_freeze_time_us = f.freeze(timeout)?.as_micros() as u64;
        // Seize while frozen; the interrupt traps fire once thawed. Thaw happens on every path
        // (explicitly, or by Freezer's drop on an early return).
        let tids = f.tasks()?;
        let mut res = Ok(());
        for tid in tids {
            match task::seize_and_interrupt(tid) {
                Ok(()) => {
                    walk.preseized.insert(tid);
                }
                Err(Errno::ESRCH) => {}
                Err(e) => {
                    res = Err(Error::from_errno(e, tid, "PTRACE_SEIZE (frozen cgroup)"));
                    break;
                }
            }
        }
        f.thaw()?;
        if let Err(e) = res {
            walk.drop_preseized();
            return Err(e);
        }
    }
    let res = walk.run(root_brief).and_then(|()| walk.verify());
    // Tasks of the cgroup outside the tree, or left over by an error, are let go here.
    walk.drop_preseized();
    match res {
        Ok(()) => {
            walk.tree.seize_time_us = started.elapsed().as_micros() as u64;
            Ok(walk.tree)
        }
        Err(e) => {
            let _ = release(&walk.tree, ReleaseMode::Resume);
            Err(e)
        }
    }
}

struct Walk<'a> {
    tree: SeizedTree,
    opts: &'a SeizeOptions,
    timeout: Duration,
    /// Seized and interrupted while the cgroup was frozen, stop not yet collected.
    preseized: BTreeSet<i32>,
}

impl Walk<'_> {
    /// Collects the stop of every pre-seized task not taken into the tree and detaches it.
    fn drop_preseized(&mut self) {
        let deadline = Instant::now() + self.timeout;
        for tid in std::mem::take(&mut self.preseized) {
            if let Ok(WaitOutcome::Stopped(_)) = task::wait_for_stop(tid, true, deadline) {
                let _ = task::detach(tid);
            }
        }
    }

    fn run(&mut self, root: Brief) -> Result<()> {
        // each task with the parent it was listed under (the root has none to check)
        let mut queue = VecDeque::from([(root, None)]);
        let mut seen = BTreeSet::new();
        while let Some((b, parent)) = queue.pop_front() {
            if !seen.insert(b.pid) {
                continue;
            }
            let is_root = b.pid == self.tree.root;
            if b.state == 'Z' || b.state == 'X' {
                if is_root {
                    return Err(Error::new(
                        ErrorCode::TargetGone,
                        format!("pid {}: is a zombie", b.pid),
                    ));
                }
                self.record_zombie(&b);
                continue;
            }
            if b.flags & procinfo::PF_KTHREAD != 0 {
                continue;
            }
            match self.seize_process(&b, parent)? {
                Some(p) => {
                    let tids: Vec<i32> = p.threads.iter().map(|t| t.tid).collect();
                    let pid = p.pid;
                    self.tree.processes.push(p);
                    for child in procinfo::children(pid, &tids) {
                        if seen.contains(&child) {
                            continue;
                        }
                        match procinfo::brief(child) {
                            Ok(cb) => queue.push_back((cb, Some(pid))),
                            Err(e) if e.code == ErrorCode::EsrchTarget => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                None if is_root => {
                    return Err(Error::new(
                        ErrorCode::TargetGone,
                        format!("pid {}: exited while being seized", b.pid),
                    ))
                }
                None => {
                    // Gone (or turned zombie) between listing and seizing; a zombie under a
                    // reused number is not ours.
                    if let Ok(z) = procinfo::brief(b.pid) {
                        if z.state == 'Z' && z.start_time == b.start_time {
                            self.record_zombie(&z);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn record_zombie(&mut self, b: &Brief) {
        self.tree.zombies.push(Zombie {
            pid: b.pid,
            ppid: b.ppid,
            pgid: b.pgid,
            sid: b.sid,
            comm: b.comm.clone(),
            exit_code: b.exit_code.unwrap_or(0),
        });
    }

    /// Seizes every thread of one process; None if the process went away meanwhile, or if its
    /// number now names another task than the one listed under `parent` (see identity.rs).
    fn seize_process(&mut self, b: &Brief, parent: Option<i32>) -> Result<Option<SeizedProcess>> {
        let pid = b.pid;
        let Some(pinned) = identity::Pinned::pin(pid, parent, b.start_time) else {
            return Ok(None);
        };
        let me = std::process::id() as i32;
        if pid == me {
            return Err(Error::new(
                ErrorCode::RefusedTarget,
                format!("pid {pid}: is tsdump's own process"),
            ));
        }
        let keep_zombie = b.ppid == me;
        let seccomp_mode = procinfo::seccomp_mode(pid);
        let mut proc_ = SeizedProcess {
            pid,
            ppid: b.ppid,
            pgid: b.pgid,
            sid: b.sid,
            comm: b.comm.clone(),
            state_before: b.state,
            stopped: false,
            seccomp_mode,
            threads: Vec::new(),
        };
        let mut done: BTreeMap<i32, Option<i32>> = BTreeMap::new();
        let mut dead: BTreeSet<i32> = BTreeSet::new();
        let deadline = Instant::now() + self.timeout;
        // The leader first (an error here means the whole process is unusable), then rounds over
        // /proc/PID/task until a round finds nothing new.
        let mut round: Vec<i32> = vec![pid];
        let mut leader_gone = false;
        loop {
            let mut started = Vec::new();
            for &tid in &round {
                if self.preseized.remove(&tid) {
                    started.push(tid);
                    continue;
                }
                match task::seize_and_interrupt(tid) {
                    Ok(()) => started.push(tid),
                    Err(Errno::ESRCH) => {
                        dead.insert(tid);
                        if tid == pid {
                            leader_gone = true;
                        }
                    }
                    // the kernel refuses to attach to a thread that has already exited (its
                    // exit_state is set) with EPERM, not ESRCH: one gone or dead since the
                    // listing is left out as exited
                    Err(Errno::EPERM) if tid != pid && procinfo::has_exited(pid, tid) => {
                        dead.insert(tid);
                    }
                    Err(Errno::EPERM) => {
                        self.push_partial(&mut proc_, &done);
                        let why = if tid == pid
                            && procinfo::brief(pid)
                                .map(|x| x.state == 'Z')
                                .unwrap_or(false)
                        {
                            "its leader is a zombie while threads live"
                        } else {
                            "PTRACE_SEIZE not permitted (other tracer, Yama, or dumpable=0)"
                        };
                        return Err(Error::new(
                            ErrorCode::EpermPtrace,
                            format!("pid {pid} tid {tid}: {why}"),
                        ));
                    }
                    Err(e) => {
                        self.push_partial(&mut proc_, &done);
                        return Err(Error::from_errno(e, tid, "PTRACE_SEIZE"));
                    }
                }
            }
            for tid in started {
                match task::wait_for_stop(tid, keep_zombie && tid == pid, deadline) {
                    // an impostor under a reused number is let go untouched beyond the stop
                    Ok(WaitOutcome::Stopped(_)) if !(if tid == pid { pinned.still_there() } else { identity::thread_of(pid, tid) }) => {
                        let _ = task::detach(tid);
                        dead.insert(tid);
                        if tid == pid {
                            leader_gone = true;
                        }
                    }
                    Ok(WaitOutcome::Stopped(kind)) => {
                        let sig = match kind {
                            StopKind::GroupStopped(s) => Some(s),
                            StopKind::Interrupted => None,
                        };
                        done.insert(tid, sig);
                    }
                    Ok(WaitOutcome::Exited) => {
                        dead.insert(tid);
                        if tid == pid {
                            leader_gone = true;
                        }
                    }
                    Err(e) => {
                        // It is seized but not stopped: detach it now, then hand the rest back.
                        let _ = task::detach(tid);
                        self.push_partial(&mut proc_, &done);
                        return Err(e);
                    }
                }
            }
            if leader_gone {
                break;
            }
            round = procinfo::threads(pid)
                .into_iter()
                .filter(|t| !done.contains_key(t) && !dead.contains(t))
                .collect();
            if round.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                self.push_partial(&mut proc_, &done);
                return Err(Error::new(
                    ErrorCode::Ptrace,
                    format!("pid {pid}: thread list never settled"),
                ));
            }
        }
        if leader_gone {
            // The process is exiting: let go of whatever threads were caught.
            for &tid in done.keys() {
                let _ = task::detach(tid);
            }
            return Ok(None);
        }
        proc_.threads = done
            .iter()
            .map(|(&tid, &sig)| SeizedThread {
                tid,
                stop_signal: sig,
                seccomp_mode: 0,
            })
            .collect();
        // Leader first keeps the order stable for images.
        proc_.threads.sort_by_key(|t| (t.tid != pid, t.tid));
        proc_.stopped = proc_
            .threads
            .iter()
            .find(|t| t.tid == pid)
            .and_then(|t| t.stop_signal)
            .is_some();
        // Seccomp is per thread: a strict-mode worker under a mode-0 leader needs suspending too.
        for i in 0..proc_.threads.len() {
            let tid = proc_.threads[i].tid;
            let mode = if tid == pid { seccomp_mode } else { procinfo::seccomp_mode(tid) };
            proc_.threads[i].seccomp_mode = mode;
            if mode != 0 && self.opts.suspend_seccomp {
                if let Err(e) = task::suspend_seccomp(tid) {
                    self.tree.processes.push(proc_);
                    return Err(e);
                }
            }
        }
        Ok(Some(proc_))
    }

    /// Checks that every seized task is still held: a task can be SIGKILLed (by a sibling, the
    /// OOM killer, anyone) after it stopped. A dead root fails the seize; other dead processes
    /// leave the tree (as zombies if they are ones).
    fn verify(&mut self) -> Result<()> {
        let root = self.tree.root;
        let mut gone = Vec::new();
        for p in &mut self.tree.processes {
            p.threads.retain(|t| {
                let keep = t.tid == p.pid || task::is_held(t.tid);
                if !keep {
                    task::reap_if_exited(t.tid, false);
                }
                keep
            });
            if !task::is_held(p.pid) {
                gone.push(p.pid);
            }
        }
        if gone.contains(&root) {
            return Err(Error::new(
                ErrorCode::TargetGone,
                format!("pid {root}: exited while the tree was being seized"),
            ));
        }
        for pid in gone {
            if let Some(i) = self.tree.processes.iter().position(|p| p.pid == pid) {
                let p = self.tree.processes.remove(i);
                let me = std::process::id() as i32;
                for t in &p.threads {
                    if task::detach(t.tid).is_err() {
                        task::reap_if_exited(t.tid, t.tid == p.pid && p.ppid == me);
                    }
                }
            }
            if let Ok(z) = procinfo::brief(pid) {
                if z.state == 'Z' {
                    self.record_zombie(&z);
                }
            }
        }
        Ok(())
    }

    /// Keeps the threads already stopped in the tree so the error path releases them.
    fn push_partial(&mut self, p: &mut SeizedProcess, done: &BTreeMap<i32, Option<i32>>) {
        if done.is_empty() {
            return;
        }
        let mut copy = p.clone();
        copy.threads = done
            .iter()
            .map(|(&tid, &sig)| SeizedThread {
                tid,
                stop_signal: sig,
                seccomp_mode: 0,
            })
            .collect();
        self.tree.processes.push(copy);
    }
}

/// Lets the tree go. Every task is handled even if some fail; the first failure is reported.
pub fn release(tree: &SeizedTree, mode: ReleaseMode) -> Result<()> {
    let mut first: Option<Error> = None;
    let me = std::process::id() as i32;
    match mode {
        ReleaseMode::Resume | ReleaseMode::Stop => {
            for p in &tree.processes {
                if mode == ReleaseMode::Stop && !p.stopped {
                    // Queued while traced; taken as a group stop right after the detach.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p.pid),
                        nix::sys::signal::Signal::SIGSTOP,
                    );
                }
                for t in &p.threads {
                    match task::detach(t.tid) {
                        Ok(()) => {}
                        Err(Errno::ESRCH) => {
                            task::reap_if_exited(t.tid, t.tid == p.pid && p.ppid == me)
                        }
                        Err(e) => {
                            first.get_or_insert(Error::from_errno(e, t.tid, "PTRACE_DETACH"));
                        }
                    }
                }
            }
        }
        ReleaseMode::Kill => {
            for p in &tree.processes {
                if let Err(e) = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.pid),
                    nix::sys::signal::Signal::SIGKILL,
                ) {
                    if e != Errno::ESRCH {
                        first.get_or_insert(Error::from_errno(e, p.pid, "kill(SIGKILL)"));
                    }
                }
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            for p in &tree.processes {
                // Non-leader threads first: a leader's exit is reported only after its threads'.
                for t in p.threads.iter().filter(|t| t.tid != p.pid) {
                    task::reap_until(t.tid, false, deadline);
                }
                task::reap_until(p.pid, p.ppid == me, deadline);
            }
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracer_pid(pid: i32) -> i32 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        procinfo::parse_status_ids(&s).1.unwrap()
    }

    fn walk(opts: &SeizeOptions) -> Walk<'_> {
        Walk { tree: SeizedTree::default(), opts, timeout: Duration::from_secs(5), preseized: BTreeSet::new() }
    }

    #[test]
    fn a_listed_child_whose_number_now_names_another_task_is_never_seized() {
        let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = other.id() as i32;
        std::thread::sleep(Duration::from_millis(50));
        let now = procinfo::brief(pid).unwrap();
        let opts = SeizeOptions::default();
        // listed as a child of init, or with another start time: the task listed was reaped and
        // its number went to this one. It is refused before PTRACE_SEIZE...
        assert!(identity::Pinned::pin(pid, Some(1), now.start_time).is_none());
        assert!(identity::Pinned::pin(pid, Some(now.ppid), now.start_time - 1).is_none());
        assert!(identity::Pinned::pin(pid, Some(now.ppid), now.start_time).is_some());
        // ...and the walk leaves it alone
        let reused = walk(&opts).seize_process(&now, Some(1)).unwrap();
        let stale = walk(&opts).seize_process(&Brief { start_time: now.start_time - 1, ..now.clone() }, Some(now.ppid)).unwrap();
        assert!(reused.is_none() && stale.is_none());
        assert_eq!(tracer_pid(pid), 0, "never seized");
        assert_ne!(procinfo::thread_state(pid, pid), Some('t'));
        // the same task, as listed, is seized
        let mut w = walk(&opts);
        let p = w.seize_process(&now, Some(now.ppid)).unwrap().expect("the listed task");
        w.tree.processes.push(p);
        release(&w.tree, ReleaseMode::Resume).unwrap();
        assert!(identity::thread_of(pid, pid) && !identity::thread_of(1, pid));
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn seize_and_release_a_sleeping_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        std::thread::sleep(Duration::from_millis(50));
        let tree = seize_tree(pid, &SeizeOptions::default()).unwrap();
        assert_eq!(tree.processes.len(), 1);
        assert_eq!(tree.processes[0].threads.len(), 1);
        assert!(!tree.processes[0].stopped);
        assert_eq!(procinfo::thread_state(pid, pid), Some('t'));
        release(&tree, ReleaseMode::Resume).unwrap();
        assert_eq!(tracer_pid(pid), 0);
        assert_ne!(procinfo::thread_state(pid, pid), Some('t'));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
