//! Operators edit fingerprint files under a running engine: a new fingerprint
//! confirms blocking from the next measurement on, with no upload failing; broken
//! files are refused with their file, line and problem while the previous set serves.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "fp-admin-token";

struct Harness {
    engine: Engine,
    c: reqwest::Client,
    db: TestDb,
    dir: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

async fn start() -> Harness {
    start_with(&[]).await
}

async fn start_with(extra_env: &[(&str, &str)]) -> Harness {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fingerprints");
    std::fs::create_dir_all(&dir).unwrap();
    let db = TestDb::new(Db::Sqlite, tmp.path()).await;
    let engine = Engine::start(
        &tmp.path().join("data"),
        &db.url,
        &[
            &[
                ("OONI_FINGERPRINTS_DIR", dir.to_str().unwrap()),
                ("OONI_ADMIN_TOKEN", TOKEN),
            ],
            extra_env,
        ]
        .concat(),
    );
    Harness {
        engine,
        c: client(),
        db,
        dir,
        _tmp: tmp,
    }
}

impl Harness {
    async fn status(&self) -> Value {
        admin_get(&self.c, &self.engine, "/admin/fingerprints", TOKEN).await
    }

    async fn wait_for(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        admin_wait(
            &self.c,
            &self.engine,
            "/admin/fingerprints",
            TOKEN,
            what,
            Duration::from_secs(10),
            check,
        )
        .await
    }
}

const FP: &str = r#"
[[http]]
name = "example.isp_blockpage"
scope = "isp"
location_found = "body"
pattern_type = "contains"
pattern = "Blocked by Example ISP"
expected_countries = ["IT"]
"#;

fn blockpage_measurement() -> Value {
    json!({
        "test_name": "web_connectivity", "probe_cc": "IT", "probe_asn": "AS30722",
        "software_name": "fp-e2e", "software_version": "1", "test_version": "0.4.3",
        "test_start_time": "2026-11-27 00:00:00", "measurement_start_time": "2026-11-27 00:00:01",
        "input": "http://example.org/",
        "test_keys": {
            "blocking": "http-diff", "accessible": false,
            "requests": [{"request": {"url": "http://example.org/"},
                          "response": {"code": 200, "body": "<html><h1>Blocked by Example ISP</h1></html>", "headers": {"Server": "x"}}}]
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_fingerprint_confirms_from_the_next_measurement_under_load() {
    let h = start().await;
    assert_eq!(h.status().await["version"], json!(""));
    let msm = blockpage_measurement();
    let rid = open_report(&h.c, &h.engine, &msm).await;
    let mut content = msm.clone();
    content["report_id"] = json!(rid);
    let body = Arc::new(json!({"format": "json", "content": content}).to_string());

    // (uid, when its upload was sent)
    let acked = Arc::new(Mutex::new(Vec::<(String, Instant)>::new()));
    let failed = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));
    let mut probes = Vec::new();
    for _ in 0..8 {
        let (c, url, body, acked, failed, stop) = (
            h.c.clone(),
            h.engine.url(&format!("/report/{rid}")),
            body.clone(),
            acked.clone(),
            failed.clone(),
            stop.clone(),
        );
        probes.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let r = c.post(&url).body(body.as_str().to_owned()).send().await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .push((v["measurement_uid"].as_str().unwrap().to_owned(), sent));
                    }
                    _ => *failed.lock().unwrap() += 1,
                }
            }
        }));
    }
    // Let rows be scored with the old (empty) set first, however busy the machine.
    let store = h.db.store().await;
    let t = Instant::now();
    while store.count_rows().await.unwrap() < 50 {
        assert!(t.elapsed() < Duration::from_secs(30), "no rows scored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(h.dir.join("example.toml"), FP).unwrap();
    let s = h
        .wait_for("the new set", |s| s["version"] != json!(""))
        .await;
    let seen_at = Instant::now();
    let version = s["version"].as_str().unwrap().to_owned();
    assert_eq!(
        (s["http"].as_u64(), s["last_error"].is_null()),
        (Some(1), true)
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    for p in probes {
        p.await.unwrap();
    }
    assert_eq!(
        *failed.lock().unwrap(),
        0,
        "no upload failed during the reload"
    );

    let acked = acked.lock().unwrap().clone();
    let uids: Vec<String> = acked.iter().map(|(u, _)| u.clone()).collect();
    let rows = rows_by_uid(&store, &uids, Duration::from_secs(60)).await;
    // The set is swapped atomically: every row names either the old (empty) set or
    // the new one, and nothing sent after the new version was visible is scored with
    // the old one. So the version column changes exactly once.
    let mut distinct: Vec<&str> = rows
        .values()
        .map(|r| r.fingerprints_version.as_str())
        .collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct,
        ["", version.as_str()],
        "exactly two versions: before and after"
    );
    for (u, sent) in &acked {
        if *sent > seen_at {
            assert_eq!(
                rows[u].fingerprints_version, version,
                "{u} was sent after the swap"
            );
        }
    }
    for u in &uids {
        let r = &rows[u];
        let with_set = r.fingerprints_version == version;
        assert_eq!(
            r.confirmed, with_set,
            "{u}: confirmed only with the new set"
        );
        assert_eq!(r.scores.contains("example.isp_blockpage"), with_set);
    }
    let before = rows
        .values()
        .filter(|r| r.fingerprints_version.is_empty())
        .count();
    eprintln!(
        "{} uploads: {before} scored before the new fingerprint, {} after",
        uids.len(),
        uids.len() - before
    );
    assert!(before > 0 && before < uids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_files_are_refused_and_the_previous_set_keeps_serving() {
    let h = start().await;
    std::fs::write(h.dir.join("good.toml"), FP).unwrap();
    let s = h.wait_for("the good set", |s| s["http"] == json!(1)).await;
    let good = s["version"].as_str().unwrap().to_owned();
    let reloads = s["reloads"].as_u64().unwrap();

    let cases: [(&str, String, &str); 5] = [
        (
            "bad TOML",
            "[[http]]\nname = \"x\"\nscope = \n".into(),
            "bad.toml:3",
        ),
        (
            "unknown field",
            FP.replace("scope = \"isp\"", "scope = \"isp\"\ncolour = \"red\"")
                .replace("example.isp_blockpage", "other"),
            "colour",
        ),
        (
            "invalid regex",
            FP.replace("\"contains\"", "\"regexp\"")
                .replace("Blocked by Example ISP", "(unclosed")
                .replace("example.isp_blockpage", "other"),
            "invalid regexp",
        ),
        (
            "duplicate name",
            FP.to_owned(),
            "duplicate name \"example.isp_blockpage\"",
        ),
        (
            "unknown scope",
            FP.replace("\"isp\"", "\"global\"")
                .replace("example.isp_blockpage", "other"),
            "unknown scope",
        ),
    ];
    for (what, text, needle) in cases {
        std::fs::write(h.dir.join("bad.toml"), &text).unwrap();
        let s = h.wait_for(what, |s| s["last_error"].is_string()).await;
        let err = s["last_error"].as_str().unwrap();
        assert!(err.contains("bad.toml:"), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {err}");
        assert_eq!(
            s["version"],
            json!(good),
            "{what}: the previous set keeps serving"
        );
        // And it really serves: a blockpage is still confirmed.
        let uid = submit_measurement(&h.c, &h.engine, &blockpage_measurement()).await;
        let store = h.db.store().await;
        let rows = rows_by_uid(&store, std::slice::from_ref(&uid), Duration::from_secs(20)).await;
        assert!(rows[&uid].confirmed, "{what}");
        std::fs::remove_file(h.dir.join("bad.toml")).unwrap();
        h.wait_for("recovery", |s| s["last_error"].is_null()).await;
    }

    // POST /admin/reload and SIGHUP reload too.
    let s = h.status().await;
    let n = s["reloads"].as_u64().unwrap();
    assert!(n > reloads);
    let r: Value =
        h.c.post(h.engine.url("/admin/reload"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(r["fingerprints"]["version"], json!(good));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(h.engine.child.id() as i32, libc::SIGHUP) };
    h.wait_for("SIGHUP reload", |s| s["reloads"].as_u64().unwrap() >= n + 2)
        .await;
}
