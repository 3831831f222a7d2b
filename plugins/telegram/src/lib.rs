//! `telegram` as OONI fastpath 0.92 scores it (spec/fastpath.md §2.6): unreachable TCP
//! endpoints plus failed HTTP requests plus a blocked web client, from 0 to 3.

use ooni_scorer_sdk::getters::{g_or, iter_items, kind};
use ooni_scorer_sdk::{
    extract_tcp_connect, init_scores, test_keys, test_keys_object, Host, Info, Scorer, Scores,
    Value,
};

pub struct Telegram;

const WEB_URLS: [&str; 2] = ["https://web.telegram.org/", "http://web.telegram.org/"];

impl Scorer for Telegram {
    const INFO: Info = Info {
        name: "telegram",
        version: "0.92.0",
        test_names: &["telegram"],
        reads: &[
            "test_keys.telegram_web_status",
            "test_keys.tcp_connect.status.success",
            "test_keys.requests.request.url",
            "test_keys.requests.failure",
        ],
        bodies: &[],
        headers: &[],
        drops_unread: true,
        compared: &[],
    };

    fn score(msm: &Value, _host: &dyn Host) -> Result<Scores, String> {
        let tk = test_keys(msm)?;
        let tko = test_keys_object(msm)?;
        let web_blocked = tko.get("telegram_web_status").and_then(Value::as_str) == Some("blocked");
        let (accessible, unreachable) = extract_tcp_connect(tk)?;

        let (mut ok, mut failed) = (0u64, 0u64);
        let mut web_failure = Value::Null;
        let requests = g_or(tk, "requests").map_err(|e| e.to_string())?;
        for r in iter_items(requests, "requests")? {
            let r = r
                .as_object()
                .ok_or_else(|| format!("a request is a {}", kind(r)))?;
            // A missing `request` or `url` is a known probe bug: no score.
            let url = match r.get("request") {
                None => None,
                Some(Value::Object(req)) => req.get("url"),
                Some(v) => return Err(format!("request is a {}", kind(v))),
            };
            let Some(url) = url else {
                let mut s = init_scores();
                s.insert("accuracy".into(), Value::from(0.0));
                return Ok(s);
            };
            let failure = r.get("failure").ok_or("a request has no failure key")?;
            if url.as_str().is_some_and(|u| WEB_URLS.contains(&u)) {
                if !failure.is_null() {
                    web_failure = failure.clone();
                }
                continue;
            }
            if failure.is_null() {
                ok += 1;
            } else {
                failed += 1;
            }
        }

        let mut s = if accessible + unreachable > 0 {
            unreachable as f64 / (accessible + unreachable) as f64
        } else {
            0.5
        };
        s += if ok + failed > 0 {
            failed as f64 / (ok + failed) as f64
        } else {
            0.5
        };
        if web_blocked {
            s += 1.0;
        }
        let mut scores = init_scores();
        scores.insert("blocking_general".into(), Value::from(s));
        scores.insert("web_failure".into(), web_failure.clone());
        scores.insert("accessible_endpoints".into(), Value::from(accessible));
        scores.insert("unreachable_endpoints".into(), Value::from(unreachable));
        scores.insert("http_success_cnt".into(), Value::from(ok));
        scores.insert("http_failure_cnt".into(), Value::from(failed));
        if !web_failure.is_null() {
            let text = match &web_failure {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            scores.insert("msg".into(), Value::from(format!("failure: {text}")));
        }
        Ok(scores)
    }
}

ooni_scorer_sdk::export_scorer!(Telegram);

#[cfg(test)]
mod tests {
    use super::*;
    use ooni_scorer_sdk::{json, NoFingerprints};

    fn score(tk: Value) -> Scores {
        ooni_scorer_sdk::testing::score_as_sent::<Telegram>(
            &json!({"test_keys": tk}),
            &NoFingerprints,
        )
        .unwrap()
    }

    #[test]
    fn nothing_measured_is_an_anomaly() {
        assert_eq!(score(json!({}))["blocking_general"], json!(1.0));
        assert_eq!(score(json!(null))["blocking_general"], json!(1.0));
    }

    #[test]
    fn ratios_and_web_status() {
        let s = score(json!({
            "telegram_web_status": "blocked",
            "tcp_connect": [{"status": {"success": true}}, {"status": {"success": false}}],
            "requests": [
                {"request": {"url": "http://149.154.175.50/"}, "failure": null},
                {"request": {"url": "http://149.154.175.51/"}, "failure": "connection_reset"},
                {"request": {"url": "https://web.telegram.org/"}, "failure": "eof_error"}
            ]
        }));
        assert_eq!(s["blocking_general"], json!(2.0));
        assert_eq!(s["web_failure"], json!("eof_error"));
        assert_eq!(s["http_success_cnt"], json!(1));
        assert_eq!(s["http_failure_cnt"], json!(1));
        assert_eq!(s["msg"], json!("failure: eof_error"));
        let keys: Vec<&String> = s.keys().collect();
        assert_eq!(
            keys[5..],
            [
                "web_failure",
                "accessible_endpoints",
                "unreachable_endpoints",
                "http_success_cnt",
                "http_failure_cnt",
                "msg"
            ]
        );
    }

    #[test]
    fn a_request_without_url_gives_no_score() {
        let s = score(json!({"requests": [{"request": {}, "failure": null}]}));
        assert_eq!(s["accuracy"], json!(0.0));
        assert_eq!(s.len(), 6);
        assert!(ooni_scorer_sdk::testing::score_as_sent::<Telegram>(
            &json!({"test_keys": {"requests": [{"request": {"url": "x"}}]}}),
            &NoFingerprints
        )
        .is_err());
    }
}
