//! `vanilla_tor` as OONI fastpath 0.92 scores it (spec/fastpath.md §2.11): how far Tor
//! bootstrapped. Any bootstrap short of 100% is an anomaly.

use ooni_scorer_sdk::getters::{kind, truthy};
use ooni_scorer_sdk::{init_scores, test_keys_object, Host, Info, Scorer, Scores, Value};

pub struct VanillaTor;

const DONE: [&str; 2] = ["Bootstrapped 100%: Done", "Bootstrapped 100% (done): Done"];

/// Python's `x in logs`: a substring of a string, an element of a list, a key of a dict.
fn logs_contain(logs: &Value, needle: &str) -> Result<bool, String> {
    Ok(match logs {
        Value::String(s) => s.contains(needle),
        Value::Array(a) => a.iter().any(|v| v.as_str() == Some(needle)),
        Value::Object(o) => o.contains_key(needle),
        other => return Err(format!("tor_logs is a {}", kind(other))),
    })
}

/// `float(x)` for a JSON value.
fn py_float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or("tor_progress is out of range".into()),
        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("tor_progress {s:?} is not a number")),
        other => Err(format!("tor_progress is a {}", kind(other))),
    }
}

impl Scorer for VanillaTor {
    const INFO: Info = Info {
        name: "vanilla_tor",
        version: "0.92.0",
        test_names: &["vanilla_tor"],
        reads: &[
            "test_keys.tor_logs",
            "test_keys.tor_log",
            "test_keys.tor_progress",
        ],
        bodies: &[],
        headers: &[],
        drops_unread: false,
        compared: &[],
    };

    fn score(msm: &Value, _host: &dyn Host) -> Result<Scores, String> {
        let mut scores = init_scores();
        let tko = test_keys_object(msm)?;
        let logs = match tko.get("tor_logs").filter(|v| truthy(v)) {
            Some(l) => Some(l),
            None => tko.get("tor_log").filter(|v| !v.is_null()),
        };
        let Some(logs) = logs else {
            scores.insert("accuracy".into(), Value::from(0.0));
            return Ok(scores);
        };
        if logs_contain(logs, DONE[0])? || logs_contain(logs, DONE[1])? {
            return Ok(scores);
        }
        let progress =
            py_float(tko.get("tor_progress").unwrap_or(&Value::from(0)))?.clamp(0.0, 100.0);
        if progress == 100.0 {
            return Ok(scores);
        }
        scores.insert(
            "blocking_general".into(),
            Value::from(1.0 - progress * 0.004),
        );
        Ok(scores)
    }
}

ooni_scorer_sdk::export_scorer!(VanillaTor);

#[cfg(test)]
mod tests {
    use super::*;
    use ooni_scorer_sdk::{json, NoFingerprints};

    fn score(tk: Value) -> Result<Scores, String> {
        ooni_scorer_sdk::testing::score_as_sent::<VanillaTor>(
            &json!({"test_keys": tk}),
            &NoFingerprints,
        )
    }

    #[test]
    fn bootstrap_progress() {
        assert_eq!(
            score(json!({"tor_logs": ["x"], "tor_progress": 5})).unwrap()["blocking_general"],
            json!(0.98)
        );
        assert_eq!(
            score(json!({"tor_logs": ["x"], "tor_progress": 100})).unwrap(),
            init_scores()
        );
        assert_eq!(
            score(json!({"tor_logs": ["x"], "tor_progress": 250})).unwrap(),
            init_scores()
        );
        assert_eq!(
            score(json!({"tor_log": "... Bootstrapped 100%: Done ..."})).unwrap(),
            init_scores()
        );
        assert_eq!(
            score(json!({"tor_logs": ["Bootstrapped 100%: Done"]})).unwrap(),
            init_scores()
        );
        assert_eq!(
            score(json!({"tor_logs": ["x"]})).unwrap()["blocking_general"],
            json!(1.0)
        );
        assert_eq!(score(json!({})).unwrap()["accuracy"], json!(0.0));
        assert!(score(json!({"tor_logs": ["x"], "tor_progress": null})).is_err());
    }
}
