//! `http_header_field_manipulation` as OONI fastpath 0.92 scores it
//! (spec/fastpath.md §2.9): the headers the test helper saw must be the ones sent.

use ooni_scorer_sdk::getters::kind;
use ooni_scorer_sdk::{init_scores, test_keys, Host, Info, Scorer, Scores, Value};
use std::collections::BTreeSet;

pub struct Hhfm;

/// A hashable header value, as Python compares them in a set.
fn key(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(format!("s{s}")),
        Value::Null => Ok("n".into()),
        Value::Bool(b) => Ok(format!("f{}", u8::from(*b))),
        Value::Number(n) => Ok(format!("f{}", n.as_f64().unwrap_or(0.0))),
        other => Err(format!("a header value is a {} (unhashable)", kind(other))),
    }
}

fn first_element(v: &Value) -> Result<Value, String> {
    match v {
        Value::Array(a) => a
            .first()
            .cloned()
            .ok_or_else(|| "empty header value list".to_owned()),
        Value::String(s) => s
            .chars()
            .next()
            .map(|c| Value::String(c.to_string()))
            .ok_or_else(|| "empty header value".to_owned()),
        other => Err(format!("a header value is a {}", kind(other))),
    }
}

impl Scorer for Hhfm {
    const INFO: Info = Info {
        name: "http_header_field_manipulation",
        version: "0.92.0",
        test_names: &["http_header_field_manipulation"],
        reads: &["report_id", "test_keys.requests"],
        bodies: &[],
        headers: &[],
        drops_unread: false,
        compared: &[],
    };

    fn score(msm: &Value, _host: &dyn Host) -> Result<Scores, String> {
        let tk = test_keys(msm)?;
        if msm.get("report_id").is_none() {
            return Err("missing report_id".into());
        }
        let mut scores = init_scores();
        let no_score = |mut s: Scores| {
            s.insert("accuracy".into(), Value::from(0.0));
            Ok(s)
        };
        // tk["requests"][0]: KeyError, IndexError and TypeError mean "no score".
        let first = match tk.as_object().and_then(|o| o.get("requests")) {
            Some(Value::Array(a)) if !a.is_empty() => &a[0],
            Some(Value::String(_)) => return Err("requests is a string".into()),
            _ if !tk.is_object() => return Err(format!("test_keys is a {}", kind(tk))),
            _ => return no_score(scores),
        };
        let first = first
            .as_object()
            .ok_or_else(|| format!("requests[0] is a {}", kind(first)))?;
        let empty = Value::Object(Default::default());
        let resp = match first.get("response") {
            None => &empty,
            Some(Value::Null) => return no_score(scores),
            Some(r) => r,
        };
        let resp = resp
            .as_object()
            .ok_or_else(|| format!("response is a {}", kind(resp)))?;
        let body = match resp.get("body") {
            None | Some(Value::Null) => {
                scores.insert("total_tampering".into(), Value::Bool(true));
                scores.insert("blocking_general".into(), Value::from(1.0));
                scores.insert("msg".into(), Value::from("Empty body"));
                return Ok(scores);
            }
            Some(b) => b,
        };
        let ctrl_headers = body
            .as_str()
            .and_then(serde_json_from_str)
            .and_then(|v| v.get("headers_dict").cloned());
        let Some(ctrl_headers) = ctrl_headers else {
            scores.insert("blocking_general".into(), Value::from(1.0));
            scores.insert("msg".into(), Value::from("Malformed ctrl_headers"));
            return Ok(scores);
        };
        let ctrl_headers = ctrl_headers
            .as_object()
            .ok_or_else(|| format!("headers_dict is a {}", kind(&ctrl_headers)))?;
        let mut ctrl = BTreeSet::new();
        for (k, v) in ctrl_headers {
            ctrl.insert((k.clone(), key(&first_element(v)?)?));
        }
        let mut expected = BTreeSet::new();
        let request = match first.get("request") {
            None => &empty,
            Some(r) => r,
        };
        let request = request
            .as_object()
            .ok_or_else(|| format!("request is a {}", kind(request)))?;
        let headers = match request.get("headers") {
            None => &empty,
            Some(h) => h,
        };
        for (k, v) in headers
            .as_object()
            .ok_or_else(|| format!("request headers is a {}", kind(headers)))?
        {
            expected.insert((k.clone(), key(v)?));
        }
        let conn = ("Connection".to_owned(), "sclose".to_owned());
        ctrl.remove(&conn);
        expected.remove(&conn);
        if ctrl == expected {
            return Ok(scores);
        }
        let diff = ctrl.symmetric_difference(&expected).count();
        scores.insert("blocking_general".into(), Value::from(1.1));
        scores.insert(
            "msg".into(),
            Value::from(format!("{diff} unexpected header change")),
        );
        Ok(scores)
    }
}

fn serde_json_from_str(s: &str) -> Option<Value> {
    ooni_scorer_sdk::json_from_str(s).ok()
}

ooni_scorer_sdk::export_scorer!(Hhfm);

#[cfg(test)]
mod tests {
    use super::*;
    use ooni_scorer_sdk::{json, NoFingerprints};

    fn score(tk: Value) -> Result<Scores, String> {
        ooni_scorer_sdk::testing::score_as_sent::<Hhfm>(
            &json!({"report_id": "r", "test_keys": tk}),
            &NoFingerprints,
        )
    }

    fn req(sent: Value, echoed: Value) -> Value {
        let body = json!({"headers_dict": echoed}).to_string();
        json!({"requests": [{"request": {"headers": sent}, "response": {"body": body}}]})
    }

    #[test]
    fn header_comparison() {
        let same = req(
            json!({"Host": "x", "Connection": "close"}),
            json!({"Host": ["x"]}),
        );
        assert_eq!(score(same).unwrap(), init_scores());
        let s = score(req(json!({"Host": "x"}), json!({"host": ["x"]}))).unwrap();
        assert_eq!(s["blocking_general"], json!(1.1));
        assert_eq!(s["msg"], json!("2 unexpected header change"));
    }

    #[test]
    fn broken_responses() {
        assert_eq!(
            score(json!({"requests": []})).unwrap()["accuracy"],
            json!(0.0)
        );
        assert_eq!(
            score(json!({"requests": null})).unwrap()["accuracy"],
            json!(0.0)
        );
        assert_eq!(
            score(json!({"requests": [{"response": null}]})).unwrap()["accuracy"],
            json!(0.0)
        );
        let s = score(json!({"requests": [{"response": {"body": null}}]})).unwrap();
        let keys: Vec<&String> = s.keys().collect();
        assert_eq!(keys[5..], ["total_tampering", "msg"]);
        let s = score(json!({"requests": [{"response": {"body": "not json"}}]})).unwrap();
        assert_eq!(s["msg"], json!("Malformed ctrl_headers"));
    }
}
