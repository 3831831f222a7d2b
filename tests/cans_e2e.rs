//! Cans end to end: the corpus uploaded over HTTP, packed by the uploader into OONI's
//! postcans and jsonl cans on a local directory and on a real S3 server (s3s-fs on
//! loopback), indexed, and read back through the API byte for byte; then the faults
//! (S3 down, crashes between steps, a torn can) and rescoring from the cans.

mod common;

use common::*;
use flate2::read::GzDecoder;
use ooni_engine::objstore::{LocalStore, ObjectStore, S3Settings, S3Store};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

const TOKEN: &str = "cans-admin-token";
const COLLECTOR: &str = "1";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Objects {
    Local,
    S3,
}

struct Setup {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    db: TestDb,
    s3: Option<S3Server>,
    env: Vec<(&'static str, String)>,
}

impl Setup {
    async fn new(objects: Objects, db: Db) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let db = TestDb::new(db, tmp.path()).await;
        let s3 = (objects == Objects::S3).then(|| S3Server::start(&tmp.path().join("s3")));
        let mut env = vec![
            ("OONI_UPLOAD_INTERVAL_SECS", "0".to_owned()),
            ("OONI_ADMIN_TOKEN", TOKEN.to_owned()),
            ("OONI_COLLECTOR_ID", COLLECTOR.to_owned()),
        ];
        if let Some(s) = &s3 {
            env.extend(s.env());
        }
        Setup {
            _tmp: tmp,
            data,
            db,
            s3,
            env,
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    fn engine(&self) -> Engine {
        Engine::start(&self.data, &self.db.url, &self.env())
    }

    fn cli(&self, args: &[&str], extra: &[(&str, &str)]) -> std::process::Output {
        let env = [self.env(), extra.to_vec()].concat();
        run_cli(args, &self.data, &self.db.url, &env)
    }

    /// The object store as an independent reader sees it.
    fn objects(&self) -> ObjectStore {
        match &self.s3 {
            None => ObjectStore::Local(LocalStore::new(self.data.join("objects"))),
            Some(s) => ObjectStore::S3(S3Store::new(S3Settings {
                bucket: S3_BUCKET.into(),
                endpoint: s.endpoint(),
                region: "us-east-1".into(),
                access_key_id: S3_ACCESS_KEY.into(),
                secret_access_key: S3_SECRET_KEY.into(),
                path_style: true,
                ..Default::default()
            })),
        }
    }

    fn spooled(&self) -> Vec<String> {
        let mut out = Vec::new();
        let incoming = self.data.join("spool/incoming");
        for d in std::fs::read_dir(&incoming).into_iter().flatten() {
            let d = d.unwrap().path();
            if !d.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&d).unwrap() {
                let name = f.unwrap().file_name().into_string().unwrap();
                if let Some(uid) = name.strip_suffix(".post") {
                    out.push(uid.to_owned());
                }
            }
        }
        out.sort();
        out
    }
}

async fn admin_upload(c: &reqwest::Client, e: &Engine) -> reqwest::Response {
    c.post(e.url("/admin/upload?all=true"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
}

async fn get_body(c: &reqwest::Client, e: &Engine, uid: &str) -> Vec<u8> {
    let r = c
        .get(e.url(&format!("/api/v1/measurement/{uid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{uid}");
    assert_eq!(r.headers()["content-type"], "application/json");
    r.bytes().await.unwrap().to_vec()
}

/// Every body back through both read routes, byte-equal to what was sent.
async fn assert_bodies(c: &reqwest::Client, e: &Engine, expected: &BTreeMap<String, Vec<u8>>) {
    for (uid, line) in expected {
        assert_eq!(&get_body(c, e, uid).await, line, "{uid} via measurement/");
        let r = c
            .get(e.url(&format!("/api/v1/raw_measurement?measurement_uid={uid}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            &r.bytes().await.unwrap().to_vec(),
            line,
            "{uid} via raw_measurement"
        );
    }
}

#[derive(Debug)]
struct IndexRow {
    s3path: String,
    linenum: i32,
    report_id: String,
    input: String,
}

async fn index_rows(db: &TestDb) -> HashMap<String, IndexRow> {
    let store = db.store().await;
    let q = "SELECT measurement_uid, s3path, linenum, report_id, input FROM jsonl";
    let rows: Vec<(String, String, i32, String, String)> = match &store {
        ooni_engine::store::Store::Sqlite(p) => sqlx::query_as(q).fetch_all(p).await.unwrap(),
        ooni_engine::store::Store::Postgres(p) => sqlx::query_as(q).fetch_all(p).await.unwrap(),
    };
    rows.into_iter()
        .map(|(u, s3path, linenum, report_id, input)| {
            (
                u,
                IndexRow {
                    s3path,
                    linenum,
                    report_id,
                    input,
                },
            )
        })
        .collect()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(data).read_to_end(&mut out).unwrap();
    out
}

/// `(member name, body)` of a postcan, decoded here independently of the engine.
fn untar(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(GzDecoder::new(data));
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            (name, body)
        })
        .collect()
}

/// Checks OONI's key template by hand: `raw/{YYYYMMDD}/{HH}/{CC}/{tn}/{YYYYMMDDHH}_{CC}_{tn}.n{cid}.{k}.{ext}`.
fn check_key_shape(key: &str) -> (String, String) {
    let segs: Vec<&str> = key.split('/').collect();
    assert_eq!(segs.len(), 6, "{key}");
    assert_eq!(segs[0], "raw");
    let (day, hh, cc, tn, file) = (segs[1], segs[2], segs[3], segs[4], segs[5]);
    assert!(
        day.len() == 8 && day.bytes().all(|b| b.is_ascii_digit()),
        "{key}"
    );
    assert!(
        hh.len() == 2 && hh.bytes().all(|b| b.is_ascii_digit()),
        "{key}"
    );
    assert!(cc.len() == 2 && !tn.contains('_'), "{key}");
    let dir = format!("{day}{hh}_{cc}_{tn}");
    let rest = file
        .strip_prefix(&format!("{dir}.n{COLLECTOR}."))
        .unwrap_or_else(|| panic!("{key}"));
    let (k, ext) = rest.split_once('.').unwrap();
    assert!(k.parse::<u32>().is_ok(), "{key}");
    assert!(ext == "jsonl.gz" || ext == "tar.gz", "{key}");
    (dir, ext.to_owned())
}

/// The whole store checked against what was uploaded: key shapes, one postcan per
/// jsonl can, the same order in both, lines equal to the content sent, and one index
/// row per measurement pointing at its line.
async fn assert_cans(setup: &Setup, expected: &BTreeMap<String, Vec<u8>>) -> usize {
    let objects = setup.objects();
    let keys = objects.list("raw/").await.unwrap();
    let index = index_rows(&setup.db).await;
    assert_eq!(index.len(), expected.len(), "one index row per measurement");
    let mut seen = 0;
    let mut cans = 0;
    for key in keys.iter().filter(|k| k.ends_with(".jsonl.gz")) {
        let (dir, _) = check_key_shape(key);
        let postcan_key = key.replace(".jsonl.gz", ".tar.gz");
        assert!(keys.contains(&postcan_key), "{key} has no postcan");
        let lines_raw = gunzip(&objects.get(key, usize::MAX).await.unwrap().unwrap());
        let lines: Vec<&[u8]> = lines_raw
            .strip_suffix(b"\n")
            .unwrap()
            .split(|&b| b == b'\n')
            .collect();
        let members = untar(
            &objects
                .get(&postcan_key, usize::MAX)
                .await
                .unwrap()
                .unwrap(),
        );
        assert_eq!(lines.len(), members.len(), "{key}");
        for (i, ((name, body), line)) in members.iter().zip(&lines).enumerate() {
            let uid = name
                .strip_prefix(&format!("{dir}/"))
                .and_then(|n| n.strip_suffix(".post"))
                .unwrap_or_else(|| panic!("member {name} of {postcan_key}"));
            let want = &expected[uid];
            assert_eq!(line, want, "line {i} of {key}");
            let envelope: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(envelope["format"], "json");
            assert_eq!(&serde_json::to_vec(&envelope["content"]).unwrap(), want);
            let ix = &index[uid];
            assert_eq!((ix.s3path.as_str(), ix.linenum), (key.as_str(), i as i32));
            let content: Value = serde_json::from_slice(want).unwrap();
            assert_eq!(ix.report_id, content["report_id"].as_str().unwrap_or(""));
            if let Some(input) = content["input"].as_str() {
                assert_eq!(ix.input, input);
            }
            seen += 1;
        }
        cans += 1;
    }
    assert_eq!(seen, expected.len(), "every measurement in exactly one can");
    assert_eq!(keys.len(), cans * 2, "nothing but can pairs: {keys:?}");
    cans
}

async fn round_trip(objects: Objects, db: Db) {
    let setup = Setup::new(objects, db).await;
    let e = setup.engine();
    let c = client();
    let expected = upload_corpus(&c, &e).await;
    let uids: Vec<String> = expected.keys().cloned().collect();
    wait_all_known(&setup.db.store().await, &uids, Duration::from_secs(60)).await;
    // Fresh: served from the spool.
    assert_bodies(&c, &e, &expected).await;

    let r = admin_upload(&c, &e).await;
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["measurements"], json!(expected.len()), "{report}");
    assert!(setup.spooled().is_empty(), "spool emptied after indexing");
    let cans = assert_cans(&setup, &expected).await;
    assert_eq!(report["cans"], json!(cans));

    // From the cans now, byte-equal, and by report id + input too.
    assert_bodies(&c, &e, &expected).await;
    let (uid, line) = expected
        .iter()
        .find(|(_, l)| serde_json::from_slice::<Value>(l).unwrap()["input"].is_string())
        .unwrap();
    let content: Value = serde_json::from_slice(line).unwrap();
    let r = c
        .get(e.url("/api/v1/raw_measurement"))
        .query(&[
            ("report_id", content["report_id"].as_str().unwrap()),
            ("input", content["input"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        &r.bytes().await.unwrap().to_vec(),
        line,
        "{uid} by report_id"
    );

    // Unknown ids: OONI's answers.
    let r = c
        .get(e.url("/api/v1/measurement/20991231000000.000000_IT_ndt_0123456789abcdef"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "Incorrect or inexistent measurement_uid");
    let r = c
        .get(e.url(
            "/api/v1/raw_measurement?measurement_uid=20991231000000.000000_IT_ndt_0123456789abcdef",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (200, "{}".to_owned())
    );
    let r = c
        .get(e.url("/api/v1/raw_measurement"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A second pass finds nothing to do and duplicates nothing.
    let report: Value = admin_upload(&c, &e).await.json().await.unwrap();
    assert_eq!(report["cans"], json!(0), "{report}");
    assert_eq!(assert_cans(&setup, &expected).await, cans);
    let metrics = metrics_text(&c, &e).await;
    assert!(metrics.contains(&format!(
        "ooni_canned_measurements_total {}",
        expected.len()
    )));
    drop(e);
    setup.db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_local_directory_sqlite() {
    round_trip(Objects::Local, Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_s3_postgres() {
    round_trip(Objects::S3, Db::Postgres).await;
}

/// A small, fast set: the first `n` corpus measurements.
async fn upload_some(c: &reqwest::Client, e: &Engine, n: usize) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (_, msm) in corpus_measurements().iter().take(n) {
        let (_, content, r) = post_measurement(c, e, msm).await;
        let v: Value = r.json().await.unwrap();
        if let Some(uid) = v["measurement_uid"].as_str() {
            out.insert(uid.to_owned(), serde_json::to_vec(&content).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_keeps_everything_in_the_spool_until_it_returns() {
    let mut setup = Setup::new(Objects::S3, Db::Sqlite).await;
    let e = setup.engine();
    let c = client();
    let expected = upload_some(&c, &e, 30).await;
    let uids: Vec<String> = expected.keys().cloned().collect();
    wait_all_known(&setup.db.store().await, &uids, Duration::from_secs(30)).await;

    setup.s3.as_mut().unwrap().stop();
    let r = admin_upload(&c, &e).await;
    assert_eq!(r.status(), 503, "the run fails after its retries");
    let v: Value = r.json().await.unwrap();
    assert!(v["detail"].as_str().unwrap().contains("S3"), "{v}");
    assert_eq!(setup.spooled(), uids, "nothing left the spool");
    assert!(index_rows(&setup.db).await.is_empty());
    let metrics = metrics_text(&c, &e).await;
    assert!(
        metrics.contains("ooni_uploader_failed_runs_total 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("ooni_object_store_errors_total 0\n"));
    let h = c.get(e.url("/health")).send().await.unwrap();
    assert_eq!(h.status(), 503, "health reports the object store");
    // Bodies are still served, from the spool.
    assert_bodies(&c, &e, &expected).await;

    setup.s3.as_mut().unwrap().resume();
    let r = admin_upload(&c, &e).await;
    assert_eq!(r.status(), 200);
    assert!(setup.spooled().is_empty());
    assert_cans(&setup, &expected).await;
    assert_bodies(&c, &e, &expected).await;
    assert_eq!(c.get(e.url("/health")).send().await.unwrap().status(), 200);
}

/// Kills the uploader at each step between packing and deleting; every re-run
/// finishes the job, and in the end each measurement is in exactly one can.
async fn crash_points(objects: Objects) {
    let setup = Setup::new(objects, Db::Sqlite).await;
    let mut e = setup.engine();
    let c = client();
    let expected = upload_some(&c, &e, 40).await;
    let uids: Vec<String> = expected.keys().cloned().collect();
    wait_all_known(&setup.db.store().await, &uids, Duration::from_secs(30)).await;
    assert!(e.terminate().success());

    for point in [
        "uploader_after_postcan",
        "uploader_after_upload",
        "uploader_after_index",
    ] {
        let out = setup.cli(&["upload", "--all"], &[("OONI_FAILPOINTS", point)]);
        assert!(!out.status.success(), "{point}: the process died");
        assert!(
            !setup.spooled().is_empty(),
            "{point}: spool files survive until indexed and deleted"
        );
    }
    // The crash after indexing left the first can's files in the spool; the next
    // run removes them instead of canning them again.
    let out = setup.cli(&["upload", "--all"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(
        out.stdout
            .trim_ascii_end()
            .rsplit(|&b| b == b'\n')
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(report["finished_deletes"].as_u64().unwrap() > 0, "{report}");
    assert!(setup.spooled().is_empty());
    assert_cans(&setup, &expected).await;

    let e = setup.engine();
    assert_bodies(&c, &e, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_between_steps_lose_and_duplicate_nothing_local() {
    crash_points(Objects::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_between_steps_lose_and_duplicate_nothing_s3() {
    crash_points(Objects::S3).await;
}

/// A torn object where the next can goes (a store that crashed mid-write) and a
/// stale temporary file: the uploader replaces the one and ignores the other.
async fn half_written_can(objects: Objects) {
    let setup = Setup::new(objects, Db::Sqlite).await;
    let e = setup.engine();
    let c = client();
    let expected = upload_some(&c, &e, 12).await;
    let uids: Vec<String> = expected.keys().cloned().collect();
    wait_all_known(&setup.db.store().await, &uids, Duration::from_secs(30)).await;
    let parsed = ooni_core::ids::parse_measurement_uid(&uids[0]).unwrap();
    let (dir, hour, cc, tn) = (
        parsed.spool_dir(),
        parsed.hour(),
        parsed.cc,
        parsed.test_name,
    );
    let stem = format!(
        "raw/{}/{}/{cc}/{tn}/{dir}.n{COLLECTOR}.0",
        &hour[..8],
        &hour[8..]
    );
    let objects_store = setup.objects();
    let full = gzip_of(b"{\"a\":1}\n");
    for ext in ["jsonl.gz", "tar.gz"] {
        objects_store
            .put(
                &format!("{stem}.{ext}"),
                full[..full.len() / 2].to_vec().into(),
            )
            .await
            .unwrap();
    }
    if objects == Objects::Local {
        let tmp = setup.data.join(format!("objects/{stem}.jsonl.gz.part"));
        std::fs::write(tmp, b"torn").unwrap();
    }
    let r = admin_upload(&c, &e).await;
    assert_eq!(r.status(), 200);
    assert_cans(&setup, &expected).await;
    assert_bodies(&c, &e, &expected).await;
}

fn gzip_of(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    g.write_all(data).unwrap();
    g.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_can_is_replaced_local() {
    half_written_can(Objects::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_can_is_replaced_s3() {
    half_written_can(Objects::S3).await;
}

/// `serve` runs the uploader on its schedule: a measurement spooled in an hour that
/// has ended (left by an earlier run) is scored at start, then canned, indexed and
/// removed from the spool without anyone asking, and still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_cans_closed_hours_on_its_schedule() {
    let setup = Setup::new(Objects::Local, Db::Sqlite).await;
    let received = chrono::Utc::now() - chrono::Duration::hours(3);
    let stamp = received.format("%Y-%m-%d %H:%M:%S").to_string();
    let content = json!({
        "report_id": "20260101T000000Z_ndt_IT_30722_n1_abcdefghijklmnop",
        "test_name": "ndt", "probe_cc": "IT", "probe_asn": "AS30722",
        "software_name": "schedule-e2e", "software_version": "1", "test_version": "0.1.0",
        "test_start_time": stamp, "measurement_start_time": stamp, "test_keys": {}
    });
    let body = serde_json::to_vec(&json!({"format": "json", "content": content})).unwrap();
    let uid = ooni_core::ids::format_measurement_uid(received, "IT", "ndt", &body);
    let dir = setup.data.join(format!(
        "spool/incoming/{}",
        ooni_core::ids::parse_measurement_uid(&uid)
            .unwrap()
            .spool_dir()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{uid}.post")), &body).unwrap();

    let env: Vec<(&str, &str)> = setup
        .env()
        .into_iter()
        .map(|(k, v)| {
            if k == "OONI_UPLOAD_INTERVAL_SECS" {
                (k, "1")
            } else {
                (k, v)
            }
        })
        .collect();
    let e = Engine::start(&setup.data, &setup.db.url, &env);
    let t = std::time::Instant::now();
    while index_rows(&setup.db).await.is_empty() || dir.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "not canned on schedule"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expected = BTreeMap::from([(uid.clone(), serde_json::to_vec(&content).unwrap())]);
    assert_cans(&setup, &expected).await;
    assert_bodies(&client(), &e, &expected).await;
    let rows = rows_by_uid(
        &setup.db.store().await,
        std::slice::from_ref(&uid),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        rows[&uid].test_name, "ndt",
        "scored at start, before canning"
    );
}
