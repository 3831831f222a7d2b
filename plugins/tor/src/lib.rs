//! `tor` as OONI fastpath 0.92 scores it (spec/fastpath.md §2.12): the share of
//! targets (directory authorities, bridges) that could not be reached.

use ooni_scorer_sdk::getters::{kind, truthy};
use ooni_scorer_sdk::{init_scores, test_keys_object, Host, Info, Map, Scorer, Scores, Value};

pub struct Tor;

impl Scorer for Tor {
    const INFO: Info = Info {
        name: "tor",
        version: "0.92.0",
        test_names: &["tor"],
        reads: &["test_runtime", "test_keys.targets.*.failure"],
        bodies: &[],
        headers: &[],
        drops_unread: false,
        compared: &[],
    };

    fn score(msm: &Value, _host: &dyn Host) -> Result<Scores, String> {
        let mut scores = init_scores();
        let tko = test_keys_object(msm)?;
        let targets = match tko.get("targets") {
            Some(t) if truthy(t) => t,
            // Missing, empty, or a list (early probes): no score.
            _ => {
                scores.insert("accuracy".into(), Value::from(0.0));
                return Ok(scores);
            }
        };
        let targets = match targets {
            Value::Object(o) => o,
            Value::Array(_) => {
                scores.insert("accuracy".into(), Value::from(0.0));
                return Ok(scores);
            }
            other => return Err(format!("targets is a {}", kind(other))),
        };
        let (mut blocked, mut success) = (0u64, 0u64);
        for d in targets.values() {
            let d = match d.as_object() {
                Some(d) if d.contains_key("failure") && d.contains_key("network_events") => d,
                _ => {
                    scores.insert("accuracy".into(), Value::from(0.0));
                    return Ok(scores);
                }
            };
            match &d["failure"] {
                Value::Bool(false) => {}
                Value::Null => success += 1,
                Value::String(s) if s.is_empty() => {
                    return Err("a target failed with an empty failure".into())
                }
                _ => blocked += 1,
            }
        }
        if blocked + success > 0 {
            scores.insert(
                "blocking_general".into(),
                Value::from(blocked as f64 / (blocked + success) as f64),
            );
        } else {
            scores.insert("accuracy".into(), Value::from(0.0));
        }
        let mut extra = Map::new();
        extra.insert(
            "test_runtime".into(),
            msm.get("test_runtime").cloned().unwrap_or(Value::Null),
        );
        scores.insert("extra".into(), Value::Object(extra));
        Ok(scores)
    }
}

ooni_scorer_sdk::export_scorer!(Tor);

#[cfg(test)]
mod tests {
    use super::*;
    use ooni_scorer_sdk::{json, NoFingerprints};

    fn score(tk: Value) -> Result<Scores, String> {
        ooni_scorer_sdk::testing::score_as_sent::<Tor>(
            &json!({"test_runtime": 1.5, "test_keys": tk}),
            &NoFingerprints,
        )
    }

    #[test]
    fn share_of_blocked_targets() {
        let t = |f: Value| json!({"failure": f, "network_events": []});
        let s = score(json!({"targets": {"a": t(json!(null)), "b": t(json!("eof")), "c": t(json!(false)), "d": t(json!(null))}})).unwrap();
        assert_eq!(s["blocking_general"], json!(1.0 / 3.0));
        assert_eq!(s["extra"], json!({"test_runtime": 1.5}));
        let s = score(json!({"targets": {"c": t(json!(false))}})).unwrap();
        assert_eq!(s["accuracy"], json!(0.0));
        assert!(s.contains_key("extra"));
        assert!(score(json!({"targets": {"a": t(json!(""))}})).is_err());
    }

    #[test]
    fn unusable_targets() {
        for tk in [
            json!({}),
            json!({"targets": []}),
            json!({"targets": [1]}),
            json!({"targets": {"a": {"failure": null}}}),
        ] {
            let s = score(tk.clone()).unwrap();
            assert_eq!(s["accuracy"], json!(0.0), "{tk}");
            assert!(!s.contains_key("extra"), "{tk}");
        }
    }
}
