//! Conversions shared by the mirrors: 64-bit kernel values become BigInt, small arrays typed
//! arrays copied into V8.

use napi::bindgen_prelude::BigInt;

pub(crate) fn big(v: u64) -> BigInt {
    BigInt::from(v)
}

/// Typed arrays handed to JavaScript as copies in V8's own memory. napi-rs's owned typed arrays
/// lend their Vec to V8 as an external buffer with a finalizer, which costs several times the
/// copy for the few hundred bytes of a register set, a sigaction table or a limit list; a visit
/// hands over a dozen of them a thread, converted on the main thread while the tree is frozen.
macro_rules! copied_typed_array {
    ($name:ident, $elem:ty, $kind:expr, $js:ident) => {
        #[doc = concat!("A `", stringify!($js), "` copied into V8's memory when handed over (see above).")]
        pub struct $name(pub Vec<$elem>);

        impl From<Vec<$elem>> for $name {
            fn from(v: Vec<$elem>) -> Self {
                $name(v)
            }
        }

        impl napi::bindgen_prelude::TypeName for $name {
            fn type_name() -> &'static str {
                stringify!($js)
            }
            fn value_type() -> napi::ValueType {
                napi::ValueType::Object
            }
        }

        impl napi::bindgen_prelude::ToNapiValue for $name {
            unsafe fn to_napi_value(env: napi::sys::napi_env, val: Self) -> napi::Result<napi::sys::napi_value> {
                let bytes = std::mem::size_of_val(val.0.as_slice());
                let mut data = std::ptr::null_mut();
                let mut buffer = std::ptr::null_mut();
                // SAFETY: env is the live env napi-rs passes; V8 allocates `bytes` at `data`.
                napi::check_status!(unsafe { napi::sys::napi_create_arraybuffer(env, bytes, &mut data, &mut buffer) }, "create ArrayBuffer")?;
                if bytes > 0 {
                    // SAFETY: `data` holds `bytes` fresh bytes, the Vec as many; they cannot overlap.
                    unsafe { std::ptr::copy_nonoverlapping(val.0.as_ptr().cast::<u8>(), data.cast::<u8>(), bytes) };
                }
                let mut array = std::ptr::null_mut();
                // SAFETY: `buffer` was just created with room for every element.
                napi::check_status!(
                    unsafe { napi::sys::napi_create_typedarray(env, $kind, val.0.len(), buffer, 0, &mut array) },
                    "create typed array"
                )?;
                Ok(array)
            }
        }

        impl napi::bindgen_prelude::FromNapiValue for $name {
            unsafe fn from_napi_value(env: napi::sys::napi_env, value: napi::sys::napi_value) -> napi::Result<Self> {
                // SAFETY: forwarded as napi-rs called us.
                let array = unsafe { <napi::bindgen_prelude::$js as napi::bindgen_prelude::FromNapiValue>::from_napi_value(env, value)? };
                Ok($name(array.to_vec()))
            }
        }
    };
}

copied_typed_array!(U32s, u32, napi::sys::TypedarrayType::uint32_array, Uint32Array);
copied_typed_array!(U64s, u64, napi::sys::TypedarrayType::biguint64_array, BigUint64Array);
