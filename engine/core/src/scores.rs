//! The `scores` dict, the `Scorer` seam, OONI's default scorer, the post-scoring date
//! sanity check (spec/fastpath.md §2.24) and the boolean flags (§3).

use crate::getters::kind;
use crate::measurement::Measurement;
use crate::pyparse::{ooni_datetime, uid_receive_time};
use serde_json::Value;
use thiserror::Error;

/// A scores dict; key order is significant (it is stored serialised).
pub use ooni_scorer_sdk::Scores;

/// Which scorer produced a row, recorded with it so any row can be reproduced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScorerInfo {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct ScoreError(pub String);

/// Scores one measurement (the unwrapped `content`). Implementations must be pure:
/// the same measurement always gives the same scores.
pub trait Scorer: Send + Sync {
    fn info(&self) -> ScorerInfo;
    fn score(&self, msm: &Measurement<'_>) -> Result<Scores, ScoreError>;
    /// What the scorer reads, when it scores a cut of the measurement: the engine
    /// may then make the cut in its first walk of the upload, and `score` finds it
    /// in `Measurement::cut_for`.
    fn cut_plan(&self) -> Option<CutPlan<'_>> {
        None
    }
}

/// How a scorer's cut is made: its reads, and for the values on its body and header
/// paths the fingerprints to match them with (`ooni_scorer_sdk::matching::matched_value`).
pub struct CutPlan<'a> {
    pub reads: &'a ooni_scorer_sdk::projection::Reads,
    pub bodies: Option<std::sync::Arc<dyn ooni_scorer_sdk::Host + Send + Sync>>,
}

pub use ooni_scorer_sdk::init_scores;

/// What OONI gives a test name it has no scorer for: zeros and `accuracy: 0.0`.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultScorer;

impl Scorer for DefaultScorer {
    fn info(&self) -> ScorerInfo {
        ScorerInfo {
            name: "default".to_owned(),
            version: "fastpath-0.92".to_owned(),
        }
    }

    fn score(&self, _msm: &Measurement<'_>) -> Result<Scores, ScoreError> {
        let mut s = init_scores();
        s.insert("accuracy".to_owned(), Value::from(0.0));
        Ok(s)
    }
}

const ONE_HOUR: i64 = 3600;
const ONE_YEAR: i64 = 31_536_000;

/// Flags measurements whose start time is more than an hour after, or more than a
/// year before, the receive time encoded in the uid. Errors where Python raises a
/// non-`ValueError` (a start time that is neither a string nor falsy).
pub fn flag_wrong_date(
    measurement_start_time: Option<&Value>,
    uid: &str,
    scores: &mut Scores,
) -> Result<(), ScoreError> {
    if !uid.starts_with("20") || uid.len() < 20 {
        return Ok(());
    }
    let Some(recv) = uid_receive_time(uid) else {
        return Ok(());
    };
    let start = match measurement_start_time {
        Some(Value::String(s)) => s.as_str(),
        Some(v) if crate::getters::truthy(v) => {
            return Err(ScoreError(format!(
                "measurement_start_time is a {}, not a string",
                kind(v)
            )))
        }
        _ => "",
    };
    let Some(start) = ooni_datetime(start) else {
        return Ok(());
    };
    let delta = (recv - start).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
    let msg = if delta < -(ONE_HOUR as f64) {
        "Measurement start time from the future"
    } else if delta > ONE_YEAR as f64 {
        "Measurement start time too old"
    } else {
        return Ok(());
    };
    scores.insert("accuracy".to_owned(), Value::from(0.0));
    scores.insert("msg".to_owned(), Value::from(msg));
    Ok(())
}

/// The three boolean columns, derived from the scores as OONI does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    pub anomaly: bool,
    pub confirmed: bool,
    pub msm_failure: bool,
}

fn as_number(scores: &Scores, key: &str, default: f64) -> Result<f64, ScoreError> {
    match scores.get(key) {
        None => Ok(default),
        Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(default)),
        Some(Value::Bool(b)) => Ok(if *b { 1.0 } else { 0.0 }),
        Some(v) => Err(ScoreError(format!(
            "scores.{key} is a {}, not a number",
            kind(v)
        ))),
    }
}

pub fn flags(scores: &Scores) -> Result<Flags, ScoreError> {
    Ok(Flags {
        anomaly: as_number(scores, "blocking_general", 0.0)? > 0.5,
        msm_failure: as_number(scores, "accuracy", 1.0)? < 0.5,
        confirmed: scores.get("confirmed").is_some_and(crate::getters::truthy),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scores(v: Value) -> Scores {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn default_scorer_matches_ooni() {
        let s = DefaultScorer
            .score(&Measurement::new("{}", Default::default()))
            .unwrap();
        assert_eq!(
            crate::ujson::dumps(&Value::Object(s)),
            r#"{"blocking_general":0.0,"blocking_global":0.0,"blocking_country":0.0,"blocking_isp":0.0,"blocking_local":0.0,"accuracy":0.0}"#
        );
    }

    #[test]
    fn flags_use_strict_thresholds_and_defaults() {
        let f = flags(&scores(json!({"blocking_general": 0.5}))).unwrap();
        assert_eq!(
            (f.anomaly, f.msm_failure, f.confirmed),
            (false, false, false)
        );
        let f = flags(&scores(
            json!({"blocking_general": 0.51, "accuracy": 0.0, "confirmed": true}),
        ))
        .unwrap();
        assert_eq!((f.anomaly, f.msm_failure, f.confirmed), (true, true, true));
        let f = flags(&scores(json!({"accuracy": 0.5}))).unwrap();
        assert!(!f.msm_failure);
        assert!(flags(&scores(json!({"blocking_general": null}))).is_err());
    }

    #[test]
    fn date_check_flags_old_and_future_measurements() {
        let uid = "20210208220710.181572_MA_ndt_7888edc7748936bf";
        let mut s = Scores::new();
        flag_wrong_date(Some(&json!("2021-02-08 22:00:00")), uid, &mut s).unwrap();
        assert!(s.is_empty());
        flag_wrong_date(Some(&json!("2020-02-08 22:00:00")), uid, &mut s).unwrap();
        assert_eq!(s.get("msg"), Some(&json!("Measurement start time too old")));
        assert_eq!(s.get("accuracy"), Some(&json!(0.0)));
        let mut s = Scores::new();
        flag_wrong_date(Some(&json!("2021-02-09 00:00:00")), uid, &mut s).unwrap();
        assert_eq!(
            s.get("msg"),
            Some(&json!("Measurement start time from the future"))
        );
        // exactly one hour ahead is still fine
        let mut s = Scores::new();
        flag_wrong_date(Some(&json!("2021-02-08 23:07:10")), uid, &mut s).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn date_check_is_skipped_for_legacy_ids_and_bad_times() {
        let mut s = Scores::new();
        let old = json!({"measurement_start_time": "2001-01-01 00:00:00"});
        flag_wrong_date(
            old.get("measurement_start_time"),
            "01202102037f9c2ba4e88f827d61604550760585",
            &mut s,
        )
        .unwrap();
        flag_wrong_date(
            Some(&json!("nope")),
            "20210208220710.181572_MA_ndt_x",
            &mut s,
        )
        .unwrap();
        flag_wrong_date(Some(&json!(null)), "20210208220710.181572_MA_ndt_x", &mut s).unwrap();
        assert!(s.is_empty());
        assert!(
            flag_wrong_date(Some(&json!(5)), "20210208220710.181572_MA_ndt_x", &mut s).is_err()
        );
    }
}
