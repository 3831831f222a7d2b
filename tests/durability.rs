//! An acknowledged measurement survives SIGKILL: kill the engine while uploads are in
//! flight, restart it on the same spool and database, and every acknowledged uid has
//! exactly one row (or OONI's drop record), none duplicated and none lost.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Small corpus measurements that produce rows, with their report ids opened:
/// (report id, JSON envelope).
async fn payloads(c: &reqwest::Client, e: &Engine) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (rel, msm) in corpus_measurements() {
        if expected_for(&rel)["dropped"] == json!(true) || msm.to_string().len() > 20_000 {
            continue;
        }
        let rid = open_report(c, e, &msm).await;
        let mut content = msm.clone();
        content["report_id"] = json!(rid);
        out.push((
            rid,
            json!({"format": "json", "content": content}).to_string(),
        ));
        if out.len() == 24 {
            break;
        }
    }
    out
}

async fn kill_during_uploads(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tdb = TestDb::new(db, dir.path()).await;
    let c = client();
    let mut engine = Engine::start(&data, &tdb.url, &[]);
    let payloads = Arc::new(payloads(&c, &engine).await);
    let stop = Arc::new(AtomicBool::new(false));
    let probes = spawn_uploaders(&c, &engine.base, payloads, 16, stop.clone());
    // Kill once uploads are flowing (the engine may still be compiling its scorers
    // on a loaded machine): at least 150 acknowledged, and at least 1.5 s in.
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    while started.elapsed() < Duration::from_secs(30) {
        let text = metrics_text(&c, &engine).await;
        if metric(&text, "ooni_uploads_accepted_total").is_some_and(|n| n >= 150.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    engine.kill(); // SIGKILL
    stop.store(true, Ordering::Relaxed);
    let (acked, _) = join_uploaders(probes).await;
    assert!(
        acked.len() > 100,
        "only {} uploads acknowledged before the kill",
        acked.len()
    );

    let store = tdb.store().await;
    let before = store.count_rows().await.unwrap() as usize;
    let engine = Engine::start(&data, &tdb.url, &[]);
    wait_all_known(&store, &acked, Duration::from_secs(60)).await;
    let rows = store.fetch_rows(&acked).await.unwrap();
    assert_eq!(rows.len(), acked.len(), "every acknowledged uid has a row");
    let mut uids: Vec<&str> = rows.iter().map(|r| r.measurement_uid.as_str()).collect();
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), acked.len(), "no uid twice");
    // Rows only ever come from spooled files: one row per file, nothing extra.
    let spooled = walk_posts(&data.join("spool/incoming"));
    let total = store.count_rows().await.unwrap() as usize;
    assert!(
        total >= acked.len() && total <= spooled,
        "{total} rows, {spooled} spool files"
    );
    eprintln!(
        "{db:?}: {} acknowledged before SIGKILL, {before} rows at the kill, {total} rows after restart, {spooled} spool files",
        acked.len()
    );
    drop(engine);
    tdb.drop_db().await;
}

fn walk_posts(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for d in std::fs::read_dir(dir).unwrap() {
        let d = d.unwrap().path();
        if d.is_dir() {
            n += std::fs::read_dir(&d)
                .unwrap()
                .filter(|f| {
                    f.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|e| e == "post")
                })
                .count();
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_upload_sqlite() {
    kill_during_uploads(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_upload_postgres() {
    kill_during_uploads(Db::Postgres).await;
}

/// SIGTERM drains: the engine exits 0 and every acknowledged upload has its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tdb = TestDb::new(Db::Sqlite, dir.path()).await;
    let c = client();
    let mut engine = Engine::start(&data, &tdb.url, &[("OONI_DB_BATCH_WAIT_MS", "2000")]);
    let payloads = payloads(&c, &engine).await;
    let mut acked = Vec::new();
    for (rid, body) in &payloads {
        let v: Value = post_body(&c, &engine, rid, body.clone())
            .await
            .json()
            .await
            .unwrap();
        acked.push(v["measurement_uid"].as_str().unwrap().to_owned());
    }
    // The batch window is 2 s, so the rows are still in memory when SIGTERM arrives.
    let status = engine.terminate();
    assert!(status.success(), "{status:?}");
    let store = tdb.store().await;
    assert_eq!(store.known_uids(&acked).await.unwrap().len(), acked.len());
}

/// After a crash, files the earlier process left are checked against the hash in
/// their uid: a torn one (a write the crash cut before its sync, so never
/// acknowledged) goes to `spool/quarantine/` and gets no row; a whole one is scored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_files_left_by_a_crash_are_quarantined_and_whole_ones_scored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tdb = TestDb::new(Db::Sqlite, dir.path()).await;
    let c = client();
    let mut engine = Engine::start(&data, &tdb.url, &[("OONI_UPLOAD_INTERVAL_SECS", "0")]);
    let (rid, body) = payloads(&c, &engine).await.remove(0);
    let uid = uid_of(post_body(&c, &engine, &rid, body).await).await;
    assert!(engine.terminate().success());
    // Two more files as a crashed process would leave them: same body hash, other
    // microseconds; one whole, one cut short.
    let incoming = data.join("spool/incoming");
    let hour_dir = std::fs::read_dir(&incoming)
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    let content = std::fs::read(hour_dir.join(format!("{uid}.post"))).unwrap();
    let with_micros = |m: &str| format!("{}{m}{}", &uid[..15], &uid[21..]);
    let (whole, torn) = (with_micros("999998"), with_micros("999999"));
    std::fs::write(hour_dir.join(format!("{whole}.post")), &content).unwrap();
    std::fs::write(
        hour_dir.join(format!("{torn}.post")),
        &content[..content.len() / 2],
    )
    .unwrap();

    let engine = Engine::start(&data, &tdb.url, &[("OONI_UPLOAD_INTERVAL_SECS", "0")]);
    let store = tdb.store().await;
    wait_all_known(
        &store,
        std::slice::from_ref(&whole),
        Duration::from_secs(60),
    )
    .await;
    assert!(data.join(format!("spool/quarantine/{torn}.post")).is_file());
    assert!(!hour_dir.join(format!("{torn}.post")).exists());
    assert!(store.known_uids(&[torn]).await.unwrap().is_empty());
    let m = metrics_text(&c, &engine).await;
    assert_eq!(metric(&m, "ooni_quarantined_total"), Some(1.0), "{m}");
    drop(engine);
    tdb.drop_db().await;
}
