//! The TOML rule language (`ooni_core::rules`): any text through
//! `RuleScorer::parse`; a file that parses scores a few fixed measurements, whole and
//! cut down to what its rules read (the two must agree), and the scores serialise as
//! the `scores` column would.
//!
//! Input: the rule file, read as UTF-8 (lossily).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ooni_core::rules::RuleScorer;
use ooni_core::Scorer;
use serde_json::{json, Value};
use std::sync::OnceLock;

fn measurements() -> &'static [Value] {
    static M: OnceLock<Vec<Value>> = OnceLock::new();
    M.get_or_init(|| {
        vec![
            json!({}),
            json!({"test_keys": null}),
            json!({"test_keys": []}),
            json!({
                "probe_cc": "IT",
                "software_name": "ooniprobe-android",
                "software_version": "3.8.0",
                "resolver_ip": null,
                "test_keys": {
                    "failure": "generic_timeout_error",
                    "a": false,
                    "b": 0,
                    "n": 1.5,
                    "list": ["x", "ssl_error"],
                    "empty": {},
                    "requests": [
                        {"failure": null, "response": {"code": 200}},
                        {"failure": "ssl_error: x"},
                        {},
                        5,
                        null
                    ],
                    "nested": {"deeper": {"value": "v", "zero": 0}}
                }
            }),
            json!({"test_keys": {"failure": null, "requests": {}, "n": -1e300}}),
            json!([1, 2]),
            json!("a string"),
            Value::Null,
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let scorer = match RuleScorer::parse(&text) {
        Ok(s) => s,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(!scorer.test_names.is_empty());
    let _ = scorer.info();
    for msm in measurements() {
        let whole = scorer.score_value(msm);
        // The engine scores the measurement cut down to what the rules read: it must
        // agree with the whole one, whatever the rules.
        let text = msm.to_string();
        let cut = Scorer::score(
            &scorer,
            &ooni_core::measurement::Measurement::new(&text, Default::default()),
        )
        .map_err(|e| e.0);
        assert_eq!(
            cut, whole,
            "cut-down and whole measurement score differently"
        );
        match whole {
            Ok(scores) => {
                let dumped = ooni_core::ujson::dumps(&Value::Object(scores));
                assert!(dumped.starts_with('{') && dumped.ends_with('}'));
            }
            Err(message) => drop(message),
        }
    }
});
