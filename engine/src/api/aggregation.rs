//! `GET /api/v1/aggregation` (spec/api.md §2.7): measurement counts by up to two axes,
//! as JSON or CSV, with OONI's validation answers (parameter errors are HTTP 200
//! `{"error", "v": 0}`; axis, time-grain and database errors 400).

use super::params::{self, Params};
use super::with_cache;
use super::AppState;
use crate::store::{AggQuery, AggRow, Axis, AxisValue, Grain};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::time::Instant;

/// Groups one answer may hold; OONI has no cap and can return enormous results.
const MAX_GROUPS: i64 = 100_000;

/// An answer in OONI's error shape, `{"error", "v": 0}`.
struct AggError {
    status: StatusCode,
    msg: String,
}

impl IntoResponse for AggError {
    fn into_response(self) -> Response {
        with_cache(
            (self.status, Json(json!({"error": self.msg, "v": 0}))),
            "no-cache",
        )
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> AggError {
    AggError {
        status,
        msg: msg.into(),
    }
}

/// A parameter error: OONI answers these with 200.
fn param_error(e: super::error::ApiError) -> AggError {
    let msg = e
        .detail
        .split_once(": ")
        .map_or(e.detail.as_str(), |(_, m)| m)
        .to_owned();
    error(StatusCode::OK, msg)
}

fn list<T>(
    p: &Params,
    name: &str,
    each: impl Fn(&str) -> Result<T, super::error::ApiError>,
) -> Result<Vec<T>, super::error::ApiError> {
    params::comma_list(p.get(name))
        .iter()
        .map(|v| each(v))
        .collect()
}

fn query(p: &Params) -> Result<(AggQuery, bool), AggError> {
    let mut q = AggQuery {
        max_groups: MAX_GROUPS,
        ..AggQuery::default()
    };
    let parsed = (|| -> Result<(), super::error::ApiError> {
        q.input = p.non_empty("input").map(params::input).transpose()?;
        q.domains = list(p, "domain", params::domain)?;
        q.category_code = p
            .non_empty("category_code")
            .map(|v| params::uppercase("category_code", v))
            .transpose()?;
        q.probe_ccs = list(p, "probe_cc", |v| params::probe_cc("probe_cc", v))?;
        q.probe_asns = list(p, "probe_asn", |v| params::asn("probe_asn", v))?;
        q.test_names = list(p, "test_name", |v| {
            params::lowercase_underscore("test_name", v)
        })?;
        q.ooni_run_link_ids = list(p, "ooni_run_link_id", |v| {
            params::int("ooni_run_link_id", Some(v), 0)
        })?;
        q.since = p
            .non_empty("since")
            .map(|v| params::date("since", v))
            .transpose()?;
        q.until = p
            .non_empty("until")
            .map(|v| params::date("until", v))
            .transpose()?;
        Ok(())
    })();
    parsed.map_err(param_error)?;
    for name in ["axis_x", "axis_y"] {
        if let Some(v) = p.non_empty(name) {
            params::lowercase_underscore(name, v).map_err(param_error)?;
            let axis =
                Axis::parse(v).ok_or_else(|| error(StatusCode::OK, format!("Invalid {name}")))?;
            q.axes.push(axis);
        }
    }
    if q.axes.len() == 2 && q.axes[0] == q.axes[1] {
        return Err(error(StatusCode::OK, "Axis X and Y cannot be the same"));
    }
    let csv = match p
        .non_empty("format")
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("JSON") => false,
        Some("CSV") => true,
        Some(_) => return Err(error(StatusCode::OK, "Invalid format")),
    };
    if q.axes.contains(&Axis::MeasurementStartDay) {
        q.grain = Some(time_grain(p.get("time_grain").unwrap_or("auto"), &q)?);
    }
    Ok((q, csv))
}

/// OONI's grains by the length of the range (`aggregation.py:42-82`), `year` made to
/// work (OONI accepts it and then fails).
fn time_grain(asked: &str, q: &AggQuery) -> Result<Grain, AggError> {
    let (Some(since), Some(until)) = (q.since, q.until) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "Invalid since and until values",
        ));
    };
    if until <= since {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "Invalid since and until values",
        ));
    }
    let days = (until - since).num_seconds() as f64 / 86_400.0;
    let (allowed, auto): (&[Grain], Grain) = if days <= 7.0 {
        (&[Grain::Hour, Grain::Day], Grain::Hour)
    } else if days <= 30.0 {
        (&[Grain::Day, Grain::Week], Grain::Day)
    } else if days <= 365.0 {
        (&[Grain::Day, Grain::Week, Grain::Month], Grain::Day)
    } else {
        (
            &[Grain::Day, Grain::Week, Grain::Month, Grain::Year],
            Grain::Day,
        )
    };
    if asked == "auto" {
        return Ok(auto);
    }
    allowed
        .iter()
        .copied()
        .find(|g| g.name() == asked)
        .ok_or_else(|| {
            let names: Vec<&str> = allowed.iter().map(|g| g.name()).chain(["auto"]).collect();
            error(
                StatusCode::BAD_REQUEST,
                format!(
                    "Choose time_grain between {} for the given time range",
                    names.join(", ")
                ),
            )
        })
}

/// One result object, keys sorted as OONI's JSON and CSV show them.
fn row_object(axes: &[Axis], r: AggRow) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("anomaly_count".into(), r.anomaly_count.into());
    m.insert("confirmed_count".into(), r.confirmed_count.into());
    m.insert("failure_count".into(), r.failure_count.into());
    m.insert("measurement_count".into(), r.measurement_count.into());
    m.insert("ok_count".into(), r.ok_count.into());
    for (a, v) in axes.iter().zip(r.axes) {
        m.insert(
            a.name().into(),
            match v {
                AxisValue::Int(i) => i.into(),
                AxisValue::Text(s) => s.into(),
            },
        );
    }
    m.sort_keys();
    m
}

fn csv_field(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn to_csv(rows: &[Map<String, Value>]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let keys: Vec<&String> = first.keys().collect();
    let mut out = keys
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",");
    out.push_str("\r\n");
    for r in rows {
        let line: Vec<String> = keys.iter().map(|k| csv_field(&r[k.as_str()])).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

pub async fn aggregation(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let started = Instant::now();
    let p = match Params::parse(raw.as_deref()) {
        Ok(p) => p,
        Err(e) => return param_error(e).into_response(),
    };
    let (q, csv) = match query(&p) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let rows = match st.store.aggregate(&q).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "aggregation query failed");
            return error(StatusCode::BAD_REQUEST, format!("database: {e}")).into_response();
        }
    };
    if rows.len() as i64 > MAX_GROUPS {
        return error(
            StatusCode::BAD_REQUEST,
            format!("more than {MAX_GROUPS} groups: narrow the query (dates, countries, tests)"),
        )
        .into_response();
    }
    let total: i64 = rows.iter().map(|r| r.measurement_count).sum();
    let n = rows.len();
    let objects: Vec<Map<String, Value>> =
        rows.into_iter().map(|r| row_object(&q.axes, r)).collect();
    let download = params::boolean(p.get("download")) == Some(true);
    let mut resp = if csv {
        let mut r = to_csv(&objects).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
        r
    } else {
        let result = if q.axes.is_empty() {
            Value::Object(objects.into_iter().next().unwrap_or_default())
        } else {
            Value::Array(objects.into_iter().map(Value::Object).collect())
        };
        Json(json!({
            "v": 0,
            "dimension_count": q.axes.len(),
            "result": result,
            "db_stats": {
                "row_count": n,
                "bytes": 0,
                "total_row_count": total,
                "elapsed_seconds": started.elapsed().as_secs_f64(),
            },
        }))
        .into_response()
    };
    if download {
        let name = if csv {
            "attachment; filename=ooni-aggregate-data.csv"
        } else {
            "attachment; filename=ooni-aggregate-data.json"
        };
        resp.headers_mut()
            .insert(header::CONTENT_DISPOSITION, HeaderValue::from_static(name));
    }
    with_cache(resp, "no-cache")
}
