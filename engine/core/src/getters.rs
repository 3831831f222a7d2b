//! OONI's getter semantics over JSON values (spec/fastpath.md §2.0).
//!
//! `g_or` treats a missing key and a JSON `null` alike; falsy values (`0`, `""`, `[]`,
//! `false`) are kept. Asking a non-object for a key is an error, as it raises in Python.

use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("cannot read key `{key}` from a JSON {found}")]
pub struct NotAnObject {
    pub key: String,
    pub found: &'static str,
}

pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `dget_or(d, k, default)`: `None` when the key is missing or null.
pub fn g_or<'a>(d: &'a Value, key: &str) -> Result<Option<&'a Value>, NotAnObject> {
    match d {
        Value::Object(m) => Ok(m.get(key).filter(|v| !v.is_null())),
        other => Err(NotAnObject {
            key: key.to_owned(),
            found: kind(other),
        }),
    }
}

/// `g(d, *keys)`: walks nested keys; a missing or null intermediate acts as `{}`.
pub fn g<'a>(d: &'a Value, keys: &[&str]) -> Result<Option<&'a Value>, NotAnObject> {
    let mut cur = d;
    for k in keys {
        match g_or(cur, k)? {
            Some(v) => cur = v,
            // Python goes on with `{}`, so every remaining key is missing too.
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

/// Python truthiness of a JSON value.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn g_or_treats_null_as_missing_but_keeps_falsy_values() {
        let d = json!({"a": null, "b": 0, "c": "", "d": false});
        assert_eq!(g_or(&d, "a").unwrap(), None);
        assert_eq!(g_or(&d, "zz").unwrap(), None);
        assert_eq!(g_or(&d, "b").unwrap(), Some(&json!(0)));
        assert_eq!(g_or(&d, "c").unwrap(), Some(&json!("")));
        assert_eq!(g_or(&d, "d").unwrap(), Some(&json!(false)));
    }

    #[test]
    fn g_or_on_a_non_object_is_an_error() {
        let err = g_or(&json!([1]), "a").unwrap_err();
        assert_eq!(err.found, "array");
    }

    #[test]
    fn g_walks_and_stops_at_missing_or_null() {
        let d = json!({"a": {"b": {"c": 3}}, "n": null, "l": [1]});
        assert_eq!(g(&d, &["a", "b", "c"]).unwrap(), Some(&json!(3)));
        assert_eq!(g(&d, &["n", "x", "y"]).unwrap(), None);
        assert_eq!(g(&d, &["a", "zz", "c"]).unwrap(), None);
        assert!(g(&d, &["l", "x"]).is_err());
    }

    #[test]
    fn truthiness_follows_python() {
        for (v, t) in [
            (json!(null), false),
            (json!(0), false),
            (json!(0.0), false),
            (json!(2), true),
            (json!(""), false),
            (json!("x"), true),
            (json!([]), false),
            (json!({}), false),
            (json!({"a": 1}), true),
        ] {
            assert_eq!(truthy(&v), t, "{v}");
        }
    }
}
