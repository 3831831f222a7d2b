//! OONI's getter semantics over JSON values (spec/fastpath.md §2.0).
//!
//! `g_or` treats a missing key and a JSON `null` alike; falsy values (`0`, `""`, `[]`,
//! `false`) are kept. Asking a non-object for a key is an error, as it raises in Python.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAnObject {
    pub key: String,
    pub found: &'static str,
}

impl std::fmt::Display for NotAnObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot read key `{}` from a JSON {}",
            self.key, self.found
        )
    }
}

impl std::error::Error for NotAnObject {}

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

/// The items a Python `for` loop over `v` would visit, where a non-list can only be
/// looped over when empty (a non-empty dict or string yields keys or characters that
/// the scorers then fail on). `None` (missing or null, already defaulted) is empty.
pub fn iter_items<'a>(v: Option<&'a Value>, what: &str) -> Result<&'a [Value], String> {
    match v {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(Value::Object(o)) if o.is_empty() => Ok(&[]),
        Some(Value::String(s)) if s.is_empty() => Ok(&[]),
        Some(other) => Err(format!("{what} is a {}, not a list", kind(other))),
    }
}

/// Python `==` between JSON values: numbers compare by value, and `true == 1`.
pub fn py_eq(a: &Value, b: &Value) -> bool {
    fn num(v: &Value) -> Option<f64> {
        match v {
            Value::Number(n) => n.as_f64(),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
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
    fn python_equality() {
        assert!(py_eq(&json!(1), &json!(1.0)));
        assert!(py_eq(&json!(true), &json!(1)));
        assert!(py_eq(&json!(false), &json!(0)));
        assert!(!py_eq(&json!(null), &json!(false)));
        assert!(!py_eq(&json!("1"), &json!(1)));
        assert!(py_eq(&json!({"a": [1, true]}), &json!({"a": [1.0, 1]})));
    }

    #[test]
    fn iteration_rules() {
        assert_eq!(iter_items(Some(&json!([1])), "x").unwrap().len(), 1);
        assert_eq!(iter_items(Some(&json!({})), "x").unwrap().len(), 0);
        assert!(iter_items(Some(&json!({"a": 1})), "x").is_err());
        assert!(iter_items(Some(&json!(3)), "x").is_err());
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
