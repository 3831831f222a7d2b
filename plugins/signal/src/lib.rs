//! `signal` as OONI fastpath 0.92 scores it (spec/fastpath.md §2.19), with its
//! blocklist of probe versions known to report wrong results.

mod pep440;

use ooni_scorer_sdk::getters::{g_or, truthy};
use ooni_scorer_sdk::{init_scores, test_keys_object, Host, Info, Map, Scorer, Scores, Value};
use pep440::Version;

pub struct Signal;

/// `(y, m, d)` compared with a parsed `YYYY-MM-DD HH:MM:SS`.
fn on_or_after(start: (u32, u32, u32, u32, u32, u32), day: (u32, u32, u32)) -> bool {
    (start.0, start.1, start.2) >= day
}

/// `datetime.strptime(s, "%Y-%m-%d %H:%M:%S")`, fields of 1 or 2 digits.
fn parse_time(s: &str) -> Option<(u32, u32, u32, u32, u32, u32)> {
    let (date, time) = s.split_once(' ')?;
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || t.len() != 3 || d[0].len() != 4 {
        return None;
    }
    let num = |x: &str, max: usize| -> Option<u32> {
        (!x.is_empty() && x.len() <= max && x.bytes().all(|b| b.is_ascii_digit()))
            .then(|| x.parse().ok())
            .flatten()
    };
    let v = (
        num(d[0], 4)?,
        num(d[1], 2)?,
        num(d[2], 2)?,
        num(t[0], 2)?,
        num(t[1], 2)?,
        num(t[2], 2)?,
    );
    let ok = (1..=12).contains(&v.1) && (1..=31).contains(&v.2) && v.3 < 24 && v.4 < 60 && v.5 < 60;
    ok.then_some(v)
}

/// The probe-version checks; `None` means "no score" (accuracy 0).
fn trusted(msm: &Value) -> Option<()> {
    let tv = match g_or(msm, "test_version").ok()? {
        None => "0.0.0".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return None,
    };
    let start = match msm.get("measurement_start_time")? {
        Value::String(s) => parse_time(s)?,
        _ => return None,
    };
    if tv == "0.2.4" {
        return None;
    }
    let tv = Version::parse(&tv)?;
    if tv <= Version::parse("0.2.3")? && on_or_after(start, (2023, 11, 7)) {
        return None;
    }
    if tv < Version::parse("0.2.2")? && on_or_after(start, (2022, 10, 19)) {
        return None;
    }
    let empty = Value::Object(Map::new());
    let annotations = g_or(msm, "annotations").ok()?.unwrap_or(&empty);
    let ev = match g_or(annotations, "engine_version").ok()? {
        None => "0.0.0".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return None,
    };
    if Version::parse(&ev)? < Version::parse("3.17.2")? && on_or_after(start, (2023, 5, 2)) {
        return None;
    }
    Some(())
}

impl Scorer for Signal {
    const INFO: Info = Info {
        name: "signal",
        version: "0.92.0",
        test_names: &["signal"],
        reads: &[
            "test_version",
            "measurement_start_time",
            "annotations.engine_version",
            "test_keys.failed_operation",
            "test_keys.failure",
            "test_keys.signal_backend_status",
            "test_keys.signal_backend_failure",
        ],
        bodies: &[],
        headers: &[],
        drops_unread: false,
        compared: &[],
    };

    fn score(msm: &Value, _host: &dyn Host) -> Result<Scores, String> {
        let mut scores = init_scores();
        let tko = test_keys_object(msm)?;
        // Missing keys count as failures.
        let yes = Value::Bool(true);
        if truthy(tko.get("failed_operation").unwrap_or(&yes))
            || truthy(tko.get("failure").unwrap_or(&yes))
        {
            scores.insert("accuracy".into(), Value::from(0.0));
        }
        if trusted(msm).is_none() {
            scores.insert("accuracy".into(), Value::from(0.0));
            return Ok(scores);
        }
        match tko.get("signal_backend_status").and_then(Value::as_str) {
            Some("ok") => {}
            Some("blocked") => {
                scores.insert("blocking_general".into(), Value::from(1.0));
                let mut analysis = Map::new();
                analysis.insert(
                    "signal_backend_failure".into(),
                    tko.get("signal_backend_failure")
                        .cloned()
                        .unwrap_or(Value::Null),
                );
                scores.insert("analysis".into(), Value::Object(analysis));
            }
            _ => {
                scores.insert("accuracy".into(), Value::from(0.0));
            }
        }
        Ok(scores)
    }
}

ooni_scorer_sdk::export_scorer!(Signal);

#[cfg(test)]
mod tests {
    use super::*;
    use ooni_scorer_sdk::{json, NoFingerprints};

    fn score(msm: Value) -> Scores {
        ooni_scorer_sdk::testing::score_as_sent::<Signal>(&msm, &NoFingerprints).unwrap()
    }

    fn msm(tv: &str, start: &str, ev: &str, tk: Value) -> Value {
        json!({"test_version": tv, "measurement_start_time": start, "annotations": {"engine_version": ev}, "test_keys": tk})
    }

    #[test]
    fn blocked_and_ok() {
        let ok = json!({"failed_operation": null, "failure": null, "signal_backend_status": "ok"});
        assert_eq!(
            score(msm("0.2.5", "2024-01-01 00:00:00", "3.20.0", ok)),
            init_scores()
        );
        let blocked = json!({"failed_operation": "x", "failure": "y", "signal_backend_status": "blocked", "signal_backend_failure": "eof"});
        let s = score(msm("0.2.5", "2024-01-01 00:00:00", "3.20.0", blocked));
        assert_eq!(s["blocking_general"], json!(1.0));
        assert_eq!(s["accuracy"], json!(0.0));
        assert_eq!(s["analysis"], json!({"signal_backend_failure": "eof"}));
    }

    #[test]
    fn untrusted_probe_versions() {
        let ok = json!({"failed_operation": null, "failure": null, "signal_backend_status": "ok"});
        for (tv, start, ev) in [
            ("0.2.4", "2020-01-01 00:00:00", "3.20.0"),
            ("0.2.3", "2023-11-07 00:00:00", "3.20.0"),
            ("0.2.1", "2022-10-19 00:00:00", "3.20.0"),
            ("0.2.5", "2023-05-02 00:00:00", "3.16.0-alpha"),
            ("x.y", "2020-01-01 00:00:00", "3.20.0"),
        ] {
            assert_eq!(
                score(msm(tv, start, ev, ok.clone()))["accuracy"],
                json!(0.0),
                "{tv} {start} {ev}"
            );
        }
        assert!(
            score(msm("0.2.3", "2023-11-06 23:59:59", "3.20.0", ok.clone()))
                .get("accuracy")
                .is_none()
        );
        assert_eq!(
            score(json!({"test_keys": ok}))["accuracy"],
            json!(0.0),
            "no start time"
        );
    }

    #[test]
    fn missing_keys_count_as_failures() {
        let s = score(msm(
            "0.2.5",
            "2024-01-01 00:00:00",
            "3.20.0",
            json!({"signal_backend_status": "ok"}),
        ));
        assert_eq!(s["accuracy"], json!(0.0));
    }
}
