//! `meek_fronted_requests_test` as OONI fastpath 0.92 scores it (spec/fastpath.md
//! §2.21): every fronted request must answer 200 from an `ECAcc` server.

use ooni_scorer_sdk::getters::{iter_items, kind, py_eq, truthy};
use ooni_scorer_sdk::{init_scores, test_keys_object, Host, Info, Map, Scorer, Scores, Value};

pub struct Meek;

impl Scorer for Meek {
    const INFO: Info = Info {
        name: "meek_fronted_requests_test",
        version: "0.92.0",
        test_names: &["meek_fronted_requests_test"],
        reads: &[
            "test_keys.requests.response.code",
            "test_keys.requests.response.headers",
        ],
        bodies: &[],
        headers: &[],
        drops_unread: false,
        compared: &[],
    };

    fn score(msm: &Value, _host: &dyn Host) -> Result<Scores, String> {
        let mut scores = init_scores();
        let tko = test_keys_object(msm)?;
        let requests = iter_items(tko.get("requests").filter(|r| truthy(r)), "requests")?;
        if requests.is_empty() {
            scores.insert("blocking_general".into(), Value::from(1.0));
            // OONI stores the int 0 here, unlike every other scorer.
            scores.insert("accuracy".into(), Value::from(0));
            return Ok(scores);
        }
        let empty = Value::Object(Map::new());
        let mut blocking = 0.0;
        for r in requests {
            let r = r
                .as_object()
                .ok_or_else(|| format!("a request is a {}", kind(r)))?;
            let resp = match r.get("response") {
                None => &empty,
                Some(Value::Null) => {
                    scores.insert("blocking_general".into(), Value::from(1.0));
                    return Ok(scores);
                }
                Some(resp) => resp,
            };
            let resp = resp
                .as_object()
                .ok_or_else(|| format!("response is a {}", kind(resp)))?;
            if !py_eq(
                resp.get("code").unwrap_or(&Value::from(0)),
                &Value::from(200),
            ) {
                scores.insert("blocking_general".into(), Value::from(1.0));
                return Ok(scores);
            }
            let server = match resp.get("headers") {
                None => None,
                Some(Value::Object(h)) => h.get("Server").cloned(),
                // A list of [name, [value, …]] pairs: the first value of the last "Server".
                Some(Value::Array(list)) => {
                    let mut found = None;
                    for item in list.iter().filter(|i| truthy(i)) {
                        let pair = item
                            .as_array()
                            .ok_or_else(|| format!("a header is a {}", kind(item)))?;
                        let name = pair.first().ok_or("empty header pair")?;
                        let values = pair.get(1).ok_or("header pair without values")?;
                        let first = match values {
                            Value::Array(v) => v.first().cloned().ok_or("empty header values")?,
                            Value::String(s) => Value::String(
                                s.chars()
                                    .next()
                                    .map(String::from)
                                    .ok_or("empty header value")?,
                            ),
                            other => return Err(format!("header values are a {}", kind(other))),
                        };
                        if name.as_str() == Some("Server") {
                            found = Some(first);
                        }
                    }
                    found
                }
                Some(other) => return Err(format!("headers is a {}", kind(other))),
            };
            let server = server.unwrap_or(Value::from(""));
            let server = server
                .as_str()
                .ok_or_else(|| format!("the Server header is a {}", kind(&server)))?;
            if !server.starts_with("ECAcc ") {
                blocking += 0.5;
                scores.insert("blocking_general".into(), Value::from(blocking));
            }
        }
        Ok(scores)
    }
}

ooni_scorer_sdk::export_scorer!(Meek);

#[cfg(test)]
mod tests {
    use super::*;
    use ooni_scorer_sdk::{json, NoFingerprints};

    fn score(tk: Value) -> Scores {
        ooni_scorer_sdk::testing::score_as_sent::<Meek>(&json!({"test_keys": tk}), &NoFingerprints)
            .unwrap()
    }

    #[test]
    fn fronted_requests() {
        let ok = json!({"response": {"code": 200, "headers": {"Server": "ECAcc (abc)"}}});
        let other = json!({"response": {"code": 200, "headers": [["Server", ["nginx"]]]}});
        assert_eq!(
            score(json!({"requests": [ok.clone(), ok.clone()]})),
            init_scores()
        );
        assert_eq!(
            score(json!({"requests": [ok.clone(), other.clone()]}))["blocking_general"],
            json!(0.5)
        );
        assert_eq!(
            score(json!({"requests": [other.clone(), other]}))["blocking_general"],
            json!(1.0)
        );
        assert_eq!(
            score(json!({"requests": [{"response": {"code": 403}}]}))["blocking_general"],
            json!(1.0)
        );
        assert_eq!(
            score(json!({"requests": [{"response": null}]}))["blocking_general"],
            json!(1.0)
        );
        let s = score(json!({}));
        assert_eq!(s["accuracy"], json!(0));
        assert!(s["accuracy"].is_i64());
    }
}
