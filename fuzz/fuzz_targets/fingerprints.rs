//! The fingerprint loader and matcher (`ooni_core::fingerprints`): any text through
//! `parse_file` and `check_unique`; a file that loads is compiled in both modes and
//! run on fixed DNS answers, bodies and headers, and every literal fingerprint must
//! find its own pattern in strict mode.
//!
//! Input: the fingerprint file, read as UTF-8 (lossily).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ooni_core::fingerprints::schema::check_unique;
use ooni_core::fingerprints::{parse_file, Kind, Matcher, Mode, PatternType};
use serde_json::{Map, Value};

const ANSWERS: [&str; 4] = ["192.0.2.1", "Blockpage.Example.Net.", "", "10.10.34.34"];
const BODIES: [&[u8]; 4] = [
    b"",
    b"<html><title>Blocked</title>This website has been blocked</html>",
    b"<!-- blockpage --> Access denied by U.S. Cyber Command",
    b"\xff\xfe\x00 not utf-8 \xc3",
];
const HEADERS: [&str; 4] = [
    "{}",
    r#"{"Location": "http://warning.example/geoblock?x", "SERVER": "Protected by WireFilter", "Via": "1.1 proxy (Cisco-WSA/9.1.1-074)"}"#,
    r#"{"location": {"format": "base64", "data": "aHR0cDovL3dhcm5pbmcuZXhhbXBsZS94"}, "x": 1}"#,
    "not json",
];

/// The names of the matches (a match is a JSON map, the SDK's `FingerprintMatch`).
fn names(ms: &[Map<String, Value>]) -> Vec<&str> {
    ms.iter()
        .filter_map(|m| m.get("name").and_then(Value::as_str))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let fps = match parse_file("fuzz.toml", &text) {
        Ok(f) => f,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let unique = check_unique(&fps).is_ok();
    for mode in [Mode::Compat, Mode::Strict] {
        let m = Matcher::new(&fps, mode);
        assert_eq!(m.len(), fps.len());
        for a in ANSWERS {
            let _ = m.dns(a);
        }
        for b in BODIES {
            let _ = m.body(b);
        }
        for h in HEADERS {
            let _ = m.headers(h);
        }
        if mode != Mode::Strict || !unique {
            continue;
        }
        // Strict mode honours every literal pattern type: a fingerprint's own
        // pattern, in its own location, is a match for it.
        for fp in fps.iter().filter(|f| f.pattern_type != PatternType::Regexp) {
            let found = match fp.kind {
                Kind::Dns => m.dns(&fp.pattern),
                Kind::Http if fp.location_found == "body" => m.body(fp.pattern.as_bytes()),
                Kind::Http => {
                    let name = fp.location_found.trim_start_matches("header.");
                    let headers = serde_json::json!({ name: fp.pattern }).to_string();
                    m.headers(&headers)
                }
            };
            assert!(
                names(&found).contains(&fp.name.as_str()),
                "{} ({}, {:?}) does not match its own pattern {:?}",
                fp.name,
                fp.location_found,
                fp.pattern_type,
                fp.pattern
            );
        }
    }
});
