//! Reading an uploaded body without building the whole JSON tree: the row needs a
//! dozen top-level fields, while `test_keys` (most of the bytes) is only for scorers,
//! which get the raw text and parse it themselves if they need it.

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::cell::OnceCell;
use std::fmt;

/// The top-level measurement keys the `fastpath` row is derived from.
pub const ROW_FIELDS: [&str; 13] = [
    "report_id",
    "probe_cc",
    "probe_asn",
    "test_name",
    "input",
    "test_start_time",
    "measurement_start_time",
    "software_name",
    "software_version",
    "test_version",
    "test_runtime",
    "test_helpers",
    "annotations",
];

/// One measurement (the envelope's `content`, or a bare measurement).
pub struct Measurement<'a> {
    /// The measurement's JSON text, exactly as uploaded.
    pub json: &'a str,
    /// Its `ROW_FIELDS` that are present, as a JSON object (a JSON null stays a null).
    pub fields: Value,
    full: OnceCell<Result<Value, String>>,
}

impl<'a> Measurement<'a> {
    pub fn new(json: &'a str, fields: Map<String, Value>) -> Self {
        Measurement {
            json,
            fields: Value::Object(fields),
            full: OnceCell::new(),
        }
    }

    /// The whole measurement as a JSON tree, parsed on first use.
    pub fn value(&self) -> Result<&Value, String> {
        self.full
            .get_or_init(|| serde_json::from_str(self.json).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// The envelope's own keys, and the row fields in case the body is a bare measurement.
#[derive(Default)]
struct Top<'a> {
    has_format: bool,
    format: Option<Value>,
    content: Option<&'a RawValue>,
    is_verified: Option<Value>,
    fields: Map<String, Value>,
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
        let mut top = Top::default();
        // Python dicts keep the last of duplicate keys; so does every branch here.
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "format" => {
                    top.has_format = true;
                    top.format = Some(map.next_value()?);
                }
                "content" => top.content = Some(map.next_value()?),
                "is_verified" => top.is_verified = Some(map.next_value()?),
                k if ROW_FIELDS.contains(&k) => {
                    top.fields.insert(key.into_owned(), map.next_value()?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(top)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Map<String, Value>, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if ROW_FIELDS.contains(&key.as_ref()) {
                fields.insert(key.into_owned(), map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(fields)
    }
}

/// What an upload holds: the envelope's `is_verified` and the measurement.
pub struct Upload<'a> {
    pub is_verified: Option<Value>,
    pub measurement: Measurement<'a>,
}

/// Parses a post envelope (`{"format":"json","content":{…}}`) or a bare measurement.
/// Errors say why OONI's fastpath would fail on it.
pub fn parse_upload(body: &[u8]) -> Result<Upload<'_>, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("invalid UTF-8: {e}"))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let top = de
        .deserialize_map(TopVisitor)
        .map_err(|e| format!("invalid JSON: {e}"))?;
    de.end().map_err(|e| format!("invalid JSON: {e}"))?;
    match (top.has_format, top.content) {
        (true, Some(content)) => {
            match &top.format {
                Some(Value::String(f)) if f.eq_ignore_ascii_case("json") => {}
                Some(Value::String(f)) if f.eq_ignore_ascii_case("yaml") => {
                    return Err("YAML measurements are not supported".to_owned())
                }
                other => {
                    return Err(format!(
                        "unsupported format {}",
                        other.as_ref().unwrap_or(&Value::Null)
                    ))
                }
            }
            let json = content.get();
            let fields = serde_json::Deserializer::from_str(json)
                .deserialize_map(FieldsVisitor)
                .map_err(|e| format!("the measurement is not a JSON object: {e}"))?;
            Ok(Upload {
                is_verified: top.is_verified,
                measurement: Measurement::new(json, fields),
            })
        }
        _ => Ok(Upload {
            is_verified: top.is_verified,
            measurement: Measurement::new(text, top.fields),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_fields_and_raw_content() {
        let body = br#"{"format":"json","content":{"test_name":"ndt","test_keys":{"big":[1,2,3]},"report_id":null},"is_verified":"t"}"#;
        let u = parse_upload(body).unwrap();
        assert_eq!(u.is_verified, Some(json!("t")));
        let m = &u.measurement;
        assert_eq!(m.fields.get("test_name"), Some(&json!("ndt")));
        assert_eq!(m.fields.get("report_id"), Some(&Value::Null));
        assert!(m.fields.get("test_keys").is_none());
        assert!(m.json.starts_with("{\"test_name\""));
        assert_eq!(m.value().unwrap()["test_keys"]["big"][2], json!(3));
    }

    #[test]
    fn bare_measurements_and_duplicate_keys() {
        let u = parse_upload(br#"{"test_name":"a","test_name":"b","x":{}}"#).unwrap();
        assert_eq!(u.measurement.fields["test_name"], json!("b"));
        assert_eq!(u.is_verified, None);
    }

    #[test]
    fn errors() {
        assert!(parse_upload(b"[1]").is_err());
        assert!(parse_upload(b"{} x").is_err());
        assert!(parse_upload(br#"{"format":"json","content":"x"}"#).is_err());
        assert!(parse_upload(br#"{"format":"yaml","content":"x"}"#)
            .err()
            .unwrap()
            .contains("YAML"));
        assert!(parse_upload(br#"{"format":5,"content":{}}"#).is_err());
    }
}
