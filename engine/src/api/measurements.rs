//! Measurement bodies: `/api/v1/measurement/{uid}` and `/api/v1/raw_measurement`
//! (spec/api.md §2.3, §2.4, §2.6), served from the spool or from the cans.

use super::error::ApiError;
use super::{with_cache, AppState};
use crate::bodies::BodyError;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

fn body_error(e: BodyError) -> ApiError {
    tracing::error!(error = %e, "cannot fetch a measurement body");
    if matches!(e, BodyError::Objects(_) | BodyError::Db(_)) {
        // The store is down, not the measurement missing: worth a retry.
        return ApiError::unavailable(e.to_string());
    }
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Measurement not found",
        "body_unavailable",
        e.to_string(),
    )
}

fn json_bytes(body: bytes::Bytes, cache: &'static str) -> Response {
    let mut r = with_cache(body, cache);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[derive(Deserialize)]
pub struct DownloadParam {
    download: Option<String>,
}

/// The measurement's JSON; 400 with OONI's message when there is none.
pub async fn measurement(
    State(st): State<AppState>,
    Path(uid): Path<String>,
    Query(q): Query<DownloadParam>,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "Incorrect or inexistent measurement_uid",
            "unknown_measurement",
            format!("no measurement {uid:?}"),
        )
    };
    if uid.len() < 10 || uid.len() > 100 {
        return Err(not_found());
    }
    let body = st
        .bodies
        .by_uid(&uid)
        .await
        .map_err(body_error)?
        .ok_or_else(not_found)?;
    let mut r = json_bytes(body, "max-age=3600");
    if super::params::truthy(q.download.as_deref()) {
        if let Ok(v) =
            HeaderValue::from_str(&format!("attachment; filename=ooni_measurement-{uid}.json"))
        {
            r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(r)
}

#[derive(Deserialize)]
pub struct RawParams {
    measurement_uid: Option<String>,
    report_id: Option<String>,
    input: Option<String>,
}

/// The body by uid, or by report_id (+ input); `{}` when nothing matches, as OONI.
pub async fn raw_measurement(
    State(st): State<AppState>,
    Query(q): Query<RawParams>,
) -> Result<Response, ApiError> {
    let uid = match (
        q.measurement_uid.filter(|u| (10..=100).contains(&u.len())),
        q.report_id,
    ) {
        (Some(uid), _) => Some(uid),
        (None, Some(rid)) if !rid.is_empty() => st
            .store
            .uid_by_report(&rid, q.input.as_deref().unwrap_or(""))
            .await
            .map_err(|e| ApiError::unavailable(format!("database: {e}")))?,
        _ => {
            return Err(ApiError::bad_request(
                "missing_parameter",
                "give measurement_uid, or report_id (and input)",
            ))
        }
    };
    let body = match uid {
        Some(uid) => st.bodies.by_uid(&uid).await.map_err(body_error)?,
        None => None,
    };
    Ok(match body {
        Some(b) => json_bytes(b, "max-age=86400"),
        None => with_cache(
            ([(header::CONTENT_TYPE, "application/json")], "{}").into_response(),
            "max-age=60",
        ),
    })
}
