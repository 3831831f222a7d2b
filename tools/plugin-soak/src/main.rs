//! Soak: one scorer plugin fails on every call, for a long time, beside healthy ones.
//!
//! Runs the real engine (`ooni-engine serve`) over a fresh data directory and SQLite
//! file, uploads corpus measurements of a fixed set of test types over HTTP as probes
//! do, and measures two phases of equal length:
//!
//! * baseline: the bundled scorers only;
//! * soak: a hostile WebAssembly plugin in the plugins directory overrides one real
//!   test name and fails (traps, or times out) on every call.
//!
//! By default each phase gets its own engine, data directory and database, so both
//! start from the same state (the soak engine starts with the hostile file already in
//! its plugins directory). `--hot-reload` keeps one engine for both phases and drops
//! the file in between them, relying on the registry's directory watcher.
//!
//! For the healthy test types it reports the rows committed per second (read from the
//! database), for the failing type the failures the engine counted (`/admin/plugins`;
//! `/metrics` is read too), and the engine's RSS, open files and threads at the start
//! and end of each phase. Measurements are read at run time from the shared corpus and
//! never copied.

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use ooni_core::submission::open_report_request as open_request;
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Failure {
    /// `ooni_score` executes `unreachable`: a trap on every call.
    Trap,
    /// `ooni_score` loops until the engine's per-call time limit stops it.
    Loop,
}

#[derive(Parser)]
#[command(name = "ooni-plugin-soak")]
struct Args {
    /// Length of each measured phase, in seconds.
    #[arg(long, default_value_t = 600)]
    secs: u64,
    /// Seconds of load before each phase's measurement window opens (not counted).
    #[arg(long, default_value_t = 20)]
    warmup: u64,
    /// The engine binary; default: `ooni-engine` beside this tool, else in the target dir.
    #[arg(long)]
    engine: Option<PathBuf>,
    /// The shared corpus (its `measurements/` is read in place).
    #[arg(long, default_value = "/work/shared/corpus")]
    corpus: PathBuf,
    /// The test name the hostile plugin takes over.
    #[arg(long, default_value = "telegram")]
    failing: String,
    /// Test names left to their bundled scorers.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "web_connectivity,whatsapp,signal,tor,vanilla_tor,facebook_messenger,dash"
    )]
    healthy: Vec<String>,
    /// How the hostile plugin fails.
    #[arg(long, value_enum, default_value = "trap")]
    failure: Failure,
    /// Concurrent uploaders.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// One engine for both phases; the hostile file is dropped in between (hot reload).
    #[arg(long)]
    hot_reload: bool,
    /// Keep the temporary data directories (printed at the end).
    #[arg(long)]
    keep: bool,
}

const TOKEN: &str = "plugin-soak-admin-token";
const HOSTILE_NAME: &str = "soak-failing";
const HOSTILE_FILE: &str = "soak_failing.wat";

/// A module that claims `test_name` and fails every `ooni_score` call (plugins/ABI.md,
/// version 1; the allocator is the one of tests/plugins/constant.wat).
fn hostile_wat(test_name: &str, failure: Failure) -> String {
    let meta =
        json!({"abi": 1, "name": HOSTILE_NAME, "version": "1.0.0", "test_names": [test_name]})
            .to_string();
    let escaped = meta.replace('\\', "\\\\").replace('"', "\\\"");
    let (what, body) = match failure {
        Failure::Trap => ("traps", "unreachable"),
        Failure::Loop => (
            "loops until the time limit",
            "(loop $l (br $l)) (i64.const 0)",
        ),
    };
    format!(
        r#";; Written by ooni-plugin-soak: scores `{test_name}` and {what} on every call.
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "{escaped}")
  (func (export "ooni_abi_version") (result i32)
    (i32.const 1))
  (func (export "ooni_meta") (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const {len})))
  (func (export "ooni_alloc") (param $len i32) (result i32)
    (local $pages i32)
    (local.set $pages
      (i32.add (i32.shr_u (i32.add (i32.const 65536) (local.get $len)) (i32.const 16)) (i32.const 1)))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
          (then (return (i32.const 0))))))
    (i32.const 65536))
  (func (export "ooni_score") (param $ptr i32) (param $len i32) (result i64)
    {body})
)
"#,
        len = meta.len()
    )
}

/// The corpus measurements of one test name that OONI stores a row for.
fn load_type(corpus: &Path, test_name: &str) -> anyhow::Result<Vec<Value>> {
    let dir = corpus.join("measurements").join(test_name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().context("file name")?;
        let expected = corpus.join("expected/fastpath").join(test_name).join(name);
        if let Ok(bytes) = std::fs::read(&expected) {
            let e: Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", expected.display()))?;
            if e["dropped"] == json!(true) {
                continue;
            }
        }
        let m: Value = serde_json::from_slice(&std::fs::read(&f)?)
            .with_context(|| format!("parsing {}", f.display()))?;
        let s = |k: &str| m[k].as_str().unwrap_or("").to_owned();
        if s("test_name") != test_name
            || s("probe_cc").eq_ignore_ascii_case("ZZ")
            || s("probe_asn")
                .trim_start_matches("AS")
                .trim_start_matches('0')
                .is_empty()
        {
            continue;
        }
        out.push(m);
    }
    if out.is_empty() {
        bail!("no usable {test_name} measurements under {}", dir.display());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// The engine process

struct EngineProc {
    child: Child,
    pid: u32,
    base: String,
    db_path: PathBuf,
    log: PathBuf,
}

fn find_engine(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("--engine {}: no such file", p.display());
        }
        return Ok(p);
    }
    let mut candidates = Vec::new();
    if let Ok(me) = std::env::current_exe() {
        if let Some(d) = me.parent() {
            candidates.push(d.join("ooni-engine"));
        }
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("release/ooni-engine"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(h).join(".cache/ooni-engine-target/release/ooni-engine"));
    }
    candidates.push(PathBuf::from("target/release/ooni-engine"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no engine binary (build it with `cargo build --release -p ooni-engine` or pass --engine); looked at {candidates:?}"
            )
        })
}

impl EngineProc {
    /// Starts `serve` over `dir` (data, SQLite, fingerprints) with `plugins` as its
    /// plugins directory, on a port of its own choosing; returns once it listens.
    fn start(bin: &Path, dir: &Path, plugins: &Path) -> anyhow::Result<EngineProc> {
        let data = dir.join("data");
        let db_path = data.join("ooni.sqlite");
        let log = dir.join(format!("engine-{}.log", now_unix()));
        let mut cmd = Command::new(bin);
        cmd.current_dir(dir)
            .arg("serve")
            .env("OONI_LISTEN", "127.0.0.1:0")
            .env("OONI_DATA_DIR", &data)
            .env(
                "OONI_DATABASE_URL",
                format!("sqlite://{}", db_path.display()),
            )
            .env("OONI_PLUGINS_DIR", plugins)
            .env("OONI_FINGERPRINTS_DIR", dir.join("fingerprints"))
            .env("OONI_ADMIN_TOKEN", TOKEN)
            // No cans during the soak: the spool only grows, the uploader never runs.
            .env("OONI_UPLOAD_INTERVAL_SECS", "0")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().context("engine stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep draining so the engine never blocks on a full pipe.
            for _ in lines {}
        });
        let first = rx.recv_timeout(Duration::from_secs(300));
        let line = match first {
            Ok(Some(Ok(l))) => l,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the engine did not report listening; its log: {}\n{}",
                    log.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let addr = line
            .strip_prefix("ooni-engine listening on ")
            .with_context(|| format!("unexpected first line {line:?}"))?
            .to_owned();
        Ok(EngineProc {
            child,
            pid,
            base: format!("http://{addr}"),
            db_path,
            log,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, then the exit status (killed after a minute).
    fn stop(mut self) -> String {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        let t = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    return format!("{s} after SIGTERM in {:.1}s", t.elapsed().as_secs_f64())
                }
                Ok(None) if t.elapsed() < Duration::from_secs(60) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return "did not stop within 60 s of SIGTERM; killed".into();
                }
            }
        }
    }
}

impl Drop for EngineProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RSS, open files and threads of a process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rss_kb: u64,
    fds: u64,
    threads: u64,
}

fn sample(pid: u32) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    Sample {
        rss_kb: field("VmRSS:"),
        fds,
        threads: field("Threads:"),
    }
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads its argument.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Busy CPU seconds of the whole machine (all cores), from /proc/stat.
fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum();
    busy as f64 / clock_ticks()
}

/// (engine, this tool, the machine) CPU seconds so far.
fn cpu_now(pid: u32) -> (f64, f64, f64) {
    (
        cpu_secs(&pid.to_string()),
        cpu_secs("self"),
        machine_busy_secs(),
    )
}

impl Sample {
    fn json(&self) -> Value {
        json!({"rss_kb": self.rss_kb, "fds": self.fds, "threads": self.threads})
    }
}

// ---------------------------------------------------------------------------------
// The database and the engine's counters

async fn open_db(path: &Path) -> anyhow::Result<SqlitePool> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(Duration::from_secs(30));
    Ok(SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await?)
}

/// Rows per test name.
async fn rows_by_test(db: &SqlitePool) -> anyhow::Result<BTreeMap<String, u64>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT test_name, COUNT(*) FROM fastpath GROUP BY test_name")
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().map(|(t, n)| (t, n as u64)).collect())
}

/// (test name, scorer, msm_failure, scorer error) → rows.
type Detail = BTreeMap<(String, String, bool, bool), u64>;

async fn rows_detail(db: &SqlitePool) -> anyhow::Result<Detail> {
    let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT test_name, scorer_name, msm_failure, instr(scores, '\"msg\":\"scorer error') > 0, COUNT(*) \
         FROM fastpath GROUP BY 1, 2, 3, 4",
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(t, s, f, e, n)| ((t, s, f != 0, e != 0), n as u64))
        .collect())
}

async fn drops_total(db: &SqlitePool) -> anyhow::Result<u64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM fastpath_dropped")
        .fetch_one(db)
        .await?;
    Ok(n as u64)
}

async fn admin_plugins(c: &reqwest::Client, e: &EngineProc) -> anyhow::Result<Value> {
    let r = c
        .get(e.url("/admin/plugins"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("/admin/plugins answered {}", r.status());
    }
    Ok(r.json().await?)
}

/// The loaded plugin that scores `test_name`.
fn plugin_for<'a>(status: &'a Value, test_name: &str) -> Option<&'a Value> {
    // Bundled plugins come first; a directory file overriding one is listed after it,
    // and only plugins still serving a name are listed at all.
    status["plugins"].as_array()?.iter().rev().find(|p| {
        p["test_names"]
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t == test_name))
    })
}

async fn metrics(c: &reqwest::Client, e: &EngineProc) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = c.get(e.url("/metrics")).send().await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect())
}

// ---------------------------------------------------------------------------------
// The load

struct Upload {
    type_idx: usize,
    url: String,
    body: bytes::Bytes,
}

struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Vec<AtomicU64>>,
    errors: Arc<AtomicU64>,
    last_error: Arc<Mutex<Option<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn start_time_now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Opens the reports and starts `concurrency` uploaders, each cycling through rounds
/// of one measurement of every test type (so every type gets the same share).
async fn start_load(
    c: &reqwest::Client,
    e: &EngineProc,
    corpus: &[Vec<Value>],
    concurrency: usize,
) -> anyhow::Result<Load> {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(
        (0..corpus.len())
            .map(|_| AtomicU64::new(0))
            .collect::<Vec<_>>(),
    );
    let errors = Arc::new(AtomicU64::new(0));
    let last_error = Arc::new(Mutex::new(None));
    let rounds = corpus.iter().map(Vec::len).max().unwrap_or(1);
    let mut tasks = Vec::new();
    for w in 0..concurrency.max(1) {
        // One report per measurement per uploader; the start time is now, so OONI's
        // date check does not turn every row into a failure.
        let mut prepared: Vec<Vec<(String, bytes::Bytes)>> = Vec::new();
        for msms in corpus {
            let mut per_type = Vec::new();
            for m in msms {
                let r: Value = c
                    .post(e.url("/report"))
                    .json(&open_request(m))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let rid = r["report_id"].as_str().context("no report_id")?.to_owned();
                let mut content = m.clone();
                content["report_id"] = json!(rid);
                content["measurement_start_time"] = json!(start_time_now());
                let body = serde_json::to_vec(&json!({"format": "json", "content": content}))?;
                per_type.push((e.url(&format!("/report/{rid}")), body.into()));
            }
            prepared.push(per_type);
        }
        let mut schedule = Vec::new();
        for r in 0..rounds {
            for (t, per_type) in prepared.iter().enumerate() {
                let (url, body) = &per_type[(r + w) % per_type.len()];
                schedule.push(Upload {
                    type_idx: t,
                    url: url.clone(),
                    body: body.clone(),
                });
            }
        }
        // Uploaders start at different points of the round.
        let shift = (w * 3) % schedule.len();
        schedule.rotate_left(shift);
        let (c, stop, acked, errors, last_error) = (
            c.clone(),
            stop.clone(),
            acked.clone(),
            errors.clone(),
            last_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for u in schedule.iter().cycle() {
                if stop.load(Relaxed) {
                    break;
                }
                let r = c
                    .post(&u.url)
                    .header("content-type", "application/json")
                    .body(u.body.clone())
                    .send()
                    .await;
                let outcome = match r {
                    Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                        Ok(v) if v["measurement_uid"].is_string() => Ok(()),
                        Ok(v) => Err(format!("answer without a uid: {v}")),
                        Err(e) => Err(format!("unreadable answer: {e}")),
                    },
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(format!("request failed: {e}")),
                };
                match outcome {
                    Ok(()) => {
                        acked[u.type_idx].fetch_add(1, Relaxed);
                    }
                    Err(m) => {
                        errors.fetch_add(1, Relaxed);
                        if let Ok(mut l) = last_error.lock() {
                            *l = Some(m);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    Ok(Load {
        stop,
        acked,
        errors,
        last_error,
        tasks,
    })
}

impl Load {
    fn acked(&self) -> Vec<u64> {
        self.acked.iter().map(|a| a.load(Relaxed)).collect()
    }

    async fn finish(self) -> (Vec<u64>, u64, Option<String>) {
        self.stop.store(true, Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let acked = self.acked.iter().map(|a| a.load(Relaxed)).collect();
        let last = self.last_error.lock().ok().and_then(|l| l.clone());
        (acked, self.errors.load(Relaxed), last)
    }
}

// ---------------------------------------------------------------------------------
// One phase

struct Ctx<'a> {
    args: &'a Args,
    types: Vec<String>,
    corpus: Vec<Vec<Value>>,
    client: reqwest::Client,
}

impl Ctx<'_> {
    fn failing_idx(&self) -> usize {
        self.types.len() - 1
    }

    fn healthy_sum(&self, by_test: &BTreeMap<String, u64>) -> u64 {
        self.types[..self.failing_idx()]
            .iter()
            .map(|t| by_test.get(t).copied().unwrap_or(0))
            .sum()
    }
}

fn sub_maps(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    a.iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(b.get(k).copied().unwrap_or(0))))
        .collect()
}

async fn run_phase(ctx: &Ctx<'_>, e: &EngineProc, label: &str) -> anyhow::Result<Value> {
    let args = ctx.args;
    let c = &ctx.client;
    let db = open_db(&e.db_path).await?;
    let fi = ctx.failing_idx();
    let failing = &ctx.types[fi];

    let status = admin_plugins(c, e).await?;
    let scorer = plugin_for(&status, failing)
        .map(|p| p["name"].as_str().unwrap_or("?").to_owned())
        .unwrap_or_else(|| "default".into());
    let hostile_before = hostile_stats(&status);
    let idle = sample(e.pid);
    let rows0 = rows_by_test(&db).await?;
    let detail0 = rows_detail(&db).await?;
    let drops0 = drops_total(&db).await?;
    let metrics0 = metrics(c, e).await?;
    let log0 = std::fs::metadata(&e.log).map_or(0, |m| m.len());

    let load = start_load(c, e, &ctx.corpus, args.concurrency).await?;
    let acked0 = vec![0u64; ctx.types.len()];
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;

    let s_start = sample(e.pid);
    let cpu_start = cpu_now(e.pid);
    let rows_start = rows_by_test(&db).await?;
    let acked_start = load.acked();
    let t_start = Instant::now();
    eprintln!(
        "[{label}] window open: {} rows, RSS {} kB, {} fds, {} threads",
        rows_start.values().sum::<u64>(),
        s_start.rss_kb,
        s_start.fds,
        s_start.threads
    );
    let window = Duration::from_secs(args.secs);
    let mut max = s_start;
    let mut series = vec![json!({"t": 0, "rss_kb": s_start.rss_kb, "fds": s_start.fds})];
    loop {
        let left = window.saturating_sub(t_start.elapsed());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(Duration::from_secs(10))).await;
        let s = sample(e.pid);
        max.rss_kb = max.rss_kb.max(s.rss_kb);
        max.fds = max.fds.max(s.fds);
        max.threads = max.threads.max(s.threads);
        let t = t_start.elapsed().as_secs();
        if t % 60 < 10 || t_start.elapsed() >= window {
            let rows = rows_by_test(&db).await?;
            let healthy = ctx.healthy_sum(&rows) - ctx.healthy_sum(&rows_start);
            eprintln!(
                "[{label}] t={t:>4}s healthy rows/s {:>8.1}  RSS {} kB  fds {}  threads {}",
                healthy as f64 / t_start.elapsed().as_secs_f64(),
                s.rss_kb,
                s.fds,
                s.threads
            );
            series.push(json!({"t": t, "rss_kb": s.rss_kb, "fds": s.fds}));
        }
    }
    let s_end = sample(e.pid);
    let cpu_end = cpu_now(e.pid);
    let rows_end = rows_by_test(&db).await?;
    let acked_end = load.acked();
    let secs = t_start.elapsed().as_secs_f64();
    let (acked_total, errors, last_error) = load.finish().await;

    // Let every acknowledged upload get its row (or drop record).
    let t_drain = Instant::now();
    let want: u64 = acked_total.iter().zip(&acked0).map(|(a, b)| a - b).sum();
    let (rows_after, drops_after) = loop {
        let rows = rows_by_test(&db).await?;
        let drops = drops_total(&db).await?;
        let got = rows.values().sum::<u64>() - rows0.values().sum::<u64>() + drops - drops0;
        if got >= want || t_drain.elapsed() > Duration::from_secs(600) {
            break (rows, drops);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let drain_secs = t_drain.elapsed().as_secs_f64();
    let s_drained = sample(e.pid);
    let detail1 = rows_detail(&db).await?;
    let status1 = admin_plugins(c, e).await?;
    let metrics1 = metrics(c, e).await?;
    let log1 = std::fs::metadata(&e.log).map_or(0, |m| m.len());
    db.close().await;

    let window_rows = sub_maps(&rows_end, &rows_start);
    let phase_rows = sub_maps(&rows_after, &rows0);
    let healthy_rows = ctx.healthy_sum(&window_rows);
    let failing_rows_window = window_rows.get(failing).copied().unwrap_or(0);
    let healthy_acked: u64 = (0..fi).map(|i| acked_end[i] - acked_start[i]).sum();
    let failing_acked_phase = acked_total[fi] - acked0[fi];

    // Rows of this phase, by (test, scorer, failure, scorer error).
    let mut detail = Vec::new();
    let (mut healthy_scorer_errors, mut failing_scorer_errors, mut failing_rows_phase) = (0, 0, 0);
    for (k, n) in &detail1 {
        let n = n - detail0.get(k).copied().unwrap_or(0);
        if n == 0 {
            continue;
        }
        let (t, s, f, err) = k;
        if t == failing {
            failing_rows_phase += n;
            if *err {
                failing_scorer_errors += n;
            }
        } else if *err {
            healthy_scorer_errors += n;
        }
        detail.push(
            json!({"test_name": t, "scorer": s, "msm_failure": f, "scorer_error": err, "rows": n}),
        );
    }
    let hostile_after = hostile_stats(&status1);
    let m = |k: &str| {
        metrics1.get(k).copied().unwrap_or(f64::NAN) - metrics0.get(k).copied().unwrap_or(0.0)
    };
    // The engine's per-plugin series, where it has them (null otherwise).
    let hostile_series = |name: &str| {
        let key = format!("{name}{{plugin=\"{HOSTILE_NAME}\"}}");
        metrics1
            .get(&key)
            .map(|v| v - metrics0.get(&key).copied().unwrap_or(0.0))
    };

    Ok(json!({
        "phase": label,
        "failing_type_scorer": scorer,
        "window_secs": secs,
        "healthy_rows": healthy_rows,
        "healthy_rows_per_s": healthy_rows as f64 / secs,
        "healthy_acked_per_s": healthy_acked as f64 / secs,
        "failing_type_rows_per_s": failing_rows_window as f64 / secs,
        "rows_per_s_by_type": ctx.types.iter().map(|t| (t.clone(), json!(window_rows.get(t).copied().unwrap_or(0) as f64 / secs))).collect::<serde_json::Map<_, _>>(),
        "acked_phase": acked_total.iter().sum::<u64>(),
        "acked_failing_type": failing_acked_phase,
        "upload_errors": errors,
        "last_upload_error": last_error,
        "rows_phase": phase_rows.values().sum::<u64>(),
        "drops_phase": drops_after - drops0,
        "rows_failing_type": failing_rows_phase,
        "rows_failing_type_scorer_error": failing_scorer_errors,
        "rows_healthy_scorer_error": healthy_scorer_errors,
        "drain_secs": drain_secs,
        "cpu": {
            "engine_s": cpu_end.0 - cpu_start.0,
            "tool_s": cpu_end.1 - cpu_start.1,
            "other_s": (cpu_end.2 - cpu_start.2) - (cpu_end.0 - cpu_start.0) - (cpu_end.1 - cpu_start.1),
            "engine_ms_per_row": (cpu_end.0 - cpu_start.0) * 1e3 / (window_rows.values().sum::<u64>().max(1) as f64),
        },
        "hostile_plugin": {
            "calls": hostile_after.0 - hostile_before.0,
            "failures": hostile_after.1 - hostile_before.1,
            "last_error": hostile_after.2,
        },
        "metrics": {
            "rows_written": m("ooni_rows_written_total"),
            "uploads_accepted": m("ooni_uploads_accepted_total"),
            "score_queue_overflows": m("ooni_score_queue_overflows_total"),
            "recovered": m("ooni_recovered_total"),
            "db_errors": m("ooni_db_errors_total"),
            "ack_to_row_p50_s": metrics1.get("ooni_ack_to_row_seconds{quantile=\"0.5\"}"),
            "ack_to_row_p99_s": metrics1.get("ooni_ack_to_row_seconds{quantile=\"0.99\"}"),
            "hostile_plugin_failures": hostile_series("ooni_plugin_failures_total"),
            "hostile_plugin_calls": hostile_series("ooni_plugin_calls_total"),
        },
        "engine_log_bytes": log1 - log0,
        "proc": {
            "idle": idle.json(),
            "start": s_start.json(),
            "end": s_end.json(),
            "max": max.json(),
            "drained": s_drained.json(),
            "series": series,
        },
        "detail": detail,
    }))
}

/// (calls, failures, last error) of the hostile plugin, zeros if it is not loaded.
fn hostile_stats(status: &Value) -> (u64, u64, Option<String>) {
    status["plugins"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == HOSTILE_NAME))
        .map_or((0, 0, None), |p| {
            (
                p["calls"].as_u64().unwrap_or(0),
                p["failures"].as_u64().unwrap_or(0),
                p["last_error"].as_str().map(str::to_owned),
            )
        })
}

/// Waits until the hostile plugin scores the failing type.
async fn wait_hostile(ctx: &Ctx<'_>, e: &EngineProc) -> anyhow::Result<()> {
    let failing = &ctx.types[ctx.failing_idx()];
    let t = Instant::now();
    loop {
        let s = admin_plugins(&ctx.client, e).await?;
        if plugin_for(&s, failing).is_some_and(|p| p["name"] == HOSTILE_NAME) {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("the hostile plugin was not loaded: {s}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fmt_ratio(a: f64, b: f64) -> String {
    if a > 0.0 {
        format!("{:.3}", b / a)
    } else {
        "n/a".into()
    }
}

fn print_report(args: &Args, engine: &Path, types: &[String], base: &Value, soak: &Value) {
    let f = |v: &Value, path: &[&str]| {
        let mut x = v;
        for p in path {
            x = &x[*p];
        }
        x.as_f64().unwrap_or(f64::NAN)
    };
    let u = |v: &Value, path: &[&str]| {
        let mut x = v;
        for p in path {
            x = &x[*p];
        }
        match (x.as_u64(), x.as_f64()) {
            (Some(n), _) => n.to_string(),
            (None, Some(f)) => format!("{f:.0}"),
            _ => "-".to_owned(),
        }
    };
    println!();
    println!("plugin-soak report");
    println!("  engine       {}", engine.display());
    println!(
        "  phases       {} s each (+{} s warm-up), {} uploaders, mode: {}",
        args.secs,
        args.warmup,
        args.concurrency,
        if args.hot_reload {
            "one engine, hot reload"
        } else {
            "fresh engine per phase"
        }
    );
    println!(
        "  failing      {} ({:?} on every call, plugin {HOSTILE_NAME})",
        types[types.len() - 1],
        args.failure
    );
    println!("  healthy      {}", types[..types.len() - 1].join(", "));
    println!();
    println!("                                    baseline        soak");
    let hb = f(base, &["healthy_rows_per_s"]);
    let hs = f(soak, &["healthy_rows_per_s"]);
    println!(
        "  healthy rows/s                  {hb:>10.1}  {hs:>10.1}   ratio soak/baseline {}",
        fmt_ratio(hb, hs)
    );
    let ab = f(base, &["healthy_acked_per_s"]);
    let as_ = f(soak, &["healthy_acked_per_s"]);
    println!(
        "  healthy uploads acked/s         {ab:>10.1}  {as_:>10.1}   ratio {}",
        fmt_ratio(ab, as_)
    );
    println!(
        "  failing-type rows/s             {:>10.1}  {:>10.1}",
        f(base, &["failing_type_rows_per_s"]),
        f(soak, &["failing_type_rows_per_s"])
    );
    println!(
        "  failing-type scorer             {:>10}  {:>10}",
        base["failing_type_scorer"].as_str().unwrap_or("?"),
        soak["failing_type_scorer"].as_str().unwrap_or("?")
    );
    for (what, path) in [
        ("failing-type uploads acked", &["acked_failing_type"][..]),
        ("failing-type rows", &["rows_failing_type"]),
        (
            "  of which 'scorer error'",
            &["rows_failing_type_scorer_error"],
        ),
        ("hostile plugin calls", &["hostile_plugin", "calls"]),
        ("hostile plugin failures", &["hostile_plugin", "failures"]),
        ("  in /metrics", &["metrics", "hostile_plugin_failures"]),
        (
            "healthy rows 'scorer error'",
            &["rows_healthy_scorer_error"],
        ),
        ("uploads acked (phase)", &["acked_phase"]),
        ("rows (phase)", &["rows_phase"]),
        ("drop records (phase)", &["drops_phase"]),
        ("upload errors", &["upload_errors"]),
    ] {
        println!("  {what:<32}{:>10}  {:>10}", u(base, path), u(soak, path));
    }
    println!(
        "  drain after load (s)            {:>10.1}  {:>10.1}",
        f(base, &["drain_secs"]),
        f(soak, &["drain_secs"])
    );
    for (what, key) in [
        ("queue overflows", "score_queue_overflows"),
        ("recovered by catch-up", "recovered"),
        ("db errors", "db_errors"),
        ("ack->row p50 (s)", "ack_to_row_p50_s"),
        ("ack->row p99 (s)", "ack_to_row_p99_s"),
    ] {
        println!(
            "  {what:<32}{:>10}  {:>10}",
            fmt_num(&base["metrics"][key]),
            fmt_num(&soak["metrics"][key])
        );
    }
    for (what, key) in [
        ("engine CPU s (window)", "engine_s"),
        ("load generator CPU s", "tool_s"),
        ("other processes' CPU s", "other_s"),
        ("engine CPU ms per row", "engine_ms_per_row"),
    ] {
        println!(
            "  {what:<32}{:>10.3}  {:>10.3}",
            f(base, &["cpu", key]),
            f(soak, &["cpu", key])
        );
    }
    println!(
        "  engine log bytes                {:>10}  {:>10}",
        u(base, &["engine_log_bytes"]),
        u(soak, &["engine_log_bytes"])
    );
    println!();
    println!("  engine process                  idle      start        end        max    drained");
    for (phase, v) in [("baseline", base), ("soak", soak)] {
        for (what, key) in [
            ("RSS kB", "rss_kb"),
            ("open fds", "fds"),
            ("threads", "threads"),
        ] {
            println!(
                "  {phase:<9}{what:<14}{:>12}{:>11}{:>11}{:>11}{:>11}",
                u(v, &["proc", "idle", key]),
                u(v, &["proc", "start", key]),
                u(v, &["proc", "end", key]),
                u(v, &["proc", "max", key]),
                u(v, &["proc", "drained", key]),
            );
        }
    }
    if soak["metrics"]["hostile_plugin_failures"].is_null() {
        println!();
        println!(
            "  note: this engine's /metrics has no ooni_plugin_failures_total; failures are from /admin/plugins"
        );
    }
}

fn fmt_num(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) => format!("{x:.4}"),
        None => "-".into(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let engine = find_engine(args.engine.clone())?;
    if args.healthy.contains(&args.failing) {
        bail!("{} is both healthy and failing", args.failing);
    }
    let mut types = args.healthy.clone();
    types.push(args.failing.clone());
    let corpus = types
        .iter()
        .map(|t| load_type(&args.corpus, t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!(
        "corpus: {}",
        types
            .iter()
            .zip(&corpus)
            .map(|(t, m)| format!("{t} {}", m.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .timeout(Duration::from_secs(120))
        .build()?;
    let ctx = Ctx {
        args: &args,
        types,
        corpus,
        client,
    };
    let root = std::env::temp_dir().join(format!(
        "ooni-plugin-soak-{}-{}",
        std::process::id(),
        now_unix()
    ));
    std::fs::create_dir_all(&root)?;
    let wat = hostile_wat(&args.failing, args.failure);

    let (base, soak, stops) = if args.hot_reload {
        let dir = root.join("run");
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins)?;
        let e = EngineProc::start(&engine, &dir, &plugins)?;
        eprintln!(
            "engine pid {} at {} (baseline, then hot reload)",
            e.pid, e.base
        );
        let base = run_phase(&ctx, &e, "baseline").await?;
        // Written whole under a hidden name, then renamed: the watcher sees one file.
        let tmp = plugins.join(format!(".{HOSTILE_FILE}"));
        std::fs::write(&tmp, &wat)?;
        std::fs::rename(&tmp, plugins.join(HOSTILE_FILE))?;
        wait_hostile(&ctx, &e).await?;
        let soak = run_phase(&ctx, &e, "soak").await?;
        let stop = e.stop();
        (base, soak, vec![stop])
    } else {
        let dir = root.join("baseline");
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins)?;
        let e = EngineProc::start(&engine, &dir, &plugins)?;
        eprintln!("engine pid {} at {} (baseline)", e.pid, e.base);
        let base = run_phase(&ctx, &e, "baseline").await?;
        let stop_base = e.stop();
        if !args.keep {
            let _ = std::fs::remove_dir_all(&dir);
        }

        let dir = root.join("soak");
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins)?;
        std::fs::write(plugins.join(HOSTILE_FILE), &wat)?;
        let e = EngineProc::start(&engine, &dir, &plugins)?;
        eprintln!("engine pid {} at {} (soak)", e.pid, e.base);
        wait_hostile(&ctx, &e).await?;
        let soak = run_phase(&ctx, &e, "soak").await?;
        let stop_soak = e.stop();
        (base, soak, vec![stop_base, stop_soak])
    };

    print_report(&args, &engine, &ctx.types, &base, &soak);
    println!("  engine exits: {}", stops.join("; "));
    println!();
    println!(
        "{}",
        json!({
            "secs": args.secs, "warmup": args.warmup, "concurrency": args.concurrency,
            "failing": args.failing, "failure": format!("{:?}", args.failure).to_lowercase(),
            "healthy": args.healthy, "hot_reload": args.hot_reload,
            "healthy_rows_per_s_ratio": soak["healthy_rows_per_s"].as_f64().unwrap_or(0.0)
                / base["healthy_rows_per_s"].as_f64().unwrap_or(f64::NAN),
            "baseline": base, "soak": soak, "engine_exits": stops,
        })
    );
    if args.keep {
        eprintln!("data kept in {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(())
}
