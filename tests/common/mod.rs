//! Test harness: starts the real engine binary on a free port, over a fresh SQLite file
//! or a fresh PostgreSQL database, and reads what it stored.
#![allow(dead_code)]

use ooni_engine::store::Store;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The shared corpus, read in place (its licence keeps it out of this repository).
pub fn corpus_dir() -> PathBuf {
    std::env::var_os("OONI_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"))
}

/// Every corpus measurement as (path relative to `measurements/`, parsed JSON).
pub fn corpus_measurements() -> Vec<(String, Value)> {
    let root = corpus_dir().join("measurements");
    let mut out = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("corpus not found at {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for d in dirs {
        let mut files: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let rel = f
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
            out.push((rel, v));
        }
    }
    assert!(
        out.len() >= 150,
        "corpus has only {} measurements",
        out.len()
    );
    out
}

pub fn expected_for(rel: &str) -> Value {
    let p = corpus_dir().join("expected/fastpath").join(rel);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A database for one test: a SQLite file in the test's directory, or a PostgreSQL
/// database created for it and dropped afterwards.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(kind: Db, dir: &Path) -> TestDb {
        match kind {
            Db::Sqlite => TestDb {
                url: format!("sqlite://{}", dir.join("test.sqlite").display()),
                pg_name: None,
            },
            Db::Postgres => {
                let name = format!(
                    "ooni_t_{}_{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos()
                );
                let admin = sqlx::PgPool::connect(PG_ADMIN_URL)
                    .await
                    .expect("PostgreSQL at 127.0.0.1:5432");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&admin)
                    .await
                    .unwrap();
                admin.close().await;
                TestDb {
                    url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    pg_name: Some(name),
                }
            }
        }
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.url).await.unwrap()
    }

    pub async fn drop_db(self) {
        if let Some(name) = self.pg_name {
            if let Ok(admin) = sqlx::PgPool::connect(PG_ADMIN_URL).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&admin)
                    .await;
            }
        }
    }
}

/// One compiled-plugin cache for every engine the tests start, so that only the first
/// pays for compiling the bundled scorers (a test of the cache itself passes its own).
pub fn shared_plugin_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

/// A running engine process; killed when dropped.
pub struct Engine {
    pub child: Child,
    pub base: String,
}

impl Engine {
    pub fn start(data_dir: &Path, db_url: &str, env: &[(&str, &str)]) -> Engine {
        Engine::start_logging(data_dir, db_url, env, None)
    }

    /// As `start`, with the engine's log (stderr) written to `log` when given.
    pub fn start_logging(
        data_dir: &Path,
        db_url: &str,
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Engine {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ooni-engine"));
        // Relative defaults (plugins/, fingerprints/) land beside the data, not in the repo.
        if let Some(parent) = data_dir.parent() {
            cmd.current_dir(parent);
        }
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--database-url", db_url])
            .env("RUST_LOG", "warn")
            .env("OONI_PLUGIN_CACHE_DIR", shared_plugin_cache())
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(p) => Stdio::from(std::fs::File::create(p).expect("log file")),
                None => Stdio::inherit(),
            });
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("engine binary");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = lines
            .next()
            .expect("engine exited before listening")
            .expect("engine stdout");
        let addr = line
            .strip_prefix("ooni-engine listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        // Keep draining stdout so the engine never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Engine {
            child,
            base: format!("http://{addr}"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().unwrap()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// What a probe sends to open a report for `msm`, with the measurement's own metadata.
pub use ooni_core::submission::open_report_request as open_request;

pub async fn open_report(c: &reqwest::Client, e: &Engine, msm: &Value) -> String {
    let r = c
        .post(e.url("/report"))
        .json(&open_request(msm))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["report_id"].as_str().unwrap().to_owned()
}

/// Waits until every uid has a row or a drop record.
pub async fn wait_all_known(store: &Store, uids: &[String], within: Duration) {
    let t = Instant::now();
    loop {
        let known = store.known_uids(uids).await.unwrap();
        if known.len() == uids.len() {
            return;
        }
        assert!(
            t.elapsed() < within,
            "only {} of {} measurements scored after {:?}",
            known.len(),
            uids.len(),
            within
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET` an admin route with the bearer token; the answer must be 200 JSON.
pub async fn admin_get(c: &reqwest::Client, e: &Engine, path: &str, token: &str) -> Value {
    let r = c.get(e.url(path)).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// Polls an admin route until `check` holds, failing with `what` after `within`.
pub async fn admin_wait(
    c: &reqwest::Client,
    e: &Engine,
    path: &str,
    token: &str,
    what: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let t = Instant::now();
    loop {
        let s = admin_get(c, e, path, token).await;
        if check(&s) {
            return s;
        }
        assert!(t.elapsed() < within, "{what}: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `measurement_uid` of a successful upload (status 200 asserted).
pub async fn uid_of(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["measurement_uid"]
        .as_str()
        .expect("a measurement_uid")
        .to_owned()
}

/// Opens a report with `msm`'s metadata, stamps its id into the measurement and
/// submits it; returns the report id, the content sent and the collector's answer.
pub async fn post_measurement(
    c: &reqwest::Client,
    e: &Engine,
    msm: &Value,
) -> (String, Value, reqwest::Response) {
    let rid = open_report(c, e, msm).await;
    let mut content = msm.clone();
    content["report_id"] = json!(rid);
    let body = json!({"format": "json", "content": content}).to_string();
    let r = post_body(c, e, &rid, body).await;
    (rid, content, r)
}

/// Submits a body the test made itself (JSON text, as a probe sends it) to a report.
pub async fn post_body(
    c: &reqwest::Client,
    e: &Engine,
    rid: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    c.post(e.url(&format!("/report/{rid}")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Uploads `msm` as a probe would and returns the uid.
pub async fn submit_measurement(c: &reqwest::Client, e: &Engine, msm: &Value) -> String {
    uid_of(post_measurement(c, e, msm).await.2).await
}

/// The engine's `/metrics` text.
pub async fn metrics_text(c: &reqwest::Client, e: &Engine) -> String {
    c.get(e.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until every uid is scored, then returns the rows by uid.
pub async fn rows_by_uid(
    store: &Store,
    uids: &[String],
    within: Duration,
) -> std::collections::HashMap<String, ooni_core::FastpathRow> {
    wait_all_known(store, uids, within).await;
    store
        .fetch_rows(uids)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.measurement_uid.clone(), r))
        .collect()
}

/// Runs an `ooni-engine` subcommand against a data directory and database, from the
/// data directory's parent as `Engine::start` does.
pub fn run_cli(
    args: &[&str],
    data_dir: &Path,
    db_url: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ooni-engine"));
    if let Some(parent) = data_dir.parent() {
        cmd.current_dir(parent);
    }
    cmd.args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--database-url", db_url])
        .env("RUST_LOG", "warn")
        .env("OONI_PLUGIN_CACHE_DIR", shared_plugin_cache());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("engine binary")
}

/// `run_cli` that must succeed; returns its standard output.
pub fn run_cli_ok(args: &[&str], data_dir: &Path, db_url: &str) -> String {
    let out = run_cli(args, data_dir, db_url, &[]);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

pub const S3_ACCESS_KEY: &str = "ooni-test-access";
pub const S3_SECRET_KEY: &str = "ooni-test-secret-key";
pub const S3_BUCKET: &str = "ooni-data-test";

/// The `s3s-fs` binary: `S3S_FS_BIN`, else on PATH or in cargo's bin directory, else
/// installed once (as `.ci/run` does) into a cache folder shared by all test runs.
pub fn s3s_fs_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("S3S_FS_BIN") {
            return PathBuf::from(p);
        }
        let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()));
        let tools = home.join(".cache/ooni-engine-tools");
        let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("s3s-fs"))
                    .collect()
            })
            .unwrap_or_default();
        candidates.push(home.join(".cargo/bin/s3s-fs"));
        candidates.push(tools.join("bin/s3s-fs"));
        if let Some(found) = candidates.iter().find(|p| p.is_file()) {
            return found.clone();
        }
        eprintln!(
            "s3s-fs not found: installing s3s-fs 0.14.1 into {}",
            tools.display()
        );
        let ok = Command::new("cargo")
            .args([
                "install",
                "s3s-fs@0.14.1",
                "--locked",
                "--features",
                "binary",
                "--root",
            ])
            .arg(&tools)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "cannot install s3s-fs (the S3 server the S3 tests run against)"
        );
        tools.join("bin/s3s-fs")
    })
    .clone()
}

/// A real S3-compatible server (s3s-fs) on a loopback port, with one bucket.
pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    pub root: PathBuf,
}

impl S3Server {
    pub fn start(root: &Path) -> S3Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::create_dir_all(root.join(S3_BUCKET)).unwrap();
        let mut s = S3Server {
            child: None,
            port,
            root: root.to_owned(),
        };
        s.resume();
        s
    }

    /// Starts (again) on the same port and directory.
    pub fn resume(&mut self) {
        let child = Command::new(s3s_fs_bin())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs");
        self.child = Some(child);
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "s3s-fs did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server, as an outage would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The engine's environment for this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OONI_OBJECT_STORE", format!("s3://{S3_BUCKET}")),
            ("OONI_S3_ENDPOINT", self.endpoint()),
            ("OONI_S3_ACCESS_KEY_ID", S3_ACCESS_KEY.to_owned()),
            ("OONI_S3_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_owned()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Uploads every corpus measurement the collector accepts; returns uid → the exact
/// jsonl line expected for it (the content as sent, compact).
pub async fn upload_corpus(
    c: &reqwest::Client,
    e: &Engine,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let (mut discarded, mut refused) = (0, 0);
    let all = corpus_measurements();
    for (_, msm) in &all {
        let (rid, content, r) = post_measurement(c, e, msm).await;
        if r.status() != 200 {
            // The one corpus measurement OONI's probe service refuses (ingest_e2e).
            assert_eq!(r.status(), 400, "{rid}");
            refused += 1;
            continue;
        }
        let v: Value = r.json().await.unwrap();
        match v["measurement_uid"].as_str() {
            Some(uid) => {
                out.insert(uid.to_owned(), serde_json::to_vec(&content).unwrap());
            }
            // ZZ / AS0 report ids: answered `{}` and not stored, as OONI does.
            None => {
                assert!(
                    rid.contains("_ZZ_") || rid.split('_').nth(3) == Some("0"),
                    "{rid}"
                );
                discarded += 1;
            }
        }
    }
    assert_eq!(out.len() + discarded + refused, all.len());
    assert_eq!(refused, 1);
    out
}

/// A TCP forwarder that can be cut: stands between the engine and a real server
/// (PostgreSQL) so a test can take that server "down" — every open connection is
/// closed and new ones are refused — and bring it back, without touching the server.
pub struct TcpProxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: &'static str) -> TcpProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, conns2) = (up.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let h = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                conns2.lock().unwrap().push(h);
            }
        });
        TcpProxy {
            port,
            up,
            conns,
            accept,
        }
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        if !up {
            for h in self.conns.lock().unwrap().drain(..) {
                h.abort();
            }
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.set_up(false);
    }
}

/// A value of a Prometheus metric (first sample whose name and labels match).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `n` probes that upload `payloads` — (report id, JSON envelope) — round-robin until
/// `stop` is set. Each returns the uids acknowledged to it and how many requests got
/// no answer (the engine was killed or is stopping): those were never promised. Any
/// answer but 200 fails the test.
pub fn spawn_uploaders(
    c: &reqwest::Client,
    base: &str,
    payloads: std::sync::Arc<Vec<(String, String)>>,
    n: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(Vec<String>, usize)>> {
    (0..n)
        .map(|p| {
            let (c, base, payloads, stop) =
                (c.clone(), base.to_owned(), payloads.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut acked, mut unanswered) = (Vec::new(), 0);
                let mut i = p * 5;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (rid, body) = &payloads[i % payloads.len()];
                    i += 1;
                    let r = c
                        .post(format!("{base}/report/{rid}"))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    let Ok(r) = r else {
                        unanswered += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let status = r.status();
                    match r.json::<Value>().await {
                        Ok(v) if status == 200 => acked.push(
                            v["measurement_uid"]
                                .as_str()
                                .expect("a measurement_uid")
                                .to_owned(),
                        ),
                        Ok(v) => panic!("upload answered {status}: {v}"),
                        // Cut off mid-answer.
                        Err(_) => unanswered += 1,
                    }
                }
                (acked, unanswered)
            })
        })
        .collect()
}

/// Waits for the uploaders and gathers what they were told.
pub async fn join_uploaders(
    probes: Vec<tokio::task::JoinHandle<(Vec<String>, usize)>>,
) -> (Vec<String>, usize) {
    let (mut acked, mut unanswered) = (Vec::new(), 0);
    for p in probes {
        let (a, u) = p.await.unwrap();
        acked.extend(a);
        unanswered += u;
    }
    (acked, unanswered)
}

/// A scratch directory holding the engine's data directory and a fresh database.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub db: TestDb,
}

impl Scratch {
    pub async fn new(kind: Db) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let db = TestDb::new(kind, dir.path()).await;
        Scratch { dir, data, db }
    }
}
