//! tsdump-core: everything that touches the kernel while dumping a process tree.
//!
//! The crate has no N-API dependency so that `cargo test` can exercise it directly; the
//! `tsdump-napi` crate wraps it for TypeScript.

pub mod error;

pub use error::{Error, ErrorCode, Result};
