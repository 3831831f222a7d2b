//! `/admin/*`: operator routes behind a bearer token (`admin_token`); refused while no
//! token is configured.

use super::error::ApiError;
use super::{with_cache, AppState};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde_json::json;

/// Compares in time that depends only on the lengths, not on where bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorize(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let want = st.config.admin_token.as_bytes();
    if want.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "admin_disabled",
            "admin routes are off: set admin_token (OONI_ADMIN_TOKEN) to enable them",
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), want) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "bad_token",
            "missing or wrong bearer token",
        ))
    }
}

/// Loaded plugins with versions, test names, calls, failures and time spent, and the
/// files that were refused.
pub async fn plugins(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    Ok(with_cache(Json(st.registry.status()), "no-cache"))
}

/// The fingerprint set: directory, mode, version, counts, last reload and last error.
pub async fn fingerprints(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    Ok(with_cache(
        Json(st.registry.fingerprints().status()),
        "no-cache",
    ))
}

/// Reloads fingerprints and plugins now (the watchers also do on every change, and
/// SIGHUP does too). 200 with what was refused; the previous sets keep serving.
pub async fn reload(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let reg = st.registry.clone();
    let (fp, refused) =
        tokio::task::spawn_blocking(move || (reg.fingerprints().reload(), reg.reload()))
            .await
            .map_err(|e| ApiError::unavailable(format!("reload task failed: {e}")))?;
    let refused: Vec<_> = refused
        .into_iter()
        .map(|r| json!({"source": r.source, "error": r.error}))
        .collect();
    let version = st.registry.fingerprints().current().version.to_string();
    let fingerprints = match fp {
        Ok(()) => json!({"version": version, "error": null}),
        Err(e) => json!({"version": version, "error": e.to_string()}),
    };
    Ok(with_cache(
        Json(json!({"plugins": {"refused": refused}, "fingerprints": fingerprints})),
        "no-cache",
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_comparison() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"ab"));
    }
}

#[derive(serde::Deserialize)]
pub struct UploadParams {
    all: Option<bool>,
}

/// Runs the uploader now (`?all=true` cans the current hour too) and answers with
/// what it did.
pub async fn upload(
    State(st): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<UploadParams>,
) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    match st.uploader.run_once(q.all.unwrap_or(false)).await {
        Ok(report) => Ok(with_cache(Json(report), "no-cache")),
        Err(crate::uploader::UploadError::Busy(p)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            "uploader_busy",
            format!("another uploader run holds {}", p.display()),
        )),
        Err(e) => Err(ApiError::unavailable(format!("uploader: {e}"))),
    }
}
