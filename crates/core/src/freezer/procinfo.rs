//! The few procfs facts the freezer needs while walking a tree, read with the procfs crate.

use std::collections::BTreeSet;

use procfs::process::{Process, Stat};

use crate::error::{Error, ErrorCode, Result};

/// `PF_KTHREAD` in the `flags` field of /proc/PID/stat.
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// Identity of a process as the freezer sees it.
#[derive(Debug, Clone)]
pub struct Brief {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub state: char,
    pub flags: u32,
    pub comm: String,
    /// Raw wait status the parent will see (only meaningful for zombies).
    pub exit_code: Option<i32>,
    /// Clock ticks since boot when it started: with the pid, what names one task for good.
    pub start_time: u64,
}

fn procfs_err(pid: i32, what: &str, e: procfs::ProcError) -> Error {
    match e {
        procfs::ProcError::NotFound(_) => Error::new(
            ErrorCode::EsrchTarget,
            format!("pid {pid}: no such process ({what})"),
        ),
        procfs::ProcError::PermissionDenied(_) => Error::new(
            ErrorCode::EpermPtrace,
            format!("pid {pid}: permission denied reading {what}"),
        ),
        other => Error::new(ErrorCode::Procfs, format!("pid {pid}: {what}: {other}")),
    }
}

pub fn brief_from_stat(s: &Stat) -> Brief {
    Brief {
        pid: s.pid,
        ppid: s.ppid,
        pgid: s.pgrp,
        sid: s.session,
        state: s.state,
        flags: s.flags,
        comm: s.comm.clone(),
        exit_code: s.exit_code,
        start_time: s.starttime,
    }
}

/// Reads /proc/PID/stat; ESRCH_TARGET if the process is gone.
pub fn stat(pid: i32) -> Result<Stat> {
    let p = Process::new(pid).map_err(|e| procfs_err(pid, "/proc/PID", e))?;
    p.stat().map_err(|e| procfs_err(pid, &format!("/proc/{pid}/stat"), e))
}

/// `brief_from_stat(stat(pid))`.
pub fn brief(pid: i32) -> Result<Brief> {
    Ok(brief_from_stat(&stat(pid)?))
}

/// TracerPid of task `pid` (0 when untraced; None when it cannot be read).
pub fn tracer_pid(pid: i32) -> Option<i32> {
    crate::inspect::parse::tracer_pid(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Reads /proc/PID/task/TID/stat of one thread.
pub fn thread_state(pid: i32, tid: i32) -> Option<char> {
    let p = Process::new(pid).ok()?;
    let t = p.task_from_tid(tid).ok()?;
    t.stat().ok().map(|s| s.state)
}

/// Whether thread `tid` of `pid` is gone or dead (a zombie, or being reaped): what an EPERM from
/// PTRACE_SEIZE, or a broken channel to code running in the thread, is told by.
pub fn has_exited(pid: i32, tid: i32) -> bool {
    matches!(thread_state(pid, tid), None | Some('Z' | 'X' | 'x'))
}

/// Thread ids listed in /proc/PID/task (empty if the process is gone).
pub fn threads(pid: i32) -> Vec<i32> {
    match std::fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Children of every listed thread (/proc/PID/task/TID/children), as a sorted set.
pub fn children(pid: i32, tids: &[i32]) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for tid in tids {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")) {
            out.extend(parse_children(&text));
        }
    }
    out
}

/// Parses the space-separated list in /proc/PID/task/TID/children.
pub fn parse_children(text: &str) -> Vec<i32> {
    text.split_ascii_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// Parses `Tgid:` and `TracerPid:` out of /proc/PID/status text.
pub fn parse_status_ids(text: &str) -> (Option<i32>, Option<i32>) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<i32>().ok())
    };
    (field("Tgid:"), field("TracerPid:"))
}

/// Seccomp mode of task `tid` from /proc/TID/status (0 when unknown).
pub fn seccomp_mode(tid: i32) -> u32 {
    std::fs::read_to_string(format!("/proc/{tid}/status")).ok().and_then(|t| crate::inspect::parse::seccomp_mode(&t)).unwrap_or(0)
}

/// Checks that `pid` is a process tsdump may take hold of, naming the reason when not.
pub fn check_root(pid: i32) -> Result<Brief> {
    if pid <= 0 {
        return Err(Error::new(
            ErrorCode::EsrchTarget,
            format!("pid {pid}: not a valid process id"),
        ));
    }
    let b = brief(pid)?;
    if pid == 1 {
        return Err(Error::new(
            ErrorCode::RefusedTarget,
            "pid 1: refusing to seize init of this PID namespace",
        ));
    }
    if b.flags & PF_KTHREAD != 0 {
        return Err(Error::new(
            ErrorCode::RefusedTarget,
            format!("pid {pid} ({}): is a kernel thread", b.comm),
        ));
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| {
        Error::new(
            ErrorCode::EsrchTarget,
            format!("pid {pid}: /proc/{pid}/status: {e}"),
        )
    })?;
    let (tgid, tracer) = parse_status_ids(&status);
    if let Some(tgid) = tgid {
        if tgid != pid {
            return Err(Error::new(
                ErrorCode::RefusedTarget,
                format!("pid {pid}: is a thread of process {tgid}; give the process id"),
            ));
        }
    }
    let me = std::process::id() as i32;
    let mut cur = me;
    // Walk our own ancestry: seizing it would stop tsdump itself.
    for _ in 0..4096 {
        if cur == pid {
            let why = if cur == me {
                "is tsdump's own process"
            } else {
                "is an ancestor of tsdump"
            };
            return Err(Error::new(
                ErrorCode::RefusedTarget,
                format!("pid {pid} ({}): {why}", b.comm),
            ));
        }
        match brief(cur) {
            Ok(x) if x.ppid > 0 => cur = x.ppid,
            _ => break,
        }
    }
    if let Some(t) = tracer {
        if t != 0 {
            return Err(Error::new(
                ErrorCode::EpermPtrace,
                format!("pid {pid}: already traced by pid {t}"),
            ));
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_list() {
        assert_eq!(parse_children("12 13 4000 "), vec![12, 13, 4000]);
        assert!(parse_children("").is_empty());
    }

    #[test]
    fn status_ids() {
        let text = "Name:\tcat\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4243\nPPid:\t1\nTracerPid:\t0\n";
        assert_eq!(parse_status_ids(text), (Some(4242), Some(0)));
    }

    #[test]
    fn refuses_self_and_init() {
        let me = std::process::id() as i32;
        assert_eq!(check_root(me).unwrap_err().code, ErrorCode::RefusedTarget);
        assert_eq!(check_root(1).unwrap_err().code, ErrorCode::RefusedTarget);
        assert_eq!(check_root(-5).unwrap_err().code, ErrorCode::EsrchTarget);
        assert_eq!(check_root(2).unwrap_err().code, ErrorCode::RefusedTarget);
    }
}
