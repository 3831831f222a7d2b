//! Crash safety under load: the engine is SIGKILLed at random moments — while probes
//! upload, while rows are batched, while the uploader packs, stores and indexes cans —
//! twenty times over one spool, database and object store. After the last restart and
//! one uploader pass, every acknowledged uid has exactly one row and is in exactly one
//! can or still in the spool; no can holds a uid twice.

mod common;

use common::*;
use ooni_engine::cans::read::read_postcan;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "crash-loop-admin-token";

fn kills() -> usize {
    std::env::var("OONI_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Hand-written measurements of a few test names and countries, so that the spool
/// has several hour directories and the uploader several cans to make.
fn measurements() -> Vec<Value> {
    let mut out = Vec::new();
    for (i, (test_name, cc, asn)) in [
        ("web_connectivity", "IT", "AS30722"),
        ("telegram", "DE", "AS3320"),
        ("ndt", "BR", "AS28573"),
    ]
    .into_iter()
    .enumerate()
    {
        for j in 0..4 {
            out.push(json!({
                "test_name": test_name,
                "probe_cc": cc,
                "probe_asn": asn,
                "input": if test_name == "web_connectivity" { json!(format!("https://example.org/{i}/{j}")) } else { Value::Null },
                "test_start_time": "2026-11-27 00:00:00",
                "measurement_start_time": "2026-11-27 00:00:01",
                "data_format_version": "0.2.0",
                "software_name": "ooniprobe-cli",
                "software_version": "3.20.0",
                "test_version": "0.1.0",
                "test_keys": {"accessible": true, "blocking": false, "padding": "x".repeat(200 * j)}
            }));
        }
    }
    out
}

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("OONI_ADMIN_TOKEN", TOKEN),
        // Passes are started by the test, at random moments.
        ("OONI_UPLOAD_INTERVAL_SECS", "0"),
        // Small cans: a pass stores many, so a kill lands between its steps.
        ("OONI_CAN_MAX_BYTES", "3000"),
        ("OONI_CAN_MAX_RAW_BYTES", "20000"),
        ("OONI_DB_BATCH_WAIT_MS", "50"),
    ]
}

async fn admin_upload(c: &reqwest::Client, base: &str) -> Option<Value> {
    let r = c
        .post(format!("{base}/admin/upload?all=true"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

async fn crash_loop(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tdb = TestDb::new(db, dir.path()).await;
    let c = client();
    let mut acked = Vec::<String>::new();
    let mut payloads: Vec<(String, String)> = Vec::new();
    let mut rng = rand::thread_rng();
    let (mut kills_while_uploading, mut kills_while_canning) = (0, 0);

    for _ in 0..kills() {
        let mut engine = Engine::start(&data, &tdb.url, &env());
        if payloads.is_empty() {
            for m in measurements() {
                let rid = open_report(&c, &engine, &m).await;
                let mut content = m.clone();
                content["report_id"] = json!(rid);
                payloads.push((
                    rid,
                    json!({"format": "json", "content": content}).to_string(),
                ));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut probes = spawn_uploaders(
            &c,
            &engine.base,
            Arc::new(payloads.clone()),
            6,
            stop.clone(),
        );
        let upload_for = Duration::from_millis(rng.gen_range(150..700));
        if rng.gen_bool(0.4) {
            // Killed mid-upload, rows partly batched.
            tokio::time::sleep(upload_for).await;
            engine.kill();
            kills_while_uploading += 1;
            stop.store(true, Ordering::Relaxed);
        } else {
            // Uploads pause so that the hours are scored, an uploader pass starts,
            // and the kill lands somewhere inside it.
            tokio::time::sleep(upload_for).await;
            stop.store(true, Ordering::Relaxed);
            acked.extend(join_uploaders(std::mem::take(&mut probes)).await.0);
            tokio::time::sleep(Duration::from_millis(150)).await;
            let (c2, base) = (c.clone(), engine.base.clone());
            let pass = tokio::spawn(async move { admin_upload(&c2, &base).await });
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..600))).await;
            engine.kill();
            kills_while_canning += 1;
            let _ = pass.await;
        }
        acked.extend(join_uploaders(probes).await.0);
    }

    let canned_during_kills = files_ending(&data.join("objects"), ".tar.gz").len();
    // Restart, let recovery score everything, and let one full uploader pass settle
    // whatever a kill left between its steps.
    let engine = Engine::start(&data, &tdb.url, &env());
    let store = tdb.store().await;
    wait_all_known(&store, &acked, Duration::from_secs(120)).await;
    let pass = admin_upload(&c, &engine.base)
        .await
        .expect("an uploader pass");
    assert!(pass["error"].is_null(), "{pass}");
    drop(engine);

    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len(), "a uid acknowledged twice");
    let rows = store.fetch_rows(&acked).await.unwrap();
    assert_eq!(
        rows.len(),
        acked.len(),
        "every acknowledged uid has one row"
    );

    let mut in_cans: HashMap<String, usize> = HashMap::new();
    let mut cans = 0;
    for can in files_ending(&data.join("objects"), ".tar.gz") {
        cans += 1;
        let bytes = std::fs::read(&can).unwrap();
        for posted in read_postcan(&bytes, usize::MAX).unwrap() {
            *in_cans.entry(posted.uid).or_default() += 1;
        }
    }
    let spooled: HashSet<String> = files_ending(&data.join("spool/incoming"), ".post")
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches(".post")
                .to_owned()
        })
        .collect();
    for (uid, n) in &in_cans {
        assert_eq!(*n, 1, "{uid} is in {n} cans");
    }
    for uid in &acked {
        let places = in_cans.get(uid).copied().unwrap_or(0) + usize::from(spooled.contains(uid));
        assert_eq!(places, 1, "{uid}: {places} places (cans and spool)");
    }
    assert_eq!(
        store.indexed_uids(&acked).await.unwrap().len(),
        acked.iter().filter(|u| in_cans.contains_key(*u)).count(),
        "every canned uid is indexed, and only those"
    );
    let canned = acked.iter().filter(|u| in_cans.contains_key(*u)).count();
    assert!(
        canned_during_kills > 0,
        "no uploader pass stored a can between kills"
    );
    eprintln!(
        "{db:?}: {} kills ({kills_while_uploading} while uploading, {kills_while_canning} in uploader passes, {canned_during_kills} cans stored between kills); {} acknowledged, each with one row; {canned} in {cans} cans, {} still spooled",
        kills(),
        acked.len(),
        acked.len() - canned
    );
    tdb.drop_db().await;
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_ending(&p, suffix));
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_lose_and_duplicate_nothing_sqlite() {
    crash_loop(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_lose_and_duplicate_nothing_postgres() {
    crash_loop(Db::Postgres).await;
}
