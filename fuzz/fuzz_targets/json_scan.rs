//! The JSON scanner and the projection that cut measurements down for scorers
//! (`ooni_scorer_sdk::jsonscan`, `ooni_scorer_sdk::projection`).
//!
//! For any input: the validating scan accepts exactly what `serde_json` accepts. For
//! valid JSON: the trusted skip ends where the validating one does, a string unescapes
//! as serde_json reads it, the engine's first walk of an upload cuts as the
//! projection does, a projection
//! (with a body hook) is JSON with the same top-level keys, in the same order, and
//! values read as compared keep their equalities.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ooni_core::measurement::parse_upload_cut;
use ooni_core::scores::CutPlan;
use ooni_scorer_sdk::jsonscan::{unescape_into, validate, Cursor};
use ooni_scorer_sdk::projection::Reads;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let parsed = serde_json::from_slice::<Value>(data);
    assert_eq!(
        validate(data).is_ok(),
        parsed.is_ok(),
        "the scanner and serde_json disagree"
    );
    let Ok(value) = parsed else { return };

    let mut strict = Cursor::new(data);
    strict.skip_value().expect("valid JSON skips");
    let mut trusted = Cursor::new(data);
    trusted
        .skip_trusted()
        .expect("valid JSON skips when trusted");
    assert_eq!(strict.i, trusted.i, "the two skips end apart");
    if let Value::String(s) = &value {
        let mut out = Vec::new();
        assert!(
            unescape_into(data.trim_ascii(), &mut out),
            "a valid string unescapes"
        );
        assert_eq!(out, s.as_bytes(), "unescaped differently from serde_json");
    }

    let reads = Reads::with_bodies(&["a", "b.*.c", "*_failure", "x.y"], &["r.body"])
        .expect("fixed paths compile");
    let hook = |_, raw: &[u8]| (raw.first() == Some(&b'"')).then(|| "\"matched\"".to_owned());
    let cut = reads
        .project_with(data, Some(&hook))
        .expect("valid JSON projects");
    // Nobody checks a cut's UTF-8 before the scorer's parser: it must be so by making.
    let text = std::str::from_utf8(&cut).expect("the cut of UTF-8 JSON is UTF-8");
    let cut: Value = serde_json::from_str(text).expect("a projection is JSON");
    if let (Value::Object(whole), Value::Object(cut)) = (&value, &cut) {
        assert!(
            whole.keys().eq(cut.keys()),
            "top-level keys changed: {text}"
        );
    }
    assert_eq!(value.is_object(), cut.is_object());
    assert_eq!(value.is_array(), cut.is_array());

    // Compared values keep their equalities: `c` and `d` (each array element a pair
    // of its own) are equal after the cut exactly when they were before.
    let compared = Reads::new(&["a"])
        .and_then(|r| r.comparing(&["c", "d"]))
        .expect("fixed paths compile");
    let cut = compared.project(data).expect("valid JSON projects");
    let cut: Value = serde_json::from_slice(&cut).expect("a compared cut is JSON");
    if let (Some(c), Some(d)) = (value.get("c"), value.get("d")) {
        assert_eq!(
            c == d,
            cut["c"] == cut["d"],
            "compared values changed equality"
        );
        if let (Value::Array(c), Value::Array(d)) = (c, d) {
            for (i, (x, y)) in c.iter().zip(d).enumerate() {
                assert_eq!(x == y, cut["c"][i] == cut["d"][i], "pair {i}");
            }
        }
    }

    // The engine's first walk of an upload cuts as the projection does.
    let plan = CutPlan {
        reads: &reads,
        bodies: None,
    };
    if let Ok(upload) = parse_upload_cut(data, Some(&plan)) {
        let m = &upload.measurement;
        if let Some(first_walk) = m.cut_for(&reads, false) {
            let own = reads
                .project(m.json.as_bytes())
                .expect("valid JSON projects");
            assert_eq!(first_walk, own, "the first walk cut differently");
        }
    }
});
