//! The blocking-fingerprint set scorers look things up in. The engine owns it and
//! swaps it whole; a lookup always answers from one set, and rows record its version.

use ooni_scorer_sdk::{FingerprintMatch, Host, NoFingerprints};
use std::sync::{Arc, RwLock};

/// A fingerprint set as scorers see it, with its content hash.
#[derive(Clone)]
pub struct FingerprintSet {
    pub matcher: Arc<dyn Host + Send + Sync>,
    /// Content hash of the set; empty for the empty set.
    pub version: Arc<str>,
}

impl FingerprintSet {
    pub fn empty() -> FingerprintSet {
        FingerprintSet {
            matcher: Arc::new(NoFingerprints),
            version: Arc::from(""),
        }
    }
}

/// The current set, swapped atomically on reload.
pub struct Fingerprints {
    current: RwLock<FingerprintSet>,
}

impl Fingerprints {
    pub fn new(set: FingerprintSet) -> Arc<Fingerprints> {
        Arc::new(Fingerprints {
            current: RwLock::new(set),
        })
    }

    pub fn current(&self) -> FingerprintSet {
        match self.current.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn swap(&self, set: FingerprintSet) {
        match self.current.write() {
            Ok(mut s) => *s = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }
}

impl Host for FingerprintSet {
    fn match_dns(&self, answer: &str) -> Vec<FingerprintMatch> {
        self.matcher.match_dns(answer)
    }
    fn match_http_body(&self, body: &[u8]) -> Vec<FingerprintMatch> {
        self.matcher.match_http_body(body)
    }
    fn match_http_headers(&self, headers_json: &str) -> Vec<FingerprintMatch> {
        self.matcher.match_http_headers(headers_json)
    }
}
