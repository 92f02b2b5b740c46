//! N-API surface of tsdump: mirrors of tsdump-core's results for TypeScript, and calls into it.
//! The work (and every parser) is in tsdump-core; a module here holds one concern's mirrors and
//! the Session methods that return them.

pub mod clock;
mod convert;
mod errors;
pub mod files;
pub mod images_dir;
pub mod inspect;
pub mod ipc;
pub mod kerndat;
mod memory;
pub mod pageserver;
mod parasite;
mod predump;
pub mod pty;
mod regs;
mod seize;
mod session;
mod snapshot;
pub mod sockets;
mod task;
mod thread;

pub use errors::to_napi;
