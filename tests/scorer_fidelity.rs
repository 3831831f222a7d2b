//! Every corpus measurement scored by the engine's own scoring path (bundled plugins,
//! the repository's `plugins/` directory) against OONI fastpath 0.92's reference:
//! scores equal as parsed JSON with the same key order, the serialised bytes equal,
//! and the anomaly / confirmed / msm_failure flags equal.

mod common;

use common::*;
use ooni_core::{derive_row, Outcome};
use ooni_engine::fingerprints::{FingerprintSet, Fingerprints};
use ooni_engine::scoring::registry::{Registry, RegistryOptions};
use ooni_engine::scoring::wasm::Limits;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Measurements whose reference scores need the blocking fingerprints, which this
/// engine does not load yet: without them there are no matches to report.
const NEEDS_FINGERPRINTS: [&str; 4] = [
    "web_connectivity/explorer-01202003039e13e3e38be1918d.json",
    "web_connectivity/fastpath-20250527233111_ID_5a37ec90.json",
    "web_connectivity/fastpath-bug_352.json",
    "web_connectivity/fastpath-web_connectivity_ir_fp.json",
];

#[test]
fn corpus_scores_equal_the_reference() {
    let plugins_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let registry = Registry::new(
        RegistryOptions {
            dir: Some(plugins_dir),
            limits: Limits::default(),
            bundled: true,
        },
        Fingerprints::new(FingerprintSet::empty()),
    )
    .unwrap();
    assert!(registry.refused().is_empty(), "{:?}", registry.refused());
    let set = registry.snapshot();

    let mut per_test: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut mismatches = Vec::new();
    let (mut compared, mut byte_equal) = (0, 0);
    for (rel, msm) in corpus_measurements() {
        let expected = expected_for(&rel);
        if expected["dropped"] == Value::Bool(true) {
            continue;
        }
        let uid = expected["measurement_uid_used"].as_str().unwrap();
        let body = serde_json::to_vec(&msm).unwrap();
        let row = match derive_row(&body, uid, set.as_ref()) {
            Outcome::Row(r) => r,
            Outcome::Dropped(d) => panic!("{rel}: no row: {d:?}"),
        };
        compared += 1;
        let got: Value = serde_json::from_str(&row.scores).unwrap();
        let want = &expected["scores"];
        let same_order = got.as_object().map(|o| o.keys().collect::<Vec<_>>())
            == want.as_object().map(|o| o.keys().collect::<Vec<_>>());
        let flags_equal = (row.anomaly, row.confirmed, row.msm_failure)
            == (
                expected["anomaly"].as_bool().unwrap(),
                expected["confirmed"].as_bool().unwrap(),
                expected["msm_failure"].as_bool().unwrap(),
            );
        let equal = &got == want && same_order && flags_equal;
        if Some(row.scores.as_str()) == expected["scores_ujson"].as_str() {
            byte_equal += 1;
        }
        let entry = per_test.entry(row.test_name.clone()).or_default();
        entry.0 += 1;
        if equal {
            entry.1 += 1;
        } else {
            mismatches.push(rel.clone());
            if !NEEDS_FINGERPRINTS.contains(&rel.as_str()) {
                eprintln!(
                    "{rel} (scorer {}):\n  got  {}\n  want {}",
                    row.scorer_name, row.scores, expected["scores_ujson"]
                );
            }
        }
    }
    for (t, (n, ok)) in &per_test {
        eprintln!("{t:32} {ok}/{n}");
    }
    eprintln!(
        "{compared} rows compared; {} equal; {byte_equal} byte-equal",
        compared - mismatches.len()
    );
    assert_eq!(
        mismatches, NEEDS_FINGERPRINTS,
        "measurements whose scores differ from the reference"
    );
}
