//! `ooni-api-bench --db URL --rows N [--corpus DIR] [--skip-load]`
//!
//! 1. Synthesises N `fastpath` rows into SQLite or PostgreSQL: the corpus's own rows
//!    (derived by the engine's row code) as templates, spread over the last 365
//!    days, over 120 countries (a few large ones carry most rows, as in OONI's data),
//!    2,000 networks and 5,000 web domains, with anomaly / confirmed / failure at
//!    realistic rates.
//! 2. Starts the engine on that database and times Explorer's queries over HTTP:
//!    the search page, a country's search, a measurement page, a country page's
//!    30-day aggregation, a 180-day MAT chart. Prints p50 / p99 per query.

use anyhow::Context;
use chrono::{Duration, Utc};
use ooni_core::row::ScorerSelect;
use ooni_core::{derive_row, DefaultScorer, FastpathRow, Outcome, Scorer};
use ooni_engine::store::Store;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

struct Defaults;
impl ScorerSelect for Defaults {
    fn select(&self, _: &str) -> &dyn Scorer {
        &DefaultScorer
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn templates(corpus: &Path) -> anyhow::Result<Vec<FastpathRow>> {
    let mut out = Vec::new();
    let root = corpus.join("measurements");
    for d in std::fs::read_dir(&root).with_context(|| format!("{}", root.display()))? {
        for f in std::fs::read_dir(d?.path())? {
            let body = std::fs::read(f?.path())?;
            let uid = "20260101000000.000000_IT_ndt_0000000000000000";
            if let Outcome::Row(r) = derive_row(&body, uid, &Defaults) {
                if r.probe_cc != "ZZ" && r.probe_asn != 0 {
                    out.push(*r);
                }
            }
        }
    }
    anyhow::ensure!(!out.is_empty(), "no template rows");
    Ok(out)
}

const CCS: [&str; 20] = [
    "US", "RU", "IR", "IT", "DE", "IN", "BR", "CN", "ID", "GB", "FR", "UA", "TR", "MX", "VE", "EG",
    "PK", "MM", "KZ", "BY",
];

async fn load(store: &Store, corpus: &Path, rows: usize) -> anyhow::Result<()> {
    let tpl = templates(corpus)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let now = Utc::now().naive_utc();
    let t0 = Instant::now();
    let batch = 5000;
    let mut done = 0;
    while done < rows {
        let n = batch.min(rows - done);
        let mut v = Vec::with_capacity(n);
        for i in done..done + n {
            let mut r = tpl[i % tpl.len()].clone();
            let start = now - Duration::seconds(rng.gen_range(0..365 * 86_400));
            // Skewed: 20 countries carry ~80% of rows, 100 more the rest.
            r.probe_cc = if rng.gen_bool(0.8) {
                CCS[rng.gen_range(0..CCS.len())].to_owned()
            } else {
                let k: u8 = rng.gen_range(0..100);
                format!("{}{}", (b'A' + k / 10) as char, (b'A' + k % 10) as char)
            };
            r.probe_asn = rng.gen_range(1..2000) as i64 * 17 + 13;
            if r.test_name == "web_connectivity" {
                let d = rng.gen_range(0..5000);
                r.domain = format!("www.site{d}.example");
                r.input = format!("https://{}/", r.domain);
            }
            let roll: f64 = rng.gen();
            r.msm_failure = roll < 0.05;
            r.confirmed = !r.msm_failure && roll < 0.06;
            r.anomaly = !r.msm_failure && roll < 0.16;
            r.measurement_start_time = start;
            r.test_start_time = start;
            r.measurement_uid = format!(
                "{}.{:06}_{}_{}_{:016x}",
                start.format("%Y%m%d%H%M%S"),
                i % 1_000_000,
                r.probe_cc,
                r.test_name.replace('_', ""),
                i
            );
            r.report_id = format!(
                "{}Z_{}_{}_{}_n1_{:016}",
                start.format("%Y%m%dT%H%M%S"),
                r.test_name.replace('_', ""),
                r.probe_cc,
                r.probe_asn,
                i
            );
            v.push(r);
        }
        store.write_batch(&v, &[]).await?;
        done += n;
        if done % 500_000 == 0 || done == rows {
            eprintln!(
                "loaded {done} rows ({:.0} rows/s)",
                done as f64 / t0.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Drops the `fastpath` secondary indexes; returns the statements that recreate them.
async fn drop_indexes(store: &Store) -> anyhow::Result<Vec<(String, String)>> {
    let found: Vec<(String, String)> =
        match store {
            Store::Sqlite(p) => {
                sqlx::query_as(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' \
                 AND tbl_name = 'fastpath' AND sql IS NOT NULL",
                )
                .fetch_all(p)
                .await?
            }
            Store::Postgres(p) => sqlx::query_as(
                "SELECT indexname::text, indexdef FROM pg_indexes WHERE tablename = 'fastpath' \
                 AND indexname <> 'fastpath_pkey'",
            )
            .fetch_all(p)
            .await?,
        };
    for (name, _) in &found {
        let q = format!("DROP INDEX {name}");
        match store {
            Store::Sqlite(p) => {
                sqlx::query(&q).execute(p).await?;
            }
            Store::Postgres(p) => {
                sqlx::query(&q).execute(p).await?;
            }
        }
    }
    Ok(found)
}

async fn create_indexes(store: &Store, indexes: &[(String, String)]) -> anyhow::Result<()> {
    for (_, sql) in indexes {
        match store {
            Store::Sqlite(p) => {
                sqlx::query(sql).execute(p).await?;
            }
            Store::Postgres(p) => {
                sqlx::query(sql).execute(p).await?;
            }
        }
    }
    Ok(())
}

struct EngineProc(std::process::Child, String);
impl Drop for EngineProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_engine(db: &str, data: &Path) -> anyhow::Result<EngineProc> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("ooni-engine");
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            db,
            "--data-dir",
        ])
        .arg(data)
        .env("OONI_UPLOAD_INTERVAL_SECS", "0")
        .env("RUST_LOG", "warn")
        .current_dir(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let line = lines.next().context("engine exited")??;
    let addr = line
        .strip_prefix("ooni-engine listening on ")
        .context("unexpected first line")?
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    Ok(EngineProc(child, format!("http://{addr}")))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let db = arg("--db").context("--db URL")?;
    let rows: usize = arg("--rows").map_or(Ok(1_000_000), |v| v.parse())?;
    let corpus = PathBuf::from(arg("--corpus").unwrap_or_else(|| "../shared/corpus".into()));
    let runs: usize = arg("--runs").map_or(Ok(50), |v| v.parse())?;
    let store = Store::connect(&db).await?;
    store.migrate().await?;
    if std::env::args().all(|a| a != "--skip-load") {
        // A bulk load: secondary indexes are built once at the end (sorted), not
        // updated row by row, as an operator would load a backfill.
        let indexes = drop_indexes(&store).await?;
        load(&store, &corpus, rows).await?;
        let t = Instant::now();
        create_indexes(&store, &indexes).await?;
        eprintln!(
            "{} indexes built in {:.1} s",
            indexes.len(),
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        store.analyze().await?;
        eprintln!("analyzed in {:.1} s", t.elapsed().as_secs_f64());
    }
    let total = store.count_rows().await?;
    let data = std::env::temp_dir().join(format!("ooni-api-bench-{}", std::process::id()));
    std::fs::create_dir_all(&data)?;
    let engine = start_engine(&db, &data)?;
    let c = reqwest::Client::new();
    // A measurement page for a row in the middle of the table.
    let probe: serde_json::Value = c
        .get(format!(
            "{}/api/v1/measurements?probe_cc=IT&limit=1",
            engine.1
        ))
        .send()
        .await?
        .json()
        .await?;
    let uid = probe["results"][0]["measurement_uid"]
        .as_str()
        .context("no IT row in the last 30 days")?
        .to_owned();
    let day = |d: i64| {
        (Utc::now() + Duration::days(d))
            .format("%Y-%m-%d")
            .to_string()
    };
    let queries: Vec<(&str, String)> = vec![
        (
            "search page (30 days, failure=false, limit 50)",
            format!("/api/v1/measurements?since={}&until={}&failure=false&limit=50&order=desc", day(-30), day(1)),
        ),
        (
            "search, one country + test",
            format!("/api/v1/measurements?probe_cc=IT&test_name=web_connectivity&since={}&until={}&failure=false&limit=50", day(-30), day(1)),
        ),
        (
            "search, one domain",
            "/api/v1/measurements?domain=www.site42.example&failure=false&limit=50".to_owned(),
        ),
        (
            "measurement page (meta)",
            format!("/api/v1/measurement_meta?measurement_uid={uid}"),
        ),
        (
            "country page: 30-day aggregation by day",
            format!("/api/v1/aggregation?probe_cc=IT&since={}&until={}&axis_x=measurement_start_day&time_grain=day", day(-30), day(1)),
        ),
        (
            "country page: categories (30 days)",
            format!("/api/v1/aggregation?probe_cc=IT&since={}&until={}&test_name=web_connectivity&axis_x=category_code", day(-30), day(1)),
        ),
        (
            "MAT chart: 180 days web_connectivity by day",
            format!("/api/v1/aggregation?test_name=web_connectivity&axis_x=measurement_start_day&since={}&until={}&time_grain=day", day(-180), day(1)),
        ),
    ];
    println!("\n{} rows in {}", total, store.backend());
    println!("| query | p50 ms | p99 ms |");
    println!("|---|---|---|");
    for (name, path) in &queries {
        let url = format!("{}{}", engine.1, path);
        let mut ms = Vec::with_capacity(runs);
        for i in 0..runs + 2 {
            let t = Instant::now();
            let r = c.get(&url).send().await?;
            anyhow::ensure!(r.status().is_success(), "{name}: {}", r.status());
            let _ = r.bytes().await?;
            if i >= 2 {
                ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        ms.sort_by(f64::total_cmp);
        let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
        println!("| {name} | {:.1} | {:.1} |", q(0.5), q(0.99));
    }
    drop(engine);
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
