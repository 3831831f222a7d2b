//! Hostile and malformed uploads: each gets a clear JSON error with the right status,
//! nothing is written outside the spool (nothing at all for a refused upload), and
//! the engine keeps serving.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;

const RID: &str = "20240101T000000Z_webconnectivity_IT_30722_n1_abcdefghijklmnop";

fn measurement() -> Value {
    json!({
        "report_id": RID,
        "test_name": "web_connectivity",
        "probe_cc": "IT",
        "probe_asn": "AS30722",
        "input": "https://example.org/",
        "test_start_time": "2026-11-27 00:00:00",
        "measurement_start_time": "2026-11-27 00:00:01",
        "test_keys": {}
    })
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

struct Case {
    name: &'static str,
    path: String,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    status: u16,
    reason: &'static str,
}

fn case(name: &'static str, body: Vec<u8>, status: u16, reason: &'static str) -> Case {
    Case {
        name,
        path: format!("/report/{RID}"),
        headers: vec![("content-type", "application/json")],
        body,
        status,
        reason,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_clear_errors_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tdb = TestDb::new(Db::Sqlite, dir.path()).await;
    let engine = Engine::start(
        &data,
        &tdb.url,
        &[
            ("OONI_MAX_BODY_BYTES", "1000000"),
            ("OONI_MAX_DECOMPRESSED_BYTES", "2000000"),
            // The uploader's lock file would be a new file that no upload made.
            ("OONI_UPLOAD_INTERVAL_SECS", "0"),
        ],
    );
    let c = client();
    let before = files_under(&data);

    let envelope = |content: Value| {
        json!({"format": "json", "content": content})
            .to_string()
            .into_bytes()
    };
    let with = |f: &dyn Fn(&mut Value)| {
        let mut m = measurement();
        f(&mut m);
        envelope(m)
    };
    let mut invalid_utf8 = envelope(
        json!({"test_name": "web_connectivity", "probe_cc": "IT", "probe_asn": "AS30722", "x": "ab"}),
    );
    let at = invalid_utf8.len() - 4;
    invalid_utf8[at] = 0xc3;
    invalid_utf8[at + 1] = 0x28;
    let bomb = zstd::encode_all(&vec![b' '; 50_000_000][..], 19).unwrap();
    let mut zstd_bomb = case("zstd bomb", bomb, 413, "decompressed_too_large");
    zstd_bomb.headers.push(("content-encoding", "zstd"));
    let mut bad_zstd = case(
        "corrupt zstd",
        b"\x28\xb5\x2f\xfd garbage".to_vec(),
        400,
        "zstd_fail",
    );
    bad_zstd.headers.push(("content-encoding", "zstd"));
    let mut gzip = case(
        "gzip is not spoken",
        envelope(measurement()),
        415,
        "unsupported_encoding",
    );
    gzip.headers.push(("content-encoding", "gzip"));

    let mut cases = vec![
        case(
            "malformed JSON",
            b"{\"format\": \"json\", \"content\": {".to_vec(),
            400,
            "bad_json",
        ),
        case("JSON array", b"[1,2,3]".to_vec(), 400, "bad_json"),
        case(
            "wrong format",
            json!({"format": "yaml", "content": "a: 1"})
                .to_string()
                .into_bytes(),
            400,
            "bad_format",
        ),
        case(
            "no format",
            json!({"content": measurement()}).to_string().into_bytes(),
            400,
            "bad_format",
        ),
        case(
            "missing content",
            json!({"format": "json"}).to_string().into_bytes(),
            400,
            "no_content",
        ),
        case(
            "content not an object",
            json!({"format": "json", "content": "x"})
                .to_string()
                .into_bytes(),
            400,
            "no_content",
        ),
        case("empty body", Vec::new(), 400, "empty_body"),
        case("invalid UTF-8", invalid_utf8, 400, "not_utf8"),
        case(
            "body over the limit",
            vec![b' '; 1_000_001],
            413,
            "body_too_large",
        ),
        zstd_bomb,
        bad_zstd,
        gzip,
        case(
            "missing test_name",
            with(&|m| {
                m.as_object_mut().unwrap().remove("test_name");
            }),
            400,
            "missing_metadata",
        ),
        case(
            "cc differs from report_id",
            with(&|m| m["probe_cc"] = json!("FR")),
            400,
            "inconsistent_measurement",
        ),
        case(
            "asn differs from report_id",
            with(&|m| m["probe_asn"] = json!("AS1")),
            400,
            "inconsistent_measurement",
        ),
        case(
            "test differs from report_id",
            with(&|m| m["test_name"] = json!("ndt")),
            400,
            "inconsistent_measurement",
        ),
        case(
            "lower-case cc",
            with(&|m| m["probe_cc"] = json!("it")),
            400,
            "bad_metadata",
        ),
    ];
    for (name, rid) in [
        (
            "path traversal",
            "..%2F..%2Fetc_webconnectivity_IT_30722_n1_x",
        ),
        (
            "dots in the cc",
            "20240101T000000Z_webconnectivity_.._30722_n1_x",
        ),
        (
            "slash in the cc",
            "20240101T000000Z_webconnectivity_I%2F_30722_n1_x",
        ),
        ("too few parts", "20240101T000000Z_webconnectivity_IT"),
        (
            "non-numeric asn",
            "20240101T000000Z_webconnectivity_IT_AS1_n1_x",
        ),
        (
            "odd characters",
            "20240101T000000Z_web%00connectivity_IT_30722_n1_x",
        ),
        (
            "upper-case test name",
            "20240101T000000Z_WebConnectivity_IT_30722_n1_x",
        ),
    ] {
        cases.push(Case {
            name,
            path: format!("/report/{rid}"),
            headers: vec![],
            body: envelope(measurement()),
            status: 400,
            reason: "bad_report_id",
        });
    }

    for case in &cases {
        let mut req = c.post(engine.url(&case.path)).body(case.body.clone());
        for (k, v) in &case.headers {
            req = req.header(*k, *v);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", case.name));
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert_eq!(body["reason"], json!(case.reason), "{}: {body}", case.name);
        assert!(
            body["error"].is_string() && body["detail"].is_string(),
            "{}: {body}",
            case.name
        );
        assert_eq!(ctype.as_deref(), Some("application/json"), "{}", case.name);
    }

    // Nothing was stored, anywhere.
    let after = files_under(&data);
    let new: Vec<_> = after
        .iter()
        .filter(|f| !before.contains(f) && !f.ends_with(".health"))
        .collect();
    assert!(
        new.iter()
            .all(|f| f.contains("ooni.sqlite") || f.contains("test.sqlite")),
        "new files: {new:?}"
    );
    assert!(!new.iter().any(|f| f.ends_with(".post")), "{new:?}");

    // Still serving: a good upload is accepted and lands in the spool only.
    let ok = c
        .post(engine.url(&format!("/report/{RID}")))
        .body(envelope(measurement()))
        .send()
        .await
        .unwrap();
    let uid = uid_of(ok).await;
    let spooled: Vec<_> = files_under(&data)
        .into_iter()
        .filter(|f| f.ends_with(".post"))
        .collect();
    assert_eq!(spooled.len(), 1);
    assert!(spooled[0].starts_with(&data.join("spool/incoming").to_string_lossy().into_owned()));
    assert!(spooled[0].ends_with(&format!("{uid}.post")));
    let health = c.get(engine.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = metrics_text(&c, &engine).await;
    assert!(
        metrics.contains("ooni_upload_rejections_total{reason=\"bad_json\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_and_as0_report_ids_are_answered_empty_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tdb = TestDb::new(Db::Sqlite, dir.path()).await;
    let engine = Engine::start(&data, &tdb.url, &[]);
    let c = client();
    for rid in [
        "20240101T000000Z_webconnectivity_ZZ_30722_n1_abcdefghijklmnop",
        "20240101T000000Z_webconnectivity_IT_0_n1_abcdefghijklmnop",
    ] {
        let r = c
            .post(engine.url(&format!("/report/{rid}")))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap(), json!({}));
    }
    assert!(!files_under(&data).iter().any(|f| f.ends_with(".post")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_protocol_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let tdb = TestDb::new(Db::Sqlite, dir.path()).await;
    let engine = Engine::start(&dir.path().join("data"), &tdb.url, &[]);
    let c = client();

    // open: OONI's report id format, 61 characters for this probe and a 1-char collector id.
    let open = json!({"data_format_version": "0.2.0", "format": "json", "probe_asn": "AS34245",
        "probe_cc": "IE", "software_name": "ooniprobe", "software_version": "3.0", "test_name": "web_connectivity",
        "test_start_time": "2020-01-01 00:00:00", "test_version": "0.4.0"});
    let r: Value = c
        .post(engine.url("/report"))
        .json(&open)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rid = r["report_id"].as_str().unwrap();
    assert_eq!(rid.len(), 61, "{rid}");
    let parts: Vec<&str> = rid.split('_').collect();
    assert_eq!(&parts[1..5], &["webconnectivity", "IE", "34245", "n1"]);
    assert_eq!(r["supported_formats"], json!(["yaml", "json"]));
    let mut missing = open.clone();
    missing.as_object_mut().unwrap().remove("software_name");
    let r = c
        .post(engine.url("/report"))
        .json(&missing)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = c
        .post(engine.url("/report"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // submit: OONI's uid format.
    let mut m = measurement();
    m["report_id"] = json!(rid);
    m["probe_cc"] = json!("IE");
    m["probe_asn"] = json!("AS34245");
    let body = json!({"format": "json", "content": m}).to_string();
    let z = zstd::encode_all(body.as_bytes(), 3).unwrap();
    let r = c
        .post(engine.url(&format!("/report/{rid}")))
        .header("content-encoding", "zstd")
        .body(z)
        .send()
        .await
        .unwrap();
    let uid = uid_of(r).await;
    let ok = uid.len() == 57 && uid.as_bytes()[14] == b'.' && uid.contains("_IE_webconnectivity_");
    assert!(ok, "{uid}");
    // The spool keeps the decompressed body, and the uid hashes exactly those bytes.
    let hour = &uid[..10];
    let stored = std::fs::read(dir.path().join(format!(
        "data/spool/incoming/{hour}_IE_webconnectivity/{uid}.post"
    )))
    .unwrap();
    assert_eq!(stored, body.as_bytes());
    assert!(uid.ends_with(&ooni_core::ids::body_hash16(body.as_bytes())));

    let r = c
        .post(engine.url(&format!("/report/{rid}/close")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({}));

    // check-in: a report id for each of 21 tests, with the probe's cc and asn.
    let r: Value = c
        .post(engine.url("/api/v1/check-in"))
        .json(&json!({"probe_cc": "it", "probe_asn": "AS30722", "run_type": "timed", "web_connectivity": {"category_codes": ["NEWS"]}}))
        .send().await.unwrap().json().await.unwrap();
    assert_eq!(r["v"], json!(1));
    assert_eq!(r["probe_cc"], json!("IT"));
    let tests = r["tests"].as_object().unwrap();
    assert_eq!(tests.len(), 21);
    let wc = tests["web_connectivity"]["report_id"].as_str().unwrap();
    assert_eq!(
        &wc.split('_').collect::<Vec<_>>()[1..4],
        &["webconnectivity", "IT", "30722"]
    );
    assert!(tests["web_connectivity"]["urls"].is_array());
    let mut conf: Vec<&String> = r["conf"].as_object().unwrap().keys().collect();
    conf.sort();
    assert_eq!(conf, ["features", "test_helpers"]);
    let r = c
        .post(engine.url("/api/v1/check-in"))
        .json(&json!({"web_connectivity": {"category_codes": ["N3WS"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = c
        .get(engine.url("/api/v1/collectors"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "max-age=3600");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v[0]["address"], json!(engine.base));
    let v: Value = c
        .get(engine.url("/api/v1/test-helpers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["web-connectivity"].as_array().unwrap().len() > 1);
    let r = c.get(engine.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let r = c.get(engine.url("/report")).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

/// A measurement nested far deeper than any parser here reads: accepted (it is valid
/// JSON, and what a probe was told is stored is never lost), scored as a failure
/// without exhausting a worker's stack (the cut for a scorer recursed once per level),
/// and the engine keeps scoring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_measurements_are_kept_and_fail_to_score_without_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let tdb = TestDb::new(Db::Sqlite, dir.path()).await;
    let mut engine = Engine::start(&dir.path().join("data"), &tdb.url, &[]);
    let store = tdb.store().await;
    let c = client();
    let levels = 100_000;
    let mut uids = Vec::new();
    // Under a compared path (http_invalid_request_line's `sent`) and under a read one
    // (telegram's `requests`).
    for (test_name, key) in [
        ("http_invalid_request_line", "sent"),
        ("telegram", "requests"),
    ] {
        let msm = json!({"test_name": test_name, "probe_cc": "IT", "probe_asn": "AS30722",
            "test_start_time": "2026-11-27 00:00:00",
            "measurement_start_time": "2026-11-27 00:00:01", "test_keys": {}});
        let rid = open_report(&c, &engine, &msm).await;
        let body = format!(
            r#"{{"format":"json","content":{{"report_id":"{rid}","test_name":"{test_name}","probe_cc":"IT","probe_asn":"AS30722","test_start_time":"2026-11-27 00:00:00","measurement_start_time":"2026-11-27 00:00:01","test_keys":{{"{key}":{}1{}}}}}}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        );
        uids.push(uid_of(post_body(&c, &engine, &rid, body).await).await);
    }
    let ok = submit_measurement(&c, &engine, &measurement()).await;
    uids.push(ok.clone());
    let rows = rows_by_uid(&store, &uids, std::time::Duration::from_secs(60)).await;
    for uid in &uids[..2] {
        let row = &rows[uid];
        assert!(row.msm_failure, "{}: {}", row.test_name, row.scores);
        assert!(row.scores.contains("scorer error"), "{}", row.scores);
    }
    assert!(
        !rows[&ok].scores.contains("scorer error"),
        "{}",
        rows[&ok].scores
    );
    assert_eq!(
        c.get(engine.url("/health")).send().await.unwrap().status(),
        200
    );
    engine.kill();
}
