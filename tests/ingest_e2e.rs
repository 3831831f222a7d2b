//! Every corpus measurement through the real collector protocol, over real HTTP, into
//! SQLite and PostgreSQL; every derived column compared with OONI's reference fastpath.

mod common;

use chrono::{NaiveDateTime, Utc};
use common::*;
use ooni_core::{ujson, DropKind, FastpathRow};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// The test names OONI's fastpath has a scorer for (spec/fastpath.md §2.1); each is
/// scored here by the plugin of the same name.
const OONI_SCORED: [&str; 21] = [
    "telegram",
    "facebook_messenger",
    "http_header_field_manipulation",
    "http_invalid_request_line",
    "whatsapp",
    "vanilla_tor",
    "web_connectivity",
    "ndt",
    "tcp_connect",
    "dash",
    "meek_fronted_requests_test",
    "psiphon",
    "tor",
    "http_requests",
    "dns_consistency",
    "signal",
    "stunreachability",
    "torsf",
    "riseupvpn",
    "openvpn",
    "browser_web",
];

/// Measurements whose reference scores need blocking fingerprints, which this engine
/// does not load yet; their scores are not compared.
const NEEDS_FINGERPRINTS: [&str; 4] = [
    "web_connectivity/explorer-01202003039e13e3e38be1918d.json",
    "web_connectivity/fastpath-20250527233111_ID_5a37ec90.json",
    "web_connectivity/fastpath-bug_352.json",
    "web_connectivity/fastpath-web_connectivity_ir_fp.json",
];

/// Corpus measurements that OONI's probe service itself refuses (spec/api.md §1.11),
/// so they never reach a fastpath: the body's ASN is written with a leading zero and
/// does not match the report id's integer ASN.
const OONI_REJECTS: [(&str, u16, &str); 1] = [(
    "openvpn/spec-ts-040-20240403T105639.json",
    400,
    "inconsistent_measurement",
)];

const TOO_OLD: &str = "Measurement start time too old";

struct Submitted {
    rel: String,
    uid: String,
    report_id: String,
    msm: Value,
}

fn tf(b: bool) -> &'static str {
    if b {
        "t"
    } else {
        "f"
    }
}

fn ymdhms(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Compares one row with the reference row, column by column.
fn check_row(s: &Submitted, row: &FastpathRow, expected: &Value) {
    let want = &expected["row"];
    let ctx = &s.rel;
    // By design: the row carries the report id this run opened, not the corpus one.
    assert_eq!(row.report_id, s.report_id, "{ctx}: report_id");
    assert_ne!(
        Some(row.report_id.as_str()),
        want["report_id"].as_str(),
        "{ctx}"
    );
    let strings: [(&str, &str); 14] = [
        ("input", &row.input),
        ("probe_cc", &row.probe_cc),
        ("test_name", &row.test_name),
        ("platform", &row.platform),
        ("domain", &row.domain),
        ("software_name", &row.software_name),
        ("software_version", &row.software_version),
        ("test_version", &row.test_version),
        ("architecture", &row.architecture),
        ("engine_name", &row.engine_name),
        ("engine_version", &row.engine_version),
        ("test_helper_address", &row.test_helper_address),
        ("test_helper_type", &row.test_helper_type),
        ("is_verified", &row.is_verified),
    ];
    for (col, got) in strings {
        assert_eq!(Some(got), want[col].as_str(), "{ctx}: column {col}");
    }
    assert_eq!(
        Some(row.probe_asn),
        want["probe_asn"].as_i64(),
        "{ctx}: probe_asn"
    );
    assert_eq!(
        Some(ymdhms(row.test_start_time)),
        want["test_start_time"].as_str().map(String::from),
        "{ctx}"
    );
    assert_eq!(
        Some(ymdhms(row.measurement_start_time)),
        want["measurement_start_time"].as_str().map(String::from),
        "{ctx}"
    );
    assert_eq!(
        Some(row.test_runtime),
        want["test_runtime"].as_f64(),
        "{ctx}: test_runtime"
    );
    assert_eq!(
        row.ooni_run_link_id,
        want["ooni_run_link_id"].as_i64(),
        "{ctx}: ooni_run_link_id"
    );

    // Receive time is now, so OONI's date check (spec/fastpath.md §2.24) fires for
    // anything started more than a year ago; the reference ran with receive = start.
    let too_old = (Utc::now().naive_utc() - row.measurement_start_time).num_seconds() > 31_536_000;
    assert_eq!(
        row.scores.contains(TOO_OLD),
        too_old,
        "{ctx}: date check in {}",
        row.scores
    );
    let want_scorer = if OONI_SCORED.contains(&row.test_name.as_str()) {
        row.test_name.as_str()
    } else {
        "default"
    };
    assert_eq!(row.scorer_name, want_scorer, "{ctx}");
    if NEEDS_FINGERPRINTS.contains(&s.rel.as_str()) {
        return;
    }
    // The reference ran with receive time = start time; here the receive time is now,
    // so OONI's own date check adds its verdict to anything over a year old.
    let mut scores = expected["scores"].as_object().unwrap().clone();
    if too_old {
        scores.insert("accuracy".into(), json!(0.0));
        scores.insert("msg".into(), json!(TOO_OLD));
    } else {
        assert_eq!(
            expected["scores_ujson"].as_str(),
            Some(row.scores.as_str()),
            "{ctx}: scores bytes"
        );
    }
    assert_eq!(
        row.scores,
        ujson::dumps(&Value::Object(scores)),
        "{ctx}: scores"
    );
    assert_eq!(
        tf(row.anomaly),
        want["anomaly"].as_str().unwrap(),
        "{ctx}: anomaly"
    );
    assert_eq!(
        tf(row.confirmed),
        want["confirmed"].as_str().unwrap(),
        "{ctx}: confirmed"
    );
    let want_failure = too_old || want["msm_failure"] == json!("t");
    assert_eq!(row.msm_failure, want_failure, "{ctx}: msm_failure");
    assert_eq!(
        row.blocking_type,
        want["blocking_type"].as_str().unwrap(),
        "{ctx}"
    );
}

async fn corpus_round_trip(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let tdb = TestDb::new(db, dir.path()).await;
    let engine = Engine::start(&dir.path().join("data"), &tdb.url, &[]);
    let c = client();

    let corpus = corpus_measurements();
    let mut submitted = Vec::new();
    let mut api_discards = Vec::new();
    let mut rejected = Vec::new();
    for (rel, msm) in &corpus {
        let report_id = open_report(&c, &engine, msm).await;
        let mut content = msm.clone();
        if content.get("report_id").is_some_and(|v| !v.is_null()) {
            content["report_id"] = json!(report_id);
        }
        let resp = c
            .post(engine.url(&format!("/report/{report_id}")))
            .json(&json!({"format": "json", "content": content}))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        if status != 200 {
            rejected.push((
                rel.clone(),
                status.as_u16(),
                body["reason"].as_str().unwrap_or("").to_owned(),
            ));
            continue;
        }
        match body.get("measurement_uid").and_then(Value::as_str) {
            Some(uid) => {
                let prefix = format!("_{}_", msm["test_name"].as_str().unwrap().replace('_', ""));
                assert!(uid.contains(&prefix), "{rel}: uid {uid}");
                submitted.push(Submitted {
                    rel: rel.clone(),
                    uid: uid.to_owned(),
                    report_id,
                    msm: msm.clone(),
                })
            }
            None => {
                // OONI's probe service answers `{}` for ZZ / AS0 report ids and drops
                // the measurement; the reference fastpath drops these too.
                assert_eq!(body, json!({}), "{rel}");
                assert!(
                    report_id.contains("_ZZ_") || report_id.split('_').nth(3) == Some("0"),
                    "{rel}: {report_id}"
                );
                assert_eq!(expected_for(rel)["dropped"], json!(true), "{rel}");
                api_discards.push(rel.clone());
            }
        }
        let _ = c
            .post(engine.url(&format!("/report/{}/close", "x")))
            .send()
            .await;
    }
    let want_rejected: Vec<(String, u16, String)> = OONI_REJECTS
        .iter()
        .map(|(f, st, r)| (f.to_string(), *st, r.to_string()))
        .collect();
    assert_eq!(
        rejected, want_rejected,
        "uploads OONI's probe service refuses"
    );
    assert_eq!(
        submitted.len() + api_discards.len() + rejected.len(),
        corpus.len()
    );

    let store = tdb.store().await;
    let uids: Vec<String> = submitted.iter().map(|s| s.uid.clone()).collect();
    let rows = rows_by_uid(&store, &uids, Duration::from_secs(60)).await;
    let drops: HashMap<String, _> = store
        .fetch_drops(&uids)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.measurement_uid.clone(), d))
        .collect();

    let (mut n_rows, mut n_discarded, mut n_failed) = (0, 0, 0);
    for s in &submitted {
        let expected = expected_for(&s.rel);
        if expected["dropped"] == json!(true) {
            let d = drops
                .get(&s.uid)
                .unwrap_or_else(|| panic!("{}: expected no row", s.rel));
            assert!(!rows.contains_key(&s.uid), "{}", s.rel);
            let want = if expected["discarded"] == json!(true) {
                n_discarded += 1;
                DropKind::Discarded
            } else {
                n_failed += 1;
                DropKind::Failed
            };
            assert_eq!(
                d.kind, want,
                "{}: {} vs {}",
                s.rel, d.reason, expected["error"]
            );
            if let Some(key) = expected["error"]
                .as_str()
                .and_then(|e| e.strip_prefix("KeyError: "))
            {
                assert!(
                    d.reason.contains(key.trim_matches('\'')),
                    "{}: {}",
                    s.rel,
                    d.reason
                );
            }
        } else {
            let row = rows
                .get(&s.uid)
                .unwrap_or_else(|| panic!("{}: no row ({:?})", s.rel, drops.get(&s.uid)));
            check_row(s, row, &expected);
            assert_eq!(row.probe_cc, s.msm["probe_cc"].as_str().unwrap());
            n_rows += 1;
        }
    }
    eprintln!(
        "{db:?}: {} measurements: {n_rows} rows, {n_discarded} discarded and {n_failed} failed by the fastpath, {} discarded and {} refused by the probe service",
        corpus.len(),
        api_discards.len(),
        rejected.len()
    );
    // The reference writes 138 rows and drops 12 (6 early discards, 6 exceptions).
    assert_eq!(n_rows + OONI_REJECTS.len(), 138);
    assert_eq!(n_discarded + api_discards.len() + n_failed, 12);
    drop(engine);
    store_close(store).await;
    tdb.drop_db().await;
}

async fn store_close(store: ooni_engine::store::Store) {
    match store {
        ooni_engine::store::Store::Sqlite(p) => p.close().await,
        ooni_engine::store::Store::Postgres(p) => p.close().await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_round_trip_sqlite() {
    corpus_round_trip(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_round_trip_postgres() {
    corpus_round_trip(Db::Postgres).await;
}
