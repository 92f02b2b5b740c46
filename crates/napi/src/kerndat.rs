//! `kerndatProbe()`: runs the core's kernel feature probes. Synchronous and quick (a few
//! milliseconds); src/check.ts caches the answer per boot and kernel.

use napi_derive::napi;

#[napi(object)]
pub struct KerndatProbe {
    pub name: String,
    pub supported: bool,
    pub detail: String,
}

#[napi]
pub fn kerndat_probe() -> Vec<KerndatProbe> {
    tsdump_core::kerndat::probe_all()
        .into_iter()
        .map(|p| KerndatProbe { name: p.name.to_string(), supported: p.supported, detail: p.detail })
        .collect()
}

/// The kernel's page size (sysconf(_SC_PAGESIZE)): 4 KiB on x86_64, 4, 16 or 64 KiB on aarch64.
#[napi]
pub fn page_size() -> u32 {
    tsdump_core::mem::vma::page_size() as u32
}
