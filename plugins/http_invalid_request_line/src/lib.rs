//! `http_invalid_request_line` as OONI fastpath 0.92 scores it (spec/fastpath.md
//! §2.10): any request line echoed back differently is tampering.

use ooni_scorer_sdk::getters::kind;
use ooni_scorer_sdk::{init_scores, test_keys_object, Host, Info, Scorer, Scores, Value};
use std::borrow::Cow;

pub struct HttpInvalidRequestLine;

/// What Python iterates (and counts) in `sent` / `received`. A list (what probes
/// send: a few request lines of up to 100 KB each) is borrowed, not copied.
fn items<'a>(v: Option<&'a Value>, what: &str) -> Result<Cow<'a, [Value]>, String> {
    Ok(match v {
        None => Cow::Owned(Vec::new()),
        Some(Value::Array(a)) => Cow::Borrowed(a.as_slice()),
        Some(Value::String(s)) => s.chars().map(|c| Value::String(c.to_string())).collect(),
        Some(Value::Object(o)) => o.keys().map(|k| Value::String(k.clone())).collect(),
        Some(other) => return Err(format!("{what} is a {}", kind(other))),
    })
}

impl Scorer for HttpInvalidRequestLine {
    const INFO: Info = Info {
        name: "http_invalid_request_line",
        version: "0.92.0",
        test_names: &["http_invalid_request_line"],
        reads: &["report_id"],
        bodies: &[],
        headers: &[],
        drops_unread: true,
        // Each pair is only compared, and a probe echoes pages of a hundred kilobytes.
        compared: &["test_keys.sent", "test_keys.received"],
    };

    fn score(msm: &Value, _host: &dyn Host) -> Result<Scores, String> {
        let tko = test_keys_object(msm)?;
        if msm.get("report_id").is_none() {
            return Err("missing report_id".into());
        }
        let mut scores = init_scores();
        let sent = items(tko.get("sent"), "sent")?;
        let received = items(tko.get("received"), "received")?;
        if sent.is_empty() && received.is_empty() {
            scores.insert("accuracy".into(), Value::from(0.0));
            return Ok(scores);
        }
        // zip(): the shorter list decides how many pairs are compared.
        if sent
            .iter()
            .zip(received.iter())
            .any(|(s, r)| !ooni_scorer_sdk::getters::py_eq(s, r))
        {
            scores.insert("blocking_general".into(), Value::from(1.0));
        }
        Ok(scores)
    }
}

ooni_scorer_sdk::export_scorer!(HttpInvalidRequestLine);

#[cfg(test)]
mod tests {
    use super::*;
    use ooni_scorer_sdk::{json, NoFingerprints};

    fn score(tk: Value) -> Result<Scores, String> {
        ooni_scorer_sdk::testing::score_as_sent::<HttpInvalidRequestLine>(
            &json!({"report_id": "r", "test_keys": tk}),
            &NoFingerprints,
        )
    }

    #[test]
    fn tampering_is_a_changed_echo() {
        assert_eq!(
            score(json!({"sent": ["a", "b"], "received": ["a", "c"]})).unwrap()["blocking_general"],
            json!(1.0)
        );
        assert_eq!(
            score(json!({"sent": ["a"], "received": ["a", "x"]})).unwrap(),
            init_scores()
        );
        assert_eq!(
            score(json!({"sent": ["a"], "received": []})).unwrap(),
            init_scores(),
            "zip stops at the shorter"
        );
        assert_eq!(score(json!({})).unwrap()["accuracy"], json!(0.0));
        assert!(score(json!({"sent": null})).is_err());
    }

    #[test]
    fn long_echoes_compare_as_python_compares_them() {
        // Sent to the module as digests (`Info::compared`); `score_as_sent` checks the
        // scores equal those of the whole measurement.
        let page = "HTTP/1.1 400 Bad Request\r\n\r\n<html>é</html>".repeat(10);
        let other = page.replace('é', "e");
        let tampered = || {
            let mut s = init_scores();
            s.insert("blocking_general".into(), Value::from(1.0));
            s
        };
        for (tk, want) in [
            (json!({"sent": [page], "received": [page]}), init_scores()),
            (json!({"sent": [page], "received": [other]}), tampered()),
            (
                json!({"sent": ["GET / HTTP/1.0"], "received": [page]}),
                tampered(),
            ),
            (
                json!({"sent": [[page, 1]], "received": [[page, 1.0]]}),
                init_scores(),
            ),
            (
                json!({"sent": [{(page.clone()): 1}], "received": [{(page.clone()): 1}]}),
                init_scores(),
            ),
            // A dict iterates as its keys, a string as its characters.
            (
                json!({"sent": {(page.clone()): 1}, "received": [page]}),
                init_scores(),
            ),
            (
                json!({"sent": "ab", "received": ["a", "b", page]}),
                init_scores(),
            ),
            (json!({"sent": page, "received": [page]}), tampered()),
        ] {
            assert_eq!(score(tk.clone()).unwrap(), want, "{tk}");
        }
    }
}
