//! A scorer plugin that fails on every call, under continuous uploads beside healthy
//! test types, for about twenty seconds: the short form of `tools/plugin-soak` (which
//! measures throughput, memory and open files over ten minutes and reports them).
//!
//! Only outcomes are asserted, never timings: every upload is acknowledged; every
//! healthy measurement gets its row with the score its bundled scorer gives it alone;
//! every measurement of the failing type gets its row marked as a scorer failure (the
//! registry keeps the row: `derive_row` turns a scorer error into `accuracy 0` and
//! `msg "scorer error: …"`); the engine counts exactly one failure per such
//! measurement; and the engine holds no more open files at the end than at the start,
//! give or take a few.

mod common;

use common::*;
use ooni_engine::fingerprints::{FingerprintSet, Fingerprints};
use ooni_engine::scoring::registry::{Registry, RegistryOptions};
use ooni_engine::scoring::wasm::Limits;
use ooni_engine::scoring::{score_measurement, Scoring};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "plugin-soak-token";
const FAILING: &str = "telegram";
const HEALTHY: [&str; 5] = [
    "web_connectivity",
    "whatsapp",
    "signal",
    "facebook_messenger",
    "dash",
];
const HOSTILE: &str = "soak-failing";
/// How long the uploaders run; nothing below depends on how much they managed.
const RUN: Duration = Duration::from_secs(20);
const UPLOADERS: usize = 4;
/// Open files the engine may gain between the two samples without it being a leak
/// (database connections and spool directories opened lazily, a connection or two).
const FD_SLACK: usize = 16;

/// tests/plugins/constant.wat, made to claim `telegram` under another name and to trap
/// on every `ooni_score` call.
fn hostile_wat() -> String {
    let wat = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/plugins/constant.wat"),
    )
    .unwrap();
    let meta =
        json!({"abi": 1, "name": HOSTILE, "version": "1.0.0", "test_names": [FAILING]}).to_string();
    let old_data = wat
        .lines()
        .find(|l| l.contains("(data (i32.const 16)"))
        .unwrap();
    let new_data = format!("  (data (i32.const 16) \"{}\")", meta.replace('"', "\\\""));
    let old_len = "(i64.const 16) (i64.const 32)) (i64.const 76))";
    assert!(
        wat.contains(old_len),
        "constant.wat changed: update this test"
    );
    let wat = wat.replace(old_data, &new_data).replace(
        old_len,
        &format!("(i64.const 16) (i64.const 32)) (i64.const {}))", meta.len()),
    );
    let start = wat.find("  (func (export \"ooni_score\")").unwrap();
    format!(
        "{}  (func (export \"ooni_score\") (param $ptr i32) (param $len i32) (result i64)\n    unreachable)\n)\n",
        &wat[..start]
    )
}

fn now_stamp() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// One measurement as uploaded: the envelope's exact bytes, under a report of its own.
struct Prepared {
    test_name: String,
    report_id: String,
    body: Vec<u8>,
}

/// Corpus measurements of `test_name` that give a row, restamped to now so that OONI's
/// date check leaves them alone.
fn candidates(test_name: &str) -> Vec<Value> {
    corpus_measurements()
        .into_iter()
        .filter(|(rel, _)| rel.starts_with(&format!("{test_name}/")))
        .filter(|(rel, _)| expected_for(rel)["dropped"] != json!(true))
        .map(|(_, m)| m)
        .filter(|m| {
            m["test_name"] == test_name
                && m["probe_cc"].as_str().is_some_and(|c| c != "ZZ")
                && m["probe_asn"].as_str().is_some_and(|a| {
                    !a.trim_start_matches("AS")
                        .trim_start_matches('0')
                        .is_empty()
                })
        })
        .map(|mut m| {
            m["measurement_start_time"] = json!(now_stamp());
            m
        })
        .collect()
}

/// The scores the engine's own scoring path gives `body` with the bundled plugins only.
fn score_alone(registry: &Registry, uid: &str, body: &[u8]) -> ooni_core::FastpathRow {
    match score_measurement(registry, uid, body) {
        Scoring::Row(r) => *r,
        Scoring::Drop(d) => panic!("{uid}: no row: {:?}", d.reason),
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_failing_on_every_call_fails_only_its_own_measurements() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join("soak_failing.wat"), hostile_wat()).unwrap();
    let db = TestDb::new(Db::Sqlite, dir.path()).await;
    let engine = Engine::start(
        &dir.path().join("data"),
        &db.url,
        &[
            ("OONI_PLUGINS_DIR", plugins.to_str().unwrap()),
            ("OONI_ADMIN_TOKEN", TOKEN),
            ("OONI_UPLOAD_INTERVAL_SECS", "0"),
            // Room for every upload of the run: no overflow, so no catch-up scan that
            // could score a queued measurement a second time.
            ("OONI_SCORING_QUEUE", "100000"),
            ("OONI_SCORING_QUEUE_MB", "4096"),
        ],
    );
    let c = client();
    let pid = engine.child.id();

    // The hostile file took telegram over; everything else kept its bundled scorer.
    let status = admin_get(&c, &engine, "/admin/plugins", TOKEN).await;
    assert!(status["refused"].as_array().unwrap().is_empty(), "{status}");
    let scorer_of = |t: &str| {
        status["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|p| p["test_names"].as_array().unwrap().iter().any(|n| n == t))
            .map(|p| p["name"].as_str().unwrap().to_owned())
    };
    assert_eq!(scorer_of(FAILING).as_deref(), Some(HOSTILE), "{status}");
    for t in HEALTHY {
        assert!(
            scorer_of(t).is_some_and(|s| s != HOSTILE),
            "{t} has no bundled scorer: {status}"
        );
    }

    // The same scoring path, in process, with the bundled plugins alone: what each
    // healthy measurement must score. Keep those it scores as a success.
    let alone = Registry::new(
        RegistryOptions {
            dir: None,
            limits: Limits::default(),
            bundled: true,
            cache_dir: None,
        },
        Fingerprints::new(FingerprintSet::empty()),
    )
    .unwrap();
    let mut chosen: Vec<Value> = Vec::new();
    for t in HEALTHY.iter().copied().chain([FAILING]) {
        let mut n = 0;
        for m in candidates(t) {
            let body = serde_json::to_vec(&json!({"format": "json", "content": m})).unwrap();
            let cc = m["probe_cc"].as_str().unwrap();
            let uid = ooni_core::ids::format_measurement_uid(chrono::Utc::now(), cc, t, &body);
            if t == FAILING || !score_alone(&alone, &uid, &body).msm_failure {
                chosen.push(m);
                n += 1;
            }
        }
        assert!(n > 0, "no usable {t} measurement in the corpus");
    }

    // Every uploader opens its own reports and cycles through all of them.
    let mut uploaders = Vec::new();
    for _ in 0..UPLOADERS {
        let mut mine = Vec::new();
        for m in &chosen {
            let report_id = open_report(&c, &engine, m).await;
            let mut content = m.clone();
            content["report_id"] = json!(report_id);
            mine.push(Prepared {
                test_name: m["test_name"].as_str().unwrap().to_owned(),
                report_id,
                body: serde_json::to_vec(&json!({"format": "json", "content": content})).unwrap(),
            });
        }
        uploaders.push(mine);
    }
    let uploaders: Vec<Arc<Vec<Prepared>>> = uploaders.into_iter().map(Arc::new).collect();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for (w, mine) in uploaders.iter().enumerate() {
        let (c, base, mine) = (c.clone(), engine.base.clone(), mine.clone());
        tasks.push(tokio::spawn(async move {
            let mut done: Vec<(String, usize)> = Vec::new();
            let mut i = w;
            while started.elapsed() < RUN {
                let k = i % mine.len();
                i += 1;
                let p = &mine[k];
                let r = c
                    .post(format!("{base}/report/{}", p.report_id))
                    .header("content-type", "application/json")
                    .body(p.body.clone())
                    .send()
                    .await
                    .unwrap();
                if r.status() != 200 {
                    panic!(
                        "{}: {} {}",
                        p.test_name,
                        r.status(),
                        r.text().await.unwrap()
                    );
                }
                done.push((uid_of(r).await, k));
            }
            done
        }));
    }
    // The engine under load, its connections and database pool open: the first sample.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fds_start = open_fds(pid);
    let mut uploads: Vec<(String, usize, usize)> = Vec::new();
    for (w, t) in tasks.into_iter().enumerate() {
        uploads.extend(t.await.unwrap().into_iter().map(|(uid, k)| (uid, w, k)));
    }

    let uids: Vec<String> = uploads.iter().map(|u| u.0.clone()).collect();
    let store = db.store().await;
    let rows = rows_by_uid(&store, &uids, Duration::from_secs(600)).await;

    let (mut healthy, mut failing) = (0u64, 0u64);
    let mut expected: HashMap<(usize, usize), ooni_core::FastpathRow> = HashMap::new();
    for (uid, w, k) in &uploads {
        let p = &uploaders[*w][*k];
        let row = rows
            .get(uid)
            .unwrap_or_else(|| panic!("{uid} ({}) has no row", p.test_name));
        assert_eq!(row.test_name, p.test_name, "{uid}");
        if p.test_name == FAILING {
            failing += 1;
            assert_eq!(row.scorer_name, HOSTILE, "{uid}");
            assert!(row.msm_failure, "{uid}");
            assert!(
                row.scores.contains("\"msg\":\"scorer error: trapped"),
                "{uid}: {}",
                row.scores
            );
        } else {
            healthy += 1;
            let want = expected
                .entry((*w, *k))
                .or_insert_with(|| score_alone(&alone, uid, &p.body));
            assert_eq!(row.scorer_name, want.scorer_name, "{uid}");
            assert_eq!(row.scorer_version, want.scorer_version, "{uid}");
            assert_eq!(row.scores, want.scores, "{uid} ({})", p.test_name);
            assert_eq!(
                (row.anomaly, row.confirmed, row.msm_failure),
                (want.anomaly, want.confirmed, want.msm_failure),
                "{uid}"
            );
            assert!(!row.msm_failure, "{uid}: {}", row.scores);
            assert!(
                !row.scores.contains("scorer error"),
                "{uid}: {}",
                row.scores
            );
        }
    }
    assert!(
        healthy > 0 && failing > 0,
        "{healthy} healthy, {failing} failing"
    );

    // One failure counted per failing measurement, and nothing else counted as one:
    // in /admin/plugins and in /metrics.
    let status = admin_get(&c, &engine, "/admin/plugins", TOKEN).await;
    let hostile = status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == HOSTILE)
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(hostile["calls"], json!(failing), "{hostile}");
    assert_eq!(hostile["failures"], json!(failing), "{hostile}");
    assert!(
        hostile["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("trapped")),
        "{hostile}"
    );
    for p in status["plugins"].as_array().unwrap() {
        if p["name"] != HOSTILE {
            assert_eq!(p["failures"], json!(0), "{p}");
        }
    }
    let text = metrics_text(&c, &engine).await;
    let hostile_series = format!("{{plugin=\"{HOSTILE}\"}}");
    assert_eq!(
        counter(
            &text,
            &format!("ooni_plugin_failures_total{hostile_series}")
        ),
        failing
    );
    assert_eq!(
        counter(&text, &format!("ooni_plugin_calls_total{hostile_series}")),
        failing
    );
    for l in text.lines() {
        if l.starts_with("ooni_plugin_failures_total{") && !l.contains(&hostile_series) {
            assert!(l.ends_with(" 0"), "{l}");
        }
    }
    assert_eq!(counter(&text, "ooni_score_queue_overflows_total"), 0);
    assert_eq!(
        counter(&text, "ooni_uploads_accepted_total"),
        healthy + failing
    );
    assert_eq!(counter(&text, "ooni_rows_written_total"), healthy + failing);
    assert_eq!(counter(&text, "ooni_drops_written_total"), 0);

    let fds_end = open_fds(pid);
    assert!(
        fds_end <= fds_start + FD_SLACK,
        "open files grew from {fds_start} to {fds_end}"
    );
    eprintln!(
        "{healthy} healthy and {failing} failing measurements; open files {fds_start} -> {fds_end}"
    );
    drop(engine);
    db.drop_db().await;
}
