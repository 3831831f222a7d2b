//! The scores dict and the helpers several OONI scorers share (spec/fastpath.md §2.0).

use crate::getters::{g_or, kind};
use serde_json::{Map, Value};

/// A scores dict. Key order is kept: the engine stores it serialised.
pub type Scores = Map<String, Value>;

/// The five `blocking_*` keys at 0.0, in OONI's order.
pub fn init_scores() -> Scores {
    // Room for what scorers commonly add (accuracy, extra, analysis, msg) without
    // growing, which would rehash every key.
    let mut s = Map::with_capacity(10);
    for k in [
        "blocking_general",
        "blocking_global",
        "blocking_country",
        "blocking_isp",
        "blocking_local",
    ] {
        s.insert(k.to_owned(), Value::from(0.0));
    }
    s
}

/// `tk = g_or(msm, "test_keys", {})`: null `test_keys` reads as `{}`.
pub fn test_keys(msm: &Value) -> Result<&Value, String> {
    static EMPTY: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    Ok(g_or(msm, "test_keys")
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|| EMPTY.get_or_init(|| Value::Object(Map::new()))))
}

/// `test_keys` that must be an object (scorers call `tk.get(…)`, which fails otherwise).
pub fn test_keys_object(msm: &Value) -> Result<&Map<String, Value>, String> {
    let tk = test_keys(msm)?;
    tk.as_object()
        .ok_or_else(|| format!("test_keys is a {}", kind(tk)))
}

/// `_detect_unknown_failure`: any top-level `*_failure` key of `test_keys` whose value
/// starts with `unknown_failure`. A value that is neither a string nor null is an error.
pub fn detect_unknown_failure(tk: &Value) -> Result<bool, String> {
    let Some(m) = tk.as_object() else {
        return Ok(false);
    };
    for (k, v) in m {
        if !k.ends_with("_failure") {
            continue;
        }
        match v {
            Value::Null => {}
            Value::String(s) if s.starts_with("unknown_failure") => return Ok(true),
            Value::String(_) => {}
            other => return Err(format!("{k} is a {}", kind(other))),
        }
    }
    Ok(false)
}

/// `_extract_tcp_connect`: counts `tcp_connect[*].status.success` that are `true`
/// (accessible) and `false` (unreachable); a missing status counts as success.
pub fn extract_tcp_connect(tk: &Value) -> Result<(u64, u64), String> {
    let entries = g_or(tk, "tcp_connect").map_err(|e| e.to_string())?;
    let (mut accessible, mut unreachable) = (0, 0);
    let items = crate::getters::iter_items(entries, "tcp_connect")?;
    for entry in items {
        match crate::getters::g(entry, &["status", "success"]).map_err(|e| e.to_string())? {
            Some(Value::Bool(true)) => accessible += 1,
            Some(Value::Bool(false)) => unreachable += 1,
            _ => {}
        }
    }
    Ok((accessible, unreachable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_failures_are_found_only_at_the_top_level() {
        assert!(
            detect_unknown_failure(&json!({"http_experiment_failure": "unknown_failure x"}))
                .unwrap()
        );
        assert!(
            !detect_unknown_failure(&json!({"x_failure": null, "y": "unknown_failure"})).unwrap()
        );
        assert!(
            !detect_unknown_failure(&json!({"nested": {"a_failure": "unknown_failure"}})).unwrap()
        );
        assert!(detect_unknown_failure(&json!({"a_failure": 3})).is_err());
    }

    #[test]
    fn tcp_connect_counts() {
        let tk = json!({"tcp_connect": [
            {"status": {"success": true}}, {"status": {"success": false}},
            {"status": {"success": null}}, {"status": {}}, {}
        ]});
        assert_eq!(extract_tcp_connect(&tk).unwrap(), (1, 1));
        assert!(extract_tcp_connect(&json!({"tcp_connect": [null]})).is_err());
        assert_eq!(extract_tcp_connect(&json!({})).unwrap(), (0, 0));
    }
}
