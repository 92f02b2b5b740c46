//! cgroup freezers: v2 `cgroup.freeze` / `cgroup.events`, v1 `freezer.state`.
//!
//! Freezing first stops every task of the cgroup at once, so a tree that forks or spawns threads
//! quickly cannot outrun the ptrace walk. Frozen tasks are seized (PTRACE_SEIZE + PTRACE_INTERRUPT)
//! while frozen and the cgroup is thawed straight after; the interrupt traps then fire as the tasks
//! leave the freezer. A frozen cgroup would stay frozen if tsdump died, so it is never left frozen
//! longer than the seize itself: `Freezer` thaws on drop as a last resort.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorCode, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

#[derive(Debug)]
pub struct Freezer {
    dir: PathBuf,
    version: Version,
    frozen: bool,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::new(
        ErrorCode::Kernel,
        format!("{}: {what}: {e}", path.display()),
    )
}

/// True if `cgroup.events` text says the cgroup is frozen.
pub fn parse_v2_frozen(events: &str) -> bool {
    events.lines().any(|l| l.trim() == "frozen 1")
}

/// Task ids in a `cgroup.threads` / `tasks` listing.
pub fn parse_task_list(text: &str) -> Vec<i32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

impl Freezer {
    pub fn open(dir: &Path) -> Result<Freezer> {
        let version = if dir.join("cgroup.freeze").exists() {
            Version::V2
        } else if dir.join("freezer.state").exists() {
            Version::V1
        } else {
            return Err(Error::new(
                ErrorCode::Unsupported,
                format!(
                    "{}: neither cgroup.freeze (v2) nor freezer.state (v1) found",
                    dir.display()
                ),
            ));
        };
        Ok(Freezer {
            dir: dir.to_path_buf(),
            version,
            frozen: false,
        })
    }

    pub fn version(&self) -> Version {
        self.version
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        let p = self.dir.join(file);
        std::fs::write(&p, value).map_err(|e| io_err(&p, "write", e))
    }

    fn read(&self, file: &str) -> Result<String> {
        let p = self.dir.join(file);
        std::fs::read_to_string(&p).map_err(|e| io_err(&p, "read", e))
    }

    fn is_frozen(&self) -> Result<bool> {
        Ok(match self.version {
            Version::V2 => parse_v2_frozen(&self.read("cgroup.events")?),
            Version::V1 => self.read("freezer.state")?.trim() == "FROZEN",
        })
    }

    /// Freezes the cgroup and waits until the kernel reports it frozen; returns how long it took.
    pub fn freeze(&self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        match self.version {
            Version::V2 => self.write("cgroup.freeze", "1")?,
            Version::V1 => self.write("freezer.state", "FROZEN")?,
        }
        // SAFETY-free bookkeeping: from here a failure must thaw.
        let mut nap = Duration::from_micros(50);
        loop {
            if self.is_frozen()? {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                let _ = self.thaw_inner();
                return Err(Error::new(
                    ErrorCode::Kernel,
                    format!(
                        "{}: did not reach frozen within {:?}",
                        self.dir.display(),
                        timeout
                    ),
                ));
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(5));
        }
    }

    /// Every thread id in the cgroup.
    pub fn tasks(&self) -> Result<Vec<i32>> {
        let file = match self.version {
            Version::V2 => "cgroup.threads",
            Version::V1 => "tasks",
        };
        Ok(parse_task_list(&self.read(file)?))
    }

    fn thaw_inner(&self) -> Result<()> {
        match self.version {
            Version::V2 => self.write("cgroup.freeze", "0"),
            Version::V1 => self.write("freezer.state", "THAWED"),
        }
    }

    pub fn thaw(mut self) -> Result<()> {
        self.frozen = false;
        self.thaw_inner()
    }

    pub(crate) fn mark_frozen(&mut self) {
        self.frozen = true;
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        if self.frozen {
            let _ = self.thaw_inner();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_events() {
        assert!(parse_v2_frozen("populated 1\nfrozen 1\n"));
        assert!(!parse_v2_frozen("populated 1\nfrozen 0\n"));
    }

    #[test]
    fn task_list() {
        assert_eq!(parse_task_list("10\n11\n\n12\n"), vec![10, 11, 12]);
    }
}
