//! Typed errors with stable codes. The code crosses into TypeScript as `err.code`, so codes are
//! part of the public API: never rename one, only add.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The target PID (or one of its tasks) does not exist.
    EsrchTarget,
    /// ptrace is not permitted on a task.
    EpermPtrace,
    /// A target we refuse to dump (kernel thread, ourselves, our ancestors, host init).
    RefusedTarget,
    /// A file descriptor kind tsdump cannot dump yet.
    UnsupportedFd,
    /// A memory mapping tsdump cannot dump yet.
    UnsupportedVma,
    /// Something else tsdump does not support yet (io_uring, ...).
    Unsupported,
    /// Reading /proc failed or its text was not what we expected.
    Procfs,
    /// A ptrace request failed.
    Ptrace,
    /// Running code inside the target failed.
    Parasite,
    /// Writing images failed (ENOSPC, EACCES, ...).
    ImageIo,
    /// The dump was cancelled (signal, AbortSignal, timeout).
    Cancelled,
    /// The target changed under us (exited, exec'd) mid-dump.
    TargetGone,
    /// Anything else from the kernel.
    Kernel,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::EsrchTarget => "ESRCH_TARGET",
            ErrorCode::EpermPtrace => "EPERM_PTRACE",
            ErrorCode::RefusedTarget => "REFUSED_TARGET",
            ErrorCode::UnsupportedFd => "UNSUPPORTED_FD",
            ErrorCode::UnsupportedVma => "UNSUPPORTED_VMA",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::Procfs => "PROCFS",
            ErrorCode::Ptrace => "PTRACE",
            ErrorCode::Parasite => "PARASITE",
            ErrorCode::ImageIo => "IMAGE_IO",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::TargetGone => "TARGET_GONE",
            ErrorCode::Kernel => "KERNEL",
        }
    }
}

/// An error with a stable code and a message that names the task, address or file involved.
#[derive(Debug, Clone)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error { code, message: message.into() }
    }

    /// Maps an errno from an operation on task `pid` to the matching code, keeping `what` as context.
    pub fn from_errno(errno: nix::errno::Errno, pid: i32, what: impl fmt::Display) -> Self {
        let code = match errno {
            nix::errno::Errno::ESRCH => ErrorCode::EsrchTarget,
            nix::errno::Errno::EPERM => ErrorCode::EpermPtrace,
            _ => ErrorCode::Kernel,
        };
        Error::new(code, format!("pid {pid}: {what}: {}", errno.desc()))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Error {}
