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
    ];
    let text = st.metrics.render(&extra);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
