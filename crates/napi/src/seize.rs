//! Seize and release a process tree from TypeScript: the tree the session holds, and the
//! scratch mappings the dump's visits leave in it until the release.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use tsdump_core::error::{Error as CoreError, ErrorCode};
use tsdump_core::freezer::{self, ReleaseMode, SeizeOptions, SeizedTree};

use crate::session::Session;

#[napi(object)]
pub struct SeizeTreeOptions {
    /// Give up (releasing everything) if a task does not stop within this many ms. Default 10000.
    pub timeout_ms: Option<u32>,
    /// Freeze this cgroup (v2 dir with cgroup.freeze, or a v1 freezer dir) before seizing.
    pub freeze_cgroup: Option<String>,
    /// Set PTRACE_O_SUSPEND_SECCOMP on tasks under seccomp (needed before injecting syscalls).
    pub suspend_seccomp: Option<bool>,
}

#[napi(object)]
pub struct SeizedThreadInfo {
    pub tid: i32,
    /// The job-control stop signal (SIGSTOP, SIGTSTP, ...) if the thread was already stopped.
    pub stop_signal: Option<i32>,
    /// 0 disabled, 1 strict, 2 filter (/proc/PID/task/TID/status when seized).
    pub seccomp_mode: u32,
}

#[napi(object)]
pub struct SeizedProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub comm: String,
    /// The /proc/PID/stat state letter just before the seize (R, S, D, T, ...).
    pub state: String,
    /// Was in a job-control stop; stays stopped after `releaseTree({ mode: 'resume' })`.
    pub stopped: bool,
    pub seccomp_mode: u32,
    /// Leader first.
    pub threads: Vec<SeizedThreadInfo>,
}

#[napi(object)]
pub struct ZombieInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub comm: String,
    /// Raw wait status (/proc/PID/stat exit_code): what CRIU stores as task_core.exit_code.
    pub exit_code: i32,
    /// exit(2) status if it exited normally, else null.
    pub exit_status: Option<i32>,
    /// Terminating signal if it was killed, else null.
    pub exit_signal: Option<i32>,
}

#[napi(object)]
pub struct SeizedTreeInfo {
    pub root: i32,
    /// Root first, parents before children.
    pub processes: Vec<SeizedProcessInfo>,
    pub zombies: Vec<ZombieInfo>,
    /// From the first PTRACE_SEIZE to the last stop (after the cgroup freeze, if any).
    pub seize_time_us: f64,
    /// How long the cgroup freezer took to report frozen (0 without `freezeCgroup`).
    pub cgroup_freeze_time_us: f64,
}

/// resume: detach (tasks found stopped stay stopped); stop: detach leaving every process
/// stopped; kill: SIGKILL the tree.
#[napi(string_enum = "lowercase")]
pub enum Release {
    Resume,
    Kill,
    Stop,
}

impl From<Release> for ReleaseMode {
    fn from(r: Release) -> ReleaseMode {
        match r {
            Release::Resume => ReleaseMode::Resume,
            Release::Kill => ReleaseMode::Kill,
            Release::Stop => ReleaseMode::Stop,
        }
    }
}

#[napi(object)]
pub struct ReleaseTreeOptions {
    pub mode: Release,
}

fn tree_info(t: &SeizedTree) -> SeizedTreeInfo {
    SeizedTreeInfo {
        root: t.root,
        processes: t
            .processes
            .iter()
            .map(|p| SeizedProcessInfo {
                pid: p.pid,
                ppid: p.ppid,
                pgid: p.pgid,
                sid: p.sid,
                comm: p.comm.clone(),
                state: p.state_before.to_string(),
                stopped: p.stopped,
                seccomp_mode: p.seccomp_mode,
                threads: p
                    .threads
                    .iter()
                    .map(|t| SeizedThreadInfo {
                        tid: t.tid,
                        stop_signal: t.stop_signal,
                        seccomp_mode: t.seccomp_mode,
                    })
                    .collect(),
            })
            .collect(),
        zombies: t
            .zombies
            .iter()
            .map(|z| ZombieInfo {
                pid: z.pid,
                ppid: z.ppid,
                pgid: z.pgid,
                sid: z.sid,
                comm: z.comm.clone(),
                exit_code: z.exit_code,
                exit_status: z.exit_status(),
                exit_signal: z.exit_signal(),
            })
            .collect(),
        seize_time_us: t.seize_time_us as f64,
        cgroup_freeze_time_us: t.cgroup_freeze_time_us as f64,
    }
}

#[napi]
impl Session {
    /// Seizes every thread of every process below `pid` (PTRACE_SEIZE + PTRACE_INTERRUPT) and
    /// keeps them stopped in this session until `releaseTree`. One tree per session.
    #[napi]
    pub async fn seize_tree(
        &self,
        pid: i32,
        opts: Option<SeizeTreeOptions>,
    ) -> Result<SeizedTreeInfo> {
        let opts = opts.unwrap_or(SeizeTreeOptions {
            timeout_ms: None,
            freeze_cgroup: None,
            suspend_seccomp: None,
        });
        let core_opts = SeizeOptions {
            timeout: opts
                .timeout_ms
                .map(|ms| std::time::Duration::from_millis(ms as u64)),
            freeze_cgroup: opts.freeze_cgroup.map(Into::into),
            suspend_seccomp: opts.suspend_seccomp.unwrap_or(false),
        };
        let tree = self
            .run(move |state| {
                if let Some(t) = &state.tree {
                    return Err(CoreError::new(
                        ErrorCode::Unsupported,
                        format!(
                            "pid {pid}: this session already holds the tree of pid {}",
                            t.root
                        ),
                    ));
                }
                let tree = freezer::seize_tree(pid, &core_opts)?;
                state.tree = Some(tree.clone());
                Ok(tree)
            })
            .await?;
        Ok(tree_info(&tree))
    }

    /// The tree this session holds, or null.
    #[napi]
    pub async fn seized_tree(&self) -> Result<Option<SeizedTreeInfo>> {
        let t = self.run(|state| Ok(state.tree.clone())).await?;
        Ok(t.as_ref().map(tree_info))
    }

    /// Lets the held tree go. Returns false if the session held none.
    #[napi]
    pub async fn release_tree(&self, opts: Option<ReleaseTreeOptions>) -> Result<bool> {
        let mode: ReleaseMode = opts.map_or(Release::Resume, |o| o.mode).into();
        self.run(move |state| {
            let left = std::mem::take(&mut state.leftovers);
            match state.tree.take() {
                Some(t) => {
                    // a tree that lives on loses the scratch mappings first; a killed one dies with them
                    let unmapped = if mode == ReleaseMode::Kill { Ok(()) } else { unmap_leftovers(left) };
                    let released = freezer::release(&t, mode);
                    unmapped.and(released).map(|_| true)
                }
                None => Ok(false),
            }
        })
        .await
    }
}

/// Unmaps the scratch mappings the dump's visits left, all of them whatever fails.
fn unmap_leftovers(left: Vec<tsdump_core::parasite::inject::Leftover>) -> tsdump_core::Result<()> {
    let mut first = None;
    for l in left {
        if let Err(e) = tsdump_core::parasite::Injector::adopt(l).and_then(|mut inj| inj.cure()) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// The pid of the held tree's process that thread `tid` belongs to.
pub(crate) fn held_process_of(state: &crate::session::TracerState, tid: i32) -> tsdump_core::Result<i32> {
    state.tree.as_ref().and_then(|t| t.owner_of(tid)).map(|p| p.pid).ok_or_else(|| {
        CoreError::new(ErrorCode::Ptrace, format!("tid {tid}: not a thread of the tree this session holds"))
    })
}
