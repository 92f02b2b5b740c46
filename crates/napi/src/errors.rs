use napi::Error;

/// Converts a core error into a JS error. The message starts with the stable code
/// (`ESRCH_TARGET: pid 42: ...`); src/native.ts turns that prefix into `err.code`.
pub fn to_napi(err: tsdump_core::Error) -> Error {
    Error::from_reason(format!("{}: {}", err.code.as_str(), err.message))
}
