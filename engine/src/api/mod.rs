//! The HTTP API: router assembly and the state handlers share.

pub mod admin;
pub mod aggregation;
pub mod error;
pub mod measurements;
pub mod openapi;
pub mod ops;
pub mod params;
pub mod private;
pub mod probe;
pub mod ratelimit;
pub mod search;
pub mod testlist;

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

/// What every handler reaches, behind one reference count: axum clones the state for
/// each request (and each middleware), and the parts' own clones (the spool's paths,
/// a dozen reference counts) were a visible share of a small upload's time.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub config: Arc<Config>,
    pub spool: Spool,
    pub pipeline: Pipeline,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub bodies: Arc<Bodies>,
    pub uploader: Arc<Uploader>,
    /// The query API's rate limiter; `None` when it is off.
    pub quotas: Option<Arc<ratelimit::Quotas>>,
    pub connections: Arc<crate::http::ConnectionStats>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/report", post(probe::open_report))
        .route("/report/{report_id}", post(probe::submit_measurement))
        .route("/report/{report_id}/close", post(probe::close_report))
        .route("/api/v1/check-in", post(probe::check_in))
        .route("/api/v1/collectors", get(probe::collectors))
        .route("/api/v1/test-helpers", get(probe::test_helpers))
        .route("/api/v1/test-list/urls", get(testlist::urls))
        .route("/api/v1/measurement/{uid}", get(measurements::measurement))
        .route(
            "/api/v1/raw_measurement",
            get(measurements::raw_measurement),
        )
        .route("/api/v1/measurements", get(search::list))
        .route("/api/v1/measurement_meta", get(search::meta))
        .route("/api/v1/aggregation", get(aggregation::aggregation))
        .route("/api/_/global_overview", get(private::global_overview))
        .route(
            "/api/_/global_overview_by_month",
            get(private::global_overview_by_month),
        )
        .route("/api/_/country_overview", get(private::country_overview))
        .route("/api/_/countries", get(private::countries))
        .route("/api/_/networks", get(private::networks))
        .route("/api/_/asnmeta", get(private::asnmeta))
        .route("/api/_/domains", get(private::domains))
        .route("/api/_/domain_metadata", get(private::domain_metadata))
        .route("/api/_/measurement_feedback/{uid}", get(private::feedback))
        .route("/api/_/measurement_feedback", post(private::feedback_post))
        .route("/api/_/account_metadata", get(private::account_metadata))
        .route("/api/v1/incidents/search", get(private::incidents_search))
        .route("/openapi.json", get(openapi::document))
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
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ratelimit::limit,
        ))
        // Explorer's pages call the API from the browser, cross-origin.
        .layer(axum::middleware::map_response(allow_any_origin))
        .with_state(state)
}

async fn allow_any_origin(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
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
