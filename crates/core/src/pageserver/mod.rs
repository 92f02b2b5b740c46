//! CRIU's page-server protocol: a client that sends a dump's pagemaps and pages to a page server
//! (`criu page-server` or `tsdump page-server`), and a receiver that writes what `criu dump
//! --page-server` (or tsdump) sends into pagemap/pages images. Page data stays in the kernel
//! (splice/sendfile) on both sides and never crosses into JavaScript.

pub mod client;
mod conn;
pub mod proto;
pub mod server;
pub mod tls;

pub use client::{send_pagemap_image, send_shmem, PageServerClient, PageServerSink, SendStats};
pub use proto::{ImageKind, PE_LAZY, PE_PARENT, PE_PRESENT};
pub use server::{ImageReport, Outcome, PageServerListener, ServeReport, Timeouts, DEFAULT_IDLE_TIMEOUT};
pub use tls::TlsOptions;

#[cfg(test)]
mod tests;
