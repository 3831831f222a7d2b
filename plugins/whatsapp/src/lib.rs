//! `whatsapp` as OONI fastpath 0.92 scores it (spec/fastpath.md §2.7): the web client
//! and the registration server must be reachable, and at least one endpoint.

use ooni_scorer_sdk::getters::{iter_items, kind, py_eq, truthy};
use ooni_scorer_sdk::{
    detect_unknown_failure, extract_tcp_connect, init_scores, test_keys, test_keys_object, Host,
    Info, Map, Scorer, Scores, Value,
};

pub struct Whatsapp;

fn failed(mut s: Scores) -> Scores {
    s.insert("accuracy".into(), Value::from(0.0));
    s
}

fn require_report_id(msm: &Value) -> Result<(), String> {
    match msm.get("report_id") {
        Some(v) if truthy(v) => Ok(()),
        _ => Err("measurement without report_id".into()),
    }
}

impl Scorer for Whatsapp {
    const INFO: Info = Info {
        name: "whatsapp",
        version: "0.92.0",
        test_names: &["whatsapp"],
        reads: &[
            "report_id",
            "test_keys.*_failure",
            "test_keys.requests.request.url",
            "test_keys.requests.failure",
            "test_keys.tcp_connect.status.success",
        ],
        bodies: &[],
        headers: &[],
        drops_unread: true,
        compared: &[],
    };

    fn score(msm: &Value, _host: &dyn Host) -> Result<Scores, String> {
        let tk = test_keys(msm)?;
        let tko = test_keys_object(msm)?;
        let mut scores = init_scores();
        if detect_unknown_failure(tk)? {
            scores.insert("accuracy".into(), Value::from(0.0));
        }
        let web_failure = tko
            .get("whatsapp_web_failure")
            .cloned()
            .unwrap_or(Value::from(""));
        let ascii_bug = "unknown_failure 'ascii' co";
        let has_ascii_bug = truthy(&web_failure)
            && match &web_failure {
                Value::String(s) => s.contains(ascii_bug),
                Value::Array(a) => a.iter().any(|v| v.as_str() == Some(ascii_bug)),
                Value::Object(o) => o.contains_key(ascii_bug),
                other => return Err(format!("whatsapp_web_failure is a {}", kind(other))),
            };
        if has_ascii_bug {
            require_report_id(msm)?;
            return Ok(failed(scores));
        }
        let requests = tko.get("requests").filter(|r| truthy(r));
        let Some(requests) = requests else {
            require_report_id(msm)?;
            return Ok(failed(scores));
        };
        let (mut webapp, mut registration) = (None, None);
        for r in iter_items(Some(requests), "requests")? {
            let r = r
                .as_object()
                .ok_or_else(|| format!("a request is a {}", kind(r)))?;
            let url = match r.get("request") {
                None => Value::from(""),
                Some(Value::Object(req)) => req.get("url").cloned().unwrap_or(Value::from("")),
                Some(v) => return Err(format!("request is a {}", kind(v))),
            };
            match url.as_str() {
                Some("https://web.whatsapp.com/") => {
                    // A missing failure key counts as a failure here…
                    let f = r.get("failure").cloned().unwrap_or(Value::Bool(true));
                    webapp = Some(
                        [Value::Null, Value::from(""), Value::Bool(false)]
                            .iter()
                            .any(|ok| py_eq(&f, ok)),
                    );
                }
                Some("https://v.whatsapp.net/v2/register") => {
                    // …and as a success here.
                    registration = Some(r.get("failure").is_none_or(Value::is_null));
                }
                _ => {}
            }
        }
        let (Some(webapp), Some(registration)) = (webapp, registration) else {
            return Ok(failed(scores));
        };
        if !webapp || !registration {
            scores.insert("blocking_general".into(), Value::from(1.0));
            return Ok(scores);
        }
        let (accessible, unreachable) = extract_tcp_connect(tk)?;
        if accessible == 0 && unreachable == 0 {
            scores.insert("accuracy".into(), Value::from(0.0));
        } else if accessible == 0 {
            scores.insert("blocking_general".into(), Value::from(1.0));
        }
        let mut analysis = Map::new();
        analysis.insert(
            "registration_server_accessible".into(),
            Value::Bool(registration),
        );
        analysis.insert("whatsapp_web_accessible".into(), Value::Bool(webapp));
        analysis.insert(
            "whatsapp_endpoints_accessible".into(),
            Value::Bool(accessible > 0),
        );
        scores.insert("analysis".into(), Value::Object(analysis));
        Ok(scores)
    }
}

ooni_scorer_sdk::export_scorer!(Whatsapp);

#[cfg(test)]
mod tests {
    use super::*;
    use ooni_scorer_sdk::{json, NoFingerprints};

    fn score(tk: Value) -> Scores {
        ooni_scorer_sdk::testing::score_as_sent::<Whatsapp>(
            &json!({"report_id": "r", "test_keys": tk}),
            &NoFingerprints,
        )
        .unwrap()
    }

    fn reqs(web_failure: Value, reg_failure: Value) -> Value {
        json!([
            {"request": {"url": "https://web.whatsapp.com/"}, "failure": web_failure},
            {"request": {"url": "https://v.whatsapp.net/v2/register"}, "failure": reg_failure}
        ])
    }

    #[test]
    fn branches() {
        assert_eq!(score(json!({}))["accuracy"], json!(0.0));
        assert_eq!(score(json!({"requests": []}))["accuracy"], json!(0.0));
        assert_eq!(
            score(json!({"requests": [{"request": {"url": "x"}}]}))["accuracy"],
            json!(0.0)
        );
        let s = score(json!({"requests": reqs(json!("eof"), json!(null))}));
        assert_eq!(s["blocking_general"], json!(1.0));
        assert!(s.get("analysis").is_none());
        let s = score(
            json!({"requests": reqs(json!(null), json!(null)), "tcp_connect": [{"status": {"success": false}}]}),
        );
        assert_eq!(s["blocking_general"], json!(1.0));
        assert_eq!(s["analysis"]["whatsapp_endpoints_accessible"], json!(false));
        let s = score(
            json!({"requests": reqs(json!(""), json!(null)), "tcp_connect": [{"status": {"success": true}}]}),
        );
        assert_eq!(s["blocking_general"], json!(0.0));
        assert!(s.get("accuracy").is_none());
        let s = score(json!({"requests": reqs(json!(null), json!(null))}));
        assert_eq!(s["accuracy"], json!(0.0));
        let s = score(
            json!({"whatsapp_web_failure": "unknown_failure 'ascii' codec", "requests": reqs(json!(null), json!(null))}),
        );
        assert_eq!(s["accuracy"], json!(0.0));
        assert!(s.get("analysis").is_none());
    }

    #[test]
    fn a_missing_web_failure_key_means_not_accessible() {
        let r = json!([{"request": {"url": "https://web.whatsapp.com/"}}, {"request": {"url": "https://v.whatsapp.net/v2/register"}}]);
        assert_eq!(
            score(json!({"requests": r}))["blocking_general"],
            json!(1.0)
        );
    }
}
