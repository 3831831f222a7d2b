//! `GET /api/v1/test-list/urls` (spec/api.md §1.4): the prioritised test list.

use super::params::Params;
use super::{with_cache, AppState};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::Json;
use serde_json::json;

pub async fn urls(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    // OONI answers any parse error with 200 `{}`.
    let empty = || with_cache(Json(json!({})), "max-age=1");
    let Ok(p) = Params::parse(raw.as_deref()) else {
        return empty();
    };
    let cc = p
        .non_empty("country_code")
        .or_else(|| p.non_empty("probe_cc"))
        .unwrap_or("ZZ")
        .to_ascii_uppercase();
    if cc.len() != 2 || !cc.bytes().all(|b| b.is_ascii_alphabetic()) {
        return empty();
    }
    let mut categories: Vec<String> = p
        .get("category_codes")
        .unwrap_or("")
        .split(',')
        .map(|c| c.trim().to_ascii_uppercase())
        .filter(|c| !c.is_empty())
        .collect();
    categories.sort();
    categories.dedup();
    let limit = match p.non_empty("limit").map(str::parse::<i64>) {
        None => 9999,
        Some(Ok(n)) if n < 0 => 9999,
        Some(Ok(n)) => n as usize,
        Some(Err(_)) => return empty(),
    };
    let results = match crate::testlists::prioritised(&st.store, &cc, &categories, limit).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "test list query failed");
            return empty();
        }
    };
    with_cache(
        Json(json!({
            "metadata": {"count": results.len(), "current_page": -1, "limit": -1, "next_url": "", "pages": 1},
            "results": results,
        })),
        "max-age=1",
    )
}
