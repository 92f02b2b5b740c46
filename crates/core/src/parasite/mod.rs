//! The parasite: code run inside a frozen task to learn what only the task can tell, and to drain
//! its memory.
//!
//! Built:
//! - `inject::Injector` maps a scratch area in a ptrace-stopped task and runs single syscalls in
//!   any of its stopped threads. Each call restores registers and signal mask; on x86_64 each
//!   call also has a return frame (an rt_sigframe of the thread's own state, see inject.rs), so a
//!   tsdump killed with SIGKILL in the middle of a call leaves a task that carries on correctly
//!   and untraced, the scratch mapping being the only trace. The scratch's own mmap and munmap
//!   run from padding of the task's text with their frame on the thread's stack (`borrow`);
//!   a visit leaves its scratch for the release to unmap (`Injector::leave`): a tree killed
//!   after the dump needs no munmap at all.
//! - `blob::Blob`, the resident parasite: position-independent C (crates/core/blob, built by
//!   build.rs for x86_64 and compile-checked for aarch64) that one thread runs while tsdump
//!   talks to it over a unix SOCK_SEQPACKET socket: the page drain costs one round trip per
//!   pipe load instead of three ptrace stops. It owns every descriptor it makes and, when its
//!   channel ends (tsdump died, even by SIGKILL), closes them and rt_sigreturns home through the
//!   same return frame.
//! - `info` asks the dump's questions (sigactions, itimers, POSIX timers, per-thread
//!   sigaltstack/clear-tid/pdeath/name/creds, dumpable, THP, subreaper, membarrier): the blob
//!   answers for the process in one round trip and every other thread runs the blob's thread
//!   entry to answer its own in one trip; single injected syscalls where the blob cannot run.
//! - `fds::task_fd` hands the task's descriptors to tsdump with pidfd_getfd(2) (any fd kind,
//!   sockets included), which covers what the parasite's SCM_RIGHTS transfer is for in CRIU.
//! - The vmsplice page drain (`crate::mem::drain`) runs through the blob (or single injected
//!   syscalls where it cannot start), while a second thread splices full pipes into the sink.
//!
//! arm64: the return frame (struct rt_sigframe with fpsimd_context and the end record) is the
//! one piece missing for both the framed injection and the blob; injection uses the trap
//! protocol there meanwhile and the drain its injected-syscall path.

pub mod blob;
pub mod borrow;
pub mod fds;
pub mod info;
pub mod inject;

pub use inject::Injector;

#[cfg(test)]
pub(crate) mod tests;
