//! tsdump-core: everything that touches the kernel while dumping a process tree.
//!
//! The crate has no N-API dependency so that `cargo test` can exercise it directly; the
//! `tsdump-napi` crate wraps it for TypeScript.
//!
//! - `freezer`: seize/freeze a tree with ptrace (and cgroup freezers), release or kill it.
//! - `inspect`: what the kernel shows from outside: procfs parsing and ptrace register reads.
//! - `parasite`: code run inside a frozen task (syscall injection, the parasite blob).
//! - `mem`: which pages to dump and draining them into pages images (or a socket).
//! - `collect`: one visit to one seized process, everything the dump needs from it.
//! - `kerndat`: kernel feature probes shared by `tsdump check` and the dump.
//! - `sockets`: sock_diag tables, and socket options and queues read through a duplicated fd.
//! - `images_dir`: the images directory, opened once; every file of a dump is created through it.
//! - `ipc`: SysV shared memory, semaphores and message queues of an IPC namespace.
//! - `arch`: everything that differs between x86_64 and aarch64, one module each.

pub mod arch;
pub mod cancel;
pub mod collect;
pub mod error;
pub mod files;
pub mod freezer;
pub mod images_dir;
pub mod inspect;
pub mod ipc;
pub mod kerndat;
pub mod mem;
pub mod pageserver;
pub mod parasite;
pub mod progress;
pub mod sockets;
pub mod sys;

pub use error::{Error, ErrorCode, Result};
