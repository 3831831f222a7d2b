//! The database: SQLite by default, PostgreSQL when the URL says so. One schema for
//! both (`migrations/sqlite`, `migrations/postgres`); every statement here is written
//! once and runs on either.

use chrono::NaiveDateTime;
use ooni_core::{DropKind, FastpathRow};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, PgPool, QueryBuilder, Row, SqlitePool};
use std::borrow::Cow;
use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;
use thiserror::Error;

/// Runs the same block on whichever pool the store has: every statement here is
/// written once and type-checked against both databases.
macro_rules! on_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match $store {
            Store::Sqlite($p) => $body,
            Store::Postgres($p) => $body,
        }
    };
}

/// Pushes ` AND f.{column} IN (…)` with one bind per value; nothing for an empty
/// list (no filter).
macro_rules! push_in_list {
    ($qb:expr, $column:expr, $values:expr) => {{
        let values = $values;
        if !values.is_empty() {
            $qb.push(format!(" AND f.{} IN (", $column));
            let mut sep = $qb.separated(", ");
            for v in values.iter().cloned() {
                sep.push_bind(v);
            }
            $qb.push(")");
        }
    }};
}

mod aggregate;
mod jsonl;
mod overview;
mod query;
pub use aggregate::{AggQuery, AggRow, Axis, AxisValue, Grain};
pub use jsonl::BodyLocation;
pub use overview::{AsnMeta, Candidate, DomainCount, MonthCounts, TestListEntry};
pub use query::{ListQuery, MetaKey, OrderBy};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    Url(String),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A measurement that was stored but gives no row.
#[derive(Debug, Clone)]
pub struct DropRecord {
    pub measurement_uid: String,
    pub kind: DropKind,
    pub reason: String,
}

/// Columns of `fastpath`, in insert order.
pub(crate) const COLUMNS: &str =
    "measurement_uid, report_id, input, probe_cc, probe_asn, test_name, \
    test_start_time, measurement_start_time, scores, platform, anomaly, confirmed, msm_failure, \
    blocking_type, domain, software_name, software_version, test_version, test_runtime, \
    architecture, engine_name, engine_version, test_helper_address, test_helper_type, \
    ooni_run_link_id, is_verified, scorer_name, scorer_version, fingerprints_version, scored_at";

/// Builds one statement per batch for either database; `$qb` infers its backend from
/// the connection it runs on, so the SQL text exists once.
macro_rules! upsert_rows {
    ($rows:expr, $scored_at:expr) => {{
        let mut qb = QueryBuilder::new(format!("INSERT INTO fastpath ({COLUMNS}) "));
        qb.push_values($rows, |mut b, r: &FastpathRow| {
            b.push_bind(&r.measurement_uid)
                .push_bind(&r.report_id)
                .push_bind(&r.input)
                .push_bind(&r.probe_cc)
                .push_bind(r.probe_asn)
                .push_bind(&r.test_name)
                .push_bind(r.test_start_time)
                .push_bind(r.measurement_start_time)
                .push_bind(&r.scores)
                .push_bind(&r.platform)
                .push_bind(r.anomaly)
                .push_bind(r.confirmed)
                .push_bind(r.msm_failure)
                .push_bind(&r.blocking_type)
                .push_bind(&r.domain)
                .push_bind(&r.software_name)
                .push_bind(&r.software_version)
                .push_bind(&r.test_version)
                .push_bind(r.test_runtime)
                .push_bind(&r.architecture)
                .push_bind(&r.engine_name)
                .push_bind(&r.engine_version)
                .push_bind(&r.test_helper_address)
                .push_bind(&r.test_helper_type)
                .push_bind(r.ooni_run_link_id)
                .push_bind(&r.is_verified)
                .push_bind(&r.scorer_name)
                .push_bind(&r.scorer_version)
                .push_bind(&r.fingerprints_version)
                .push_bind($scored_at);
        });
        qb.push(" ON CONFLICT (measurement_uid) DO UPDATE SET ");
        let updates: Vec<String> = COLUMNS
            .split(", ")
            .skip(1)
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        qb.push(updates.join(", "));
        qb
    }};
}

macro_rules! upsert_drops {
    ($drops:expr, $at:expr) => {{
        let mut qb = QueryBuilder::new(
            "INSERT INTO fastpath_dropped (measurement_uid, kind, reason, dropped_at) ",
        );
        qb.push_values($drops, |mut b, d: &DropRecord| {
            b.push_bind(&d.measurement_uid)
                .push_bind(d.kind.as_str())
                .push_bind(&d.reason)
                .push_bind($at);
        });
        qb.push(
            " ON CONFLICT (measurement_uid) DO UPDATE SET kind = excluded.kind, \
             reason = excluded.reason, dropped_at = excluded.dropped_at",
        );
        qb
    }};
}

/// `DELETE FROM {table} WHERE measurement_uid IN (…)`.
macro_rules! delete_uids {
    ($table:expr, $uids:expr) => {{
        let mut qb =
            QueryBuilder::new(format!("DELETE FROM {} WHERE measurement_uid IN (", $table));
        let mut sep = qb.separated(", ");
        for u in $uids {
            sep.push_bind(u);
        }
        qb.push(")");
        qb
    }};
}

/// `items` with only the last of each uid, in their order; borrowed when no uid repeats.
fn last_per_uid<T: Clone>(items: &[T], uid: impl Fn(&T) -> &String) -> Cow<'_, [T]> {
    let mut seen = HashSet::with_capacity(items.len());
    if items.iter().all(|it| seen.insert(uid(it))) {
        return Cow::Borrowed(items);
    }
    seen.clear();
    let mut kept: Vec<T> = items
        .iter()
        .rev()
        .filter(|it| seen.insert(uid(it)))
        .cloned()
        .collect();
    kept.reverse();
    Cow::Owned(kept)
}

macro_rules! write_batch_on {
    ($pool:expr, $rows:expr, $drops:expr, $now:expr, $lock:expr) => {{
        let mut tx = $pool.begin().await?;
        if let Some(lock) = $lock {
            sqlx::query(lock).execute(&mut *tx).await?;
        }
        for chunk in $rows.chunks(ROWS_PER_STATEMENT) {
            upsert_rows!(chunk, $now).build().execute(&mut *tx).await?;
            delete_uids!("fastpath_dropped", chunk.iter().map(|r| &r.measurement_uid))
                .build()
                .execute(&mut *tx)
                .await?;
        }
        for chunk in $drops.chunks(ROWS_PER_STATEMENT) {
            upsert_drops!(chunk, $now).build().execute(&mut *tx).await?;
            delete_uids!("fastpath", chunk.iter().map(|d| &d.measurement_uid))
                .build()
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }};
}

/// Reads a `fastpath` row selected with `COLUMNS` (`scored_at` is not part of it).
pub(crate) fn fastpath_row<R: Row>(r: &R) -> Result<FastpathRow, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    f64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    bool: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    NaiveDateTime: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(FastpathRow {
        measurement_uid: r.try_get("measurement_uid")?,
        report_id: r.try_get("report_id")?,
        input: r.try_get("input")?,
        probe_cc: r.try_get("probe_cc")?,
        probe_asn: r.try_get("probe_asn")?,
        test_name: r.try_get("test_name")?,
        test_start_time: r.try_get("test_start_time")?,
        measurement_start_time: r.try_get("measurement_start_time")?,
        scores: r.try_get("scores")?,
        platform: r.try_get("platform")?,
        anomaly: r.try_get("anomaly")?,
        confirmed: r.try_get("confirmed")?,
        msm_failure: r.try_get("msm_failure")?,
        blocking_type: r.try_get("blocking_type")?,
        domain: r.try_get("domain")?,
        software_name: r.try_get("software_name")?,
        software_version: r.try_get("software_version")?,
        test_version: r.try_get("test_version")?,
        test_runtime: r.try_get("test_runtime")?,
        architecture: r.try_get("architecture")?,
        engine_name: r.try_get("engine_name")?,
        engine_version: r.try_get("engine_version")?,
        test_helper_address: r.try_get("test_helper_address")?,
        test_helper_type: r.try_get("test_helper_type")?,
        ooni_run_link_id: r.try_get("ooni_run_link_id")?,
        is_verified: r.try_get("is_verified")?,
        scorer_name: r.try_get("scorer_name")?,
        scorer_version: r.try_get("scorer_version")?,
        fingerprints_version: r.try_get("fingerprints_version")?,
    })
}

/// 30 binds a row: stays under SQLite's 32,766 and PostgreSQL's 65,535 parameters.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

impl Store {
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                // FULL: a committed `jsonl` index row must survive a power cut, because
                // the uploader deletes the spool files it indexes right after.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                // SQLite's default 2 MiB page cache thrashes once indexes outgrow it.
                .pragma("cache_size", "-65536")
                // A checkpoint copies each page once however many commits changed it
                // since the last: with SQLite's default (1000 pages, 4 MiB) one ran
                // after every batch, rewriting the same index pages each time. 16384
                // pages is 64 MiB at 4 KiB pages; the WAL is truncated back to that
                // after a checkpoint rather than keeping its largest size on disk.
                .pragma("wal_autocheckpoint", "16384")
                .pragma("journal_size_limit", "67108864")
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await?;
            Ok(Store::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            Ok(Store::Postgres(pool))
        } else {
            Err(StoreError::Url(url.to_owned()))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await?,
            Store::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await?,
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(p) => {
                sqlx::query("SELECT 1").execute(p).await?;
            }
            Store::Postgres(p) => {
                sqlx::query("SELECT 1").execute(p).await?;
            }
        }
        Ok(())
    }

    /// Upserts rows and drop records in one transaction. A uid is in at most one of
    /// the two tables afterwards: re-scoring replaces whatever was there.
    pub async fn write_batch(
        &self,
        rows: &[FastpathRow],
        drops: &[DropRecord],
    ) -> Result<(), StoreError> {
        let now: NaiveDateTime = chrono::Utc::now().naive_utc();
        // One measurement can be queued twice (a live upload the start-up scan also
        // found unscored): PostgreSQL refuses an upsert that names a key twice, which
        // would stall the writer on that batch for good; the later row stands.
        let rows = &*last_per_uid(rows, |r| &r.measurement_uid);
        let drops = &*last_per_uid(drops, |d| &d.measurement_uid);
        match self {
            Store::Sqlite(p) => {
                // A multi-row upsert whose triggers write the rollups keeps a statement
                // journal of every page it touches; past 64 KiB SQLite spills it to a
                // temporary file, which cost a fifth of the writer's CPU and a third of
                // its page writes. In memory it is bounded by one statement (about 15
                // pages a row, ROWS_PER_STATEMENT = 500 rows: 30 MB at worst), however
                // many rows the batch holds. Only the writing connection
                // keeps temporaries in memory, and only while it writes: the API's large
                // sorts still spill to disk.
                let mut conn = p.acquire().await?;
                sqlx::query("PRAGMA temp_store = MEMORY")
                    .execute(&mut *conn)
                    .await?;
                let written: Result<(), StoreError> = async {
                    write_batch_on!(&mut *conn, rows, drops, now, None::<&str>);
                    Ok(())
                }
                .await;
                let reset = sqlx::query("PRAGMA temp_store = DEFAULT")
                    .execute(&mut *conn)
                    .await;
                if reset.is_err() {
                    // Never hand the API a connection that keeps its sorts in memory.
                    conn.close_on_drop();
                }
                written?;
                reset?;
            }
            // The rows' triggers update shared rollup rows (a day's, a month's) in the
            // order the rows come; two writers at once (the serving one and a
            // rescore) could lock them in opposite orders. One writer at a time, as
            // SQLite has anyway, leaves no lock cycle.
            Store::Postgres(p) => write_batch_on!(
                p,
                rows,
                drops,
                now,
                Some("SELECT pg_advisory_xact_lock(7308001)")
            ),
        }
        Ok(())
    }

    /// Which of `uids` already have a row or a drop record.
    pub async fn known_uids(&self, uids: &[String]) -> Result<HashSet<String>, StoreError> {
        let mut known = HashSet::new();
        for chunk in uids.chunks(ROWS_PER_STATEMENT) {
            for table in ["fastpath", "fastpath_dropped"] {
                macro_rules! select_known {
                    ($pool:expr) => {{
                        let mut qb = QueryBuilder::new(format!(
                            "SELECT measurement_uid FROM {table} WHERE measurement_uid IN ("
                        ));
                        let mut sep = qb.separated(", ");
                        for u in chunk {
                            sep.push_bind(u);
                        }
                        qb.push(")");
                        let found: Vec<(String,)> = qb.build_query_as().fetch_all($pool).await?;
                        known.extend(found.into_iter().map(|(u,)| u));
                    }};
                }
                match self {
                    Store::Sqlite(p) => select_known!(p),
                    Store::Postgres(p) => select_known!(p),
                }
            }
        }
        Ok(known)
    }

    /// The rows of these uids, in no particular order.
    pub async fn fetch_rows(&self, uids: &[String]) -> Result<Vec<FastpathRow>, StoreError> {
        let mut out = Vec::with_capacity(uids.len());
        for chunk in uids.chunks(ROWS_PER_STATEMENT) {
            macro_rules! fetch {
                ($pool:expr) => {{
                    let mut qb = QueryBuilder::new(format!(
                        "SELECT {COLUMNS} FROM fastpath WHERE measurement_uid IN ("
                    ));
                    let mut sep = qb.separated(", ");
                    for u in chunk {
                        sep.push_bind(u);
                    }
                    qb.push(")");
                    for r in qb.build().fetch_all($pool).await? {
                        out.push(fastpath_row(&r)?);
                    }
                }};
            }
            match self {
                Store::Sqlite(p) => fetch!(p),
                Store::Postgres(p) => fetch!(p),
            }
        }
        Ok(out)
    }

    /// The drop records of these uids.
    pub async fn fetch_drops(&self, uids: &[String]) -> Result<Vec<DropRecord>, StoreError> {
        let mut out = Vec::new();
        for chunk in uids.chunks(ROWS_PER_STATEMENT) {
            macro_rules! fetch {
                ($pool:expr) => {{
                    let mut qb = QueryBuilder::new(
                        "SELECT measurement_uid, kind, reason FROM fastpath_dropped WHERE measurement_uid IN (",
                    );
                    let mut sep = qb.separated(", ");
                    for u in chunk {
                        sep.push_bind(u);
                    }
                    qb.push(")");
                    let found: Vec<(String, String, String)> = qb.build_query_as().fetch_all($pool).await?;
                    out.extend(found.into_iter().map(|(measurement_uid, kind, reason)| DropRecord {
                        measurement_uid,
                        kind: if kind == "discarded" { DropKind::Discarded } else { DropKind::Failed },
                        reason,
                    }));
                }};
            }
            match self {
                Store::Sqlite(p) => fetch!(p),
                Store::Postgres(p) => fetch!(p),
            }
        }
        Ok(out)
    }

    /// Refreshes the planner's statistics (and, on PostgreSQL, the visibility map that
    /// index-only scans need) after a bulk load.
    pub async fn analyze(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(p) => {
                sqlx::query("ANALYZE").execute(p).await?;
            }
            Store::Postgres(p) => {
                sqlx::query("VACUUM ANALYZE fastpath").execute(p).await?;
            }
        }
        Ok(())
    }

    pub async fn count_rows(&self) -> Result<i64, StoreError> {
        let q = "SELECT COUNT(*) FROM fastpath";
        Ok(match self {
            Store::Sqlite(p) => sqlx::query_scalar(q).fetch_one(p).await?,
            Store::Postgres(p) => sqlx::query_scalar(q).fetch_one(p).await?,
        })
    }
}
