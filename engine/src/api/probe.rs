//! OONI's collector protocol and probe services, unchanged on the wire
//! (spec/api.md §1): open/submit/close a report, check-in, collectors, test helpers.

use super::error::ApiError;
use super::{with_cache, AppState};
use crate::ingest::submission::{
    check_consistency, check_metadata, decode_body, read_metadata, Rejection,
};
use crate::scoring::ScoreJob;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ooni_core::ids::{
    format_measurement_uid, format_report_id, parse_measurement_uid, parse_report_id,
};
use rand::RngCore;
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// The test names check-in mints a report id for (spec/api.md §1.2).
const CHECK_IN_TESTS: [&str; 21] = [
    "bridge_reachability",
    "dash",
    "dns_consistency",
    "dnscheck",
    "facebook_messenger",
    "http_header_field_manipulation",
    "http_host",
    "http_invalid_request_line",
    "http_requests",
    "meek_fronted_requests_test",
    "multi_protocol_traceroute",
    "ndt",
    "psiphon",
    "riseupvpn",
    "tcp_connect",
    "telegram",
    "tor",
    "urlgetter",
    "vanilla_tor",
    "web_connectivity",
    "whatsapp",
];

/// The receive time in a uid, strictly increasing within this process: two uploads of
/// the same bytes in the same microsecond would otherwise get the same uid (OONI's
/// format is time + body hash), and the second would replace the first in the spool.
fn receive_time() -> DateTime<Utc> {
    use std::sync::atomic::AtomicI64;
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = Utc::now().timestamp_micros();
    let prev = LAST.fetch_max(now, Relaxed);
    let micros = if prev >= now {
        LAST.fetch_add(1, Relaxed) + 1
    } else {
        now
    };
    DateTime::from_timestamp_micros(micros).unwrap_or_else(Utc::now)
}

/// Bodies larger than this are parsed off the async runtime.
const INLINE_PARSE_LIMIT: usize = 1 << 20;

fn random16() -> String {
    let mut raw = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::STANDARD
        .encode(raw)
        .replace(['+', '/'], "o")
}

fn mint_report_id(
    st: &AppState,
    now: DateTime<Utc>,
    test_name: &str,
    cc: &str,
    asn: i64,
) -> String {
    format_report_id(
        now,
        test_name,
        cc,
        asn,
        &st.config.collector_id,
        &random16(),
    )
}

/// `probe_asn` as the newer service normalises it: `AS0` unless `AS` + a number.
fn normalise_asn(asn: &str) -> i64 {
    let asn = asn.to_uppercase();
    if !(3..=12).contains(&asn.len()) || !asn.starts_with("AS") {
        return 0;
    }
    asn[2..].parse().unwrap_or(0)
}

fn normalise_cc(cc: &str) -> String {
    let cc = cc.to_uppercase().replace('_', "");
    if cc.chars().count() == 2 && cc.bytes().all(|b| b.is_ascii_alphanumeric()) {
        cc
    } else {
        "ZZ".to_owned()
    }
}

fn parse_json_object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(
            "bad_json",
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "JSON expected",
            "bad_json",
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

fn str_field<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    default: &'a str,
) -> Result<&'a str, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request",
            "invalid_field",
            format!("`{key}` must be a string"),
        )),
    }
}

/// `POST /report`: mints a report id; nothing is stored (reports are stateless).
pub async fn open_report(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let m = parse_json_object(&body)?;
    let missing: Vec<&str> = [
        "data_format_version",
        "format",
        "software_name",
        "software_version",
        "test_start_time",
        "test_version",
    ]
    .into_iter()
    .filter(|k| !matches!(m.get(*k), Some(Value::String(_))))
    .collect();
    if !missing.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request",
            "missing_field",
            format!("required string fields missing: {}", missing.join(", ")),
        ));
    }
    let asn = normalise_asn(str_field(&m, "probe_asn", "AS0")?);
    let cc = normalise_cc(str_field(&m, "probe_cc", "ZZ")?);
    let test_name = str_field(&m, "test_name", "")?.to_lowercase();
    let report_id = mint_report_id(&st, Utc::now(), &test_name, &cc, asn);
    st.metrics.reports_opened.fetch_add(1, Relaxed);
    Ok(with_cache(
        Json(json!({
            "backend_version": "1.3.5",
            "report_id": report_id,
            "supported_formats": ["yaml", "json"],
        })),
        "no-cache",
    ))
}

fn rejection(st: &AppState, r: Rejection) -> ApiError {
    st.metrics.reject(r.reason());
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
    ApiError::new(status, r.ooni_message(), r.reason(), r.to_string())
}

/// What a checked submission is stored as.
struct Checked {
    body: Bytes,
    cc: String,
    test_name: String,
}

/// Everything between the raw request body and the bytes to store.
fn check_submission(
    st: &AppState,
    report_id: &str,
    encoding: Option<String>,
    body: Bytes,
) -> Result<Checked, ApiError> {
    let rid = parse_report_id(report_id).map_err(|e| {
        st.metrics.reject("bad_report_id");
        ApiError::bad_request("bad_report_id", e.to_string())
    })?;
    let body = decode_body(encoding.as_deref(), body, st.config.max_decompressed_bytes)
        .map_err(|r| rejection(st, r))?;
    let meta = read_metadata(&body).map_err(|r| rejection(st, r))?;
    check_consistency(&rid, &meta).map_err(|r| rejection(st, r))?;
    check_metadata(&meta).map_err(|r| rejection(st, r))?;
    Ok(Checked {
        body,
        cc: meta.probe_cc,
        test_name: rid.test_name.to_owned(),
    })
}

/// `POST /report/{report_id}`: checks the measurement, makes it durable, and only
/// then answers with its `measurement_uid`.
pub async fn submit_measurement(
    State(st): State<AppState>,
    Path(report_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // OONI answers `{}` and stores nothing for ZZ / AS0 report ids.
    if let Ok(rid) = parse_report_id(&report_id) {
        if rid.asn == 0 || rid.cc.eq_ignore_ascii_case("ZZ") {
            st.metrics.uploads_discarded.fetch_add(1, Relaxed);
            return Ok(with_cache(Json(json!({})), "no-cache"));
        }
    }
    let limit = st.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        drain_briefly(body).await;
        return Err(rejection(&st, Rejection::TooLarge(limit)));
    }
    check_spool_room(&st)?;
    let body_timeout = Duration::from_secs(st.config.body_timeout_secs.max(1));
    let raw = tokio::time::timeout(body_timeout, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| {
            st.metrics.reject("body_timeout");
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "Request timeout",
                "body_timeout",
                format!(
                    "the body did not arrive within {} s",
                    body_timeout.as_secs()
                ),
            )
        })?
        .map_err(|e| {
            // axum reports an over-long chunked body only through its message.
            if e.to_string().contains("length limit") {
                rejection(&st, Rejection::TooLarge(limit))
            } else {
                ApiError::bad_request("body_read_failed", format!("cannot read the body: {e}"))
            }
        })?;
    let encoding = match headers.get(header::CONTENT_ENCODING) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| rejection(&st, Rejection::UnsupportedEncoding("<non-ASCII>".into())))?
                .to_owned(),
        ),
    };
    let checked = if raw.len() > INLINE_PARSE_LIMIT {
        let st2 = st.clone();
        tokio::task::spawn_blocking(move || check_submission(&st2, &report_id, encoding, raw))
            .await
            .map_err(|e| ApiError::unavailable(format!("parser task failed: {e}")))??
    } else {
        check_submission(&st, &report_id, encoding, raw)?
    };
    let body = checked.body;
    let uid = format_measurement_uid(receive_time(), &checked.cc, &checked.test_name, &body);
    let dir = parse_measurement_uid(&uid)
        .map(|p| p.spool_dir())
        .ok_or_else(|| ApiError::unavailable("could not form a measurement uid"))?;
    // Stored and handed to the scorers by a task of its own: a request cancelled while
    // it waits for the spool's sync cannot leave its measurement spooled but unqueued.
    let stored = {
        let (st, uid) = (st.clone(), uid.clone());
        tokio::spawn(async move {
            let claim = st.pipeline.claim(&uid);
            st.spool.write(dir, uid.clone(), body.clone()).await?;
            let job = ScoreJob {
                uid,
                body,
                acked_at: Some(Instant::now()),
            };
            st.pipeline.offer(job, claim);
            Ok::<(), std::io::Error>(())
        })
    };
    let written = stored
        .await
        .map_err(|e| ApiError::unavailable(format!("the spool task failed: {e}")))?;
    if let Err(e) = written {
        tracing::error!(error = %e, uid = %uid, "spool write failed");
        if e.raw_os_error() == Some(libc::ENOSPC) {
            return Err(spool_full(&st, "the spool's disk is full"));
        }
        st.metrics.reject("spool_unavailable");
        return Err(ApiError::unavailable(format!(
            "the measurement could not be stored: {e}"
        )));
    }
    st.metrics.uploads_accepted.fetch_add(1, Relaxed);
    Ok(with_cache(
        Json(json!({"measurement_uid": uid})),
        "no-cache",
    ))
}

/// Reads and drops some of a refused body before answering: a client still
/// sending when the connection closes gets a reset instead of the 413. Bounded in
/// bytes and time, so a refused body costs little.
async fn drain_briefly(body: Body) {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut left: usize = 4 * 1024 * 1024;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while left > 0 {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => {
                left = left.saturating_sub(f.data_ref().map_or(0, |d| d.len()));
            }
            _ => break,
        }
    }
}

/// Refuses an upload while the spool's disk is nearly full: what is acknowledged
/// must fit, so the probe is asked to come back later instead.
fn check_spool_room(st: &AppState) -> Result<(), ApiError> {
    match st.spool.short_of_room(st.config.spool_min_free_mb) {
        Ok(Some(why)) => Err(spool_full(st, &why)),
        Ok(None) => Ok(()),
        // Cannot tell: let the write itself decide.
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the spool's free space");
            Ok(())
        }
    }
}

fn spool_full(st: &AppState, detail: &str) -> ApiError {
    st.metrics.reject("spool_full");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service unavailable",
        "spool_full",
        format!("{detail}; retry later"),
    )
}

/// `POST /report/{report_id}/close`: always `{}`.
pub async fn close_report(Path(_report_id): Path<String>) -> Response {
    with_cache(Json(json!({})), "max-age=3600")
}

fn test_helpers_value() -> Value {
    let mut wc: Vec<Value> = (0..3)
        .flat_map(|i| {
            [
                json!({"address": format!("https://wcth{i}.fra1.ooni.org"), "type": "https"}),
                json!({"address": format!("https://wcth{i}.fra1.prod.ooni.io"), "type": "https"}),
            ]
        })
        .collect();
    // OONI shuffles the HTTPS helpers so probes spread their load.
    let n = wc.len();
    for i in (1..n).rev() {
        let j = (rand::thread_rng().next_u32() as usize) % (i + 1);
        wc.swap(i, j);
    }
    wc.push(json!({
        "address": "https://d33d1gs9kpq1c5.cloudfront.net",
        "front": "d33d1gs9kpq1c5.cloudfront.net",
        "type": "cloudfront"
    }));
    json!({ "web-connectivity": wc })
}

/// `GET /api/v1/test-helpers`.
pub async fn test_helpers() -> Response {
    with_cache(Json(test_helpers_value()), "no-cache")
}

/// `GET /api/v1/collectors`: where probes should upload, which is this engine.
pub async fn collectors(State(st): State<AppState>) -> Response {
    let url = st.config.public_url();
    let kind = if url.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    with_cache(
        Json(json!([{"address": url, "type": kind}])),
        "max-age=3600",
    )
}

/// `POST /api/v1/check-in`: a report id for every test, and the prioritised URLs
/// to test (empty until test lists are imported).
pub async fn check_in(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let m = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        parse_json_object(&body)?
    };
    let cc = str_field(&m, "probe_cc", "ZZ")?.to_uppercase();
    let asn_str = str_field(&m, "probe_asn", "AS0")?.to_owned();
    let cc = if cc.len() == 2 && cc.bytes().all(|b| b.is_ascii_alphabetic()) {
        cc
    } else {
        "ZZ".to_owned()
    };
    let asn = normalise_asn(&asn_str);
    let mut categories: Vec<String> = Vec::new();
    if let Some(wc) = m.get("web_connectivity") {
        let codes: Vec<String> = match wc.get("category_codes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.split(',').map(|c| c.trim().to_owned()).collect(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().unwrap_or("?").to_owned())
                .collect(),
            Some(_) => vec!["?".to_owned()],
        };
        if let Some(bad) = codes
            .iter()
            .find(|c| !c.is_empty() && !c.bytes().all(|b| b.is_ascii_alphabetic()))
        {
            return Err(ApiError::bad_request(
                "bad_category_code",
                format!("category code {bad:?} must be letters only"),
            ));
        }
        categories = codes
            .into_iter()
            .filter(|c| !c.is_empty())
            .map(|c| c.to_ascii_uppercase())
            .collect();
    }
    // OONI's URL limit: manual runs 9999, else 100 while charging (the default), else 20.
    let limit = if m.get("run_type").and_then(Value::as_str) == Some("manual") {
        9999
    } else if m.get("charging").and_then(Value::as_bool).unwrap_or(true) {
        100
    } else {
        20
    };
    // Any error gives an empty list, as OONI's check-in does.
    let urls = crate::testlists::prioritised(&st.store, &cc, &categories, limit)
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "test list for check-in failed");
            Vec::new()
        });
    let now = Utc::now();
    let mut tests = Map::new();
    for t in CHECK_IN_TESTS {
        let mut entry = Map::new();
        if t == "web_connectivity" {
            entry.insert("urls".into(), json!(urls));
        }
        entry.insert(
            "report_id".into(),
            json!(mint_report_id(&st, now, t, &cc, asn)),
        );
        tests.insert(t.to_owned(), Value::Object(entry));
    }
    let body = json!({
        "v": 1,
        "probe_cc": cc,
        "probe_asn": format!("AS{asn}"),
        "probe_network_name": null,
        "utc_time": now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "conf": {
            "features": {
                "torsf_enabled": false,
                "vanilla_tor_enabled": false,
                "openvpn_enabled": false,
                "webconnectivity_0.5": true
            },
            "test_helpers": test_helpers_value(),
        },
        "tests": tests,
    });
    Ok(with_cache(Json(body), "no-cache"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_follows_the_newer_service() {
        assert_eq!(normalise_asn("as30722"), 30722);
        assert_eq!(normalise_asn("AS"), 0);
        assert_eq!(normalise_asn("30722"), 0);
        assert_eq!(normalise_asn("ASxyz"), 0);
        assert_eq!(normalise_cc("i_t"), "IT");
        assert_eq!(normalise_cc("ITA"), "ZZ");
    }

    #[test]
    fn receive_times_never_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(receive_time()));
        }
    }

    #[test]
    fn random_suffix_has_no_base64_symbols() {
        for _ in 0..100 {
            let r = random16();
            assert_eq!(r.len(), 16);
            assert!(r.bytes().all(|b| b.is_ascii_alphanumeric()), "{r}");
        }
    }
}
