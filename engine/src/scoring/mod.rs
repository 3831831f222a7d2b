//! From the spool to the database: scoring threads, the batched row writer, and the
//! catch-up scan that scores any spooled measurement without a row (at start, and
//! whenever the in-memory queue overflowed).

pub mod module_cache;
pub mod registry;
pub mod wasm;

use crate::ingest::spool::Spool;
use crate::metrics::Metrics;
use crate::store::{DropRecord, Store};
use ooni_core::{derive_row, FastpathRow, Outcome};
use registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A measurement waiting to be scored.
pub struct ScoreJob {
    pub uid: String,
    pub body: bytes::Bytes,
    /// When the probe was answered; `None` for measurements found by the catch-up scan.
    pub acked_at: Option<Instant>,
}

enum Scored {
    Row(Box<FastpathRow>, Option<Instant>),
    Drop(DropRecord),
}

pub struct PipelineConfig {
    pub workers: usize,
    pub queue: usize,
    /// Most body bytes held in the queue.
    pub queue_bytes: usize,
    pub batch_rows: usize,
    pub batch_wait: Duration,
}

/// Uids the upload path has taken on and not yet seen written: from just before the
/// spool write to the batch that holds its row. The catch-up scan leaves them alone, so
/// a measurement spooled while the scan runs (at start, or after an overflow) is not
/// scored a second time.
#[derive(Default)]
struct LiveUids(std::sync::Mutex<std::collections::HashSet<String>>);

impl LiveUids {
    fn claim(&self, uid: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.insert(uid.to_owned());
        }
    }

    fn release<'u>(&self, uids: impl IntoIterator<Item = &'u str>) {
        if let Ok(mut s) = self.0.lock() {
            for uid in uids {
                s.remove(uid);
            }
        }
    }

    fn holds(&self, uid: &str) -> bool {
        self.0.lock().is_ok_and(|s| s.contains(uid))
    }
}

/// An upload's uid taken on by the upload path (`Pipeline::claim`).
pub struct LiveClaim {
    uid: Option<String>,
    live: Arc<LiveUids>,
    backlog: Arc<AtomicBool>,
}

impl Drop for LiveClaim {
    fn drop(&mut self) {
        if let Some(uid) = self.uid.take() {
            self.live.release([uid.as_str()]);
            self.backlog.store(true, Ordering::Release);
        }
    }
}

/// The running scoring pipeline. Cloning gives another handle to the same queue.
#[derive(Clone)]
pub struct Pipeline {
    tx: crossbeam_channel::Sender<ScoreJob>,
    live: Arc<LiveUids>,
    backlog: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// What `shutdown` waits for.
pub struct PipelineTasks {
    workers: Vec<std::thread::JoinHandle<()>>,
    writer: JoinHandle<()>,
}

impl Pipeline {
    pub fn start(
        cfg: &PipelineConfig,
        store: Store,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Pipeline, PipelineTasks)> {
        let (tx, rx) = crossbeam_channel::bounded::<ScoreJob>(cfg.queue.max(1));
        // The scorers fill the next two batches while one is written: at most three
        // batches of rows are held in memory.
        let (out_tx, out_rx) = mpsc::channel::<Scored>(cfg.batch_rows.max(1) * 2);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for i in 0..cfg.workers.max(1) {
            let rx = rx.clone();
            let out = out_tx.clone();
            let registry = registry.clone();
            let queued_bytes = queued_bytes.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("score-{i}"))
                    .spawn(move || score_loop(rx, out, registry, queued_bytes))?,
            );
        }
        drop(out_tx);
        let live = Arc::new(LiveUids::default());
        let writer = tokio::spawn(write_loop(
            out_rx,
            store,
            live.clone(),
            metrics.clone(),
            cfg.batch_rows.max(1),
            cfg.batch_wait,
        ));
        Ok((
            Pipeline {
                tx,
                live,
                backlog: Arc::new(AtomicBool::new(false)),
                metrics,
                queued_bytes,
                max_bytes: cfg.queue_bytes.max(1),
            },
            PipelineTasks { workers, writer },
        ))
    }

    /// Takes on an upload's uid before its measurement is spooled, so the catch-up scan
    /// leaves it to the upload path. Dropped without being handed over by `offer` (the
    /// write failed, or the queue was full), the claim is released and the catch-up
    /// scan runs to score whatever was spooled.
    pub fn claim(&self, uid: &str) -> LiveClaim {
        self.live.claim(uid);
        LiveClaim {
            uid: Some(uid.to_owned()),
            live: self.live.clone(),
            backlog: self.backlog.clone(),
        }
    }

    /// Hands a durable measurement to the scorers without waiting. When the queue is
    /// full (by count or by bytes) the measurement stays in the spool and the
    /// catch-up scan scores it later: memory stays bounded however far the scorers
    /// or the database fall behind.
    pub fn offer(&self, job: ScoreJob, mut claim: LiveClaim) {
        let n = job.body.len();
        // Counted before the send: a scorer may take the job (and subtract) at once.
        let before = self.queued_bytes.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) <= self.max_bytes && self.tx.try_send(job).is_ok() {
            // The writer releases it with the batch that holds its row.
            claim.uid = None;
        } else {
            // Left to the catch-up scan: the claim's drop releases it and sets the
            // backlog flag.
            self.queued_bytes.fetch_sub(n, Ordering::Relaxed);
            self.metrics
                .score_queue_overflows
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Bytes of measurement bodies waiting for a scorer.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Scores every spooled measurement that has neither a row nor a drop record.
    /// Returns how many were queued.
    pub async fn catch_up(&self, spool: &Spool, store: &Store) -> anyhow::Result<usize> {
        let scan_spool = spool.clone();
        let files = tokio::task::spawn_blocking(move || scan_spool.scan()).await??;
        let mut queued = 0;
        for chunk in files.chunks(500) {
            // Live uids are left out before the database is asked: one released since
            // has its row written by then, so the query sees it.
            let chunk: Vec<_> = chunk.iter().filter(|f| !self.live.holds(&f.uid)).collect();
            let uids: Vec<String> = chunk.iter().map(|f| f.uid.clone()).collect();
            let known = store.known_uids(&uids).await?;
            let todo: Vec<_> = chunk
                .into_iter()
                .filter(|f| !known.contains(&f.uid))
                .cloned()
                .collect();
            if todo.is_empty() {
                continue;
            }
            let tx = self.tx.clone();
            let live = self.live.clone();
            let spool = spool.clone();
            let metrics = self.metrics.clone();
            let (queued_bytes, max_bytes) = (self.queued_bytes.clone(), self.max_bytes);
            queued += tokio::task::spawn_blocking(move || {
                let mut n = 0;
                for f in todo {
                    let body = match std::fs::read(&f.path) {
                        Ok(b) => b,
                        // Uploaded and removed since the scan: it already has its row.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => {
                            tracing::error!(uid = %f.uid, error = %e, "cannot read spooled measurement");
                            continue;
                        }
                    };
                    if !spool.intact(&f.uid, &body) {
                        // Only a write interrupted before its group sync (so never
                        // acknowledged) can disagree with its own uid.
                        match spool.quarantine(&f) {
                            Ok(to) => tracing::warn!(uid = %f.uid, to = %to.display(), "spool file does not match its uid; quarantined"),
                            Err(e) => tracing::error!(uid = %f.uid, error = %e, "cannot quarantine spool file"),
                        }
                        metrics.quarantined.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    // The scan waits for room rather than overflowing itself.
                    while queued_bytes.load(Ordering::Relaxed).saturating_add(body.len()) > max_bytes
                        && queued_bytes.load(Ordering::Relaxed) > 0
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    queued_bytes.fetch_add(body.len(), Ordering::Relaxed);
                    // Claimed as the upload path claims, so that another scan running
                    // meanwhile leaves it alone; the writer releases it with its row.
                    live.claim(&f.uid);
                    let uid = f.uid.clone();
                    let job = ScoreJob { uid: f.uid, body: body.into(), acked_at: None };
                    if tx.send(job).is_err() {
                        live.release([uid.as_str()]);
                        break;
                    }
                    n += 1;
                }
                n
            })
            .await?;
        }
        self.metrics
            .recovered
            .fetch_add(queued as u64, Ordering::Relaxed);
        Ok(queued)
    }

    /// Runs a catch-up scan whenever the queue has overflowed since the last one.
    pub fn spawn_backlog_watch(&self, spool: Spool, store: Store) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                if this.backlog.swap(false, Ordering::AcqRel) {
                    match this.catch_up(&spool, &store).await {
                        Ok(n) => tracing::info!(queued = n, "catch-up scan after queue overflow"),
                        Err(e) => {
                            this.backlog.store(true, Ordering::Release);
                            tracing::error!(error = %e, "catch-up scan failed; will retry");
                        }
                    }
                }
            }
        })
    }
}

impl PipelineTasks {
    /// Lets the scorers finish what is queued and the writer flush it. `pipelines`
    /// are every handle still alive; dropping them closes the queue.
    pub async fn shutdown(self, pipelines: Vec<Pipeline>) {
        drop(pipelines);
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await;
        let _ = self.writer.await;
    }
}

fn score_loop(
    rx: crossbeam_channel::Receiver<ScoreJob>,
    out: mpsc::Sender<Scored>,
    registry: Arc<Registry>,
    queued_bytes: Arc<AtomicUsize>,
) {
    // Probes wait on the spool, not on scoring: under load, taking uploads comes
    // first and scoring catches up (the queue and the spool absorb the difference).
    lower_thread_priority();
    for job in rx {
        queued_bytes.fetch_sub(job.body.len(), Ordering::Relaxed);
        let scored = match score_measurement(&registry, &job.uid, &job.body) {
            Scoring::Row(row) => Scored::Row(row, job.acked_at),
            Scoring::Drop(d) => Scored::Drop(d),
        };
        if out.blocking_send(scored).is_err() {
            break;
        }
    }
}

/// What scoring one measurement gives.
pub enum Scoring {
    Row(Box<FastpathRow>),
    Drop(DropRecord),
}

/// Scores one stored body with the current plugins and fingerprints: one generation
/// of each for the whole measurement, named in the row.
pub fn score_measurement(registry: &Registry, uid: &str, body: &[u8]) -> Scoring {
    let plugins = registry.snapshot();
    let fingerprints = registry.fingerprints().current();
    let fingerprints_version = fingerprints.version.clone();
    let outcome =
        crate::fingerprints::with_pinned(fingerprints, || derive_row(body, uid, plugins.as_ref()));
    match outcome {
        Outcome::Row(mut row) => {
            row.fingerprints_version = fingerprints_version.to_string();
            Scoring::Row(row)
        }
        Outcome::Dropped(d) => {
            tracing::debug!(uid, kind = d.kind.as_str(), reason = %d.reason, "no row for measurement");
            Scoring::Drop(DropRecord {
                measurement_uid: uid.to_owned(),
                kind: d.kind,
                reason: d.reason,
            })
        }
    }
}

/// Raises this thread's nice value (Linux: per thread) so request handling wins the CPU.
fn lower_thread_priority() {
    // SAFETY: gettid and setpriority only read their arguments.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10)
    };
    if rc != 0 {
        tracing::debug!("could not lower the scoring thread's priority");
    }
}

async fn write_loop(
    mut rx: mpsc::Receiver<Scored>,
    store: Store,
    live: Arc<LiveUids>,
    metrics: Arc<Metrics>,
    batch_rows: usize,
    batch_wait: Duration,
) {
    let mut rows = Vec::with_capacity(batch_rows);
    let mut acks = Vec::with_capacity(batch_rows);
    let mut drops = Vec::new();
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + batch_wait;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Scored::Row(r, acked)) => {
                    rows.push(*r);
                    acks.push(acked);
                }
                Some(Scored::Drop(d)) => drops.push(d),
                None => {}
            }
            if rows.len() + drops.len() >= batch_rows {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => next = Some(s),
                Ok(None) | Err(_) => break,
            }
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let t = Instant::now();
            match store.write_batch(&rows, &drops).await {
                Ok(()) => {
                    metrics.db_batch.seconds.observe(t.elapsed().as_secs_f64());
                    metrics
                        .db_batch
                        .rows
                        .observe((rows.len() + drops.len()) as f64);
                    break;
                }
                Err(e) => {
                    metrics.db_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, rows = rows.len(), "database write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        live.release(
            rows.iter()
                .map(|r| r.measurement_uid.as_str())
                .chain(drops.iter().map(|d| d.measurement_uid.as_str())),
        );
        let now = Instant::now();
        for t in acks.iter().flatten() {
            metrics.observe_ack_to_row(now.duration_since(*t));
        }
        metrics.db_batches.fetch_add(1, Ordering::Relaxed);
        metrics
            .rows_written
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        metrics
            .drops_written
            .fetch_add(drops.len() as u64, Ordering::Relaxed);
        rows.clear();
        acks.clear();
        drops.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprints::{FingerprintSet, Fingerprints};
    use crate::scoring::registry::RegistryOptions;
    use crate::scoring::wasm::Limits;
    use ooni_core::ids::{format_measurement_uid, parse_measurement_uid};

    #[tokio::test]
    async fn the_catch_up_scan_leaves_live_uploads_to_the_upload_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(&tmp.path().join("spool"), 8).expect("spool");
        let url = format!("sqlite://{}", tmp.path().join("db.sqlite").display());
        let store = Store::connect(&url).await.expect("store");
        store.migrate().await.expect("migrate");
        let registry = Registry::new(
            RegistryOptions {
                dir: None,
                limits: Limits::default(),
                bundled: false,
                cache_dir: None,
            },
            Fingerprints::new(FingerprintSet::empty()),
        )
        .expect("registry");
        let cfg = PipelineConfig {
            workers: 1,
            queue: 16,
            queue_bytes: 1 << 20,
            batch_rows: 16,
            batch_wait: Duration::from_millis(5),
        };
        let (pipeline, _tasks) =
            Pipeline::start(&cfg, store.clone(), registry, Arc::new(Metrics::default()))
                .expect("pipeline");

        // An upload claimed and spooled, not yet offered: as the scan may find it.
        let body = bytes::Bytes::from_static(br#"{"format":"json","content":{}}"#);
        let uid = format_measurement_uid(chrono::Utc::now(), "IT", "ndt", &body);
        let dir = parse_measurement_uid(&uid).expect("uid").spool_dir();
        let claim = pipeline.claim(&uid);
        spool
            .write(dir, uid.clone(), body.clone())
            .await
            .expect("spool write");
        assert_eq!(pipeline.catch_up(&spool, &store).await.expect("scan"), 0);

        // A claim dropped without an offer (a cancelled request) leaves it to the scan.
        drop(claim);
        assert!(pipeline.backlog.load(Ordering::Acquire));
        assert_eq!(pipeline.catch_up(&spool, &store).await.expect("scan"), 1);

        // The scan claimed what it queued; the writer releases it with its row, and a
        // later scan finds the row.
        let t = Instant::now();
        while pipeline.live.holds(&uid) {
            assert!(t.elapsed() < Duration::from_secs(10), "never released");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let known = store
            .known_uids(std::slice::from_ref(&uid))
            .await
            .expect("known");
        assert!(known.contains(&uid));
        assert_eq!(pipeline.catch_up(&spool, &store).await.expect("scan"), 0);
    }
}
