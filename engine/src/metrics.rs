//! Counters and a latency sample kept in process and rendered for `/metrics` in the
//! Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Most recent ack→row latencies kept for the quantiles.
const LATENCY_WINDOW: usize = 20_000;

/// Upper bounds, in seconds, of latency histograms: 10 µs to 10 s.
const LATENCY_BOUNDS: &[f64] = &[
    1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 10.0,
];
/// Upper bounds of batch-size histograms.
const SIZE_BOUNDS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

/// A Prometheus histogram with fixed buckets, updated with atomics only (it sits on
/// the scoring path).
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    /// Sum of observations in millionths.
    sum_micro: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    /// A latency histogram, in seconds.
    fn default() -> Self {
        Histogram::with_bounds(LATENCY_BOUNDS)
    }
}

impl Histogram {
    pub fn with_bounds(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn sizes() -> Self {
        Histogram::with_bounds(SIZE_BOUNDS)
    }

    pub fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum_micro.fetch_add((v.max(0.0) * 1e6) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The `_bucket`, `_sum` and `_count` lines; `labels` is `k="v",…` or empty.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, n) in self.bounds.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}\n{name}_count{braces} {count}",
            self.sum_micro.load(Relaxed) as f64 / 1e6
        );
    }
}

/// A label value with Prometheus' escapes.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Size and time of each database write transaction.
pub struct DbBatches {
    /// Rows and drop records per transaction.
    pub rows: Histogram,
    /// Time of each successful transaction.
    pub seconds: Histogram,
}

impl Default for DbBatches {
    fn default() -> Self {
        DbBatches {
            rows: Histogram::sizes(),
            seconds: Histogram::default(),
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    pub uploads_accepted: AtomicU64,
    pub uploads_discarded: AtomicU64,
    pub reports_opened: AtomicU64,
    pub rows_written: AtomicU64,
    pub drops_written: AtomicU64,
    pub db_batches: AtomicU64,
    pub db_errors: AtomicU64,
    pub score_queue_overflows: AtomicU64,
    pub recovered: AtomicU64,
    pub quarantined: AtomicU64,
    pub uploader_runs: AtomicU64,
    pub uploader_failed_runs: AtomicU64,
    pub uploader_last_success_unix: AtomicU64,
    pub cans_uploaded: AtomicU64,
    pub canned_measurements: AtomicU64,
    pub can_bytes_uploaded: AtomicU64,
    pub object_store_errors: AtomicU64,
    pub bodies_from_spool: AtomicU64,
    pub bodies_from_cans: AtomicU64,
    pub can_cache_misses: AtomicU64,
    /// Spool files the uploader removed after canning them.
    pub spool_files_removed: AtomicU64,
    rejections: Mutex<BTreeMap<&'static str, u64>>,
    ack_to_row: Mutex<LatencyWindow>,
    pub db_batch: DbBatches,
}

#[derive(Default)]
struct LatencyWindow {
    samples: Vec<f64>,
    next: usize,
    count: u64,
}

impl Metrics {
    pub fn reject(&self, reason: &'static str) {
        if let Ok(mut m) = self.rejections.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    pub fn observe_ack_to_row(&self, d: Duration) {
        if let Ok(mut w) = self.ack_to_row.lock() {
            let s = d.as_secs_f64();
            if w.samples.len() < LATENCY_WINDOW {
                w.samples.push(s);
            } else {
                let i = w.next;
                w.samples[i] = s;
            }
            w.next = (w.next + 1) % LATENCY_WINDOW;
            w.count += 1;
        }
    }

    /// (quantile, seconds) over the window, and how many were ever observed.
    pub fn ack_to_row_quantiles(&self) -> (Vec<(f64, f64)>, u64) {
        let Ok(w) = self.ack_to_row.lock() else {
            return (Vec::new(), 0);
        };
        let mut s = w.samples.clone();
        s.sort_by(f64::total_cmp);
        let q = [0.5, 0.9, 0.99]
            .iter()
            .filter(|_| !s.is_empty())
            .map(|&q| (q, s[((s.len() - 1) as f64 * q).round() as usize]))
            .collect();
        (q, w.count)
    }

    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let counters = [
            (
                "ooni_uploads_accepted_total",
                "Measurements acknowledged to probes",
                &self.uploads_accepted,
            ),
            (
                "ooni_uploads_discarded_total",
                "Uploads answered {} without storing (ZZ / AS0 report ids)",
                &self.uploads_discarded,
            ),
            (
                "ooni_reports_opened_total",
                "Reports opened",
                &self.reports_opened,
            ),
            (
                "ooni_rows_written_total",
                "fastpath rows upserted",
                &self.rows_written,
            ),
            (
                "ooni_drops_written_total",
                "Stored measurements that give no row (OONI discards and failures)",
                &self.drops_written,
            ),
            (
                "ooni_db_batches_total",
                "Database write transactions",
                &self.db_batches,
            ),
            (
                "ooni_db_errors_total",
                "Failed database write transactions (retried)",
                &self.db_errors,
            ),
            (
                "ooni_score_queue_overflows_total",
                "Measurements left in the spool for the catch-up scan",
                &self.score_queue_overflows,
            ),
            (
                "ooni_recovered_total",
                "Spooled measurements scored by the catch-up scan",
                &self.recovered,
            ),
            (
                "ooni_quarantined_total",
                "Spool files whose content did not match their uid",
                &self.quarantined,
            ),
            (
                "ooni_uploader_runs_total",
                "Uploader passes over the spool",
                &self.uploader_runs,
            ),
            (
                "ooni_uploader_failed_runs_total",
                "Uploader passes stopped by an error (retried on the next pass)",
                &self.uploader_failed_runs,
            ),
            (
                "ooni_cans_uploaded_total",
                "Can pairs (postcan and jsonl) stored and indexed",
                &self.cans_uploaded,
            ),
            (
                "ooni_canned_measurements_total",
                "Measurements moved from the spool into cans",
                &self.canned_measurements,
            ),
            (
                "ooni_can_bytes_uploaded_total",
                "Compressed bytes of cans stored",
                &self.can_bytes_uploaded,
            ),
            (
                "ooni_object_store_errors_total",
                "Failed object store writes (each retried with backoff)",
                &self.object_store_errors,
            ),
            (
                "ooni_bodies_from_spool_total",
                "Measurement bodies served from the spool",
                &self.bodies_from_spool,
            ),
            (
                "ooni_bodies_from_cans_total",
                "Measurement bodies served from cans",
                &self.bodies_from_cans,
            ),
            (
                "ooni_can_cache_misses_total",
                "Cans fetched from the object store to serve a body",
                &self.can_cache_misses,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP ooni_upload_rejections_total Uploads refused, by reason\n# TYPE ooni_upload_rejections_total counter");
        if let Ok(m) = self.rejections.lock() {
            for (reason, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "ooni_upload_rejections_total{{reason=\"{reason}\"}} {n}"
                );
            }
        }
        let (qs, count) = self.ack_to_row_quantiles();
        let _ = writeln!(out, "# HELP ooni_ack_to_row_seconds Time from acknowledging an upload to its row being committed\n# TYPE ooni_ack_to_row_seconds summary");
        for (q, v) in qs {
            let _ = writeln!(out, "ooni_ack_to_row_seconds{{quantile=\"{q}\"}} {v}");
        }
        let _ = writeln!(out, "ooni_ack_to_row_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP ooni_uploader_last_success_timestamp_seconds When the last uploader pass finished without error\n# TYPE ooni_uploader_last_success_timestamp_seconds gauge\nooni_uploader_last_success_timestamp_seconds {}",
            self.uploader_last_success_unix.load(Relaxed)
        );
        let _ = writeln!(out, "# HELP ooni_db_batch_rows Rows and drop records per database write\n# TYPE ooni_db_batch_rows histogram");
        self.db_batch
            .rows
            .render(&mut out, "ooni_db_batch_rows", "");
        let _ = writeln!(out, "# HELP ooni_db_batch_seconds Time of a database write transaction\n# TYPE ooni_db_batch_seconds histogram");
        self.db_batch
            .seconds
            .render(&mut out, "ooni_db_batch_seconds", "");
        for (name, help, v) in extra {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_over_the_window() {
        let m = Metrics::default();
        for ms in 1..=100 {
            m.observe_ack_to_row(Duration::from_millis(ms));
        }
        let (q, n) = m.ack_to_row_quantiles();
        assert_eq!(n, 100);
        assert!((q[0].1 - 0.050).abs() < 0.002, "{q:?}");
        assert!((q[2].1 - 0.099).abs() < 0.002, "{q:?}");
        m.reject("bad_json");
        let text = m.render(&[]);
        assert!(text.contains("ooni_upload_rejections_total{reason=\"bad_json\"} 1"));
        assert!(text.contains("ooni_ack_to_row_seconds_count 100"));
    }

    #[test]
    fn histograms_are_cumulative() {
        let h = Histogram::sizes();
        for v in [1.0, 3.0, 3.0, 700.0, 5000.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "plugin=\"a\"");
        assert!(out.contains("x_bucket{plugin=\"a\",le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{plugin=\"a\",le=\"5\"} 3\n"), "{out}");
        assert!(
            out.contains("x_bucket{plugin=\"a\",le=\"1000\"} 4\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{plugin=\"a\",le=\"+Inf\"} 5\n"),
            "{out}"
        );
        assert!(out.contains("x_sum{plugin=\"a\"} 5707\n"), "{out}");
        assert!(out.contains("x_count{plugin=\"a\"} 5\n"), "{out}");
        assert_eq!(label("a\"b\\c"), "a\\\"b\\\\c");
    }
}
