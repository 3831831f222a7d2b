//! `/api/v1/measurements` (search) and `/api/v1/measurement_meta`, with OONI's
//! parameters, defaults, limits, errors and shapes (spec/api.md §2.2, §2.5).

use super::error::ApiError;
use super::params::{self, Params};
use super::{with_cache, AppState};
use crate::store::{ListQuery, MetaKey, OrderBy};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use chrono::{Duration, NaiveDateTime, Utc};
use ooni_core::FastpathRow;
use serde_json::{json, Map, Value};
use std::time::Instant;

fn z_time(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn db_error(e: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "measurements query failed");
    ApiError::unavailable(format!("database: {e}"))
}

/// Reads and validates every search parameter.
fn list_query(p: &Params) -> Result<ListQuery, ApiError> {
    let report_id = p
        .non_empty("report_id")
        .map(params::report_id)
        .transpose()?;
    let probe_cc = match p.non_empty("probe_cc") {
        Some(cc) => {
            let cc = params::probe_cc("probe_cc", cc)?;
            if cc == "ZZ" {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "unknown_country",
                    "probe_cc=ZZ (unknown country) cannot be queried",
                ));
            }
            Some(cc)
        }
        None => None,
    };
    let probe_asn = match p.non_empty("probe_asn") {
        Some(v) => {
            let asn = params::asn("probe_asn", v)?;
            if asn == 0 {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "unknown_network",
                    "probe_asn=AS0 (unknown network) cannot be queried",
                ));
            }
            Some(asn)
        }
        None => None,
    };
    let order_by = match p.non_empty("order_by") {
        None => OrderBy::MeasurementStartTime,
        Some(v) => {
            OrderBy::parse(v).ok_or_else(|| params::invalid("order_by", "Invalid order_by"))?
        }
    };
    let descending = match p.non_empty("order").map(str::to_ascii_lowercase).as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => return Err(ApiError::bad_request("invalid_order", "Invalid order")),
    };
    let limit = params::int("limit", p.get("limit"), 100)?;
    if limit > 100 {
        return Err(ApiError::bad_request(
            "limit_too_large",
            "`limit` is only allowed up to 100",
        ));
    }
    if limit < 1 {
        return Err(params::invalid("limit", "must be at least 1"));
    }
    let offset = params::int("offset", p.get("offset"), 0)?;
    if offset < 0 {
        return Err(params::invalid("offset", "must not be negative"));
    }
    let mut since = p
        .non_empty("since")
        .map(|v| params::date("since", v))
        .transpose()?;
    let mut until = p
        .non_empty("until")
        .map(|v| params::date("until", v))
        .transpose()?;
    // OONI's window: up to tomorrow, 30 days back, unless a report is named.
    if report_id.is_none() {
        if until.is_none() {
            let tomorrow = (Utc::now() + Duration::days(1)).date_naive();
            until = tomorrow.and_hms_opt(0, 0, 0);
        }
        if since.is_none() {
            since = until.map(|u| u - Duration::days(30));
        }
    }
    Ok(ListQuery {
        report_id,
        input: p.non_empty("input").map(params::input).transpose()?,
        domain: p.non_empty("domain").map(params::domain).transpose()?,
        probe_cc,
        probe_asn,
        test_name: p
            .non_empty("test_name")
            .map(|v| params::lowercase_underscore("test_name", v))
            .transpose()?,
        category_code: p
            .non_empty("category_code")
            .map(|v| params::uppercase("category_code", v))
            .transpose()?,
        since,
        until,
        anomaly: params::boolean(p.get("anomaly")),
        confirmed: params::boolean(p.get("confirmed")),
        failure: params::boolean(p.get("failure")),
        software_versions: params::comma_list(p.get("software_version")),
        test_versions: params::comma_list(p.get("test_version")),
        engine_versions: params::comma_list(p.get("engine_version")),
        ooni_run_link_id: p
            .non_empty("ooni_run_link_id")
            .map(|v| params::int("ooni_run_link_id", Some(v), 0))
            .transpose()?,
        order_by,
        descending,
        offset,
        limit,
    })
}

fn list_item(base: &str, r: FastpathRow) -> Value {
    // OONI answers `scores` parsed; a row's scores are always its own JSON.
    let scores: Value = serde_json::from_str(&r.scores).unwrap_or(Value::Null);
    let input = if r.input.is_empty() {
        Value::Null
    } else {
        Value::String(r.input)
    };
    json!({
        "anomaly": r.anomaly,
        "confirmed": r.confirmed,
        "failure": r.msm_failure,
        "input": input,
        "measurement_start_time": z_time(r.measurement_start_time),
        "measurement_uid": r.measurement_uid,
        "measurement_url": format!("{base}/api/v1/raw_measurement?measurement_uid={}", r.measurement_uid),
        "probe_asn": format!("AS{}", r.probe_asn),
        "probe_cc": r.probe_cc,
        "report_id": r.report_id,
        "scores": scores,
        "test_name": r.test_name,
    })
}

/// `next_url`: the original arguments in their order, `offset` and `limit` replaced
/// (or appended), as OONI re-encodes them.
fn next_url(base: &str, p: &Params, offset: i64, limit: i64) -> String {
    let mut args: Vec<(String, String)> = Vec::new();
    for (k, v) in &p.0 {
        match args.iter_mut().find(|(ak, _)| ak == k) {
            Some(slot) => slot.1 = v.clone(),
            None => args.push((k.clone(), v.clone())),
        }
    }
    for (k, v) in [("offset", offset + limit), ("limit", limit)] {
        match args.iter_mut().find(|(ak, _)| ak == k) {
            Some(slot) => slot.1 = v.to_string(),
            None => args.push((k.to_owned(), v.to_string())),
        }
    }
    let query = serde_urlencoded::to_string(&args).unwrap_or_default();
    format!("{base}/api/v1/measurements?{query}")
}

pub async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    // Old Android probes (ooni/probe#1034) get OONI's fixed answer.
    let okhttp = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("okhttp"));
    if okhttp {
        let body = json!({
            "metadata": {"count": 1, "current_page": 1, "limit": 100, "next_url": null, "offset": 0, "pages": 1, "query_time": 0.001},
            "results": [{"measurement_url": ""}],
        });
        return Ok(with_cache(Json(body), "no-cache"));
    }
    let p = Params::parse(raw.as_deref())?;
    let q = list_query(&p)?;
    let rows = st.store.list_measurements(&q).await.map_err(db_error)?;
    let base = st.config.public_url();
    let n = rows.len() as i64;
    let current_page = (q.offset + q.limit - 1) / q.limit + 1;
    let (count, pages, next) = if n < q.limit {
        let count = q.offset + n;
        (count, (count + q.limit - 1) / q.limit, Value::Null)
    } else {
        (
            -1,
            -1,
            Value::String(next_url(&base, &p, q.offset, q.limit)),
        )
    };
    let results: Vec<Value> = rows.into_iter().map(|r| list_item(&base, r)).collect();
    let body = json!({
        "metadata": {
            "count": count,
            "current_page": current_page,
            "limit": q.limit,
            "next_url": next,
            "offset": q.offset,
            "pages": pages,
            "query_time": started.elapsed().as_secs_f64(),
        },
        "results": results,
    });
    Ok(with_cache(Json(body), "max-age=60"))
}

pub async fn meta(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref())?;
    let full = params::truthy(p.get("full"));
    let uid = p
        .non_empty("measurement_uid")
        .filter(|u| (10..=100).contains(&u.len()));
    let input = p.get("input").map(params::input).transpose()?;
    let key = match (uid, p.non_empty("report_id")) {
        (Some(uid), _) => MetaKey::Uid(uid),
        (None, Some(rid)) => {
            params::report_id(rid)?;
            MetaKey::Report {
                report_id: rid,
                input: input.as_deref().filter(|i| !i.is_empty()),
            }
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "missing_parameter",
                "give measurement_uid, or report_id (and input)",
            ))
        }
    };
    let row = st.store.measurement_meta(key).await.map_err(db_error)?;
    let Some((r, category_code)) = row else {
        let empty = if full {
            json!({"raw_measurement": ""})
        } else {
            json!({})
        };
        return Ok(with_cache(Json(empty), "max-age=60"));
    };
    let mut out = Map::new();
    out.insert("anomaly".into(), r.anomaly.into());
    out.insert(
        "category_code".into(),
        category_code.map_or(Value::Null, Value::String),
    );
    out.insert("confirmed".into(), r.confirmed.into());
    out.insert("failure".into(), r.msm_failure.into());
    out.insert("input".into(), r.input.into());
    out.insert(
        "measurement_start_time".into(),
        z_time(r.measurement_start_time).into(),
    );
    out.insert("measurement_uid".into(), r.measurement_uid.clone().into());
    out.insert("probe_asn".into(), r.probe_asn.into());
    out.insert("probe_cc".into(), r.probe_cc.into());
    if full {
        // "" when the body cannot be fetched, as OONI.
        let body = match st.bodies.by_uid(&r.measurement_uid).await {
            Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(None) => String::new(),
            Err(e) => {
                tracing::warn!(error = %e, uid = %r.measurement_uid, "measurement body unavailable");
                String::new()
            }
        };
        out.insert("raw_measurement".into(), body.into());
    }
    out.insert("report_id".into(), r.report_id.into());
    out.insert("scores".into(), r.scores.into());
    out.insert("test_name".into(), r.test_name.into());
    out.insert("test_start_time".into(), z_time(r.test_start_time).into());
    // What OONI's newer service adds and Explorer shows.
    let status = match r.is_verified.as_str() {
        "t" => "verified",
        "f" => "failed",
        _ => "unverified",
    };
    out.insert("verification_status".into(), status.into());
    Ok(with_cache(Json(Value::Object(out)), "max-age=60"))
}
