//! `ooni-engine rescore`: re-scores measurements from the postcans of a range of
//! days with the current plugins and fingerprints and upserts their rows. This is
//! how operators apply new fingerprints or scorer fixes to the past.
//!
//! Postcans rather than jsonl cans: they hold each measurement's uid (member name)
//! and the exact bytes the probe sent, so the rows come out as the live path would
//! have made them. Progress is kept per can in `{data_dir}/rescore/{job}.done`; an
//! interrupted job started again with the same arguments skips finished cans.

use crate::cans::read::read_postcan;
use crate::cans::{CanKey, CanKind};
use crate::objstore::ObjectStore;
use crate::scoring::registry::Registry;
use crate::scoring::{score_measurement, Scoring};
use crate::store::{DropRecord, Store};
use anyhow::Context;
use chrono::NaiveDate;
use ooni_core::FastpathRow;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct RescoreArgs {
    pub start_day: NaiveDate,
    /// Inclusive.
    pub end_day: NaiveDate,
    pub test_names: Vec<String>,
    pub ccs: Vec<String>,
    pub dry_run: bool,
    /// Ignore the progress of an earlier run of the same job.
    pub restart: bool,
    pub threads: usize,
    /// Print a progress line on stderr.
    pub progress: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct RescoreReport {
    pub cans: usize,
    pub cans_skipped_as_done: usize,
    pub measurements: usize,
    pub rows: usize,
    pub drops: usize,
    /// Measurements whose row would change (dry run) or changed.
    pub changed: usize,
    pub seconds: f64,
}

/// The postcan keys of the days and filters asked for, in time order.
pub async fn select_cans(objects: &ObjectStore, args: &RescoreArgs) -> anyhow::Result<Vec<String>> {
    let tests: HashSet<String> = args.test_names.iter().map(|t| t.replace('_', "")).collect();
    let ccs: HashSet<String> = args.ccs.iter().map(|c| c.to_uppercase()).collect();
    let mut keys = Vec::new();
    let mut day = args.start_day;
    while day <= args.end_day {
        let prefix = format!("raw/{}/", day.format("%Y%m%d"));
        for key in objects.list(&prefix).await? {
            let Some(k) = CanKey::parse(&key) else {
                continue;
            };
            if k.kind == CanKind::Postcan
                && (tests.is_empty() || tests.contains(&k.testname))
                && (ccs.is_empty() || ccs.contains(&k.cc))
            {
                keys.push(key);
            }
        }
        day = day.succ_opt().context("day out of range")?;
    }
    Ok(keys)
}

/// A job is its arguments and the scorers and fingerprints it scores with: resuming
/// after either changed starts over rather than mixing generations.
fn job_file(state_dir: &std::path::Path, args: &RescoreArgs, scoring: &str) -> PathBuf {
    let mut tests = args.test_names.clone();
    tests.sort();
    let mut ccs = args.ccs.clone();
    ccs.sort();
    let id = format!(
        "{}|{}|{}|{}|{scoring}",
        args.start_day,
        args.end_day,
        tests.join(","),
        ccs.join(",")
    );
    let h = Sha256::digest(id.as_bytes());
    let name = ooni_core::ids::hex(&h[..8]);
    state_dir.join(format!("{name}.done"))
}

/// Runs a rescore job. Dry runs write nothing and print each change to `changes`.
pub async fn rescore(
    args: &RescoreArgs,
    db: &Store,
    objects: &ObjectStore,
    registry: Arc<Registry>,
    state_dir: PathBuf,
    read_limit: usize,
    changes: &mut (dyn Write + Send),
) -> anyhow::Result<RescoreReport> {
    let started = Instant::now();
    let keys = select_cans(objects, args).await?;
    let scoring = {
        let set = registry.snapshot();
        let mut digests: Vec<String> = set.plugins.iter().map(|p| p.digest.to_string()).collect();
        digests.sort();
        format!(
            "{}|{}",
            registry.fingerprints().current().version,
            digests.join(",")
        )
    };
    let job = job_file(&state_dir, args, &scoring);
    let mut done: HashSet<String> = HashSet::new();
    if !args.dry_run {
        fs::create_dir_all(&state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        if args.restart {
            let _ = fs::remove_file(&job);
        } else if let Ok(text) = fs::read_to_string(&job) {
            done.extend(text.lines().map(str::to_owned));
        }
    }
    let mut report = RescoreReport::default();
    let mut progress = Progress::new(args.progress, keys.len());
    for (i, key) in keys.iter().enumerate() {
        if done.contains(key) {
            report.cans_skipped_as_done += 1;
            continue;
        }
        let data = objects
            .get(key, read_limit.saturating_add(1 << 20))
            .await?
            .with_context(|| format!("can {key} was listed but cannot be read"))?;
        let reg = registry.clone();
        let threads = args.threads.max(1);
        let k = key.clone();
        let scored = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Scoring>> {
            let posted = read_postcan(&data, read_limit).with_context(|| format!("reading {k}"))?;
            score_parallel(&reg, &posted, threads).with_context(|| format!("scoring {k}"))
        })
        .await??;
        let mut rows: Vec<FastpathRow> = Vec::new();
        let mut drops: Vec<DropRecord> = Vec::new();
        for s in scored {
            match s {
                Scoring::Row(r) => rows.push(*r),
                Scoring::Drop(d) => drops.push(d),
            }
        }
        report.cans += 1;
        report.measurements += rows.len() + drops.len();
        report.rows += rows.len();
        report.drops += drops.len();
        report.changed += diff(db, &rows, &drops, args.dry_run, changes).await?;
        if !args.dry_run {
            db.write_batch(&rows, &drops).await?;
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&job)
                .with_context(|| format!("recording progress in {}", job.display()))?;
            writeln!(f, "{key}")?;
            f.sync_data()?;
            crate::failpoint::hit("rescore_after_can");
        }
        progress.update(i + 1, report.measurements);
    }
    progress.finish(report.measurements);
    if !args.dry_run {
        // Finished: the same arguments later mean a new job.
        let _ = fs::remove_file(&job);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn score_parallel(
    registry: &Registry,
    posted: &[crate::cans::read::Posted],
    threads: usize,
) -> anyhow::Result<Vec<Scoring>> {
    let chunk = posted.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = posted
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|p| score_measurement(registry, &p.uid, &p.body))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // A scoring thread that died must fail the can, never drop its part of it.
        let mut out = Vec::with_capacity(posted.len());
        for h in handles {
            out.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a scoring thread panicked"))?,
            );
        }
        Ok(out)
    })
}

/// Counts rows that change, and in a dry run prints how.
async fn diff(
    db: &Store,
    rows: &[FastpathRow],
    drops: &[DropRecord],
    print: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<usize> {
    let uids: Vec<String> = rows
        .iter()
        .map(|r| r.measurement_uid.clone())
        .chain(drops.iter().map(|d| d.measurement_uid.clone()))
        .collect();
    let old: HashMap<String, FastpathRow> = db
        .fetch_rows(&uids)
        .await?
        .into_iter()
        .map(|r| (r.measurement_uid.clone(), r))
        .collect();
    let mut changed = 0;
    for new in rows {
        let what = match old.get(&new.measurement_uid) {
            None => vec!["new row".to_owned()],
            Some(o) => row_changes(o, new),
        };
        if !what.is_empty() {
            changed += 1;
            if print {
                writeln!(out, "{}: {}", new.measurement_uid, what.join("; "))?;
            }
        }
    }
    for d in drops {
        if old.contains_key(&d.measurement_uid) {
            changed += 1;
            if print {
                writeln!(out, "{}: row removed ({})", d.measurement_uid, d.reason)?;
            }
        }
    }
    Ok(changed)
}

/// The score-related columns that differ, as `column: old -> new`.
fn row_changes(old: &FastpathRow, new: &FastpathRow) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name}: {a} -> {b}"));
        }
    };
    cmp("anomaly", old.anomaly.to_string(), new.anomaly.to_string());
    cmp(
        "confirmed",
        old.confirmed.to_string(),
        new.confirmed.to_string(),
    );
    cmp(
        "msm_failure",
        old.msm_failure.to_string(),
        new.msm_failure.to_string(),
    );
    cmp(
        "blocking_type",
        old.blocking_type.clone(),
        new.blocking_type.clone(),
    );
    cmp("scores", old.scores.clone(), new.scores.clone());
    cmp(
        "scorer",
        format!("{} {}", old.scorer_name, old.scorer_version),
        format!("{} {}", new.scorer_name, new.scorer_version),
    );
    cmp(
        "fingerprints_version",
        old.fingerprints_version.clone(),
        new.fingerprints_version.clone(),
    );
    out
}

/// A one-line progress display: cans, measurements, rate, ETA.
struct Progress {
    on: bool,
    total: usize,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(on: bool, total: usize) -> Self {
        let now = Instant::now();
        Progress {
            on,
            total,
            started: now,
            last: now - Duration::from_secs(1),
        }
    }

    fn update(&mut self, cans: usize, measurements: usize) {
        if !self.on || self.last.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = measurements as f64 / secs;
        let eta = if cans > 0 {
            secs * (self.total - cans) as f64 / cans as f64
        } else {
            0.0
        };
        eprint!(
            "\r[rescore] cans {cans}/{}  measurements {measurements}  {rate:.0}/s  ETA {}:{:02}   ",
            self.total,
            eta as u64 / 60,
            eta as u64 % 60
        );
    }

    fn finish(&mut self, measurements: usize) {
        if self.on {
            self.last = Instant::now() - Duration::from_secs(1);
            self.update(self.total, measurements);
            eprintln!();
        }
    }
}
