//! The one error type handlers return; it renders as JSON with the right status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// OONI's short message, kept for clients that match on it.
    pub error: String,
    /// A stable machine-readable code.
    pub reason: &'static str,
    /// What exactly was wrong, for a human.
    pub detail: String,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        error: &str,
        reason: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            error: error.to_owned(),
            reason,
            detail: detail.into(),
        }
    }

    pub fn bad_request(reason: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Incorrect format", reason, detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable",
            "unavailable",
            detail,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "reason": self.reason, "detail": self.detail});
        let mut r = (self.status, Json(body)).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    }
}
