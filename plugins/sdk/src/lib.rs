//! The SDK for OONI scorer plugins.
//!
//! A scorer is a function from one measurement to its `scores` dict. Write it once
//! against [`Scorer`], and it runs natively (unit tests, benchmarks) and, through
//! [`export_scorer!`], as a WebAssembly module the engine loads from its `plugins/`
//! directory (the ABI is in `plugins/ABI.md`).
//!
//! OONI's getter semantics (a missing key and a JSON null are alike; falsy values are
//! kept) live in [`getters`], so every scorer reads measurements the same way.

#[cfg(all(target_arch = "wasm32", feature = "arena"))]
mod arena;
pub mod b64;
pub mod getters;
pub mod host;
pub mod matching;
pub mod scores;
#[doc(hidden)]
pub mod wasm;

pub use getters::{g, g_or, truthy};
pub use host::{FingerprintMatch, Host, NoFingerprints};
pub use scores::{
    detect_unknown_failure, extract_tcp_connect, init_scores, test_keys, test_keys_object, Scores,
};
pub use serde_json::{from_str as json_from_str, json, Map, Value};

/// The version of the plugin ABI this SDK speaks.
pub const ABI_VERSION: i32 = 1;

/// What a scorer says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub name: &'static str,
    pub version: &'static str,
    /// The `test_name`s this scorer scores.
    pub test_names: &'static [&'static str],
}

/// A scorer. `score` gets the measurement (the envelope's `content`) and the host,
/// which answers fingerprint lookups. An `Err` fails this one measurement: the engine
/// keeps its row, marked as a failure, with the message.
pub trait Scorer {
    const INFO: Info;
    fn score(msm: &Value, host: &dyn Host) -> Result<Scores, String>;
}

/// Exports a [`Scorer`] as a WebAssembly scorer plugin. On other targets it expands to
/// nothing, so the same crate builds natively for tests.
///
/// ```ignore
/// struct Ndt;
/// impl ooni_scorer_sdk::Scorer for Ndt { /* … */ }
/// ooni_scorer_sdk::export_scorer!(Ndt);
/// ```
#[macro_export]
macro_rules! export_scorer {
    ($scorer:ty) => {
        #[cfg(target_arch = "wasm32")]
        mod __ooni_scorer_exports {
            #[allow(unused_imports)]
            use super::*;
            #[no_mangle]
            pub extern "C" fn ooni_abi_version() -> i32 {
                $crate::ABI_VERSION
            }
            #[no_mangle]
            pub extern "C" fn ooni_alloc(len: i32) -> i32 {
                $crate::wasm::alloc(len)
            }
            #[no_mangle]
            pub extern "C" fn ooni_meta() -> i64 {
                $crate::wasm::meta(&<$scorer as $crate::Scorer>::INFO)
            }
            #[no_mangle]
            pub extern "C" fn ooni_score(ptr: i32, len: i32) -> i64 {
                $crate::wasm::score(ptr, len, <$scorer as $crate::Scorer>::score)
            }
        }
    };
}
