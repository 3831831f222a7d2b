//! From the bytes a probe uploaded to one `fastpath` row, exactly as OONI's
//! `process_measurement` and `clickhouse_upsert_summary` do it (spec/fastpath.md §1.4,
//! §3, §5.4), or to the reason OONI would write no row.

use crate::getters::{g, g_or, kind, truthy};
use crate::measurement::{parse_upload_cut, peek_test_name, RowFields};
use crate::pyparse::{int_from_str, ooni_datetime};
use crate::scores::{flag_wrong_date, flags, Scorer, ScorerInfo};
use crate::ujson;
use crate::urlparse::netloc;
use chrono::NaiveDateTime;
use serde_json::{Map, Value};

/// One row of the `fastpath` table: OONI's 26 columns plus provenance.
#[derive(Debug, Clone, PartialEq)]
pub struct FastpathRow {
    pub measurement_uid: String,
    pub report_id: String,
    pub input: String,
    pub probe_cc: String,
    pub probe_asn: i64,
    pub test_name: String,
    pub test_start_time: NaiveDateTime,
    pub measurement_start_time: NaiveDateTime,
    /// The scores dict serialised as `ujson.dumps` would.
    pub scores: String,
    pub platform: String,
    pub anomaly: bool,
    pub confirmed: bool,
    pub msm_failure: bool,
    pub blocking_type: String,
    pub domain: String,
    pub software_name: String,
    pub software_version: String,
    pub test_version: String,
    pub test_runtime: f64,
    pub architecture: String,
    pub engine_name: String,
    pub engine_version: String,
    pub test_helper_address: String,
    pub test_helper_type: String,
    pub ooni_run_link_id: Option<i64>,
    pub is_verified: String,
    pub scorer_name: String,
    pub scorer_version: String,
    /// Content hash of the fingerprint set the scorer saw; empty when none was used.
    pub fingerprints_version: String,
}

/// Why a measurement produced no row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropKind {
    /// OONI's deliberate early discards: no report_id, probe_cc ZZ, probe_asn AS0.
    Discarded,
    /// Where OONI raises and loses the row (a missing key, a wrong type, bad JSON).
    Failed,
}

impl DropKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DropKind::Discarded => "discarded",
            DropKind::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub kind: DropKind,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Row(Box<FastpathRow>),
    Dropped(Dropped),
}

/// Picks the scorer for a test name (the plugin registry, or just the default).
pub trait ScorerSelect {
    fn select(&self, test_name: &str) -> &dyn Scorer;
}

impl<S: Scorer> ScorerSelect for S {
    fn select(&self, _test_name: &str) -> &dyn Scorer {
        self
    }
}

fn fail(reason: impl Into<String>) -> Dropped {
    Dropped {
        kind: DropKind::Failed,
        reason: reason.into(),
    }
}

fn discard(reason: &str) -> Dropped {
    Dropped {
        kind: DropKind::Discarded,
        reason: reason.to_owned(),
    }
}

/// `nn(d, k)`: a string, `""` for missing or null; anything else fails the insert.
fn nn(d: &RowFields, key: &str) -> Result<String, Dropped> {
    match d.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(fail(format!("{key} is a {}, not a string", kind(v)))),
    }
}

/// `g_or(d, k, default)` where the column is a string (`found`: `d.get(k)`).
fn str_or(found: Option<&Value>, key: &str, default: &str) -> Result<String, Dropped> {
    match found {
        None | Some(Value::Null) => Ok(default.to_owned()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(fail(format!("{key} is a {}, not a string", kind(v)))),
    }
}

fn start_time(d: &RowFields, key: &str) -> Result<NaiveDateTime, Dropped> {
    match d.get(key) {
        None => Err(fail(format!("missing {key}"))),
        Some(Value::String(s)) => {
            ooni_datetime(s).ok_or_else(|| fail(format!("{key} {s:?} is not YYYY-MM-DD HH:MM:SS")))
        }
        Some(v) => Err(fail(format!("{key} is a {}, not a string", kind(v)))),
    }
}

/// `int(msm["probe_asn"][2:])`.
fn probe_asn(d: &RowFields) -> Result<i64, Dropped> {
    match d.get("probe_asn") {
        None => Err(fail("missing probe_asn")),
        Some(Value::String(s)) => s
            .char_indices()
            .nth(2)
            .map_or(Some(""), |(i, _)| s.get(i..))
            .and_then(int_from_str)
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| fail(format!("probe_asn {s:?} is not AS followed by a number"))),
        Some(v) => Err(fail(format!("probe_asn is a {}, not a string", kind(v)))),
    }
}

/// `int()` of `annotations.ooni_run_link_id`: NULL where Python raises ValueError.
fn ooni_run_link_id(annotations: &Value) -> Result<Option<i64>, Dropped> {
    let v = g_or(annotations, "ooni_run_link_id").map_err(|e| fail(e.to_string()))?;
    match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(int_from_str(s).and_then(|n| i64::try_from(n).ok())),
        Some(Value::Bool(b)) => Ok(Some(i64::from(*b))),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.is_nan() => Ok(None),
            (None, Some(f)) if f.is_finite() => Ok(Some(f.trunc() as i64)),
            _ => Err(fail("ooni_run_link_id is out of range")),
        },
        Some(v) => Err(fail(format!("ooni_run_link_id is a {}", kind(v)))),
    }
}

/// `input` and `domain` (`extract_input_domain`).
fn input_and_domain(msm: &RowFields, test_name: &str) -> Result<(String, String), Dropped> {
    let input = msm.get("input").filter(|v| truthy(v));
    match input {
        None => Ok((String::new(), String::new())),
        Some(Value::Array(items)) if test_name == "meek_fronted_requests_test" => {
            let mut parts = Vec::with_capacity(items.len());
            for it in items {
                match it {
                    Value::String(s) => parts.push(s.as_str()),
                    v => return Err(fail(format!("input list holds a {}", kind(v)))),
                }
            }
            let domain = parts.first().copied().unwrap_or_default().to_owned();
            Ok((format!("{{{}}}", parts.join(",")), domain))
        }
        Some(Value::String(s)) => {
            let domain = netloc(s).map_err(|e| fail(format!("input: {e}")))?;
            Ok((s.clone(), domain))
        }
        Some(v) => Err(fail(format!("input is a {}, not a string", kind(v)))),
    }
}

/// Scores one uploaded body (a post envelope or a bare measurement) and derives its row.
pub fn derive_row(body: &[u8], uid: &str, scorers: &dyn ScorerSelect) -> Outcome {
    match derive(body, uid, scorers) {
        Ok(row) => Outcome::Row(Box::new(row)),
        Err(d) => Outcome::Dropped(d),
    }
}

fn derive(body: &[u8], uid: &str, scorers: &dyn ScorerSelect) -> Result<FastpathRow, Dropped> {
    // The scorer this measurement most likely goes to cuts it in the first walk.
    let hinted = peek_test_name(body).map(|t| scorers.select(&t));
    let plan = hinted.and_then(|s| s.cut_plan());
    let upload = parse_upload_cut(body, plan.as_ref()).map_err(fail)?;
    let is_verified = match &upload.is_verified {
        Some(Value::String(s)) if matches!(s.as_str(), "u" | "t" | "f") => s.clone(),
        _ => "u".to_owned(),
    };
    let measurement = &upload.measurement;
    // The getters below see only the row fields; they behave as on the whole object.
    let msm = &measurement.fields;

    if msm.get("report_id").is_none_or(Value::is_null) {
        return Err(discard("Ignoring measurement without report_id"));
    }
    for (key, zero, msg) in [
        ("probe_cc", "ZZ", "Ignoring measurement with probe_cc=ZZ"),
        ("probe_asn", "AS0", "Ignoring measurement with ASN 0"),
    ] {
        match msm.get(key) {
            None => {}
            Some(Value::String(s)) if s.to_uppercase() == zero => return Err(discard(msg)),
            Some(Value::String(_)) => {}
            Some(v) => return Err(fail(format!("{key} is a {}, not a string", kind(v)))),
        }
    }

    let test_name = match msm.get("test_name") {
        None => return Err(fail("missing test_name")),
        Some(Value::String(s)) => s.as_str(),
        Some(v) => return Err(fail(format!("test_name is a {}, not a string", kind(v)))),
    };
    let scorer = scorers.select(test_name);
    let ScorerInfo { name, version } = scorer.info();
    // A scorer that cannot score this measurement fails it, but the row is kept.
    let mut scores = scorer.score(measurement).unwrap_or_else(|e| {
        let mut s = crate::scores::init_scores();
        s.insert("accuracy".into(), Value::from(0.0));
        s.insert("msg".into(), Value::from(format!("scorer error: {e}")));
        s
    });
    flag_wrong_date(msm.get("measurement_start_time"), uid, &mut scores).map_err(|e| fail(e.0))?;
    let fl = flags(&scores).map_err(|e| fail(e.0))?;

    let test_version = str_or(msm.get("test_version"), "test_version", "")?;
    let test_runtime = match msm.get_non_null("test_runtime") {
        None => 0.0,
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::Bool(b)) => f64::from(u8::from(*b)),
        Some(v) => return Err(fail(format!("test_runtime is a {}, not a number", kind(v)))),
    };
    let helper = |key: &str| -> Result<String, Dropped> {
        let found = match msm.get_non_null("test_helpers") {
            None => Ok(None),
            Some(helpers) => g(helpers, &["backend", key]),
        };
        match found {
            Err(_) | Ok(None) => Ok(String::new()),
            Ok(Some(Value::String(s))) => Ok(s.clone()),
            Ok(Some(v)) => Err(fail(format!("test_helpers.backend.{key} is a {}", kind(v)))),
        }
    };
    let test_helper_address = helper("address")?;
    let test_helper_type = helper("type")?;
    let empty = Value::Object(Map::new());
    let annotations = msm
        .get("annotations")
        .filter(|a| a.is_object())
        .unwrap_or(&empty);
    let platform = str_or(annotations.get("platform"), "platform", "unset")?;
    let architecture = str_or(annotations.get("architecture"), "architecture", "")?;
    let engine_name = str_or(annotations.get("engine_name"), "engine_name", "")?;
    let engine_version = str_or(annotations.get("engine_version"), "engine_version", "")?;
    let scores_value = Value::Object(scores);
    let blocking_type = match g(&scores_value, &["analysis", "blocking_type"]) {
        Err(e) => return Err(fail(format!("scores: {e}"))),
        Ok(None) => String::new(),
        Ok(Some(Value::String(s))) => s.clone(),
        Ok(Some(v)) => {
            return Err(fail(format!(
                "scores.analysis.blocking_type is a {}",
                kind(v)
            )))
        }
    };
    let ooni_run_link_id = ooni_run_link_id(annotations)?;

    let (input, domain) = input_and_domain(msm, test_name)?;
    let probe_asn = probe_asn(msm)?;
    let measurement_start_time = start_time(msm, "measurement_start_time")?;
    let test_start_time = start_time(msm, "test_start_time")?;

    Ok(FastpathRow {
        measurement_uid: uid.to_owned(),
        report_id: nn(msm, "report_id")?,
        input,
        probe_cc: nn(msm, "probe_cc")?,
        probe_asn,
        test_name: test_name.to_owned(),
        test_start_time,
        measurement_start_time,
        scores: ujson::dumps(&scores_value),
        platform,
        anomaly: fl.anomaly,
        confirmed: fl.confirmed,
        msm_failure: fl.msm_failure,
        blocking_type,
        domain,
        software_name: nn(msm, "software_name")?,
        software_version: nn(msm, "software_version")?,
        test_version,
        test_runtime,
        architecture,
        engine_name,
        engine_version,
        test_helper_address,
        test_helper_type,
        ooni_run_link_id,
        is_verified,
        scorer_name: name,
        scorer_version: version,
        fingerprints_version: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scores::DefaultScorer;
    use serde_json::json;

    const UID: &str = "20240101000000.000000_IT_webconnectivity_0123456789abcdef";

    fn msm() -> Value {
        json!({
            "report_id": "20240101T000000Z_webconnectivity_IT_30722_n1_abcdefghijklmnop",
            "input": "https://example.org:8443/path",
            "probe_cc": "IT",
            "probe_asn": "AS30722",
            "test_name": "web_connectivity",
            "test_start_time": "2023-12-31 23:59:00",
            "measurement_start_time": "2023-12-31 23:59:30",
            "software_name": "ooniprobe-cli",
            "software_version": "3.20.0",
            "test_version": "0.4.3",
            "test_runtime": 1.25,
            "test_helpers": {"backend": {"address": "https://th.example", "type": "https"}},
            "annotations": {"platform": "linux", "architecture": "amd64",
                            "engine_name": "ooniprobe-engine", "engine_version": "3.20.0",
                            "ooni_run_link_id": "10182"},
            "test_keys": {}
        })
    }

    fn row_of(v: &Value) -> FastpathRow {
        match derive_row(v.to_string().as_bytes(), UID, &DefaultScorer) {
            Outcome::Row(r) => *r,
            Outcome::Dropped(d) => panic!("dropped: {d:?}"),
        }
    }

    fn dropped(v: &Value) -> Dropped {
        match derive_row(v.to_string().as_bytes(), UID, &DefaultScorer) {
            Outcome::Row(r) => panic!("unexpected row {r:?}"),
            Outcome::Dropped(d) => d,
        }
    }

    #[test]
    fn every_column_is_extracted() {
        let r = row_of(&msm());
        assert_eq!(
            r.report_id,
            "20240101T000000Z_webconnectivity_IT_30722_n1_abcdefghijklmnop"
        );
        assert_eq!(r.domain, "example.org:8443");
        assert_eq!(r.probe_asn, 30722);
        assert_eq!(r.measurement_start_time.to_string(), "2023-12-31 23:59:30");
        assert_eq!(r.test_start_time.to_string(), "2023-12-31 23:59:00");
        assert_eq!(
            (r.platform.as_str(), r.architecture.as_str()),
            ("linux", "amd64")
        );
        assert_eq!(
            (r.engine_name.as_str(), r.engine_version.as_str()),
            ("ooniprobe-engine", "3.20.0")
        );
        assert_eq!(r.test_helper_address, "https://th.example");
        assert_eq!(r.test_helper_type, "https");
        assert_eq!(r.ooni_run_link_id, Some(10182));
        assert_eq!(r.test_runtime, 1.25);
        assert_eq!(r.is_verified, "u");
        assert!(r.msm_failure && !r.anomaly && !r.confirmed);
        assert_eq!(r.scorer_name, "default");
    }

    #[test]
    fn the_envelope_is_unwrapped_and_is_verified_read_from_it() {
        let env = json!({"format": "json", "content": msm(), "is_verified": "t"});
        assert_eq!(row_of(&env).is_verified, "t");
        let env = json!({"format": "JSON", "content": msm(), "is_verified": "x"});
        assert_eq!(row_of(&env).is_verified, "u");
        let env = json!({"format": "yaml", "content": "a: 1"});
        assert_eq!(dropped(&env).kind, DropKind::Failed);
    }

    #[test]
    fn defaults_where_fields_are_missing_or_null() {
        let mut m = msm();
        let o = m.as_object_mut().unwrap();
        o.insert("annotations".into(), json!("not a dict"));
        o.insert("test_helpers".into(), json!(["list"]));
        o.insert("input".into(), json!(null));
        o.insert("software_name".into(), json!(null));
        o.remove("test_runtime");
        o.remove("test_version");
        let r = row_of(&m);
        assert_eq!(r.platform, "unset");
        assert_eq!(
            (r.test_helper_address.as_str(), r.test_helper_type.as_str()),
            ("", "")
        );
        assert_eq!((r.input.as_str(), r.domain.as_str()), ("", ""));
        assert_eq!(r.software_name, "");
        assert_eq!(r.test_runtime, 0.0);
        assert_eq!(r.test_version, "");
        assert_eq!(r.ooni_run_link_id, None);
    }

    #[test]
    fn ooni_run_link_id_follows_python_int() {
        for (v, want) in [
            (json!("12"), Some(12)),
            (json!("abc"), None),
            (json!(""), None),
            (json!(7.9), Some(7)),
        ] {
            let mut m = msm();
            m["annotations"]["ooni_run_link_id"] = v;
            assert_eq!(row_of(&m).ooni_run_link_id, want);
        }
        let mut m = msm();
        m["annotations"]["ooni_run_link_id"] = json!([1]);
        assert_eq!(dropped(&m).kind, DropKind::Failed);
    }

    #[test]
    fn meek_input_lists_are_joined() {
        let mut m = msm();
        m["test_name"] = json!("meek_fronted_requests_test");
        m["input"] = json!(["a.example:443", "b.example"]);
        let r = row_of(&m);
        assert_eq!(
            (r.input.as_str(), r.domain.as_str()),
            ("{a.example:443,b.example}", "a.example:443")
        );
        m["test_name"] = json!("web_connectivity");
        assert_eq!(dropped(&m).kind, DropKind::Failed);
    }

    #[test]
    fn early_discards() {
        for (k, v, reason) in [
            ("report_id", json!(null), "without report_id"),
            ("probe_cc", json!("zz"), "probe_cc=ZZ"),
            ("probe_asn", json!("as0"), "ASN 0"),
        ] {
            let mut m = msm();
            m[k] = v;
            let d = dropped(&m);
            assert_eq!(d.kind, DropKind::Discarded);
            assert!(d.reason.contains(reason), "{}", d.reason);
        }
    }

    #[test]
    fn failures_where_ooni_raises() {
        for (k, v) in [
            ("probe_asn", json!("ASx")),
            ("probe_asn", json!(5)),
            ("measurement_start_time", json!("2020-01-01T00:00:00Z")),
            ("test_start_time", json!(null)),
            ("input", json!(5)),
            ("report_id", json!(5)),
        ] {
            let mut m = msm();
            m[k] = v;
            assert_eq!(dropped(&m).kind, DropKind::Failed, "{k}");
        }
        let mut m = msm();
        m.as_object_mut().unwrap().remove("measurement_start_time");
        assert_eq!(dropped(&m).reason, "missing measurement_start_time");
        assert!(matches!(
            derive_row(b"[1,2]", UID, &DefaultScorer),
            Outcome::Dropped(_)
        ));
        assert!(matches!(
            derive_row(b"{nope", UID, &DefaultScorer),
            Outcome::Dropped(_)
        ));
    }

    struct Failing;
    impl Scorer for Failing {
        fn info(&self) -> ScorerInfo {
            ScorerInfo {
                name: "failing".into(),
                version: "1".into(),
            }
        }
        fn score(&self, _m: &crate::Measurement<'_>) -> Result<crate::Scores, crate::ScoreError> {
            Err(crate::ScoreError("boom".into()))
        }
    }

    #[test]
    fn a_failing_scorer_keeps_the_row_as_a_failure() {
        let r = match derive_row(msm().to_string().as_bytes(), UID, &Failing) {
            Outcome::Row(r) => r,
            Outcome::Dropped(d) => panic!("{d:?}"),
        };
        assert!(r.msm_failure);
        assert_eq!(r.scorer_name, "failing");
        assert!(
            r.scores
                .contains(r#""accuracy":0.0,"msg":"scorer error: boom""#),
            "{}",
            r.scores
        );
    }

    #[test]
    fn old_measurements_trip_the_date_check() {
        let mut m = msm();
        m["measurement_start_time"] = json!("2020-01-01 00:00:00");
        let r = row_of(&m);
        assert!(
            r.scores
                .ends_with(r#""accuracy":0.0,"msg":"Measurement start time too old"}"#),
            "{}",
            r.scores
        );
    }
}
