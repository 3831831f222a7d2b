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
pub mod jsonscan;
pub mod matching;
pub mod projection;
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
    /// The paths this scorer reads ([`projection`] gives the syntax). The engine sends
    /// only those values; every other value arrives as `null`, its key kept. Empty:
    /// the whole measurement. Every plugin's tests should score their fixtures through
    /// [`testing::score_as_sent`] too, which fails when a read is missing here.
    pub reads: &'static [&'static str],
    /// Paths (among what is read) whose values the scorer only hands to
    /// `matching::match_response` as HTTP bodies. The engine matches them itself while
    /// it cuts the measurement down and sends their matches instead of the bodies
    /// (`matching::matched_body`), so a page's bytes are never copied into the module.
    pub bodies: &'static [&'static str],
    /// Paths (not among `reads`) whose values the scorer only hands to
    /// `matching::match_response` as a response's headers. The engine matches each
    /// such object against the header fingerprints itself and sends its matches in
    /// its place (`matching::matched_headers`), so the module neither parses the
    /// headers nor sends them back to be matched.
    pub headers: &'static [&'static str],
    /// Unread members are left out of the objects the reads go into, instead of sent
    /// as `null` (`projection::Reads::dropping_unread`): a smaller text to parse, for a
    /// scorer that never asks whether a key it does not read is present.
    /// `testing::score_as_sent` checks the scores do not change.
    pub drops_unread: bool,
    /// Paths (not among `reads`, `bodies` or `headers`, and not overlapping them)
    /// whose values the scorer only compares with `==` to one another, looking at no
    /// string inside them but through that comparison: each string inside them longer
    /// than `projection::COMPARED_AS_IS` bytes is sent as a digest
    /// (`projection::Read::Compared`), so an echoed page is hashed on the host instead
    /// of copied into the module and parsed there.
    pub compared: &'static [&'static str],
}

/// Scoring as the engine does it, for a plugin's own tests.
pub mod testing {
    use crate::{projection::Reads, Host, Scorer, Scores, Value};

    /// Scores `msm` as the engine would send it (cut down to `S::INFO.reads`) and
    /// panics if that differs from scoring the whole measurement.
    pub fn score_as_sent<S: Scorer>(msm: &Value, host: &dyn Host) -> Result<Scores, String> {
        let whole = S::score(msm, host);
        let reads = match Reads::for_info(&S::INFO) {
            Ok(Some(reads)) => reads,
            Ok(None) => return whole,
            Err(e) => panic!("INFO: {e}: the engine refuses such a module"),
        };
        let hook = |kind, raw: &[u8]| crate::matching::matched_value(kind, raw, host);
        let text = reads
            .project_with(msm.to_string().as_bytes(), Some(&hook))
            .expect("a serialised value projects");
        let sent: Value = serde_json::from_slice(&text).expect("a projection is JSON");
        let cut = S::score(&sent, &crate::host::CutMatched::for_info(host, &S::INFO));
        assert_eq!(
            cut, whole,
            "scores differ when the measurement is cut down to INFO.reads: a read path is missing\nsent: {}",
            String::from_utf8_lossy(&text)
        );
        whole
    }
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
                $crate::wasm::score(
                    ptr,
                    len,
                    &<$scorer as $crate::Scorer>::INFO,
                    <$scorer as $crate::Scorer>::score,
                )
            }
        }
    };
}
