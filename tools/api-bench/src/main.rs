//! `ooni-api-bench --db URL --rows N [--corpus DIR] [--runs N] [--skip-load] [--store-loader] [--load-only] [--explain]`
//!
//! 1. Synthesises N `fastpath` rows into SQLite or PostgreSQL: the corpus's own rows
//!    (derived by the engine's row code) as templates, spread over the last 365
//!    days, over 120 countries (a few large ones carry most rows, as in OONI's data),
//!    2,040 networks (17 per country) and 5,000 web domains, with anomaly / confirmed / failure at
//!    realistic rates. PostgreSQL (and SQLite with `--store-loader`) loads through
//!    the engine's `Store::write_batch`; SQLite otherwise uses a bulk loader (one
//!    connection, journal and sync off, 1,000-row statements, indexes built after).
//! 2. Starts the engine on that database and times Explorer's queries over HTTP:
//!    the search page, a country's search, a measurement page, a country page's
//!    30-day aggregations, 180-day MAT charts, a network page. Prints p50 / p99 per
//!    query.
//!
//! `--load-only` stops after the load. `--explain` (SQLite, no HTTP) prints the plan
//! and run time of each query's SQL as the engine sends it; with `--skip-load` it
//! inspects an existing database.

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

/// The synthesised rows: row `i` of a run depends only on the templates, the seed and
/// the rows before it, so every loader writes the same rows in the same order.
struct Synth {
    tpl: Vec<FastpathRow>,
    rng: rand::rngs::StdRng,
    now: chrono::NaiveDateTime,
}

impl Synth {
    fn new(corpus: &Path) -> anyhow::Result<Synth> {
        Ok(Synth {
            tpl: templates(corpus)?,
            rng: rand::rngs::StdRng::seed_from_u64(7),
            now: Utc::now().naive_utc(),
        })
    }

    fn row(&mut self, i: usize) -> FastpathRow {
        let rng = &mut self.rng;
        let mut r = self.tpl[i % self.tpl.len()].clone();
        let start = self.now - Duration::seconds(rng.gen_range(0..365 * 86_400));
        // Skewed: 20 countries carry ~80% of rows, 100 more the rest.
        // Each country has its own 17 networks (2,040 in all), as a network
        // belongs to one country in OONI's data.
        let country = if rng.gen_bool(0.8) {
            rng.gen_range(0..CCS.len())
        } else {
            CCS.len() + rng.gen_range(0..100)
        };
        r.probe_cc = match CCS.get(country) {
            Some(cc) => (*cc).to_owned(),
            None => {
                let k = (country - CCS.len()) as u8;
                format!("{}{}", (b'A' + k / 10) as char, (b'A' + k % 10) as char)
            }
        };
        r.probe_asn = (country * 17 + rng.gen_range(0..17)) as i64 * 17 + 13;
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
        r
    }
}

/// CPU seconds (user + system, all threads) this process has used so far: the load
/// rate in wall time depends on what else the machine runs.
fn cpu_secs() -> f64 {
    // Fields 14 and 15 of /proc/self/stat, in clock ticks (100 a second on Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split(' ').collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

fn progress(done: usize, rows: usize, t0: Instant) {
    if done.is_multiple_of(500_000) || done == rows {
        eprintln!(
            "loaded {done} rows ({:.0} rows/s)",
            done as f64 / t0.elapsed().as_secs_f64()
        );
    }
}

/// The original loader: the engine's own `Store::write_batch` upsert, 5,000 rows a
/// transaction. Used for PostgreSQL, and for SQLite with `--store-loader`.
async fn load(store: &Store, corpus: &Path, rows: usize) -> anyhow::Result<()> {
    let mut synth = Synth::new(corpus)?;
    let t0 = Instant::now();
    let cpu0 = cpu_secs();
    let batch = 5000;
    let mut done = 0;
    while done < rows {
        let n = batch.min(rows - done);
        let v: Vec<FastpathRow> = (done..done + n).map(|i| synth.row(i)).collect();
        store.write_batch(&v, &[]).await?;
        done += n;
        progress(done, rows, t0);
    }
    let secs = t0.elapsed().as_secs_f64();
    // On PostgreSQL most of the work is the server's, not counted here.
    let cpu = cpu_secs() - cpu0;
    eprintln!(
        "store load: {done} rows in {secs:.1} s ({:.0} rows/s; {cpu:.1} CPU s in this process, {:.1} µs a row)",
        done as f64 / secs,
        cpu * 1e6 / done as f64
    );
    Ok(())
}

/// Columns of `fastpath` in the store's insert order (engine/src/store/mod.rs);
/// `bulk_load_sqlite` checks them against the table so a schema change fails loudly.
const COLUMNS: [&str; 30] = [
    "measurement_uid",
    "report_id",
    "input",
    "probe_cc",
    "probe_asn",
    "test_name",
    "test_start_time",
    "measurement_start_time",
    "scores",
    "platform",
    "anomaly",
    "confirmed",
    "msm_failure",
    "blocking_type",
    "domain",
    "software_name",
    "software_version",
    "test_version",
    "test_runtime",
    "architecture",
    "engine_name",
    "engine_version",
    "test_helper_address",
    "test_helper_type",
    "ooni_run_link_id",
    "is_verified",
    "scorer_name",
    "scorer_version",
    "fingerprints_version",
    "scored_at",
];

/// SQLite allows 32,766 bound parameters a statement: 1,000 rows of 30 stay under it.
const BULK_ROWS_PER_STATEMENT: usize = 1000;
/// Rows a transaction.
const BULK_ROWS_PER_TX: usize = 250_000;

/// `INSERT … VALUES (?, …), … ON CONFLICT … DO UPDATE` for `n` rows: the same upsert
/// the store runs, so a re-load over an existing table behaves the same.
fn bulk_insert_sql(n: usize) -> String {
    let one = format!("({})", vec!["?"; COLUMNS.len()].join(", "));
    let updates: Vec<String> = COLUMNS[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO fastpath ({}) VALUES {} ON CONFLICT (measurement_uid) DO UPDATE SET {}",
        COLUMNS.join(", "),
        vec![one.as_str(); n].join(", "),
        updates.join(", ")
    )
}

/// Binds one row's 30 values with the same Rust types as the store's upsert, so
/// SQLite stores the same values (timestamps as sqlx renders them, booleans as 0/1).
fn bind_row<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    r: FastpathRow,
    scored_at: chrono::NaiveDateTime,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    q.bind(r.measurement_uid)
        .bind(r.report_id)
        .bind(r.input)
        .bind(r.probe_cc)
        .bind(r.probe_asn)
        .bind(r.test_name)
        .bind(r.test_start_time)
        .bind(r.measurement_start_time)
        .bind(r.scores)
        .bind(r.platform)
        .bind(r.anomaly)
        .bind(r.confirmed)
        .bind(r.msm_failure)
        .bind(r.blocking_type)
        .bind(r.domain)
        .bind(r.software_name)
        .bind(r.software_version)
        .bind(r.test_version)
        .bind(r.test_runtime)
        .bind(r.architecture)
        .bind(r.engine_name)
        .bind(r.engine_version)
        .bind(r.test_helper_address)
        .bind(r.test_helper_type)
        .bind(r.ooni_run_link_id)
        .bind(r.is_verified)
        .bind(r.scorer_name)
        .bind(r.scorer_version)
        .bind(r.fingerprints_version)
        .bind(scored_at)
}

/// Closes the store's pool and waits until its last connection is gone: a connection
/// that was still being handed back to the pool when `close` ran can outlive it (seen
/// with sqlx 0.8), and any open connection keeps the file in WAL mode.
async fn close_pool(p: &sqlx::SqlitePool) -> anyhow::Result<()> {
    for _ in 0..100 {
        // Lets a connection on its way back to the pool arrive, so `close` sees it.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        p.close().await;
        if p.size() == 0 {
            return Ok(());
        }
    }
    anyhow::bail!("the store's pool still has {} connection(s) open", p.size())
}

/// The SQLite bulk loader. The schema must exist (the store's migrations ran) and no
/// other connection may be open: it switches the file to `journal_mode=OFF` and
/// `synchronous=OFF` for the load, drops the secondary indexes, inserts in large
/// transactions of 1,000-row statements (rows synthesised on another thread),
/// rebuilds the indexes, runs `ANALYZE` and puts the file back in WAL mode.
async fn bulk_load_sqlite(url: &str, corpus: &Path, rows: usize) -> anyhow::Result<()> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    use sqlx::{ConnectOptions, Connection};
    use std::str::FromStr;

    let opts = SqliteConnectOptions::from_str(url)?
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Off)
        .synchronous(SqliteSynchronous::Off)
        .locking_mode(sqlx::sqlite::SqliteLockingMode::Exclusive)
        // 4 GiB of page cache: the primary-key index (inserted in random uid order)
        // stays in memory at 10M rows.
        .pragma("cache_size", "-4194304")
        // Lets CREATE INDEX sort with a helper thread.
        .pragma("threads", "2")
        .statement_cache_capacity(8);
    // Leaving WAL mode needs the file to itself (`close_pool` saw to that).
    let mut conn = opts.connect().await.context("bulk connection")?;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .context("journal_mode")?;
    anyhow::ensure!(mode == "off", "journal_mode is {mode}, not off");

    let cols: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('fastpath')")
        .fetch_all(&mut conn)
        .await?;
    anyhow::ensure!(
        cols == COLUMNS,
        "fastpath columns changed: table has {cols:?}"
    );

    // Secondary indexes are built once at the end (sorted), not updated row by row.
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' \
         AND tbl_name = 'fastpath' AND sql IS NOT NULL",
    )
    .fetch_all(&mut conn)
    .await?;
    for (name, _) in &indexes {
        sqlx::query(&format!("DROP INDEX {name}"))
            .execute(&mut conn)
            .await?;
    }

    // Synthesis (string formatting, template clones) runs on its own thread while
    // SQLite's worker thread inserts.
    let mut synth = Synth::new(corpus)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<FastpathRow>>(8);
    let producer = std::thread::spawn(move || {
        let mut done = 0;
        while done < rows {
            let n = BULK_ROWS_PER_STATEMENT.min(rows - done);
            let v: Vec<FastpathRow> = (done..done + n).map(|i| synth.row(i)).collect();
            if tx.blocking_send(v).is_err() {
                return;
            }
            done += n;
        }
    });

    let full_sql = bulk_insert_sql(BULK_ROWS_PER_STATEMENT);
    let t0 = Instant::now();
    let cpu0 = cpu_secs();
    let mut done = 0;
    let mut in_tx = 0;
    let mut txn = conn.begin().await?;
    let mut scored_at = Utc::now().naive_utc();
    while let Some(batch) = rx.recv().await {
        let n = batch.len();
        let tail_sql;
        let sql = if n == BULK_ROWS_PER_STATEMENT {
            &full_sql
        } else {
            tail_sql = bulk_insert_sql(n);
            &tail_sql
        };
        let mut q = sqlx::query(sql);
        for r in batch {
            q = bind_row(q, r, scored_at);
        }
        q.execute(&mut *txn).await?;
        done += n;
        in_tx += n;
        if in_tx >= BULK_ROWS_PER_TX {
            txn.commit().await?;
            txn = conn.begin().await?;
            in_tx = 0;
            // As the store does: one `scored_at` a transaction.
            scored_at = Utc::now().naive_utc();
        }
        progress(done, rows, t0);
    }
    txn.commit().await?;
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("row synthesis panicked"))?;
    anyhow::ensure!(done == rows, "loaded {done} of {rows} rows");
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    eprintln!(
        "bulk load: {done} rows in {secs:.1} s ({:.0} rows/s; {cpu:.1} CPU s, {:.1} µs CPU a row)",
        done as f64 / secs,
        cpu * 1e6 / done as f64
    );

    let t = Instant::now();
    for (_, sql) in &indexes {
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .context("CREATE INDEX")?;
    }
    eprintln!(
        "{} indexes built in {:.1} s",
        indexes.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    sqlx::query("ANALYZE")
        .execute(&mut conn)
        .await
        .context("ANALYZE")?;
    eprintln!("analyzed in {:.1} s", t.elapsed().as_secs_f64());
    // Back to the engine's mode (WAL is a property of the file), and let go of the
    // exclusive lock once this connection closes.
    sqlx::query("PRAGMA locking_mode = NORMAL")
        .execute(&mut conn)
        .await?;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
        .fetch_one(&mut conn)
        .await
        .context("back to WAL")?;
    anyhow::ensure!(mode == "wal", "journal_mode is {mode}, not wal");
    conn.close().await.context("closing the bulk connection")?;
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

/// A bound value of an explained statement.
enum Bind {
    Text(String),
    Time(chrono::NaiveDateTime),
    Int(i64),
    Bool(bool),
}

/// `--explain` (SQLite): the plans SQLite makes for the statements the engine sends
/// for the benchmark's queries, bound with the same values, and each one's own run
/// time (median of 5). The SQL is the engine's text as it logs it
/// (`RUST_LOG=sqlx::query=debug`); it is built in engine/src/store/query.rs and
/// engine/src/store/aggregate.rs. Uses sqlx's SQLite, the library the engine runs on.
async fn explain_sqlite(url: &str) -> anyhow::Result<()> {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};
    use std::str::FromStr;

    let cols = COLUMNS.join(", ");
    let counts = "COALESCE(SUM(CASE WHEN f.anomaly AND NOT f.confirmed AND NOT f.msm_failure THEN 1 ELSE 0 END), 0) AS anomaly_count, \
        COALESCE(SUM(CASE WHEN f.confirmed AND NOT f.msm_failure THEN 1 ELSE 0 END), 0) AS confirmed_count, \
        COALESCE(SUM(CASE WHEN f.msm_failure THEN 1 ELSE 0 END), 0) AS failure_count, \
        COALESCE(SUM(CASE WHEN NOT f.anomaly AND NOT f.confirmed AND NOT f.msm_failure THEN 1 ELSE 0 END), 0) AS ok_count, \
        COUNT(*) AS measurement_count";
    let category = "(SELECT c.category_code FROM citizenlab c WHERE c.url = f.input \
        ORDER BY (c.cc = 'ZZ') DESC, c.category_code LIMIT 1)";
    let order = "ORDER BY f.measurement_start_time DESC, f.measurement_uid DESC LIMIT ? OFFSET ?";
    // The API turns a `since` / `until` date into midnight.
    let midnight = |d: i64| {
        (Utc::now() + Duration::days(d))
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
    };
    let (m30, p1, m180) = (midnight(-30), midnight(1), midnight(-180));
    let mut conn = SqliteConnectOptions::from_str(url)?
        .create_if_missing(false)
        .read_only(true)
        .pragma("cache_size", "-65536")
        .connect()
        .await?;
    let uid: String = sqlx::query_scalar(
        "SELECT measurement_uid FROM fastpath WHERE probe_cc = 'IT' ORDER BY measurement_start_time DESC LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await?;
    let text = |v: &str| Bind::Text(v.to_owned());
    let statements: Vec<(&str, String, Vec<Bind>)> = vec![
        (
            "search page (30 days, failure=false, limit 50)",
            format!("SELECT {cols} FROM fastpath f WHERE 1 = 1 AND f.probe_cc <> 'ZZ' AND f.probe_asn <> 0 \
                AND f.measurement_start_time > ? AND f.measurement_start_time <= ? AND f.msm_failure = ? {order}"),
            vec![Bind::Time(m30), Bind::Time(p1), Bind::Bool(false), Bind::Int(50), Bind::Int(0)],
        ),
        (
            "search, one country + test",
            format!("SELECT {cols} FROM fastpath f WHERE 1 = 1 AND f.probe_cc = ? AND f.probe_asn <> 0 AND f.test_name = ? \
                AND f.measurement_start_time > ? AND f.measurement_start_time <= ? AND f.msm_failure = ? {order}"),
            vec![text("IT"), text("web_connectivity"), Bind::Time(m30), Bind::Time(p1), Bind::Bool(false), Bind::Int(50), Bind::Int(0)],
        ),
        (
            "search, one domain",
            format!("SELECT {cols} FROM fastpath f WHERE 1 = 1 AND f.domain = ? AND f.probe_cc <> 'ZZ' AND f.probe_asn <> 0 \
                AND f.measurement_start_time > ? AND f.measurement_start_time <= ? AND f.msm_failure = ? {order}"),
            vec![text("www.site42.example"), Bind::Time(m30), Bind::Time(p1), Bind::Bool(false), Bind::Int(50), Bind::Int(0)],
        ),
        (
            "measurement page (meta)",
            format!("SELECT {cols}, COALESCE({category}, '') AS category_code FROM fastpath f \
                WHERE f.measurement_uid = ? AND f.probe_asn <> 0 ORDER BY f.measurement_uid LIMIT 1"),
            vec![Bind::Text(uid)],
        ),
        (
            "country page: 30-day aggregation by day",
            format!("SELECT strftime('%Y-%m-%d', f.measurement_start_time) AS axis0, {counts} FROM fastpath f \
                WHERE 1 = 1 AND f.probe_cc IN (?) AND f.measurement_start_time >= ? AND f.measurement_start_time < ? \
                GROUP BY axis0 ORDER BY axis0 LIMIT ?"),
            vec![text("IT"), Bind::Time(m30), Bind::Time(p1), Bind::Int(100_001)],
        ),
        (
            "country page: categories (30 days)",
            format!("SELECT {category} AS axis0, {counts} FROM fastpath f \
                WHERE 1 = 1 AND f.probe_cc IN (?) AND f.test_name IN (?) AND f.measurement_start_time >= ? \
                AND f.measurement_start_time < ? AND EXISTS (SELECT 1 FROM citizenlab c WHERE c.url = f.input \
                AND (c.cc = 'ZZ' OR c.cc IN (?))) GROUP BY axis0 ORDER BY axis0 LIMIT ?"),
            vec![text("IT"), text("web_connectivity"), Bind::Time(m30), Bind::Time(p1), text("it"), Bind::Int(100_001)],
        ),
        (
            "MAT chart: 180 days web_connectivity by day",
            format!("SELECT strftime('%Y-%m-%d', f.measurement_start_time) AS axis0, {counts} FROM fastpath f \
                WHERE 1 = 1 AND f.test_name IN (?) AND f.measurement_start_time >= ? AND f.measurement_start_time < ? \
                GROUP BY axis0 ORDER BY axis0 LIMIT ?"),
            vec![text("web_connectivity"), Bind::Time(m180), Bind::Time(p1), Bind::Int(100_001)],
        ),
    ];
    let version: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&mut conn)
        .await?;
    println!("\nSQLite {version}: query plans (EXPLAIN QUERY PLAN) and direct run times");
    macro_rules! bound {
        ($q:expr, $binds:expr) => {{
            let mut q = $q;
            for b in $binds {
                q = match b {
                    Bind::Text(v) => q.bind(v.clone()),
                    Bind::Time(v) => q.bind(*v),
                    Bind::Int(v) => q.bind(*v),
                    Bind::Bool(v) => q.bind(*v),
                };
            }
            q
        }};
    }
    for (name, sql, binds) in &statements {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let plan: Vec<(i64, i64, i64, String)> = bound!(sqlx::query_as(&explain), binds)
            .fetch_all(&mut conn)
            .await?;
        let mut ms = Vec::new();
        let mut n = 0;
        for _ in 0..5 {
            let t = Instant::now();
            n = bound!(sqlx::query(sql), binds)
                .fetch_all(&mut conn)
                .await?
                .len();
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        println!("\n### {name}: {:.1} ms median, {n} rows", ms[2]);
        println!("{sql}");
        // Indent each step under its parent, as the sqlite3 shell draws it.
        let mut depth: Vec<(i64, usize)> = Vec::new();
        for (id, parent, _, detail) in &plan {
            while depth.last().is_some_and(|&(p, _)| p != *parent) {
                depth.pop();
            }
            let d = depth.last().map_or(0, |&(_, d)| d + 1);
            println!("  {}{detail}", "  ".repeat(d));
            depth.push((*id, d));
        }
    }
    conn.close().await?;
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
    let flag = |f: &str| std::env::args().any(|a| a == f);
    let mut store = Store::connect(&db).await.context("connect")?;
    store.migrate().await.context("migrate")?;
    if !flag("--skip-load") {
        let t_load = Instant::now();
        if let (Store::Sqlite(p), false) = (&store, flag("--store-loader")) {
            // The schema is the engine's (migrated above); the bulk loader needs the
            // file to itself.
            close_pool(p).await?;
            bulk_load_sqlite(&db, &corpus, rows).await?;
            store = Store::connect(&db)
                .await
                .context("reconnecting the store")?;
        } else {
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
        eprintln!(
            "load phase (rows + indexes + analyze): {:.1} s",
            t_load.elapsed().as_secs_f64()
        );
    }
    if flag("--load-only") {
        return Ok(());
    }
    if flag("--explain") {
        anyhow::ensure!(matches!(store, Store::Sqlite(_)), "--explain is for SQLite");
        return explain_sqlite(&db).await;
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
            "country page: app chart (30 days, 4 tests by day)",
            format!("/api/v1/aggregation?axis_y=test_name&axis_x=measurement_start_day&probe_cc=IT&since={}&until={}&test_name=signal%2Ctelegram%2Cwhatsapp%2Cfacebook_messenger&time_grain=day", day(-30), day(1)),
        ),
        (
            "MAT chart: 180 days web_connectivity by day",
            format!("/api/v1/aggregation?test_name=web_connectivity&axis_x=measurement_start_day&since={}&until={}&time_grain=day", day(-180), day(1)),
        ),
        (
            "MAT chart: 180 days web_connectivity by day and country",
            format!("/api/v1/aggregation?test_name=web_connectivity&axis_x=measurement_start_day&axis_y=probe_cc&since={}&until={}&time_grain=day", day(-180), day(1)),
        ),
        (
            "network page: one ASN by country, all time",
            "/api/v1/aggregation?probe_asn=AS727&axis_x=probe_cc".to_owned(),
        ),
        ("home page: global overview", "/api/_/global_overview".to_owned()),
        ("home page: 24 months by month", "/api/_/global_overview_by_month".to_owned()),
        ("country page: overview (server side)", "/api/_/country_overview?probe_cc=IT".to_owned()),
        ("countries page", "/api/_/countries".to_owned()),
        ("networks page", "/api/_/networks".to_owned()),
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
