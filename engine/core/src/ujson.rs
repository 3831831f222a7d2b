//! Serialises JSON the way Python's `ujson.dumps` does with its defaults, so the
//! `scores` column holds the same bytes as OONI's: compact separators, keys in
//! insertion order, `/` escaped as `\/`, non-ASCII escaped as `\uXXXX`, floats in
//! shortest round-trip form with a trailing `.0` when integral.

use serde_json::{Number, Value};
use std::fmt::Write;

pub fn dumps(v: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_value(&mut out, v);
    out
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, k);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

fn write_number(out: &mut String, n: &Number) {
    if n.is_f64() {
        write_float(out, n.as_f64().unwrap_or(0.0));
    } else {
        let _ = write!(out, "{n}");
    }
}

/// Python `repr(float)`: decimal notation for 1e-4 <= |x| < 1e16, exponent otherwise
/// (`1e-05`, `1e+16`).
pub fn write_float(out: &mut String, f: f64) {
    if !f.is_finite() {
        out.push_str(if f.is_nan() {
            "NaN"
        } else if f > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        });
        return;
    }
    let a = f.abs();
    if f == 0.0 && f.is_sign_positive() {
        // Most scores are a plain zero.
        out.push_str("0.0");
    } else if a == 0.0 || (1e-4..1e16).contains(&a) {
        let start = out.len();
        let _ = write!(out, "{f:?}");
        if !out[start..].contains(['.', 'e']) {
            out.push_str(".0");
        }
    } else {
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        let _ = write!(out, "{mant}e{sign}{digits:0>2}");
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    // Printable ASCII but `"`, `\\` and `/` is written as it is, a run at a time.
    let plain = |b: u8| (0x20..=0x7e).contains(&b) && !matches!(b, b'"' | b'\\' | b'/');
    let mut s = s;
    while let Some(first) = s.bytes().position(|b| !plain(b)) {
        out.push_str(&s[..first]);
        let mut rest = s[first..].chars();
        if let Some(c) = rest.next() {
            write_char(out, c);
        }
        s = rest.as_str();
    }
    out.push_str(s);
    out.push('"');
}

fn write_char(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '/' => out.push_str("\\/"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{08}' => out.push_str("\\b"),
        '\u{0c}' => out.push_str("\\f"),
        c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_like_ujson() {
        let v = json!({"msg": "failure: a/b", "é": "😀\n"});
        assert_eq!(
            dumps(&v),
            r#"{"msg":"failure: a\/b","\u00e9":"\ud83d\ude00\n"}"#
        );
        // Runs of plain characters between escapes, at either end or none.
        let v = json!(["", "/", "ab\"cd\\e\u{7f}f\u{1f}", "x é y/z", "plain text"]);
        assert_eq!(
            dumps(&v),
            r#"["","\/","ab\"cd\\e\u007ff\u001f","x \u00e9 y\/z","plain text"]"#
        );
    }

    #[test]
    fn keeps_insertion_order_ints_and_float_shapes() {
        let v: Value =
            serde_json::from_str(r#"{"z":1.0,"a":0,"m":2.1714069843,"n":[0.5,-3.0,100]}"#).unwrap();
        assert_eq!(
            dumps(&v),
            r#"{"z":1.0,"a":0,"m":2.1714069843,"n":[0.5,-3.0,100]}"#
        );
    }

    #[test]
    fn floats_use_python_repr_exponents() {
        let mut s = String::new();
        for f in [1e-5, 1e16, 0.0001, 123456.0, -0.0, 0.0, 1.0, 0.25] {
            write_float(&mut s, f);
            s.push(' ');
        }
        assert_eq!(s, "1e-05 1e+16 0.0001 123456.0 -0.0 0.0 1.0 0.25 ");
    }
}
