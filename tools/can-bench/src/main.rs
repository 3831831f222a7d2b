//! Uploader and rescore throughput, each beside a baseline measured in the same run.
//!
//! `ooni-can-bench CORPUS [--spool N] [--day N] [--s3-bin PATH]`
//!
//! 1. Uploader: N corpus measurements (their own cc and test name) spooled into one
//!    closed hour, then one uploader pass into a local directory and, when an
//!    `s3s-fs` binary is given or on PATH, into S3 on loopback. Baseline: reading the
//!    same files and gzip-compressing them once, in one thread.
//! 2. Rescore: a synthesised day of N measurements packed into postcans (24 hours,
//!    each corpus measurement's cc and test), then `rescore` of that day into SQLite
//!    with every core. Baseline: reading the same postcans and parsing every body
//!    with serde_json, in one thread.

use anyhow::Context;
use bytes::Bytes;
use chrono::{Duration as CDuration, NaiveDate, TimeZone, Utc};
use ooni_core::ids::format_measurement_uid;
use ooni_engine::cans::read::read_postcan;
use ooni_engine::cans::{CanBuilder, CanKey, CanKind, CanOptions};
use ooni_engine::config::Config;
use ooni_engine::metrics::Metrics;
use ooni_engine::objstore::{LocalStore, ObjectStore, S3Settings, S3Store};
use ooni_engine::rescore::{rescore, RescoreArgs};
use ooni_engine::store::{DropRecord, Store};
use ooni_engine::uploader::{RetryPolicy, Uploader};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

struct Sample {
    cc: String,
    test_name: String,
    /// The POST body: a JSON envelope around the measurement.
    body: Bytes,
}

fn load_corpus(corpus: &Path) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    let root = corpus.join("measurements");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .with_context(|| format!("corpus at {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    for d in dirs {
        let mut files: Vec<_> = std::fs::read_dir(&d)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        for f in files {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&f)?)?;
            let cc = v["probe_cc"].as_str().unwrap_or("");
            let tn = v["test_name"].as_str().unwrap_or("");
            let cc_ok = cc.len() == 2 && cc.bytes().all(|b| b.is_ascii_uppercase());
            if !cc_ok || cc == "ZZ" || tn.is_empty() {
                continue;
            }
            let body = serde_json::to_vec(&serde_json::json!({"format": "json", "content": v}))?;
            out.push(Sample {
                cc: cc.to_owned(),
                test_name: tn.to_owned(),
                body: body.into(),
            });
        }
    }
    Ok(out)
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn find_s3s_fs() -> Option<PathBuf> {
    if let Some(p) = arg("--s3-bin") {
        return Some(PathBuf::from(p));
    }
    let home = PathBuf::from(std::env::var_os("HOME")?);
    let mut c: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .collect()
        })
        .unwrap_or_default();
    c.push(home.join(".cargo/bin/s3s-fs"));
    c.push(home.join(".cache/ooni-engine-tools/bin/s3s-fs"));
    c.into_iter().find(|p| p.is_file())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let corpus = std::env::args()
        .nth(1)
        .filter(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/corpus"));
    let spool_n: usize = arg("--spool").map_or(Ok(20_000), |v| v.parse())?;
    let day_n: usize = arg("--day").map_or(Ok(1_000_000), |v| v.parse())?;
    let samples = load_corpus(&corpus)?;
    let work = std::env::temp_dir().join(format!("ooni-can-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    println!(
        "{} corpus measurements as templates; work dir {}",
        samples.len(),
        work.display()
    );

    if spool_n > 0 {
        uploader_bench(&samples, &work, spool_n).await?;
    }
    if day_n > 0 {
        rescore_bench(&samples, &work, day_n).await?;
    }
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// Writes `n` spool files into the hour two hours ago; returns their uids and bytes.
fn fill_spool(
    samples: &[Sample],
    incoming: &Path,
    n: usize,
) -> anyhow::Result<(Vec<String>, usize)> {
    let hour = Utc::now() - CDuration::hours(2);
    let hour = Utc
        .with_ymd_and_hms(
            hour.date_naive().year_ce().1 as i32,
            chrono::Datelike::month(&hour),
            chrono::Datelike::day(&hour),
            chrono::Timelike::hour(&hour),
            0,
            0,
        )
        .single()
        .context("hour")?;
    let mut uids = Vec::with_capacity(n);
    let mut bytes = 0;
    for i in 0..n {
        let s = &samples[i % samples.len()];
        let t = hour + CDuration::microseconds(i as i64 * 1000);
        let uid = format_measurement_uid(t, &s.cc, &s.test_name, &s.body);
        let dir = incoming.join(format!(
            "{}_{}_{}",
            t.format("%Y%m%d%H"),
            s.cc,
            s.test_name.replace('_', "")
        ));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{uid}.post")), &s.body)?;
        bytes += s.body.len();
        uids.push(uid);
    }
    Ok((uids, bytes))
}

use chrono::Datelike;

async fn uploader_bench(samples: &[Sample], work: &Path, n: usize) -> anyhow::Result<()> {
    println!("\n| uploader, {n} measurements | seconds | msmt/s | MB/s (raw) | vs baseline |");
    println!("|---|---|---|---|---|");
    // Baseline: read + gzip once.
    let base_dir = work.join("baseline-spool");
    let (_, raw) = fill_spool(samples, &base_dir, n)?;
    let t = Instant::now();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for d in std::fs::read_dir(&base_dir)? {
        for f in std::fs::read_dir(d?.path())? {
            gz.write_all(&std::fs::read(f?.path())?)?;
        }
    }
    let _ = gz.finish()?;
    let base = t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&base_dir)?;
    let mb = raw as f64 / 1e6;
    println!(
        "| baseline: read + gzip once, one thread | {base:.2} | {:.0} | {:.1} | 1.00 |",
        n as f64 / base,
        mb / base
    );

    let mut s3 = None;
    let mut targets: Vec<(&str, ObjectStore)> = vec![(
        "local directory",
        ObjectStore::Local(LocalStore::new(work.join("objects"))),
    )];
    if let Some(bin) = find_s3s_fs() {
        let root = work.join("s3");
        std::fs::create_dir_all(root.join("bench"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = std::process::Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "bench", "--secret-key", "bench-secret"])
            .arg(&root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        s3 = Some(child);
        targets.push((
            "S3 (s3s-fs on loopback)",
            ObjectStore::S3(S3Store::new(S3Settings {
                bucket: "bench".into(),
                endpoint: format!("http://127.0.0.1:{port}"),
                region: "us-east-1".into(),
                access_key_id: "bench".into(),
                secret_access_key: "bench-secret".into(),
                path_style: true,
                ..Default::default()
            })),
        ));
    }
    for (name, objects) in targets {
        let dir = work.join(format!("spool-{}", name.len()));
        let incoming = dir.join("incoming");
        let (uids, raw) = fill_spool(samples, &incoming, n)?;
        let db = Store::connect(&format!("sqlite://{}", dir.join("db.sqlite").display())).await?;
        db.migrate().await?;
        // The uploader cans only scored hours; mark them as scored.
        let drops: Vec<DropRecord> = uids
            .iter()
            .map(|u| DropRecord {
                measurement_uid: u.clone(),
                kind: ooni_core::DropKind::Discarded,
                reason: "bench".into(),
            })
            .collect();
        db.write_batch(&[], &drops).await?;
        let up = Uploader::new(
            incoming,
            db,
            objects,
            "1".into(),
            CanOptions::default(),
            RetryPolicy::default(),
            Arc::new(Metrics::default()),
        );
        let t = Instant::now();
        let report = up.run_once(false).await?;
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(report.measurements == n, "uploaded {}", report.measurements);
        println!(
            "| uploader → {name} ({} cans, {:.0} MB stored) | {secs:.2} | {:.0} | {:.1} | {:.2} |",
            report.cans,
            report.bytes as f64 / 1e6,
            n as f64 / secs,
            raw as f64 / 1e6 / secs,
            base / secs
        );
    }
    if let Some(mut c) = s3 {
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(())
}

async fn rescore_bench(samples: &[Sample], work: &Path, n: usize) -> anyhow::Result<()> {
    let day = NaiveDate::from_ymd_opt(2026, 1, 15).context("day")?;
    let objects = ObjectStore::Local(LocalStore::new(work.join("day-objects")));
    let t = Instant::now();
    let (cans, raw) = synthesise_day(samples, &objects, day, n).await?;
    println!(
        "\nsynthesised a day of {n} measurements ({:.1} GB raw) into {cans} postcans in {:.0} s",
        raw as f64 / 1e9,
        t.elapsed().as_secs_f64()
    );

    // Baseline: read every postcan and parse every body, one thread.
    let keys = objects
        .list(&format!("raw/{}/", day.format("%Y%m%d")))
        .await?;
    let t = Instant::now();
    let mut parsed = 0usize;
    for k in keys.iter().filter(|k| k.ends_with(".tar.gz")) {
        let data = objects.get(k, usize::MAX).await?.context("can")?;
        for p in read_postcan(&data, usize::MAX)? {
            let _: serde_json::Value = serde_json::from_slice(&p.body)?;
            parsed += 1;
        }
    }
    let base = t.elapsed().as_secs_f64();

    let dbdir = work.join("rescore-db");
    std::fs::create_dir_all(&dbdir)?;
    let mut cfg = Config {
        data_dir: dbdir.clone(),
        plugins_dir: PathBuf::new(),
        fingerprints_dir: PathBuf::new(),
        ..Config::default()
    };
    cfg.database_url = format!("sqlite://{}", dbdir.join("db.sqlite").display());
    let db = ooni_engine::serve::open_store(&cfg).await?;
    let fps = ooni_engine::serve::open_fingerprints(&cfg)?;
    let registry = ooni_engine::serve::open_registry(&cfg, fps)?;
    let threads = cfg.scoring_workers();
    let args = RescoreArgs {
        start_day: day,
        end_day: day,
        test_names: vec![],
        ccs: vec![],
        dry_run: false,
        restart: true,
        threads,
        progress: true,
    };
    let t = Instant::now();
    let report = rescore(
        &args,
        &db,
        &objects,
        registry,
        dbdir.join("rescore"),
        usize::MAX,
        &mut std::io::sink(),
    )
    .await?;
    let secs = t.elapsed().as_secs_f64();
    println!("\n| rescore, a day of {n} | seconds | msmt/s | MB/s (raw) |");
    println!("|---|---|---|---|");
    println!(
        "| baseline: read postcans + serde_json parse, one thread | {base:.1} | {:.0} | {:.1} |",
        parsed as f64 / base,
        raw as f64 / 1e6 / base
    );
    println!(
        "| rescore into SQLite, {threads} threads ({} rows, {} drops) | {secs:.1} | {:.0} | {:.1} |",
        report.rows,
        report.drops,
        report.measurements as f64 / secs,
        raw as f64 / 1e6 / secs
    );
    println!(
        "rescore vs baseline: {:.2}x the baseline's rate",
        (report.measurements as f64 / secs) / (parsed as f64 / base)
    );
    Ok(())
}

/// Packs `n` measurements spread over the day's 24 hours into postcans, hour by
/// hour so only one hour's cans are in memory.
async fn synthesise_day(
    samples: &[Sample],
    objects: &ObjectStore,
    day: NaiveDate,
    n: usize,
) -> anyhow::Result<(usize, usize)> {
    let start = Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).context("midnight")?);
    let per_hour = n.div_ceil(24);
    let mut cans = 0;
    let mut raw = 0;
    for h in 0..24 {
        let lo = h * per_hour;
        let hi = ((h + 1) * per_hour).min(n);
        // (dir, uid, sample) sorted by dir then uid.
        let mut items: Vec<(String, String, &Sample)> = (lo..hi)
            .map(|i| {
                let s = &samples[i % samples.len()];
                let t = start
                    + CDuration::hours(h as i64)
                    + CDuration::microseconds((i - lo) as i64 * 50);
                let uid = format_measurement_uid(t, &s.cc, &s.test_name, &s.body);
                let dir = format!(
                    "{}_{}_{}",
                    t.format("%Y%m%d%H"),
                    s.cc,
                    s.test_name.replace('_', "")
                );
                (dir, uid, s)
            })
            .collect();
        items.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut i = 0;
        while i < items.len() {
            let dir = items[i].0.clone();
            let mut k = 0;
            while i < items.len() && items[i].0 == dir {
                // Synthesis is not what is measured: pack it fast.
                let mut b = CanBuilder::new(
                    &dir,
                    CanOptions {
                        gzip_level: 1,
                        ..CanOptions::default()
                    },
                );
                while i < items.len() && items[i].0 == dir && b.fits(items[i].2.body.len()) {
                    b.add(&items[i].1, &items[i].2.body, 0)?;
                    raw += items[i].2.body.len();
                    i += 1;
                }
                let can = b.finish()?;
                let key = CanKey::for_spool_dir(&dir, "1", k, CanKind::Postcan).context("dir")?;
                objects.put(&key.key(), can.postcan).await?;
                objects
                    .put(&key.with_kind(CanKind::Jsonl).key(), can.jsonl)
                    .await?;
                cans += 1;
                k += 1;
            }
        }
    }
    Ok((cans, raw))
}
