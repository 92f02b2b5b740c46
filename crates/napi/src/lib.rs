//! N-API surface of tsdump. Thin: option/result structs mirror the TypeScript types, the work is
//! done by tsdump-core.

pub mod clock;
mod errors;
pub mod files;
pub mod images_dir;
pub mod ipc;
pub mod kerndat;
mod memory;
pub mod pageserver;
mod parasite;
mod predump;
pub mod pty;
mod session;
mod task;
pub mod sockets;
mod tree;

pub use errors::to_napi;
