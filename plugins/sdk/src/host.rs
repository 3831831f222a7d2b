//! What a scorer may ask of the engine: fingerprint lookups and logging. The engine
//! owns the fingerprint set and swaps it on reload; a scorer only ever sees matches.

use serde_json::{Map, Value};

/// A blocking fingerprint that matched, with the keys OONI stores in `scores`
/// (`name`, `scope`, `location_found`, `confidence_no_fp`, `expected_countries`, in
/// that order).
pub type FingerprintMatch = Map<String, Value>;

pub trait Host {
    /// Fingerprints matching one DNS answer (an IP address or a CNAME).
    fn match_dns(&self, answer: &str) -> Vec<FingerprintMatch>;
    /// Fingerprints matching an HTTP response body (decoded from base64 if it was).
    fn match_http_body(&self, body: &[u8]) -> Vec<FingerprintMatch>;
    /// Fingerprints matching an HTTP response's headers, given as the measurement's
    /// `response.headers` JSON object (names in any case; values strings or base64
    /// `{"format": "base64", "data": …}` objects).
    fn match_http_headers(&self, headers_json: &str) -> Vec<FingerprintMatch>;
    /// A log line from the scorer (level 0 debug … 3 error).
    fn log(&self, _level: i32, _message: &str) {}
    /// True when the engine matched the values on the scorer's `Info::bodies` paths
    /// itself and sent their matches in their place (`matching::matched_body`). Only
    /// then does `matching::match_response` take a body in that form as matches: in a
    /// measurement sent whole, such a body came from the probe.
    fn bodies_matched(&self) -> bool {
        false
    }
    /// The same for the values on the scorer's `Info::headers` paths
    /// (`matching::matched_headers`).
    fn headers_matched(&self) -> bool {
        false
    }
}

/// `host`, saying which of the cut's values the engine matched itself: the bodies, the
/// headers, or both (as it does for a scorer that declares `Info::bodies` and
/// `Info::headers`).
pub struct CutMatched<'h> {
    pub host: &'h dyn Host,
    pub bodies: bool,
    pub headers: bool,
}

impl<'h> CutMatched<'h> {
    /// As the engine sends a measurement to a scorer with this `info`.
    pub fn for_info(host: &'h dyn Host, info: &crate::Info) -> CutMatched<'h> {
        CutMatched {
            host,
            bodies: !info.bodies.is_empty(),
            headers: !info.headers.is_empty(),
        }
    }
}

impl Host for CutMatched<'_> {
    fn match_dns(&self, answer: &str) -> Vec<FingerprintMatch> {
        self.host.match_dns(answer)
    }
    fn match_http_body(&self, body: &[u8]) -> Vec<FingerprintMatch> {
        self.host.match_http_body(body)
    }
    fn match_http_headers(&self, headers_json: &str) -> Vec<FingerprintMatch> {
        self.host.match_http_headers(headers_json)
    }
    fn log(&self, level: i32, message: &str) {
        self.host.log(level, message)
    }
    fn bodies_matched(&self) -> bool {
        self.bodies
    }
    fn headers_matched(&self) -> bool {
        self.headers
    }
}

/// A host with an empty fingerprint set, for scorers that do not use fingerprints
/// and for tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFingerprints;

impl Host for NoFingerprints {
    fn match_dns(&self, _answer: &str) -> Vec<FingerprintMatch> {
        Vec::new()
    }
    fn match_http_body(&self, _body: &[u8]) -> Vec<FingerprintMatch> {
        Vec::new()
    }
    fn match_http_headers(&self, _headers_json: &str) -> Vec<FingerprintMatch> {
        Vec::new()
    }
}
