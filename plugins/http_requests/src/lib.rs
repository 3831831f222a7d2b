//! `http_requests` (legacy) as OONI fastpath 0.92 scores it (spec/fastpath.md §2.3):
//! body length and headers must match the control; fingerprints confirm blocking.

use ooni_scorer_sdk::getters::{g, g_or, iter_items, truthy};
use ooni_scorer_sdk::matching::{match_response, record_matches};
use ooni_scorer_sdk::{
    init_scores, test_keys, test_keys_object, Host, Info, Map, Scorer, Scores, Value,
};

pub struct HttpRequests;

impl Scorer for HttpRequests {
    const INFO: Info = Info {
        name: "http_requests",
        version: "0.92.0",
        test_names: &["http_requests"],
        reads: &[
            "probe_cc",
            "control_failure",
            "experiment_failure",
            "test_keys.body_length_match",
            "test_keys.headers_match",
            "test_keys.requests.request.tor.is_tor",
        ],
        bodies: &["test_keys.requests.response.body"],
        headers: &["test_keys.requests.response.headers"],
        drops_unread: true,
        compared: &[],
    };

    fn score(msm: &Value, host: &dyn Host) -> Result<Scores, String> {
        let mut scores = init_scores();
        let tk = test_keys(msm)?;
        let tko = test_keys_object(msm)?;
        let body_length_match = tko.get("body_length_match").filter(|v| !v.is_null());
        let headers_match = tko.get("headers_match").filter(|v| !v.is_null());
        // OONI reads these from the top level, not from test_keys.
        let failed = [msm.get("control_failure"), msm.get("experiment_failure")]
            .into_iter()
            .flatten()
            .any(truthy);
        let (Some(blm), Some(hm)) = (body_length_match, headers_match) else {
            scores.insert("accuracy".into(), Value::from(0.0));
            return Ok(scores);
        };
        if failed {
            scores.insert("accuracy".into(), Value::from(0.0));
            return Ok(scores);
        }
        if !(truthy(blm) && truthy(hm)) {
            scores.insert("blocking_general".into(), Value::from(1.0));
        }
        let mut matches = Vec::new();
        let requests = g_or(tk, "requests").map_err(|e| e.to_string())?;
        let empty = Value::Object(Map::new());
        for req in iter_items(requests, "requests")? {
            let is_tor = g(req, &["request", "tor", "is_tor"]).map_err(|e| e.to_string())?;
            if is_tor.is_some_and(truthy) {
                continue;
            }
            let resp = g_or(req, "response")
                .map_err(|e| e.to_string())?
                .unwrap_or(&empty);
            // Here a bad base64 body is not caught: the measurement fails.
            match_response(resp, host, &mut matches).map_err(|e| format!("{e:?}"))?;
        }
        record_matches(msm, &matches, &mut scores)?;
        Ok(scores)
    }
}

ooni_scorer_sdk::export_scorer!(HttpRequests);

#[cfg(test)]
mod tests {
    use super::*;
    use ooni_scorer_sdk::{json, NoFingerprints};

    fn score(msm: Value) -> Scores {
        ooni_scorer_sdk::testing::score_as_sent::<HttpRequests>(&msm, &NoFingerprints).unwrap()
    }

    #[test]
    fn matches_and_failures() {
        assert_eq!(
            score(json!({"test_keys": {"body_length_match": true, "headers_match": true}})),
            init_scores()
        );
        assert_eq!(
            score(json!({"test_keys": {"body_length_match": false, "headers_match": true}}))
                ["blocking_general"],
            json!(1.0)
        );
        assert_eq!(
            score(json!({"test_keys": {"body_length_match": true}}))["accuracy"],
            json!(0.0)
        );
        let s = score(
            json!({"experiment_failure": "x", "test_keys": {"body_length_match": true, "headers_match": true}}),
        );
        assert_eq!(s["accuracy"], json!(0.0));
        // failure inside test_keys is not looked at (OONI's behaviour)
        let s = score(
            json!({"test_keys": {"experiment_failure": "x", "body_length_match": true, "headers_match": true}}),
        );
        assert!(s.get("accuracy").is_none());
    }
}
