//! The rollups (`fastpath_daily` for coarse aggregations, `fastpath_networks` for the
//! overview routes): on SQLite and PostgreSQL, their answers equal counts made here
//! from the rows written, after
//! inserts, re-scores that change outcomes, rows replaced by drop records, and an
//! upgrade of a database that already held rows (the migration's backfill).

mod common;

use chrono::{NaiveDate, NaiveDateTime};
use common::*;
use ooni_core::{DropKind, FastpathRow};
use ooni_engine::store::{AggQuery, AggRow, Axis, AxisValue, DropRecord, Grain, MetaKey, Store};
use std::collections::BTreeMap;
use std::path::Path;

fn at(day: u32, hour: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2024, 3, day)
        .unwrap()
        .and_hms_opt(hour, 17, 5)
        .unwrap()
}

/// `n` rows over five days, three countries, three tests and every outcome.
fn rows(n: usize) -> Vec<FastpathRow> {
    let ccs = ["IT", "IR", "DE"];
    let tests = ["web_connectivity", "telegram", "ndt"];
    (0..n)
        .map(|i| {
            let t = at(1 + (i % 5) as u32, (i * 7 % 24) as u32);
            let outcome = i % 4;
            FastpathRow {
                measurement_uid: format!("20240301000000.{i:06}_IT_webconnectivity_{i:016x}"),
                report_id: format!("20240301T000000Z_webconnectivity_IT_{i}_n1_AAAAAAAAAAAAAAAA"),
                input: format!("https://site{}.example/", i % 6),
                probe_cc: ccs[i % 3].to_owned(),
                probe_asn: 100 + (i % 4) as i64,
                test_name: tests[i / 3 % 3].to_owned(),
                test_start_time: t,
                measurement_start_time: t,
                scores: "{}".to_owned(),
                platform: "linux".to_owned(),
                anomaly: outcome == 1 || outcome == 2,
                confirmed: outcome == 2,
                msm_failure: outcome == 3,
                blocking_type: String::new(),
                domain: format!("site{}.example", i % 6),
                software_name: "t".to_owned(),
                software_version: "1".to_owned(),
                test_version: "1".to_owned(),
                test_runtime: 1.0,
                architecture: "amd64".to_owned(),
                engine_name: "e".to_owned(),
                engine_version: "1".to_owned(),
                test_helper_address: String::new(),
                test_helper_type: String::new(),
                ooni_run_link_id: None,
                is_verified: "u".to_owned(),
                scorer_name: "t".to_owned(),
                scorer_version: "1".to_owned(),
                fingerprints_version: String::new(),
            }
        })
        .collect()
}

/// (axes…) → [anomaly, confirmed, failure, ok, total], made from the rows.
type Counts = BTreeMap<Vec<String>, [i64; 5]>;

fn expected(rows: &[FastpathRow], q: &AggQuery) -> Counts {
    let mut out = Counts::new();
    for r in rows {
        let t = r.measurement_start_time;
        if q.since.is_some_and(|s| t < s)
            || q.until.is_some_and(|u| t >= u)
            || !(q.probe_ccs.is_empty() || q.probe_ccs.contains(&r.probe_cc))
            || !(q.test_names.is_empty() || q.test_names.contains(&r.test_name))
            || !(q.domains.is_empty() || q.domains.contains(&r.domain))
        {
            continue;
        }
        let key = q
            .axes
            .iter()
            .map(|a| match a {
                Axis::MeasurementStartDay => match q.grain {
                    Some(Grain::Month) => t.format("%Y-%m-01").to_string(),
                    _ => t.format("%Y-%m-%d").to_string(),
                },
                Axis::ProbeCc => r.probe_cc.clone(),
                Axis::TestName => r.test_name.clone(),
                Axis::Domain => r.domain.clone(),
                other => panic!("no expectation for {other:?}"),
            })
            .collect();
        let c = out.entry(key).or_default();
        let (a, cf, f) = (r.anomaly, r.confirmed, r.msm_failure);
        c[0] += (a && !cf && !f) as i64;
        c[1] += (cf && !f) as i64;
        c[2] += f as i64;
        c[3] += (!a && !cf && !f) as i64;
        c[4] += 1;
    }
    out
}

fn got(rows: Vec<AggRow>) -> Counts {
    rows.into_iter()
        .map(|r| {
            let key = r
                .axes
                .into_iter()
                .map(|v| match v {
                    AxisValue::Text(s) => s,
                    AxisValue::Int(i) => i.to_string(),
                })
                .collect();
            (
                key,
                [
                    r.anomaly_count,
                    r.confirmed_count,
                    r.failure_count,
                    r.ok_count,
                    r.measurement_count,
                ],
            )
        })
        .collect()
}

fn queries() -> Vec<AggQuery> {
    let q = |axes: Vec<Axis>| AggQuery {
        axes,
        max_groups: 10_000,
        ..AggQuery::default()
    };
    let midnight = |d: u32| Some(at(d, 0).date().and_hms_opt(0, 0, 0).unwrap());
    vec![
        // MAT's default: one test by day over a range.
        AggQuery {
            test_names: vec!["web_connectivity".into()],
            since: midnight(2),
            until: midnight(5),
            grain: Some(Grain::Day),
            ..q(vec![Axis::MeasurementStartDay])
        },
        // A country page's app chart: comma lists, two axes.
        AggQuery {
            probe_ccs: vec!["IT".into(), "IR".into()],
            test_names: vec!["telegram".into(), "ndt".into()],
            grain: Some(Grain::Day),
            ..q(vec![Axis::MeasurementStartDay, Axis::TestName])
        },
        AggQuery {
            grain: Some(Grain::Month),
            ..q(vec![Axis::MeasurementStartDay, Axis::ProbeCc])
        },
        q(vec![Axis::ProbeCc]),
        q(vec![]),
        // Not for the rollup: a domain filter, and a range that splits a day.
        AggQuery {
            domains: vec!["site1.example".into()],
            ..q(vec![Axis::ProbeCc])
        },
        AggQuery {
            since: Some(at(2, 12)),
            ..q(vec![Axis::TestName])
        },
    ]
}

async fn check(store: &Store, rows: &[FastpathRow], when: &str) {
    let qs = queries();
    assert!(qs[..5].iter().all(AggQuery::fits_daily_rollup));
    assert!(!qs[5..].iter().any(AggQuery::fits_daily_rollup));
    for q in &qs {
        let want = expected(rows, q);
        assert!(!want.is_empty() || q.axes.is_empty());
        let mut have = got(store.aggregate(q).await.unwrap());
        if q.axes.is_empty() {
            // One row of zeros or sums, no axes.
            let total = have.remove(&Vec::new()).unwrap();
            assert_eq!(
                Some(&total),
                want.get(&Vec::new()).or(Some(&[0; 5])),
                "{when}"
            );
            continue;
        }
        assert_eq!(have, want, "{} {when}: {q:?}", store.backend());
    }
    check_overviews(store, rows, when).await;
}

/// The overview routes' counts (from `fastpath_networks`) against the rows.
async fn check_overviews(store: &Store, rows: &[FastpathRow], when: &str) {
    let distinct = |f: &dyn Fn(&FastpathRow) -> String| {
        rows.iter()
            .map(f)
            .collect::<std::collections::BTreeSet<_>>()
            .len() as i64
    };
    assert_eq!(
        store.global_overview().await.unwrap(),
        (
            rows.len() as i64,
            distinct(&|r| r.probe_asn.to_string()),
            distinct(&|r| r.probe_cc.clone())
        ),
        "{when}"
    );
    let mut by_cc: BTreeMap<String, i64> = BTreeMap::new();
    let mut by_asn: BTreeMap<i64, i64> = BTreeMap::new();
    for r in rows {
        *by_cc.entry(r.probe_cc.clone()).or_default() += 1;
        *by_asn.entry(r.probe_asn).or_default() += 1;
    }
    let countries = store.count_by_country().await.unwrap();
    assert_eq!(
        countries,
        by_cc.clone().into_iter().collect::<Vec<_>>(),
        "{when}"
    );
    let networks: Vec<(i64, i64)> = store
        .count_by_network()
        .await
        .unwrap()
        .into_iter()
        .map(|(a, n, _)| (a, n))
        .collect();
    assert_eq!(networks, by_asn.into_iter().collect::<Vec<_>>(), "{when}");
    for cc in ["IT", "IR", "DE"] {
        let mine: Vec<&FastpathRow> = rows.iter().filter(|r| r.probe_cc == cc).collect();
        let asns: std::collections::BTreeSet<i64> = mine.iter().map(|r| r.probe_asn).collect();
        assert_eq!(
            store.country_overview(cc).await.unwrap(),
            (
                mine.iter().map(|r| r.measurement_start_time).min(),
                mine.len() as i64,
                asns.len() as i64
            ),
            "{cc} {when}"
        );
    }
    let since = at(1, 0).date().and_hms_opt(0, 0, 0).unwrap();
    let months = store.overview_by_month(since).await.unwrap();
    assert_eq!(months.len(), 1, "{when}");
    assert_eq!(
        (
            months[0].month.as_str(),
            months[0].measurements,
            months[0].countries
        ),
        (
            "2024-03-01",
            rows.len() as i64,
            distinct(&|r| r.probe_cc.clone())
        ),
        "{when}"
    );
}

async fn suite(kind: Db) {
    let tmp = tempfile::tempdir().unwrap();
    let db = TestDb::new(kind, tmp.path()).await;
    let store = db.store().await;

    // Upgrade: a database at the previous migration already holds rows.
    let previous = tmp.path().join("previous");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(store.backend());
    std::fs::create_dir(&previous).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0007" {
            std::fs::copy(&p, previous.join(name)).unwrap();
        }
    }
    let old = sqlx::migrate::Migrator::new(previous.as_path())
        .await
        .unwrap();
    match &store {
        Store::Sqlite(p) => old.run(p).await.unwrap(),
        Store::Postgres(p) => old.run(p).await.unwrap(),
    }
    let mut all = rows(400);
    store.write_batch(&all[..250], &[]).await.unwrap();
    store.migrate().await.unwrap();
    check(&store, &all[..250], "after the backfill").await;

    // New rows through the triggers.
    store.write_batch(&all[250..], &[]).await.unwrap();
    check(&store, &all, "after inserts").await;

    // Re-scores that change outcomes (and one that moves a row to another day).
    let mut changed = Vec::new();
    for (i, r) in all.iter_mut().enumerate().filter(|(i, _)| i % 7 == 0) {
        r.anomaly = !r.anomaly;
        r.confirmed = r.anomaly && i % 2 == 0;
        r.msm_failure = !r.msm_failure && i % 3 == 0;
        if i == 14 {
            r.measurement_start_time = at(5, 23);
        }
        changed.push(r.clone());
    }
    store.write_batch(&changed, &[]).await.unwrap();
    check(&store, &all, "after re-scores").await;

    // One batch naming a measurement twice (queued by an upload and by the start-up
    // scan): written, the later row standing, counted once.
    let before = all[3].clone();
    all[3].anomaly = !all[3].anomaly;
    all[3].scores = "{\"twice\":1}".into();
    store
        .write_batch(&[before, all[4].clone(), all[3].clone()], &[])
        .await
        .unwrap();
    check(&store, &all, "after a batch with a uid twice").await;
    let (again, _) = store
        .measurement_meta(MetaKey::Uid(&all[3].measurement_uid))
        .await
        .unwrap()
        .expect("the row is there");
    assert_eq!(again.scores, all[3].scores);
    assert_eq!(again.anomaly, all[3].anomaly);

    // Rows replaced by drop records go from the rollup too.
    let dropped: Vec<DropRecord> = all
        .iter()
        .filter(|r| r.probe_cc == "IR" && r.test_name == "telegram")
        .map(|r| DropRecord {
            measurement_uid: r.measurement_uid.clone(),
            kind: DropKind::Failed,
            reason: "test".into(),
        })
        .collect();
    assert!(!dropped.is_empty());
    store.write_batch(&[], &dropped).await.unwrap();
    all.retain(|r| !(r.probe_cc == "IR" && r.test_name == "telegram"));
    check(&store, &all, "after drops").await;
    // A group emptied by the drops is absent, as it is from the row table.
    let q = AggQuery {
        probe_ccs: vec!["IR".into()],
        axes: vec![Axis::TestName],
        max_groups: 100,
        ..AggQuery::default()
    };
    let names: Vec<Vec<String>> = got(store.aggregate(&q).await.unwrap())
        .into_keys()
        .collect();
    assert!(!names.contains(&vec!["telegram".to_owned()]), "{names:?}");

    if let Store::Sqlite(p) = &store {
        // The writer keeps its statement journal in memory only while it writes: every
        // pooled connection (all the pool may hold, taken at once, so each is a
        // different one and none is still on its way back) is back to the default, and
        // the API's large sorts still spill to disk.
        let mut held = Vec::new();
        for _ in 0..p.options().get_max_connections() {
            let mut conn = p.acquire().await.unwrap();
            let temp_store: i64 = sqlx::query_scalar("PRAGMA temp_store")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(temp_store, 0, "temp_store left changed by the writer");
            held.push(conn);
        }
        assert!(!held.is_empty());
    }

    match store {
        Store::Sqlite(p) => p.close().await,
        Store::Postgres(p) => p.close().await,
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_rollup_sqlite() {
    suite(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_rollup_postgres() {
    suite(Db::Postgres).await;
}
