//! The HTTP API: router assembly and the state handlers share.

pub mod admin;
pub mod aggregation;
pub mod error;
pub mod measurements;
pub mod ops;
pub mod params;
pub mod probe;
pub mod search;

use crate::bodies::Bodies;
use crate::config::Config;
use crate::ingest::spool::Spool;
use crate::metrics::Metrics;
use crate::scoring::registry::Registry;
use crate::scoring::Pipeline;
use crate::store::Store;
use crate::uploader::Uploader;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub spool: Spool,
    pub pipeline: Pipeline,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub bodies: Arc<Bodies>,
    pub uploader: Arc<Uploader>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/report", post(probe::open_report))
        .route("/report/{report_id}", post(probe::submit_measurement))
        .route("/report/{report_id}/close", post(probe::close_report))
        .route("/api/v1/check-in", post(probe::check_in))
        .route("/api/v1/collectors", get(probe::collectors))
        .route("/api/v1/test-helpers", get(probe::test_helpers))
        .route("/api/v1/measurement/{uid}", get(measurements::measurement))
        .route(
            "/api/v1/raw_measurement",
            get(measurements::raw_measurement),
        )
        .route("/api/v1/measurements", get(search::list))
        .route("/api/v1/measurement_meta", get(search::meta))
        .route("/api/v1/aggregation", get(aggregation::aggregation))
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/admin/plugins", get(admin::plugins))
        .route("/admin/fingerprints", get(admin::fingerprints))
        .route("/admin/reload", post(admin::reload))
        .route("/admin/upload", post(admin::upload))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read by the handlers themselves with their own limit and a JSON
        // 413; this only stops axum's own extractors from refusing earlier.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "Not found",
        "not_found",
        "no such route",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// Sets `Cache-Control` on a response, as OONI does per route.
pub fn with_cache(r: impl IntoResponse, value: &'static str) -> Response {
    let mut r = r.into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    r
}
