//! Counters and a latency sample kept in process and rendered for `/metrics` in the
//! Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Most recent ack→row latencies kept for the quantiles.
const LATENCY_WINDOW: usize = 20_000;

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
    rejections: Mutex<BTreeMap<&'static str, u64>>,
    ack_to_row: Mutex<LatencyWindow>,
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
}
