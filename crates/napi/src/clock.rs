//! `timeNamespaceClocks()`: the two clocks a time namespace can shift, as this process sees them.
//! Node has CLOCK_MONOTONIC (process.hrtime) but no CLOCK_BOOTTIME, and the two must be read
//! together, nanosecond-exact, for timens-N.img (src/dump/write-timens.ts).

use napi::Error;
use napi_derive::napi;
use nix::time::{clock_gettime, ClockId};

#[napi(object)]
pub struct ClockTime {
    pub sec: i64,
    pub nsec: i64,
}

#[napi(object)]
pub struct TimeNamespaceClocks {
    pub monotonic: ClockTime,
    pub boottime: ClockTime,
}

fn read(id: ClockId, name: &str) -> napi::Result<ClockTime> {
    let ts = clock_gettime(id).map_err(|e| Error::from_reason(format!("KERNEL: clock_gettime({name}): {e}")))?;
    Ok(ClockTime { sec: ts.tv_sec(), nsec: ts.tv_nsec() })
}

/// CLOCK_MONOTONIC then CLOCK_BOOTTIME, back to back (the order CRIU reads them in).
#[napi]
pub fn time_namespace_clocks() -> napi::Result<TimeNamespaceClocks> {
    Ok(TimeNamespaceClocks {
        monotonic: read(ClockId::CLOCK_MONOTONIC, "CLOCK_MONOTONIC")?,
        boottime: read(ClockId::CLOCK_BOOTTIME, "CLOCK_BOOTTIME")?,
    })
}
