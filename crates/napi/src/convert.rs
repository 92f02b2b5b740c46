//! Conversions shared by the mirrors: 64-bit kernel values become BigInt.

use napi::bindgen_prelude::BigInt;

pub(crate) fn big(v: u64) -> BigInt {
    BigInt::from(v)
}
