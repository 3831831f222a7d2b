//! Reading an uploaded body without building the whole JSON tree: the row needs a
//! dozen top-level fields, while `test_keys` (most of the bytes) is only for scorers,
//! which get the raw text (cut down to what they declare they read, see
//! `ooni_scorer_sdk::projection`) and parse it themselves if they need it.

use crate::scores::CutPlan;
use ooni_scorer_sdk::jsonscan::{key_text, Cursor, Result as ScanResult, ScanError};
use ooni_scorer_sdk::projection::{ObjectCut, Reads};
use serde_json::{Map, Value};
use std::borrow::Cow;
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

/// A measurement's row fields, each in its `ROW_FIELDS` place: a fixed table, as
/// hashing a dozen keys into a map cost more than reading their values. Like a Python
/// dict, a key given twice keeps its last value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowFields([Option<Value>; ROW_FIELDS.len()]);

impl RowFields {
    fn slot(key: &str) -> Option<usize> {
        ROW_FIELDS.iter().position(|f| *f == key)
    }

    /// The field's value as the measurement has it (a JSON null included).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0[Self::slot(key)?].as_ref()
    }

    /// `g_or(msm, key)`: a missing field and a null one alike.
    pub fn get_non_null(&self, key: &str) -> Option<&Value> {
        self.get(key).filter(|v| !v.is_null())
    }

    fn set(&mut self, slot: usize, value: Value) {
        self.0[slot] = Some(value);
    }
}

impl std::ops::Index<&str> for RowFields {
    type Output = Value;

    /// As `Value`'s index: a missing field reads as null.
    fn index(&self, key: &str) -> &Value {
        self.get(key).unwrap_or(&Value::Null)
    }
}

/// One measurement (the envelope's `content`, or a bare measurement).
pub struct Measurement<'a> {
    /// The measurement's JSON text, exactly as uploaded.
    pub json: &'a str,
    /// Its `ROW_FIELDS` that are present (a JSON null stays a null); `annotations`
    /// and `test_helpers`, when objects, hold only the keys the row reads.
    pub fields: RowFields,
    full: OnceCell<Result<Value, String>>,
    /// The cut made in the first walk, the address of the reads it was made with, and
    /// whether its bodies were matched.
    cut: Option<((usize, bool), Vec<u8>)>,
}

impl<'a> Measurement<'a> {
    pub fn new(json: &'a str, fields: RowFields) -> Self {
        Measurement {
            json,
            fields,
            full: OnceCell::new(),
            cut: None,
        }
    }

    /// The measurement cut down to `reads` (`Reads::project_with`, its bodies matched
    /// if `bodies_matched`), if the first walk made it with these very reads (alive
    /// for the whole of one `derive_row`, so the address names them).
    pub fn cut_for(&self, reads: &Reads, bodies_matched: bool) -> Option<&[u8]> {
        let (by, text) = self.cut.as_ref()?;
        (*by == (reads as *const Reads as usize, bodies_matched)).then_some(text.as_slice())
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
type Content = (std::ops::Range<usize>, Option<RowFields>);

/// What one top-level walk of an upload finds.
#[derive(Default)]
struct Top {
    has_format: bool,
    format: Option<Value>,
    content: Option<Content>,
    is_verified: Option<Value>,
    fields: RowFields,
}

/// Parses one small value (a row field) where the cursor is.
fn small_value(cur: &mut Cursor<'_>) -> ScanResult<Value> {
    let invalid = |offset| ScanError {
        what: "invalid value",
        offset,
    };
    // Most row fields are strings: read as keys are, without a deserializer for each.
    if cur.peek() == Some(b'"') {
        let start = cur.i;
        let (raw, escaped) = cur.string()?;
        return key_text(raw, escaped)
            .map(|s| Value::String(s.into_owned()))
            .ok_or(invalid(start));
    }
    let start = cur.i;
    cur.skip_trusted()?;
    serde_json::from_slice(&cur.bytes()[start..cur.i]).map_err(|_| invalid(start))
}

/// The members of the object whose `{` is next that are named in `keep`, each read
/// by `value`; every other member is crossed. Python dicts keep the last of duplicate
/// keys (in the first one's place), as `Map::insert` does.
fn pick(
    cur: &mut Cursor<'_>,
    keep: &[&str],
    mut value: impl FnMut(&str, &mut Cursor<'_>) -> ScanResult<Value>,
) -> ScanResult<Map<String, Value>> {
    let mut picked = Map::with_capacity(keep.len());
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

/// A member the walk reads (`read` parses it where the cursor is), given to `cut` too
/// when there is one: crossed once, by the cut if the cut reads it.
fn read_member(
    raw: &[u8],
    escaped: bool,
    key: &str,
    cur: &mut Cursor<'_>,
    cut: Option<&mut ObjectCut<'_, '_>>,
    read: impl FnOnce(&mut Cursor<'_>) -> ScanResult<Value>,
) -> ScanResult<Value> {
    match cut {
        Some(c) if c.reads(key) => {
            let start = cur.i;
            c.member(raw, escaped, cur)?;
            let mut value = Cursor::new(&cur.bytes()[..cur.i]);
            value.i = start;
            read(&mut value)
        }
        Some(c) => {
            c.unread_member(raw);
            read(cur)
        }
        None => read(cur),
    }
}

type FieldsAndCut = (Option<RowFields>, Option<Vec<u8>>);

/// A member the walk does not read: given to `cut` if there is one, else crossed.
fn cross_member(
    raw: &[u8],
    escaped: bool,
    cur: &mut Cursor<'_>,
    cut: Option<&mut ObjectCut<'_, '_>>,
) -> ScanResult<()> {
    match cut {
        Some(c) => c.member(raw, escaped, cur),
        None => cur.skip_trusted(),
    }
}

/// A member of a measurement object: a row field is read into `fields` (and given to
/// `cut` too), any other member crossed.
fn measurement_member(
    fields: &mut RowFields,
    raw: &[u8],
    escaped: bool,
    key: Option<&str>,
    cur: &mut Cursor<'_>,
    cut: Option<&mut ObjectCut<'_, '_>>,
) -> ScanResult<()> {
    match key.and_then(|k| Some((k, RowFields::slot(k)?))) {
        Some((k, slot)) => {
            let v = read_member(raw, escaped, k, cur, cut, |c| row_field(k, c))?;
            fields.set(slot, v);
            Ok(())
        }
        None => cross_member(raw, escaped, cur, cut),
    }
}

/// The row fields of a measurement object (`None` when the value is not an object),
/// and its cut when `cut` is given.
fn row_fields(
    cur: &mut Cursor<'_>,
    mut cut: Option<ObjectCut<'_, '_>>,
) -> ScanResult<FieldsAndCut> {
    if cur.peek() != Some(b'{') {
        cur.skip_trusted()?;
        return Ok((None, None));
    }
    let mut picked = RowFields::default();
    cur.object(|raw, escaped, cur| {
        let key = key_text(raw, escaped);
        measurement_member(&mut picked, raw, escaped, key.as_deref(), cur, cut.as_mut())
    })?;
    Ok((Some(picked), cut.map(ObjectCut::finish)))
}

/// Where the top-level `test_name` most likely is, read without a walk. Probes put it
/// after `test_keys` (most of the bytes), so it is looked for in the last few KB from
/// the end; texts that sort their keys (OONI's older pipeline, Explorer's downloads) have
/// it in the first few KB; only then is the whole text searched backwards. Only a hint
/// for which scorer's cut to make in the first walk: a wrong one costs time.
pub fn peek_test_name(body: &[u8]) -> Option<Cow<'_, str>> {
    const KEY: &[u8] = b"\"test_name\"";
    const WINDOW: usize = 4096;
    // memchr's reverse search has no SIMD: the whole tail is searched forwards for its
    // last occurrence (usually its only one) instead, which costs less.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(KEY));
    let tail = body.len().saturating_sub(WINDOW);
    let at = FINDER
        .find_iter(&body[tail..])
        .last()
        .map(|i| tail + i)
        .or_else(|| FINDER.find(&body[..WINDOW.min(body.len())]))
        .or_else(|| memchr::memmem::rfind(&body[..tail], KEY))?;
    let mut cur = Cursor::new(body);
    cur.i = at + KEY.len();
    cur.expect(b':', "").ok()?;
    if cur.peek() != Some(b'"') {
        return None;
    }
    let (raw, escaped) = cur.string().ok()?;
    key_text(raw, escaped)
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
    parse_upload_cut(body, None)
}

/// Like `parse_upload`, cutting the measurement down for `plan` in the same walk
/// (`Measurement::cut_for`), so that its bytes are crossed once. The cut names the
/// plan's reads by address: score it while they are alive (as `derive_row` does).
pub fn parse_upload_cut<'b>(
    body: &'b [u8],
    plan: Option<&CutPlan<'_>>,
) -> Result<Upload<'b>, String> {
    // A plan whose reads name a top-level `content` would need that member cut both as
    // a member and as the measurement: the scorer cuts it itself then.
    let plan = plan.filter(|p| p.reads.cuts_members_without("content"));
    let Some(plan) = plan else {
        return walk_upload(body, None);
    };
    let hook = plan.bodies.as_ref().map(|set| {
        move |kind, raw: &[u8]| ooni_scorer_sdk::matching::matched_value(kind, raw, set.as_ref())
    });
    let hook = hook
        .as_ref()
        .map(|h| h as ooni_scorer_sdk::projection::MatchHook<'_>);
    // The cut's walk is stricter than the row's in places (it checks what it reads
    // deeper); a text only the row's walk accepts is read as before.
    walk_upload(body, Some((plan.reads, hook))).or_else(|_| walk_upload(body, None))
}

fn walk_upload<'b>(
    body: &'b [u8],
    plan: Option<(&Reads, Option<ooni_scorer_sdk::projection::MatchHook<'_>>)>,
) -> Result<Upload<'b>, String> {
    let text = simdutf8::compat::from_utf8(body).map_err(|e| format!("invalid UTF-8: {e}"))?;
    let mut cur = Cursor::new(text.as_bytes());
    let mut top = Top::default();
    // The cut of the top level, for a bare measurement.
    let mut bare_cut = plan.and_then(|(reads, hook)| ObjectCut::new(reads, hook));
    let mut content_cut = None;
    if cur.peek() != Some(b'{') {
        return Err("invalid JSON: expected a JSON object".to_owned());
    }
    cur.object(|raw, escaped, cur| {
        let Some(key) = key_text(raw, escaped) else {
            return cross_member(raw, escaped, cur, bare_cut.as_mut());
        };
        let cut = bare_cut.as_mut();
        match key.as_ref() {
            "format" => {
                top.has_format = true;
                top.format = Some(read_member(raw, escaped, &key, cur, cut, small_value)?);
            }
            "content" => {
                if let Some(c) = cut {
                    c.unread_member(raw);
                }
                let start = cur.i;
                let inner = plan.and_then(|(reads, hook)| ObjectCut::new(reads, hook));
                let (fields, cut) = row_fields(cur, inner)?;
                content_cut = cut;
                top.content = Some((start..cur.i, fields));
            }
            "is_verified" => {
                top.is_verified = Some(read_member(raw, escaped, &key, cur, cut, small_value)?)
            }
            k => measurement_member(&mut top.fields, raw, escaped, Some(k), cur, cut)?,
        }
        Ok(())
    })
    .and_then(|()| cur.end())
    .map_err(|e| format!("invalid JSON: {e}"))?;
    let reads_at = plan.map(|(reads, hook)| (reads as *const Reads as usize, hook.is_some()));
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
            let mut measurement = Measurement::new(&text[range], fields);
            measurement.cut = reads_at.zip(content_cut);
            Ok(Upload {
                is_verified: top.is_verified,
                measurement,
            })
        }
        _ => {
            let mut measurement = Measurement::new(text, top.fields);
            measurement.cut = reads_at.zip(bare_cut.map(ObjectCut::finish));
            Ok(Upload {
                is_verified: top.is_verified,
                measurement,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_fields_are_unescaped_and_raw_control_characters_refused() {
        let u = parse_upload(br#"{"probe_cc":"I\u0054","input":"a\/b \"c\"","test_name":"t"}"#)
            .unwrap();
        assert_eq!(u.measurement.fields["probe_cc"], json!("IT"));
        assert_eq!(u.measurement.fields["input"], json!("a/b \"c\""));
        assert!(parse_upload(b"{\"probe_cc\":\"I\tT\"}").is_err());
        assert!(parse_upload(br#"{"probe_cc":"\ud800"}"#).is_err());
    }

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

    /// The cut made in the first walk is the one the scorer would make itself.
    #[test]
    fn the_first_walk_cuts_as_the_projection_does() {
        let reads = Reads::with_bodies(
            &[
                "probe_cc",
                "test_runtime",
                "test_keys.x",
                "test_keys.*_failure",
                "annotations.platform",
            ],
            &["test_keys.requests.response.body"],
        )
        .unwrap();
        let hook = |_, raw: &[u8]| (raw.first() == Some(&b'"')).then(|| "\"matched\"".to_owned());
        let msms = [
            r#"{"probe_cc":"IT","test_keys":{"x":[1,{"a":2}],"y":"big","dns_failure":null,
                "requests":[{"response":{"body":"<html>","code":200}}]},"test_name":"t",
                "annotations":{"platform":"linux","other":1},"test_runtime":1.5}"#,
            r#"{"test_name":"a","test_name":"b","te\u0073t_keys":{"x":1},"probe_cc":null}"#,
            r#"{"report_id":"r","test_keys":[1,2],"input":["a"]}"#,
            r#"{}"#,
        ];
        let plan = CutPlan {
            reads: &reads,
            bodies: None,
        };
        for m in msms {
            // Bare, and in an envelope (fields before and after `content`).
            let envelope = format!(r#"{{"format":"json","content":{m},"is_verified":"t"}}"#);
            for body in [m.to_owned(), envelope] {
                let cut = walk_upload(body.as_bytes(), Some((&reads, Some(&hook)))).unwrap();
                let plain = parse_upload(body.as_bytes()).unwrap();
                let m = &cut.measurement;
                assert_eq!(m.fields, plain.measurement.fields, "{body}");
                assert_eq!(cut.is_verified, plain.is_verified);
                let want = reads.project_with(m.json.as_bytes(), Some(&hook)).unwrap();
                assert_eq!(m.cut_for(&reads, true), Some(want.as_slice()), "{body}");
                // Other reads than the walk's, or bodies not matched, get no cut.
                assert_eq!(m.cut_for(&Reads::new(&["x"]).unwrap(), true), None);
                assert_eq!(m.cut_for(&reads, false), None);
                let m = parse_upload_cut(body.as_bytes(), Some(&plan))
                    .unwrap()
                    .measurement;
                let want = reads.project(m.json.as_bytes()).unwrap();
                assert_eq!(m.cut_for(&reads, false), Some(want.as_slice()), "{body}");
            }
        }
        // Reads naming a top-level `content`, or the whole measurement: no cut.
        for paths in [&["content.x"][..], &["*"][..]] {
            let reads = Reads::new(paths).unwrap();
            let plan = CutPlan {
                reads: &reads,
                bodies: None,
            };
            let body = br#"{"format":"json","content":{"content":1,"test_name":"t"}}"#;
            let m = parse_upload_cut(body, Some(&plan)).unwrap().measurement;
            assert_eq!(m.cut_for(&reads, false), None);
            assert_eq!(m.fields["test_name"], json!("t"));
        }
    }

    #[test]
    fn the_test_name_hint_is_read_from_the_end() {
        assert_eq!(
            peek_test_name(
                br#"{"test_keys":{"test_name":"inner"},"test_name" : "web_connectivity"}"#
            )
            .as_deref(),
            Some("web_connectivity")
        );
        assert_eq!(
            peek_test_name(br#"{"test_name":"t\u0063p","x":"\"test_name\":1"}"#).as_deref(),
            Some("tcp")
        );
        // Keys in sorted order: the name is near the start, a nested one in the middle.
        let pad = "x".repeat(5000);
        let sorted = format!(
            r#"{{"test_name":"tor","test_keys":{{"a":"{pad}","test_name":"inner"}},"z":"{pad}"}}"#
        );
        assert_eq!(peek_test_name(sorted.as_bytes()).as_deref(), Some("tor"));
        // Neither window holds it: the whole text is searched from the end.
        let middle = format!(r#"{{"a":"{pad}","test_name":"dash","z":"{pad}"}}"#);
        assert_eq!(peek_test_name(middle.as_bytes()).as_deref(), Some("dash"));
        assert_eq!(peek_test_name(br#"{"test_name":5}"#), None);
        assert_eq!(peek_test_name(br#"{"x":1}"#), None);
        assert_eq!(peek_test_name(br#"{"test_name""#), None);
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
