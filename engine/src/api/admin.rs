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

/// Reloads plugins now (the watcher also does on every change).
pub async fn reload(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let reg = st.registry.clone();
    let refused = tokio::task::spawn_blocking(move || reg.reload())
        .await
        .map_err(|e| ApiError::unavailable(format!("reload task failed: {e}")))?;
    let refused: Vec<_> = refused
        .into_iter()
        .map(|r| json!({"source": r.source, "error": r.error}))
        .collect();
    Ok(with_cache(
        Json(json!({"plugins": {"refused": refused}})),
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
