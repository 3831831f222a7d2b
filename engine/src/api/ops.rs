//! `/health` and `/metrics`.

use super::{with_cache, AppState};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// 200 when the database and the object store answer and the spool is writable,
/// 503 otherwise.
pub async fn health(State(st): State<AppState>) -> Response {
    let mut errors = Vec::new();
    if let Err(e) = st.store.ping().await {
        errors.push(format!("database: {e}"));
    }
    let probe = st.spool.incoming_dir().join(".health");
    if let Err(e) = tokio::fs::write(&probe, b"ok").await {
        errors.push(format!("spool: {e}"));
    }
    match st.spool.short_of_room(st.config.spool_min_free_mb) {
        Ok(Some(why)) => errors.push(format!("spool: {why}; uploads are refused")),
        Ok(None) => {}
        Err(e) => errors.push(format!("spool: cannot read free space: {e}")),
    }
    match tokio::time::timeout(Duration::from_secs(3), st.uploader.objects().ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => errors.push(format!("object store: {e}")),
        Err(_) => errors.push("object store: no answer within 3 s".to_owned()),
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if errors.is_empty() { "ok" } else { "fail" },
        "errors": errors,
        "version": env!("CARGO_PKG_VERSION"),
        "database": st.store.backend(),
    });
    with_cache((status, Json(body)), "no-cache")
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    let s = &st.spool.stats;
    let groups = s.groups.load(Relaxed) as f64;
    let extra = [
        (
            "ooni_spool_sync_groups",
            "Filesystem syncs made by the spool (one per group commit)",
            groups,
        ),
        (
            "ooni_spool_writes",
            "Measurements written to the spool",
            s.writes.load(Relaxed) as f64,
        ),
        (
            "ooni_spool_sync_seconds",
            "Time spent in spool syncs",
            s.sync_micros.load(Relaxed) as f64 / 1e6,
        ),
        (
            "ooni_spool_depth",
            "Measurements in the spool (not yet canned)",
            spool_depth(&st),
        ),
        (
            "ooni_spool_free_bytes",
            "Free bytes on the spool's filesystem",
            st.spool.free_bytes().map_or(f64::NAN, |b| b as f64),
        ),
        (
            "ooni_spool_oldest_hour_age_seconds",
            "Age of the oldest hour still in the spool, from its start (uploader lag)",
            oldest_hour_age(&st),
        ),
        (
            "ooni_score_queue_bytes",
            "Bytes of measurements waiting for a scorer",
            st.pipeline.queued_bytes() as f64,
        ),
        (
            "ooni_http_connections_open",
            "HTTP connections open",
            st.connections.open.load(Relaxed) as f64,
        ),
        (
            "ooni_http_connections_accepted",
            "HTTP connections accepted since start",
            st.connections.accepted.load(Relaxed) as f64,
        ),
        (
            "ooni_rate_limited_requests",
            "Query API requests refused with 429 since start",
            st.quotas
                .as_ref()
                .map_or(0.0, |q| q.rejected.load(Relaxed) as f64),
        ),
        (
            "ooni_rate_limit_clients",
            "Client addresses the rate limiter remembers",
            st.quotas.as_ref().map_or(0.0, |q| q.clients() as f64),
        ),
    ];
    let mut text = st.metrics.render(&extra);
    plugin_metrics(&st, &mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn oldest_hour_age(st: &AppState) -> f64 {
    let Ok(Some(hour)) = st.spool.oldest_hour() else {
        return 0.0;
    };
    match chrono::NaiveDateTime::parse_from_str(&format!("{hour}0000"), "%Y%m%d%H%M%S") {
        Ok(t) => (chrono::Utc::now().naive_utc() - t).num_seconds().max(0) as f64,
        Err(_) => 0.0,
    }
}

/// Per plugin: identity, calls, failures and a latency histogram; and the
/// fingerprint set in use.
fn plugin_metrics(st: &AppState, out: &mut String) {
    use crate::metrics::label;
    use std::fmt::Write;
    let set = st.registry.snapshot();
    let _ = writeln!(
        out,
        "# HELP ooni_plugin_info A loaded scorer plugin\n# TYPE ooni_plugin_info gauge"
    );
    for p in &set.plugins {
        let _ = writeln!(
            out,
            "ooni_plugin_info{{plugin=\"{}\",version=\"{}\",kind=\"{}\",digest=\"{}\"}} 1",
            label(&p.info.name),
            label(&p.info.version),
            p.kind,
            label(&p.digest)
        );
    }
    for (metric, help) in [
        ("ooni_plugin_calls_total", "Scorer plugin calls"),
        (
            "ooni_plugin_failures_total",
            "Scorer plugin calls that failed (trap, timeout, bad output)",
        ),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
        for p in &set.plugins {
            let v = if metric == "ooni_plugin_calls_total" {
                &p.stats.calls
            } else {
                &p.stats.failures
            };
            let _ = writeln!(
                out,
                "{metric}{{plugin=\"{}\"}} {}",
                label(&p.info.name),
                v.load(Relaxed)
            );
        }
    }
    let _ = writeln!(out, "# HELP ooni_plugin_score_seconds Time of one scorer plugin call\n# TYPE ooni_plugin_score_seconds histogram");
    for p in &set.plugins {
        p.stats.seconds.render(
            out,
            "ooni_plugin_score_seconds",
            &format!("plugin=\"{}\"", label(&p.info.name)),
        );
    }
    let fps = st.registry.fingerprints().current();
    let _ = writeln!(
        out,
        "# HELP ooni_fingerprints_info The blocking-fingerprint set in use\n# TYPE ooni_fingerprints_info gauge\nooni_fingerprints_info{{version=\"{}\",dns=\"{}\",http=\"{}\"}} 1",
        label(&fps.version),
        fps.dns,
        fps.http
    );
}

/// Files at open, plus writes, minus what the uploader and quarantine took away.
fn spool_depth(st: &AppState) -> f64 {
    let s = &st.spool.stats;
    let added = s.files_at_open.load(Relaxed) + s.writes.load(Relaxed);
    let removed =
        st.metrics.spool_files_removed.load(Relaxed) + st.metrics.quarantined.load(Relaxed);
    added.saturating_sub(removed) as f64
}
