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

/// The running scoring pipeline. Cloning gives another handle to the same queue.
#[derive(Clone)]
pub struct Pipeline {
    tx: crossbeam_channel::Sender<ScoreJob>,
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
        let (out_tx, out_rx) = mpsc::channel::<Scored>(cfg.batch_rows.max(1) * 4);
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
        let writer = tokio::spawn(write_loop(
            out_rx,
            store,
            metrics.clone(),
            cfg.batch_rows.max(1),
            cfg.batch_wait,
        ));
        Ok((
            Pipeline {
                tx,
                backlog: Arc::new(AtomicBool::new(false)),
                metrics,
                queued_bytes,
                max_bytes: cfg.queue_bytes.max(1),
            },
            PipelineTasks { workers, writer },
        ))
    }

    /// Hands a durable measurement to the scorers without waiting. When the queue is
    /// full (by count or by bytes) the measurement stays in the spool and the
    /// catch-up scan scores it later: memory stays bounded however far the scorers
    /// or the database fall behind.
    pub fn offer(&self, job: ScoreJob) {
        let n = job.body.len();
        // Counted before the send: a scorer may take the job (and subtract) at once.
        let before = self.queued_bytes.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > self.max_bytes || self.tx.try_send(job).is_err() {
            self.queued_bytes.fetch_sub(n, Ordering::Relaxed);
            self.backlog.store(true, Ordering::Release);
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
            let uids: Vec<String> = chunk.iter().map(|f| f.uid.clone()).collect();
            let known = store.known_uids(&uids).await?;
            let todo: Vec<_> = chunk
                .iter()
                .filter(|f| !known.contains(&f.uid))
                .cloned()
                .collect();
            if todo.is_empty() {
                continue;
            }
            let tx = self.tx.clone();
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
                    let job = ScoreJob { uid: f.uid, body: body.into(), acked_at: None };
                    if tx.send(job).is_err() {
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
