//! Explorer's private routes (`/api/_/…`, spec/api.md §3 and spec/explorer.md A.3),
//! and the account and findings answers Explorer needs to render anonymously.

use super::error::ApiError;
use super::params::{self, Params};
use super::{with_cache, AppState};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use chrono::{Datelike, Months, NaiveDate, Utc};
use serde_json::{json, Map, Value};

fn db_error(e: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "overview query failed");
    ApiError::unavailable(format!("database: {e}"))
}

/// `YYYY-MM-DDT00:00:00+00:00`, as OONI renders these dates.
fn day_stamp(day: &str) -> String {
    format!("{day}T00:00:00+00:00")
}

pub async fn global_overview(State(st): State<AppState>) -> Result<Response, ApiError> {
    let (measurements, networks, countries) = st.store.global_overview().await.map_err(db_error)?;
    Ok(with_cache(
        Json(json!({
            "country_count": countries,
            "measurement_count": measurements,
            "network_count": networks,
        })),
        "max-age=86400",
    ))
}

/// The last 24 months, the current one last; months without data are left out, as
/// OONI's query leaves them.
pub async fn global_overview_by_month(State(st): State<AppState>) -> Result<Response, ApiError> {
    let today = Utc::now().date_naive();
    let first = NaiveDate::from_ymd_opt(today.year(), today.month(), 1)
        .and_then(|d| d.checked_sub_months(Months::new(23)))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .ok_or_else(|| ApiError::unavailable("date out of range"))?;
    let months = st.store.overview_by_month(first).await.map_err(db_error)?;
    let series = |f: &dyn Fn(&crate::store::MonthCounts) -> i64| -> Vec<Value> {
        months
            .iter()
            .map(|m| json!({"date": day_stamp(&m.month), "value": f(m)}))
            .collect()
    };
    Ok(with_cache(
        Json(json!({
            "countries_by_month": series(&|m| m.countries),
            "measurements_by_month": series(&|m| m.measurements),
            "networks_by_month": series(&|m| m.networks),
        })),
        "max-age=86400",
    ))
}

pub async fn country_overview(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref())?;
    let cc = params::probe_cc(
        "probe_cc",
        p.non_empty("probe_cc")
            .ok_or_else(|| params::invalid("probe_cc", "required"))?,
    )?;
    let (first, measurements, networks) = st.store.country_overview(&cc).await.map_err(db_error)?;
    Ok(with_cache(
        Json(json!({
            "first_bucket_date": first.map(|t| t.format("%Y-%m-%d").to_string()),
            "measurement_count": measurements,
            "network_count": networks,
        })),
        "max-age=86400",
    ))
}

/// Measurement counts per country, with English names; codes that are not ISO
/// countries are left out, as OONI does.
pub async fn countries(State(st): State<AppState>) -> Result<Response, ApiError> {
    let counts = st.store.count_by_country().await.map_err(db_error)?;
    let countries: Vec<Value> = counts
        .into_iter()
        .filter_map(|(cc, count)| {
            let name = isocountry::CountryCode::for_alpha2(&cc).ok()?.name();
            Some(json!({"alpha_2": cc, "count": count, "name": name}))
        })
        .collect();
    Ok(with_cache(
        Json(json!({"countries": countries})),
        "max-age=86400",
    ))
}

pub async fn networks(State(st): State<AppState>) -> Result<Response, ApiError> {
    let rows = st.store.count_by_network().await.map_err(db_error)?;
    let results: Vec<Value> = rows
        .into_iter()
        .map(|(asn, cnt, org)| {
            json!({"cnt": cnt, "org_name": org.unwrap_or_else(|| "Unknown".to_owned()), "probe_asn": asn})
        })
        .collect();
    Ok(with_cache(
        Json(json!({"v": 0, "results": results})),
        "max-age=7200",
    ))
}

pub async fn asnmeta(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref())?;
    let asn = p
        .non_empty("asn")
        .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or_else(|| params::invalid("asn", "required, digits only"))?;
    let name = st.store.asn_org_name(asn).await.map_err(db_error)?;
    Ok(with_cache(
        Json(json!({"org_name": name.unwrap_or_else(|| "Unknown".to_owned())})),
        "max-age=7200",
    ))
}

pub async fn domains(State(st): State<AppState>) -> Result<Response, ApiError> {
    let rows = st.store.domain_counts().await.map_err(db_error)?;
    let results: Vec<Value> = rows
        .into_iter()
        .map(|d| {
            json!({"category_code": d.category_code, "domain_name": d.domain, "measurement_count": d.measurement_count})
        })
        .collect();
    Ok(with_cache(
        Json(json!({"v": 0, "results": results})),
        "max-age=7200",
    ))
}

/// The test-list category of a domain; `MISC` and the domain itself when it is on no
/// list. Explorer's domain page fails without an answer, so there always is one.
pub async fn domain_metadata(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref())?;
    let domain = params::domain(
        p.non_empty("domain")
            .ok_or_else(|| params::invalid("domain", "required"))?,
    )?;
    let (category_code, canonical_domain) = st
        .store
        .domain_entry(&domain)
        .await
        .map_err(db_error)?
        .unwrap_or_else(|| ("MISC".to_owned(), domain.clone()));
    Ok(with_cache(
        Json(json!({"canonical_domain": canonical_domain, "category_code": category_code})),
        "max-age=7200",
    ))
}

/// `{"summary": {status: count}}`: Explorer's measurement page needs the object.
pub async fn feedback(
    State(st): State<AppState>,
    Path(uid): Path<String>,
) -> Result<Response, ApiError> {
    let rows = st.store.feedback_summary(&uid).await.map_err(db_error)?;
    let summary: Map<String, Value> = rows.into_iter().map(|(s, n)| (s, n.into())).collect();
    Ok(with_cache(Json(json!({"summary": summary})), "no-cache"))
}

/// Accounts do not exist yet: nobody is logged in, so nobody may give feedback.
pub async fn feedback_post() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "Authentication required",
        "not_logged_in",
        "giving feedback needs an account; accounts are not available on this server",
    )
}

pub async fn account_metadata() -> Response {
    with_cache(
        (StatusCode::UNAUTHORIZED, Json(json!({"logged_in": false}))),
        "no-cache",
    )
}

/// Findings (incidents) are not kept here; Explorer shows an empty list.
pub async fn incidents_search() -> Response {
    with_cache(Json(json!({"incidents": []})), "max-age=60")
}
