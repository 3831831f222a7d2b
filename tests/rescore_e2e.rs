//! Rescoring from the cans: measurements scored without a fingerprint are canned;
//! an operator adds the fingerprint and rescores the day; the rows change and their
//! provenance columns say so. Dry runs change nothing; filters narrow the job; an
//! interrupted job resumes where it stopped.

mod common;

use chrono::Utc;
use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const TOKEN: &str = "rescore-admin-token";

const FP: &str = r#"
[[http]]
name = "example.isp_blockpage"
scope = "isp"
location_found = "body"
pattern_type = "contains"
pattern = "Blocked by Example ISP"
expected_countries = ["IT", "DE"]
"#;

/// An operator's replacement ndt scorer.
const NDT_V2: &str = r#"
name = "ndt"
version = "0.93.0"
test_names = ["ndt"]
start = "blocking"

[[rule]]
set = { blocking_general = 1.0 }
"#;

fn web(cc: &str, asn: &str, body: &str) -> Value {
    let now = Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    json!({
        "test_name": "web_connectivity", "probe_cc": cc, "probe_asn": asn,
        "software_name": "rescore-e2e", "software_version": "1", "test_version": "0.4.3",
        "test_start_time": now, "measurement_start_time": now,
        "input": "http://example.org/",
        "test_keys": {
            "blocking": "http-diff", "accessible": false,
            "requests": [{"request": {"url": "http://example.org/"},
                          "response": {"code": 200, "body": body, "headers": {"Server": "x"}}}]
        }
    })
}

fn ndt() -> Value {
    let now = Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    json!({
        "test_name": "ndt", "probe_cc": "IT", "probe_asn": "AS30722",
        "software_name": "rescore-e2e", "software_version": "1", "test_version": "0.1.0",
        "test_start_time": now, "measurement_start_time": now, "test_keys": {}
    })
}

fn cli_ok(out: std::process::Output) -> (String, Value) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    (stdout, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_fingerprints_reach_the_past_through_rescore() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let fp_dir = tmp.path().join("fingerprints");
    std::fs::create_dir_all(&fp_dir).unwrap();
    let plugins_dir = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins_dir).unwrap();
    let db = TestDb::new(Db::Sqlite, tmp.path()).await;
    let env = [
        ("OONI_UPLOAD_INTERVAL_SECS", "0"),
        ("OONI_ADMIN_TOKEN", TOKEN),
        ("OONI_FINGERPRINTS_DIR", fp_dir.to_str().unwrap()),
        ("OONI_PLUGINS_DIR", plugins_dir.to_str().unwrap()),
    ];
    let mut e = Engine::start(&data, &db.url, &env);
    let c = client();
    let page = "<html><h1>Blocked by Example ISP</h1></html>";
    let mut it_blocked = Vec::new();
    let mut de_blocked = Vec::new();
    for _ in 0..3 {
        it_blocked.push(submit_measurement(&c, &e, &web("IT", "AS30722", page)).await);
        de_blocked.push(submit_measurement(&c, &e, &web("DE", "AS3320", page)).await);
    }
    let plain = submit_measurement(&c, &e, &web("IT", "AS30722", "<html>hello</html>")).await;
    let ndt_uid = submit_measurement(&c, &e, &ndt()).await;
    let all: Vec<String> = [
        &it_blocked[..],
        &de_blocked[..],
        &[plain.clone(), ndt_uid.clone()],
    ]
    .concat();
    let store = db.store().await;
    let before = rows_by_uid(&store, &all, Duration::from_secs(30)).await;
    for u in it_blocked.iter().chain(&de_blocked) {
        assert!(!before[u].confirmed, "no fingerprint yet");
    }
    let r = c
        .post(e.url("/admin/upload?all=true"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(e.terminate().success());

    std::fs::write(fp_dir.join("example.toml"), FP).unwrap();
    let today = Utc::now().date_naive();
    let (start, end) = (
        (today - chrono::Duration::days(1)).to_string(),
        (today + chrono::Duration::days(1)).to_string(),
    );
    let days = ["rescore", "--start-day", &start, "--end-day", &end];

    // Dry run: says what would change, changes nothing.
    let (stdout, report) = cli_ok(run_cli(
        &[&days[..], &["--dry-run"]].concat(),
        &data,
        &db.url,
        &env,
    ));
    assert_eq!(report["measurements"], json!(all.len()), "{report}");
    for u in it_blocked.iter().chain(&de_blocked) {
        assert!(
            stdout.contains(&format!("{u}: confirmed: false -> true")),
            "{u} missing from:\n{stdout}"
        );
    }
    assert!(!stdout.contains(&format!("{ndt_uid}: confirmed")));
    let now_rows = rows_by_uid(&store, &all, Duration::from_secs(1)).await;
    assert_eq!(now_rows, before, "a dry run writes nothing");

    // Filters: only German web_connectivity cans.
    let (_, report) = cli_ok(run_cli(
        &[
            &days[..],
            &["--test-name", "web_connectivity", "--cc", "de"],
        ]
        .concat(),
        &data,
        &db.url,
        &env,
    ));
    assert_eq!(report["measurements"], json!(de_blocked.len()), "{report}");
    let rows = rows_by_uid(&store, &all, Duration::from_secs(1)).await;
    for u in &de_blocked {
        assert!(rows[u].confirmed);
        assert_ne!(rows[u].fingerprints_version, before[u].fingerprints_version);
        assert!(
            rows[u].scores.contains("\"confirmed\":true"),
            "{}",
            rows[u].scores
        );
    }
    for u in &it_blocked {
        assert_eq!(rows[u], before[u], "outside the filter");
    }

    // A changed scorer as well: ndt now flags everything.
    std::fs::write(plugins_dir.join("ndt.toml"), NDT_V2).unwrap();

    // Interrupted after its first can, then resumed: finished cans are skipped.
    let out = run_cli(
        &days,
        &data,
        &db.url,
        &[&env[..], &[("OONI_FAILPOINTS", "rescore_after_can")]].concat(),
    );
    assert!(!out.status.success());
    let (_, report) = cli_ok(run_cli(&days, &data, &db.url, &env));
    assert_eq!(report["cans_skipped_as_done"], json!(1), "{report}");
    let after: HashMap<_, _> = rows_by_uid(&store, &all, Duration::from_secs(1)).await;
    for u in it_blocked.iter().chain(&de_blocked) {
        let (b, a) = (&before[u], &after[u]);
        assert!(a.confirmed && !b.confirmed, "{u}");
        assert_eq!(a.blocking_type, b.blocking_type);
        assert_ne!(a.fingerprints_version, b.fingerprints_version, "provenance");
        assert!(!a.fingerprints_version.is_empty());
        assert_eq!(a.scorer_name, "web_connectivity");
        assert_eq!(a.report_id, b.report_id);
    }
    assert!(!after[&plain].confirmed);
    let (b, a) = (&before[&ndt_uid], &after[&ndt_uid]);
    assert_eq!(
        (b.scorer_name.as_str(), b.scorer_version.as_str()),
        ("ndt", "0.92.0")
    );
    assert_eq!(
        (a.scorer_name.as_str(), a.scorer_version.as_str()),
        ("ndt", "0.93.0")
    );
    assert!(a.anomaly && !b.anomaly, "{}", a.scores);
    // The job is finished: its progress file is gone.
    let left: Vec<_> = std::fs::read_dir(data.join("rescore")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    db.drop_db().await;
}
