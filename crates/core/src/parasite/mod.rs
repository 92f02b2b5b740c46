//! The parasite: code run inside a frozen task to learn what only the task can tell, and to drain
//! its memory.
//!
//! Built:
//! - `inject::Injector` maps a scratch area in a ptrace-stopped task and runs single syscalls in
//!   any of its stopped threads. Each call restores registers and signal mask; on x86_64 each
//!   call also has a return frame (an rt_sigframe of the thread's own state, see inject.rs), so a
//!   tsdump killed with SIGKILL in the middle of a call leaves a task that carries on correctly
//!   and untraced, the scratch mapping being the only trace (tested against the trap-only
//!   protocol, which kills the task in the same situation).
//! - `info` asks the dump's questions with it (sigactions, itimers, POSIX timers, per-thread
//!   sigaltstack/clear-tid/pdeath/name/creds, umask, dumpable, THP, subreaper, membarrier).
//! - `fds::task_fd` hands the task's descriptors to tsdump with pidfd_getfd(2) (any fd kind,
//!   sockets included), which covers what the parasite's SCM_RIGHTS transfer is for in CRIU.
//! - The vmsplice page drain (`crate::mem::drain`) runs through injected syscalls: one vmsplice
//!   per 1 MiB pipe load, while a second thread splices full pipes into the image.
//!
//! Designed, not built yet: a resident blob and daemon, for throughput (one round trip per batch
//! of commands instead of three ptrace stops per syscall: about 0.1 s per GiB drained today).
//! - The blob: C compiled by `gcc -fPIE -nostdlib -ffreestanding -Os` and flattened with
//!   `objcopy -O binary` in crates/core/build.rs (aarch64 with `aarch64-linux-gnu-gcc`, which
//!   Debian installs normally; rustup here has no no_std target for aarch64, which rules out a
//!   Rust no_std blob for the second architecture). A linker script puts the entry first and
//!   forbids relocations (build.rs checks with `readelf -r`), so the blob runs at any address.
//! - Mapping: tsdump creates a MAP_SHARED|MAP_ANONYMOUS region in the task by injected mmap,
//!   opens /proc/PID/map_files/START-END from the tracer and maps the same pages locally: args,
//!   results and iovec batches are shared memory, no copying of control data.
//! - Start: the same return frame `inject` already builds (arch::syscall::build_sigframe) goes
//!   on the blob's stack; ip points at the blob's entry. The blob connects a unix socket to
//!   tsdump's abstract address and serves commands; on EOF/error (tsdump died, even by SIGKILL)
//!   it calls rt_sigreturn on the frame and the task is back in its own code with its own
//!   registers, mask and FPU state. A normal cure sends FINI, catches the thread in a stop after
//!   the sigreturn, then unmaps the region by an injected munmap.
//! - Commands: DRAIN (iovec batches from the shared region, vmsplice(SPLICE_F_GIFT) into pipes
//!   whose write ends tsdump sent once with SCM_RIGHTS), SEND_FDS where pidfd_getfd is not
//!   available, and the `info` questions batched in one round trip.
//! - arm64: the frame (struct rt_sigframe with fpsimd_context and the end record) is the one
//!   piece missing for both the framed injection and the blob; injection uses the trap protocol
//!   there meanwhile.

pub mod fds;
pub mod info;
pub mod inject;

pub use inject::Injector;

#[cfg(test)]
pub(crate) mod tests;
