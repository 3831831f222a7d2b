//! The probe upload path of `POST /report/{report_id}`, without the disk: the
//! `Content-Encoding` decoding (identity or zstd, capped), the envelope and its
//! metadata, the report id and the consistency and metadata rules, in the order
//! `engine/src/api/probe.rs` runs them.
//!
//! Input: a first line holding the `Content-Encoding` header (`-` for none), a second
//! line holding the report id, then the body as raw bytes.

#![no_main]

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use ooni_core::ids::{format_measurement_uid, parse_measurement_uid, parse_report_id};
use ooni_core::submission::{
    check_consistency, check_metadata, decode_body, read_metadata, Rejection,
};

/// A small decompressed cap, so that a zstd bomb hits it quickly.
const MAX_DECOMPRESSED: usize = 1 << 20;

fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fn exercise(r: &Rejection) {
    let _ = (r.reason(), r.ooni_message(), r.to_string());
    assert!(matches!(r.status(), 400 | 413 | 415));
}

fuzz_target!(|data: &[u8]| {
    let (encoding, rest) = split_line(data);
    let (report_id, body) = split_line(rest);
    // Header values reach the engine as visible ASCII only (to_str() refuses others).
    let Ok(encoding) = std::str::from_utf8(encoding) else {
        return;
    };
    let encoding = (encoding != "-").then_some(encoding);
    let raw = Bytes::copy_from_slice(body);

    let decoded = match decode_body(encoding, raw.clone(), MAX_DECOMPRESSED) {
        Ok(d) => d,
        Err(r) => {
            exercise(&r);
            return;
        }
    };
    assert!(decoded.len() <= MAX_DECOMPRESSED || decoded == raw);
    if matches!(encoding.map(str::trim), None | Some("") | Some("identity")) {
        assert_eq!(decoded, raw, "identity bodies pass through unchanged");
    }

    let meta = match read_metadata(&decoded) {
        Ok(m) => m,
        Err(r) => {
            exercise(&r);
            return;
        }
    };

    // The report id comes from the URL path, percent-decoded to a String.
    let rid_text = String::from_utf8_lossy(report_id);
    let parsed = match parse_report_id(&rid_text) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };

    let consistent = check_consistency(&parsed, &meta);
    if let Err(r) = &consistent {
        exercise(r);
    }
    let valid = check_metadata(&meta);
    if let Err(r) = &valid {
        exercise(r);
    }
    if consistent.is_ok() && valid.is_ok() {
        // An accepted upload must always give a uid that parses back to its spool
        // directory, as submit_measurement relies on.
        let t = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        let uid = format_measurement_uid(t, &meta.probe_cc, parsed.test_name, &decoded);
        let p = parse_measurement_uid(&uid)
            .unwrap_or_else(|| panic!("accepted upload gave an unparsable uid {uid:?}"));
        assert_eq!(p.cc, meta.probe_cc);
        assert_eq!(p.test_name, parsed.test_name);
        assert_eq!(
            p.spool_dir(),
            format!("2024010203_{}_{}", meta.probe_cc, parsed.test_name)
        );
        assert!(parsed.asn > 0, "AS0 is refused by check_metadata");
    }
});
