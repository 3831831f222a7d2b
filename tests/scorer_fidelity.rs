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

/// Measurements whose reference scores need the blocking fingerprints: without them
/// there are no matches to report.
const NEEDS_FINGERPRINTS: [&str; 4] = [
    "web_connectivity/explorer-01202003039e13e3e38be1918d.json",
    "web_connectivity/fastpath-20250527233111_ID_5a37ec90.json",
    "web_connectivity/fastpath-bug_352.json",
    "web_connectivity/fastpath-web_connectivity_ir_fp.json",
];

/// Scores the corpus with the repository's plugins and `fingerprints`; returns the
/// measurements whose scores or flags differ from the reference.
fn corpus_mismatches(fingerprints: std::sync::Arc<Fingerprints>) -> Vec<String> {
    let plugins_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let registry = Registry::new(
        RegistryOptions {
            dir: Some(plugins_dir),
            limits: Limits::default(),
            bundled: true,
            cache_dir: None,
        },
        fingerprints,
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
    mismatches
}

#[test]
fn without_fingerprints_only_fingerprint_cases_differ() {
    let mismatches = corpus_mismatches(Fingerprints::new(FingerprintSet::empty()));
    assert_eq!(
        mismatches, NEEDS_FINGERPRINTS,
        "measurements whose scores differ from the reference"
    );
}

/// OONI's fingerprint snapshot (the one the reference used), imported to TOML with the
/// engine's importer and matched in `compat` mode: every corpus row equals the reference.
#[test]
fn with_the_imported_ooni_set_in_compat_mode_every_row_is_equal() {
    let dir = tempfile::tempdir().unwrap();
    let src = corpus_dir().join("fingerprints");
    let inputs = [
        src.join("fingerprints_dns.json"),
        src.join("fingerprints_http.json"),
    ];
    let written = ooni_engine::commands::import_fingerprints(&inputs, dir.path()).unwrap();
    assert_eq!(written.iter().map(|(_, n)| n).sum::<usize>(), 150 + 1699);
    let fps = Fingerprints::from_dir(dir.path().to_owned(), ooni_core::fingerprints::Mode::Compat)
        .unwrap();
    let mismatches = corpus_mismatches(fps);
    assert!(
        mismatches.is_empty(),
        "differ from the reference: {mismatches:?}"
    );
}

/// Every bundled module that declares its reads scores every corpus measurement of its
/// tests (the reference's and the others, with OONI's fingerprints so that bodies and
/// headers are matched) the same whether it is sent the measurement cut down to its
/// reads, as the engine sends it, or whole.
#[test]
fn cut_down_and_whole_measurements_score_alike() {
    let dir = tempfile::tempdir().unwrap();
    let src = corpus_dir().join("fingerprints");
    ooni_engine::commands::import_fingerprints(
        &[
            src.join("fingerprints_dns.json"),
            src.join("fingerprints_http.json"),
        ],
        dir.path(),
    )
    .unwrap();
    let fps = Fingerprints::from_dir(dir.path().to_owned(), ooni_core::fingerprints::Mode::Strict)
        .unwrap();
    let rt = ooni_engine::scoring::wasm::WasmRuntime::new().unwrap();
    let corpus = corpus_measurements();
    let (mut compared, mut cut) = (0, 0);
    for (name, bytes) in ooni_engine::scoring::registry::bundled_modules() {
        if !name.ends_with(".wasm") {
            continue;
        }
        let scorer = ooni_engine::scoring::wasm::WasmScorer::load(
            &rt,
            bytes,
            Limits::default(),
            fps.clone(),
        )
        .unwrap();
        for (rel, msm) in &corpus {
            let test_name = msm["test_name"].as_str().unwrap_or_default();
            if !scorer.test_names.iter().any(|t| t == test_name) {
                continue;
            }
            let json = serde_json::to_string(msm).unwrap();
            let whole = scorer.call(&json);
            let upload = ooni_core::measurement::parse_upload(json.as_bytes()).unwrap();
            let sent = ooni_core::Scorer::score(&scorer, &upload.measurement).map_err(|e| e.0);
            assert_eq!(sent, whole, "{name} on {rel}");
            if scorer.reads_something() {
                cut += 1;
            }
            compared += 1;
        }
    }
    eprintln!("{compared} measurements compared, {cut} of them cut down");
    assert!(
        compared > 80 && cut == compared,
        "{compared} compared, {cut} cut"
    );

    // The TOML rule scorers cut measurements down to the paths their rules name.
    let mut rules_compared = 0;
    for entry in
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins")).unwrap()
    {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let rules =
            ooni_core::rules::RuleScorer::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (rel, msm) in &corpus {
            let test_name = msm["test_name"].as_str().unwrap_or_default();
            if !rules.test_names.iter().any(|t| t == test_name) {
                continue;
            }
            let json = serde_json::to_string(msm).unwrap();
            let whole = rules.score_value(msm);
            let upload = ooni_core::measurement::parse_upload(json.as_bytes()).unwrap();
            let sent = ooni_core::Scorer::score(&rules, &upload.measurement).map_err(|e| e.0);
            assert_eq!(sent, whole, "{} on {rel}", path.display());
            rules_compared += 1;
        }
    }
    eprintln!("{rules_compared} measurements compared through the rule scorers");
    assert!(rules_compared > 30, "{rules_compared} compared");
}
