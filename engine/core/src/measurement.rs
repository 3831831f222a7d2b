//! Reading an uploaded body without building the whole JSON tree: the row needs a
//! dozen top-level fields, while `test_keys` (most of the bytes) is only for scorers,
//! which get the raw text (cut down to what they declare they read, see
//! `ooni_scorer_sdk::projection`) and parse it themselves if they need it.

use ooni_scorer_sdk::jsonscan::{key_text, Cursor, Result as ScanResult, ScanError};
use serde_json::{Map, Value};
use std::cell::OnceCell;

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

/// The keys of `annotations` and of `test_helpers` that the row reads: the rest of
/// those objects is crossed, not parsed.
const ANNOTATION_FIELDS: [&str; 5] = [
    "platform",
    "architecture",
    "engine_name",
    "engine_version",
    "ooni_run_link_id",
];
const TEST_HELPER_FIELDS: [&str; 1] = ["backend"];

/// One measurement (the envelope's `content`, or a bare measurement).
pub struct Measurement<'a> {
    /// The measurement's JSON text, exactly as uploaded.
    pub json: &'a str,
    /// Its `ROW_FIELDS` that are present, as a JSON object (a JSON null stays a null);
    /// `annotations` and `test_helpers`, when objects, hold only the keys the row reads.
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

/// The byte range of `content`, and its row fields (`None`: not an object).
type Content = (std::ops::Range<usize>, Option<Map<String, Value>>);

/// What one top-level walk of an upload finds.
#[derive(Default)]
struct Top {
    has_format: bool,
    format: Option<Value>,
    content: Option<Content>,
    is_verified: Option<Value>,
    fields: Map<String, Value>,
}

/// Parses one small value (a row field) where the cursor is.
fn small_value(cur: &mut Cursor<'_>) -> ScanResult<Value> {
    let start = cur.i;
    cur.skip_trusted()?;
    serde_json::from_slice(&cur.bytes()[start..cur.i]).map_err(|_| ScanError {
        what: "invalid value",
        offset: start,
    })
}

/// The members of the object whose `{` is next that are named in `keep`, each read
/// by `value`; every other member is crossed. Python dicts keep the last of duplicate
/// keys (in the first one's place), as `Map::insert` does.
fn pick(
    cur: &mut Cursor<'_>,
    keep: &[&str],
    mut value: impl FnMut(&str, &mut Cursor<'_>) -> ScanResult<Value>,
) -> ScanResult<Map<String, Value>> {
    let mut picked = Map::new();
    cur.object(|raw, escaped, cur| match key_text(raw, escaped) {
        Some(k) if keep.contains(&k.as_ref()) => {
            let v = value(&k, cur)?;
            picked.insert(k.into_owned(), v);
            Ok(())
        }
        _ => cur.skip_trusted(),
    })?;
    Ok(picked)
}

/// A row field; of an object that the row reads only some keys of, just those keys.
fn row_field(key: &str, cur: &mut Cursor<'_>) -> ScanResult<Value> {
    let keep: &[&str] = match key {
        "annotations" => &ANNOTATION_FIELDS,
        "test_helpers" => &TEST_HELPER_FIELDS,
        _ => return small_value(cur),
    };
    if cur.peek() != Some(b'{') {
        return small_value(cur);
    }
    pick(cur, keep, |_, cur| small_value(cur)).map(Value::Object)
}

/// The row fields of a measurement object; `None` when the value is not an object.
fn row_fields(cur: &mut Cursor<'_>) -> ScanResult<Option<Map<String, Value>>> {
    if cur.peek() != Some(b'{') {
        cur.skip_trusted()?;
        return Ok(None);
    }
    pick(cur, &ROW_FIELDS, row_field).map(Some)
}

/// What an upload holds: the envelope's `is_verified` and the measurement.
pub struct Upload<'a> {
    pub is_verified: Option<Value>,
    pub measurement: Measurement<'a>,
}

/// Parses a post envelope (`{"format":"json","content":{…}}`) or a bare measurement.
/// Errors say why OONI's fastpath would fail on it.
///
/// One walk of the text: the top level and the content's top level are read key by
/// key, and every value the row does not need (`test_keys`, most of the bytes) is
/// crossed without being parsed. The text is trusted to be valid JSON, as every
/// accepted upload was checked whole before it was acknowledged; callers with other
/// texts check them first (`ooni_scorer_sdk::jsonscan::validate`).
pub fn parse_upload(body: &[u8]) -> Result<Upload<'_>, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("invalid UTF-8: {e}"))?;
    let mut cur = Cursor::new(text.as_bytes());
    let mut top = Top::default();
    if cur.peek() != Some(b'{') {
        return Err("invalid JSON: expected a JSON object".to_owned());
    }
    cur.object(|raw, escaped, cur| {
        let Some(key) = key_text(raw, escaped) else {
            return cur.skip_trusted();
        };
        match key.as_ref() {
            "format" => {
                top.has_format = true;
                top.format = Some(small_value(cur)?);
            }
            "content" => {
                let start = cur.i;
                let fields = row_fields(cur)?;
                top.content = Some((start..cur.i, fields));
            }
            "is_verified" => top.is_verified = Some(small_value(cur)?),
            k if ROW_FIELDS.contains(&k) => {
                let v = row_field(k, cur)?;
                top.fields.insert(key.into_owned(), v);
            }
            _ => cur.skip_trusted()?,
        }
        Ok(())
    })
    .and_then(|()| cur.end())
    .map_err(|e| format!("invalid JSON: {e}"))?;
    match (top.has_format, top.content) {
        (true, Some((range, fields))) => {
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
            let fields = fields.ok_or("the measurement is not a JSON object")?;
            Ok(Upload {
                is_verified: top.is_verified,
                measurement: Measurement::new(&text[range], fields),
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
    fn annotations_and_test_helpers_keep_the_keys_the_row_reads() {
        let body = br#"{"annotations":{"platform":"linux","x":{"big":[1]},"platform":"android",
            "ooni_run_link_id":"7"},"test_helpers":{"backend":{"address":"a","type":"b"},
            "dns":"1.1.1.1"},"input":["a","b"]}"#;
        let m = parse_upload(body).unwrap().measurement;
        assert_eq!(
            m.fields["annotations"],
            json!({"platform": "android", "ooni_run_link_id": "7"})
        );
        assert_eq!(
            m.fields["test_helpers"],
            json!({"backend": {"address": "a", "type": "b"}})
        );
        assert_eq!(m.fields["input"], json!(["a", "b"]));
        let m = parse_upload(br#"{"annotations":"not a dict","test_helpers":null}"#)
            .unwrap()
            .measurement;
        assert_eq!(m.fields["annotations"], json!("not a dict"));
        assert_eq!(m.fields["test_helpers"], Value::Null);
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
