//! `web_connectivity` as OONI fastpath 0.92 scores it (spec/fastpath.md §2.2): the
//! probe's own `blocking` verdict, confirmed or completed by blocking fingerprints.

use ooni_scorer_sdk::getters::{g_or, iter_items, kind, py_eq};
use ooni_scorer_sdk::matching::{match_response, record_matches, MatchError};
use ooni_scorer_sdk::{
    detect_unknown_failure, init_scores, test_keys, FingerprintMatch, Host, Info, Scorer, Scores,
    Value,
};

pub struct WebConnectivity;

fn as_object<'a>(
    v: &'a Value,
    what: &str,
) -> Result<&'a ooni_scorer_sdk::Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{what} is a {}, not an object", kind(v)))
}

/// DNS answers first, then for each request its body and its headers, each in the
/// order of the fingerprint set (`match_fingerprints`).
fn match_fingerprints(msm: &Value, host: &dyn Host) -> Result<Vec<FingerprintMatch>, MatchError> {
    if msm.get("probe_cc").is_none() {
        return Err(MatchError::Other("missing probe_cc".into()));
    }
    let tk = match msm.get("test_keys") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(tk) => tk,
    };
    let mut matches = Vec::new();
    let queries = g_or(tk, "queries").map_err(|e| e.to_string())?;
    for q in iter_items(queries, "queries")? {
        let answers = g_or(q, "answers").map_err(|e| e.to_string())?;
        for answer in iter_items(answers, "answers")? {
            let addr = answer
                .as_object()
                .and_then(|a| ["ipv4", "hostname", "ipv6"].iter().find_map(|k| a.get(*k)));
            if let Some(Value::String(addr)) = addr {
                matches.extend(host.match_dns(addr));
            }
        }
    }
    let requests = g_or(tk, "requests").map_err(|e| e.to_string())?;
    for req in iter_items(requests, "requests")? {
        match as_object(req, "request")?.get("response") {
            None | Some(Value::Null) => continue,
            Some(resp) => match_response(resp, host, &mut matches)?,
        }
    }
    Ok(matches)
}

fn add(scores: &mut Scores, key: &str, v: f64) {
    let cur = scores.get(key).and_then(Value::as_f64).unwrap_or(0.0);
    scores.insert(key.to_owned(), Value::from(cur + v));
}

fn get_f64(scores: &Scores, key: &str) -> f64 {
    scores.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// `score_web_connectivity(msm, matches)`.
fn score_with(msm: &Value, matches: &[FingerprintMatch]) -> Result<Scores, String> {
    let mut scores = init_scores();
    let tk = test_keys(msm)?;
    let tk = as_object(tk, "test_keys")?;
    record_matches(msm, matches, &mut scores)?;
    // title_match must be true, false or null (Python `in` compares with ==).
    let title_ok = match tk.get("title_match") {
        None | Some(Value::Null) | Some(Value::Bool(_)) => true,
        Some(v) => py_eq(v, &Value::from(0)) || py_eq(v, &Value::from(1)),
    };
    if !title_ok {
        scores.insert("accuracy".into(), Value::from(0.0));
        return Ok(scores);
    }
    match tk.get("blocking") {
        Some(Value::String(b))
            if matches!(b.as_str(), "tcp_ip" | "dns" | "http-diff" | "http-failure") =>
        {
            scores.insert("blocking_general".into(), Value::from(1.0));
            let mut analysis = ooni_scorer_sdk::Map::new();
            analysis.insert("blocking_type".into(), Value::String(b.clone()));
            scores.insert("analysis".into(), Value::Object(analysis));
        }
        Some(v) if py_eq(v, &Value::Bool(false)) => {}
        None | Some(Value::Null) => {
            if matches.is_empty() {
                scores.insert("accuracy".into(), Value::from(0.0));
            }
        }
        Some(_) => {
            let mut analysis = ooni_scorer_sdk::Map::new();
            analysis.insert("msg".into(), Value::from("Unsupported blocking type"));
            scores.insert("analysis".into(), Value::Object(analysis));
            scores.insert("accuracy".into(), Value::from(0.0));
        }
    }
    if detect_unknown_failure(test_keys(msm)?)? {
        scores.insert("accuracy".into(), Value::from(0.0));
    }
    let localities = get_f64(&scores, "blocking_country")
        + get_f64(&scores, "blocking_global")
        + get_f64(&scores, "blocking_isp")
        + get_f64(&scores, "blocking_local");
    add(&mut scores, "blocking_general", localities);
    if tk.get("accessible") == Some(&Value::Null) && matches.is_empty() {
        scores.insert("accuracy".into(), Value::from(0.0));
    }
    Ok(scores)
}

impl Scorer for WebConnectivity {
    const INFO: Info = Info {
        name: "web_connectivity",
        version: "0.92.0",
        test_names: &["web_connectivity"],
        reads: &[
            "probe_cc",
            "test_keys.queries.answers.ipv4",
            "test_keys.queries.answers.hostname",
            "test_keys.queries.answers.ipv6",
            "test_keys.title_match",
            "test_keys.blocking",
            "test_keys.accessible",
            "test_keys.*_failure",
        ],
        bodies: &["test_keys.requests.response.body"],
        headers: &["test_keys.requests.response.headers"],
        drops_unread: true,
        compared: &[],
    };

    fn score(msm: &Value, host: &dyn Host) -> Result<Scores, String> {
        match match_fingerprints(msm, host) {
            Ok(matches) => score_with(msm, &matches),
            Err(MatchError::Base64(_)) => {
                let mut scores = score_with(msm, &[])?;
                scores.insert("accuracy".into(), Value::from(0.0));
                Ok(scores)
            }
            Err(MatchError::Other(e)) => Err(e),
        }
    }
}

ooni_scorer_sdk::export_scorer!(WebConnectivity);

#[cfg(test)]
mod tests {
    use super::*;
    use ooni_scorer_sdk::{json, Map, NoFingerprints};

    fn score(msm: Value) -> Value {
        Value::Object(
            ooni_scorer_sdk::testing::score_as_sent::<WebConnectivity>(&msm, &NoFingerprints)
                .unwrap(),
        )
    }

    fn zeros() -> Value {
        json!({"blocking_general": 0.0, "blocking_global": 0.0, "blocking_country": 0.0, "blocking_isp": 0.0, "blocking_local": 0.0})
    }

    fn with(extra: Value) -> Value {
        let mut z = zeros();
        for (k, v) in extra.as_object().unwrap() {
            z[k] = v.clone();
        }
        z
    }

    #[test]
    fn probe_verdicts() {
        assert_eq!(
            score(json!({"probe_cc": "IT", "test_keys": {"blocking": false}})),
            zeros()
        );
        assert_eq!(
            score(json!({"probe_cc": "IT", "test_keys": {"blocking": "dns"}})),
            with(json!({"blocking_general": 1.0, "analysis": {"blocking_type": "dns"}}))
        );
        assert_eq!(
            score(json!({"probe_cc": "IT", "test_keys": {"blocking": null}})),
            with(json!({"accuracy": 0.0}))
        );
        assert_eq!(
            score(json!({"probe_cc": "IT", "test_keys": null})),
            with(json!({"accuracy": 0.0}))
        );
        assert_eq!(
            score(json!({"probe_cc": "IT", "test_keys": {"blocking": true}})),
            with(json!({"analysis": {"msg": "Unsupported blocking type"}, "accuracy": 0.0}))
        );
        assert_eq!(
            score(json!({"probe_cc": "IT", "test_keys": {"blocking": 0}})),
            zeros()
        );
    }

    #[test]
    fn title_match_and_unknown_failures() {
        assert_eq!(
            score(json!({"probe_cc": "IT", "test_keys": {"blocking": "dns", "title_match": "x"}})),
            with(json!({"accuracy": 0.0}))
        );
        let s = score(
            json!({"probe_cc": "IT", "test_keys": {"blocking": "http-failure", "http_experiment_failure": "unknown_failure: x"}}),
        );
        assert_eq!(s["accuracy"], json!(0.0));
        assert_eq!(s["blocking_general"], json!(1.0));
        let s =
            score(json!({"probe_cc": "IT", "test_keys": {"blocking": false, "accessible": null}}));
        assert_eq!(s["accuracy"], json!(0.0));
    }

    #[test]
    fn bad_base64_bodies_fail_the_measurement() {
        let m = json!({"probe_cc": "IT", "test_keys": {"blocking": false, "requests": [
            {"response": {"body": {"format": "base64", "data": "aGk"}}}]}});
        assert_eq!(score(m), with(json!({"accuracy": 0.0})));
    }

    #[test]
    fn missing_probe_cc_fails() {
        assert!(ooni_scorer_sdk::testing::score_as_sent::<WebConnectivity>(
            &json!({"test_keys": {}}),
            &NoFingerprints
        )
        .is_err());
    }

    /// A host that knows one nat fingerprint for one DNS answer.
    struct OneFp;
    impl Host for OneFp {
        fn match_dns(&self, answer: &str) -> Vec<FingerprintMatch> {
            if answer != "10.10.34.34" {
                return Vec::new();
            }
            let v = json!({"name": "ooni.ir_1", "scope": "nat", "location_found": "dns", "confidence_no_fp": 10, "expected_countries": ["IR"]});
            vec![v.as_object().unwrap().clone()]
        }
        fn match_http_body(&self, _b: &[u8]) -> Vec<FingerprintMatch> {
            Vec::new()
        }
        fn match_http_headers(&self, _h: &str) -> Vec<FingerprintMatch> {
            Vec::new()
        }
    }

    #[test]
    fn confirmed_nat_match_adds_to_blocking_general() {
        let m = json!({"probe_cc": "ir", "test_keys": {"blocking": "dns", "queries": [{"answers": [{"ipv4": "10.10.34.34"}]}]}});
        let s = ooni_scorer_sdk::testing::score_as_sent::<WebConnectivity>(&m, &OneFp).unwrap();
        let keys: Vec<&String> = s.keys().collect();
        assert_eq!(keys[5..], ["fingerprints", "confirmed", "analysis"]);
        assert_eq!(s["blocking_general"], json!(2.0));
        assert_eq!(s["blocking_country"], json!(1.0));
        let _ = Map::<String, Value>::new();
    }
}
