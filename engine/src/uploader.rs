//! Packs closed hours of the spool into cans, uploads them, indexes them, and only
//! then deletes the spool files (OONI's uploader deletes first; spec/api.md §4.2).
//!
//! Every step can be interrupted and re-run without loss or duplication:
//! - a spool file is deleted only once its uid is in the `jsonl` index, and the
//!   index is written only after both halves of its can are stored;
//! - a re-run first deletes spool files that are already indexed (an interrupted
//!   delete), then numbers new cans after the highest indexed can of that hour, so
//!   a can that was stored but not indexed is rebuilt under the same key and
//!   replaces whatever (possibly torn) object was there;
//! - an hour is canned only once every measurement in it has its row, so the
//!   crash-recovery scan never needs a file the uploader removed.

use crate::cans::{Can, CanBuilder, CanKey, CanKind, CanOptions};
use crate::failpoint;
use crate::ingest::spool::{posts_in, SpooledFile};
use crate::metrics::Metrics;
use crate::objstore::{ObjectStore, ObjectStoreError};
use crate::store::{Store, StoreError};
use chrono::{NaiveDateTime, Utc};
use serde::Serialize;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum UploadError {
    #[error("another uploader holds {0}")]
    Busy(PathBuf),
    #[error("spool I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Objects(#[from] ObjectStoreError),
    #[error(transparent)]
    Db(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> UploadError + '_ {
    move |source| UploadError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How object-store calls are retried within one run.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
        }
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct UploadReport {
    pub hours: usize,
    pub cans: usize,
    pub measurements: usize,
    /// Compressed bytes stored (postcans and jsonl cans).
    pub bytes: usize,
    /// Bytes of the POST bodies packed.
    pub raw_bytes: usize,
    /// Spool files found already indexed and deleted (an interrupted earlier run).
    pub finished_deletes: usize,
    /// Hours left for a later run because some measurements have no row yet.
    pub hours_waiting_for_scoring: usize,
    pub seconds: f64,
}

#[derive(Clone)]
pub struct Uploader {
    incoming: PathBuf,
    db: Store,
    objects: ObjectStore,
    collector_id: String,
    limits: CanOptions,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
    /// Hour directories packed at once (packing is CPU-bound: one per core).
    parallel: usize,
}

/// A closed hour is left alone this long after its end, so that an upload received
/// in its last instant has reached the spool.
const CLOSE_GRACE: Duration = Duration::from_secs(60);

impl Uploader {
    pub fn new(
        incoming: PathBuf,
        db: Store,
        objects: ObjectStore,
        collector_id: String,
        limits: CanOptions,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Uploader {
            incoming,
            db,
            objects,
            collector_id,
            limits,
            retry,
            metrics,
            parallel: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }

    pub fn objects(&self) -> &ObjectStore {
        &self.objects
    }

    /// One pass over the spool. With `include_open_hours`, the current hour is canned
    /// too (what is written to it afterwards goes into its next can).
    pub async fn run_once(&self, include_open_hours: bool) -> Result<UploadReport, UploadError> {
        let started = Instant::now();
        self.metrics.uploader_runs.fetch_add(1, Relaxed);
        let result = self.run_locked(include_open_hours).await;
        match &result {
            Ok(r) => {
                self.metrics
                    .uploader_last_success_unix
                    .store(Utc::now().timestamp().max(0) as u64, Relaxed);
                tracing::info!(
                    hours = r.hours,
                    cans = r.cans,
                    measurements = r.measurements,
                    bytes = r.bytes,
                    waiting = r.hours_waiting_for_scoring,
                    seconds = started.elapsed().as_secs_f64(),
                    "uploader run done"
                );
            }
            Err(e) => {
                self.metrics.uploader_failed_runs.fetch_add(1, Relaxed);
                tracing::error!(error = %e, "uploader run failed; the spool keeps everything for the next run");
            }
        }
        result.map(|mut r| {
            r.seconds = started.elapsed().as_secs_f64();
            r
        })
    }

    async fn run_locked(&self, include_open_hours: bool) -> Result<UploadReport, UploadError> {
        let lock_path = self
            .incoming
            .parent()
            .unwrap_or(&self.incoming)
            .join("uploader.lock");
        let _lock = FileLock::acquire(&lock_path)?;
        let mut report = UploadReport::default();
        let mut dirs: Vec<String> = fs::read_dir(&self.incoming)
            .map_err(io_at(&self.incoming))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        dirs.sort();
        let now = Utc::now().naive_utc();
        let mut running = tokio::task::JoinSet::new();
        let mut first_error = None;
        for dir in dirs {
            let Some(key) = CanKey::for_spool_dir(&dir, &self.collector_id, 0, CanKind::Jsonl)
            else {
                tracing::debug!(dir, "not a spool hour directory; skipped");
                continue;
            };
            let closed = hour_closed(&key.hour, now);
            // Directories sort by hour: every later one is open too.
            if !closed && !include_open_hours {
                break;
            }
            while running.len() >= self.parallel.max(1) {
                if let Some(done) = running.join_next().await {
                    merge(&mut report, &mut first_error, done);
                }
            }
            // After a failure (the store is down, say) start nothing new; what is
            // left stays in the spool for the next pass.
            if first_error.is_some() {
                break;
            }
            let me = self.clone();
            running.spawn(async move {
                let mut r = UploadReport::default();
                me.upload_dir(&dir, key, closed, &mut r).await.map(|()| r)
            });
        }
        while let Some(done) = running.join_next().await {
            merge(&mut report, &mut first_error, done);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    async fn upload_dir(
        &self,
        dir: &str,
        mut key: CanKey,
        closed: bool,
        report: &mut UploadReport,
    ) -> Result<(), UploadError> {
        let path = self.incoming.join(dir);
        let files = posts_in(&path).map_err(io_at(&path))?;
        if files.is_empty() {
            if closed {
                remove_empty_dir(&path);
            }
            return Ok(());
        }
        let uids: Vec<String> = files.iter().map(|f| f.uid.clone()).collect();
        let known = self.db.known_uids(&uids).await?;
        if known.len() < uids.len() {
            tracing::info!(
                dir,
                unscored = uids.len() - known.len(),
                "hour not canned yet: some measurements have no row"
            );
            report.hours_waiting_for_scoring += 1;
            return Ok(());
        }
        report.hours += 1;
        let indexed = self.db.indexed_uids(&uids).await?;
        let (done, todo): (Vec<_>, Vec<_>) =
            files.into_iter().partition(|f| indexed.contains(&f.uid));
        if !done.is_empty() {
            tracing::info!(
                dir,
                n = done.len(),
                "removing spool files an earlier run canned"
            );
            report.finished_deletes += done.len();
            delete_files(&path, &done)?;
            self.metrics
                .spool_files_removed
                .fetch_add(done.len() as u64, Relaxed);
        }
        key.number = self.db.next_can_number(dir).await?;
        let mut rest: &[SpooledFile] = &todo;
        while !rest.is_empty() {
            let (can, used) = self.pack(dir, rest).await?;
            let jsonl_key = key.key();
            let postcan_key = key.with_kind(CanKind::Postcan).key();
            // The postcan first: the jsonl can is what the index points readers to.
            self.put_retrying(&postcan_key, can.postcan.clone()).await?;
            failpoint::hit("uploader_after_postcan");
            self.put_retrying(&jsonl_key, can.jsonl.clone()).await?;
            failpoint::hit("uploader_after_upload");
            self.db
                .index_can(dir, key.number, &jsonl_key, &can.entries)
                .await?;
            failpoint::hit("uploader_after_index");
            delete_files(&path, &rest[..used])?;
            self.metrics
                .spool_files_removed
                .fetch_add(used as u64, Relaxed);
            let bytes = can.postcan.len() + can.jsonl.len();
            report.cans += 1;
            report.measurements += used;
            report.bytes += bytes;
            report.raw_bytes += can.raw_bytes;
            self.metrics.cans_uploaded.fetch_add(1, Relaxed);
            self.metrics
                .canned_measurements
                .fetch_add(used as u64, Relaxed);
            self.metrics
                .can_bytes_uploaded
                .fetch_add(bytes as u64, Relaxed);
            tracing::debug!(key = %jsonl_key, measurements = used, bytes, "can uploaded");
            rest = &rest[used..];
            key.number += 1;
        }
        if closed {
            remove_empty_dir(&path);
        }
        Ok(())
    }

    /// Packs files from the front of `files` until the can is full; returns the can
    /// and how many files it holds.
    async fn pack(&self, dir: &str, files: &[SpooledFile]) -> Result<(Can, usize), UploadError> {
        let dir = dir.to_owned();
        let files = files.to_vec();
        let limits = self.limits;
        tokio::task::spawn_blocking(move || {
            let mut b = CanBuilder::new(&dir, limits);
            for SpooledFile { uid, path } in &files {
                let body = fs::read(path).map_err(io_at(path))?;
                if !b.fits(body.len()) {
                    break;
                }
                let mtime = fs::metadata(path)
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                b.add(uid, &body, mtime).map_err(io_at(path))?;
            }
            let used = b.len();
            let can = b.finish().map_err(io_at(Path::new(&dir)))?;
            Ok((can, used))
        })
        .await
        .map_err(|e| UploadError::Internal(e.to_string()))?
    }

    async fn put_retrying(&self, key: &str, data: bytes::Bytes) -> Result<(), UploadError> {
        let mut backoff = self.retry.first_backoff;
        let mut attempt = 1;
        loop {
            match self.objects.put(key, data.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.metrics.object_store_errors.fetch_add(1, Relaxed);
                    if attempt >= self.retry.attempts {
                        return Err(e.into());
                    }
                    tracing::warn!(error = %e, attempt, retry_in_ms = backoff.as_millis() as u64, "object store write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                    attempt += 1;
                }
            }
        }
    }

    /// Runs the uploader every `interval`, the first time shortly after start.
    pub fn spawn_schedule(self: Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10).min(interval)).await;
            loop {
                let _ = self.run_once(false).await;
                tokio::time::sleep(interval).await;
            }
        })
    }
}

/// Adds one directory's figures to the run's; keeps the first error.
fn merge(
    report: &mut UploadReport,
    first_error: &mut Option<UploadError>,
    done: Result<Result<UploadReport, UploadError>, tokio::task::JoinError>,
) {
    match done {
        Ok(Ok(r)) => {
            report.hours += r.hours;
            report.cans += r.cans;
            report.measurements += r.measurements;
            report.bytes += r.bytes;
            report.raw_bytes += r.raw_bytes;
            report.finished_deletes += r.finished_deletes;
            report.hours_waiting_for_scoring += r.hours_waiting_for_scoring;
        }
        Ok(Err(e)) => {
            first_error.get_or_insert(e);
        }
        Err(e) => {
            first_error.get_or_insert(UploadError::Internal(e.to_string()));
        }
    }
}

/// True once the hour `YYYYMMDDHH` ended more than the grace period ago.
fn hour_closed(hour: &str, now: NaiveDateTime) -> bool {
    match NaiveDateTime::parse_from_str(&format!("{hour}0000"), "%Y%m%d%H%M%S") {
        Ok(start) => {
            start
                + chrono::Duration::hours(1)
                + chrono::Duration::from_std(CLOSE_GRACE).unwrap_or_default()
                <= now
        }
        Err(_) => false,
    }
}

fn delete_files(dir: &Path, files: &[SpooledFile]) -> Result<(), UploadError> {
    for f in files {
        let p = &f.path;
        match fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(p)(e)),
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

fn remove_empty_dir(dir: &Path) {
    // Fails harmlessly when a late write put a file in it.
    if fs::remove_dir(dir).is_ok() {
        tracing::debug!(dir = %dir.display(), "spool hour directory removed");
    }
}

/// An exclusive `flock`, released when dropped: one uploader per spool, whether it
/// runs inside `serve` or as `ooni-engine upload`.
struct FileLock(File);

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock, UploadError> {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_at(path))?;
        // SAFETY: flock only reads the descriptor, which `f` keeps open.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            Ok(FileLock(f))
        } else {
            Err(UploadError::Busy(path.to_owned()))
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_close_after_their_end_and_the_grace() {
        let t = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
        assert!(!hour_closed("2024010110", t("2024-01-01 10:59:00")));
        assert!(!hour_closed("2024010110", t("2024-01-01 11:00:30")));
        assert!(hour_closed("2024010110", t("2024-01-01 11:01:00")));
        assert!(!hour_closed("20240101xx", t("2030-01-01 00:00:00")));
    }

    #[test]
    fn one_uploader_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("uploader.lock");
        let a = FileLock::acquire(&p).unwrap();
        assert!(matches!(FileLock::acquire(&p), Err(UploadError::Busy(_))));
        drop(a);
        FileLock::acquire(&p).unwrap();
    }
}
