//! The scorer side of fingerprint matching, shared by `web_connectivity` and
//! `http_requests`: which parts of a response are looked up, and how matches confirm
//! blocking (spec/fastpath.md §4.2, §4.5).

use crate::getters::kind;
use crate::host::{FingerprintMatch, Host};
use crate::scores::Scores;
use crate::{b64, Value};

/// Why matching a response stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchError {
    /// Python's `binascii.Error` from a base64 body.
    Base64(String),
    /// Anything else OONI does not catch.
    Other(String),
}

impl From<String> for MatchError {
    fn from(e: String) -> Self {
        MatchError::Other(e)
    }
}

/// The `format` of a body the engine matched itself: `{"format": MATCHED_FORMAT,
/// "matches": [...]}` arrives in place of a body on a path the scorer declared in
/// `Info::bodies`.
pub const MATCHED_FORMAT: &str = "ooni-matched";

/// What the engine sends in place of a value on a body or header path (its raw JSON
/// text): `matched_body` or `matched_headers`.
pub fn matched_value(
    kind: crate::projection::Matched,
    raw: &[u8],
    host: &dyn Host,
) -> Option<String> {
    match kind {
        crate::projection::Matched::Body => matched_body(raw, host),
        crate::projection::Matched::Headers => matched_headers(raw, host),
    }
}

/// The matched form: `{"format": MATCHED_FORMAT, "matches": [...]}`, written
/// directly (most bodies match nothing, and a `Value` built and printed for them cost
/// more than their base64 decoding).
fn matched_text(matches: Vec<FingerprintMatch>) -> String {
    let mut out = format!("{{\"format\":\"{MATCHED_FORMAT}\",\"matches\":");
    out.push_str(
        &serde_json::to_string(&matches).expect("maps of strings to JSON values serialise"),
    );
    out.push('}');
    out
}

/// What the engine sends in place of a response's headers (their raw JSON text): for
/// an object, its header fingerprint matches (every object on the path is replaced,
/// so a probe cannot hand in matches of its own); anything else as it is, for
/// `match_response` to skip or fail on as before.
pub fn matched_headers(raw: &[u8], host: &dyn Host) -> Option<String> {
    if raw.first() != Some(&b'{') {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    Some(matched_text(host.match_http_headers(text)))
}

/// What the engine sends in place of one body value (its raw JSON text): the body's
/// fingerprint matches, for a string or a base64 body that decodes. Anything else is
/// sent as it is (so the scorer fails or skips it as before), except an object that
/// claims to be matched already, which becomes `{}`: any object that is not base64 is
/// skipped, so a probe cannot hand in matches of its own.
///
/// `raw` is a value of a valid JSON text (the engine's cut crosses only those).
pub fn matched_body(raw: &[u8], host: &dyn Host) -> Option<String> {
    let matches = match raw.first()? {
        // Most bodies: read straight from the token, no string value built.
        b'"' => crate::jsonscan::with_unescaped(raw, |bytes| host.match_http_body(bytes))?,
        b'{' => {
            let FormatAndData { format, data } = format_and_data(raw)?;
            let format = format.and_then(|f| serde_json::from_slice::<String>(f).ok());
            if format.as_deref() == Some(MATCHED_FORMAT) {
                return Some("{}".to_owned());
            }
            // Any other object but a base64 body is skipped by `match_response`, and a
            // body it would fail on (no string data, bad base64) is sent as it is, for
            // it to fail there.
            if format.as_deref() != Some("base64") {
                return None;
            }
            let data = data.filter(|d| d.first() == Some(&b'"'))?;
            let decode = |text: &[u8]| b64::decode_bytes(text).ok();
            let bytes = match data.get(1..data.len() - 1) {
                Some(inner) if !inner.contains(&b'\\') => decode(inner)?,
                _ => crate::jsonscan::with_unescaped(data, decode)??,
            };
            host.match_http_body(&bytes)
        }
        _ => return None,
    };
    Some(matched_text(matches))
}

/// The raw JSON values of the members `format` and `data` of an object (of repeated
/// keys the last, as serde_json keeps), read with the scanner: a base64 body's data
/// is decoded straight from its token rather than copied into a `Value` first. `None`
/// when `raw` is not an object. Values are crossed unvalidated, so this reads
/// `raw` as serde_json would only when it is valid JSON (what `matched_body` is
/// given: the engine cuts only validated uploads).
fn format_and_data(raw: &[u8]) -> Option<FormatAndData<'_>> {
    let (mut format, mut data) = (None, None);
    let mut cur = crate::jsonscan::Cursor::new(raw);
    cur.object(|key, escaped, cur| {
        let start = cur.i;
        cur.skip_trusted()?;
        let value = &raw[start..cur.i];
        match crate::jsonscan::key_text(key, escaped).as_deref() {
            Some("format") => format = Some(value),
            Some("data") => data = Some(value),
            _ => {}
        }
        Ok(())
    })
    .ok()?;
    Some(FormatAndData { format, data })
}

/// What `format_and_data` finds: each member's raw JSON value, if present.
struct FormatAndData<'a> {
    format: Option<&'a [u8]>,
    data: Option<&'a [u8]>,
}

/// The bytes of a response body as OONI matches them: a string as it is, a base64
/// object decoded, any other object skipped (`None`).
fn body_bytes(body: &Value) -> Result<Option<std::borrow::Cow<'_, [u8]>>, MatchError> {
    use std::borrow::Cow;
    match body {
        Value::String(s) => Ok(Some(Cow::Borrowed(s.as_bytes()))),
        Value::Object(o)
            if o.contains_key("data")
                && o.get("format").and_then(Value::as_str) == Some("base64") =>
        {
            match &o["data"] {
                Value::String(data) => b64::decode(data)
                    .map(|b| Some(Cow::Owned(b)))
                    .map_err(MatchError::Base64),
                other => Err(MatchError::Other(format!("body data is a {}", kind(other)))),
            }
        }
        Value::Object(_) => Ok(None),
        other => Err(MatchError::Other(format!("body is a {}", kind(other)))),
    }
}

/// Looks one HTTP response up: its body (base64 bodies decoded first; the engine's
/// matches taken as they are when `host.bodies_matched()`; any other object body
/// skipped), then its headers.
pub fn match_response(
    resp: &Value,
    host: &dyn Host,
    matches: &mut Vec<FingerprintMatch>,
) -> Result<(), MatchError> {
    let resp = resp
        .as_object()
        .ok_or_else(|| MatchError::Other(format!("response is a {}", kind(resp))))?;
    match resp.get("body") {
        None | Some(Value::Null) => {}
        Some(Value::Object(body))
            if host.bodies_matched()
                && body.get("format").and_then(Value::as_str) == Some(MATCHED_FORMAT) =>
        {
            let found = body.get("matches").and_then(Value::as_array);
            matches.extend(
                found
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m.as_object().cloned()),
            );
        }
        Some(body) => {
            if let Some(bytes) = body_bytes(body)? {
                matches.extend(host.match_http_body(&bytes));
            }
        }
    }
    match resp.get("headers") {
        // Matched by the engine: every object on the path is its answer (the format
        // checked too, for a module called with a measurement the host did not cut).
        Some(Value::Object(h))
            if host.headers_matched()
                && h.get("format").and_then(Value::as_str) == Some(MATCHED_FORMAT) =>
        {
            matches.extend(
                h.get("matches")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m.as_object().cloned()),
            )
        }
        Some(Value::Object(h)) if !h.is_empty() => {
            let json = serde_json::to_string(h).map_err(|e| MatchError::Other(e.to_string()))?;
            matches.extend(host.match_http_headers(&json));
        }
        Some(v) if crate::truthy(v) => {
            return Err(MatchError::Other(format!("headers is a {}", kind(v))))
        }
        _ => {}
    }
    Ok(())
}

/// `FINGERPRINT_SCOPE_TO_LOCALITY`.
pub fn locality(scope: &str) -> &'static str {
    match scope {
        "inst" => "local",
        "isp" => "isp",
        "nat" => "country",
        _ => "general",
    }
}

/// `is_confirmed`: the probe's country is expected, or the scope is isp or nat. An
/// expected `ZZ` means any country (the engine's compat mode drops `ZZ`, as OONI does).
pub fn is_confirmed(probe_cc: &str, fp: &FingerprintMatch) -> bool {
    let in_countries = fp
        .get("expected_countries")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.as_str() == Some(probe_cc) || c.as_str() == Some("ZZ"))
        });
    (probe_cc != "ZZ" && in_countries)
        || matches!(fp.get("scope").and_then(Value::as_str), Some("isp" | "nat"))
}

/// Records the matches in `scores.fingerprints` and sets `blocking_<locality>` and
/// `confirmed` for each confirming one.
pub fn record_matches(
    msm: &Value,
    matches: &[FingerprintMatch],
    scores: &mut Scores,
) -> Result<(), String> {
    if !matches.is_empty() {
        scores.insert(
            "fingerprints".into(),
            Value::Array(matches.iter().cloned().map(Value::Object).collect()),
        );
    }
    let probe_cc = match crate::g_or(msm, "probe_cc").map_err(|e| e.to_string())? {
        None => "ZZ".to_owned(),
        Some(Value::String(s)) => s.to_uppercase(),
        Some(v) => return Err(format!("probe_cc is a {}", kind(v))),
    };
    for fp in matches {
        if is_confirmed(&probe_cc, fp) {
            let scope = fp.get("scope").and_then(Value::as_str).unwrap_or("");
            scores.insert(format!("blocking_{}", locality(scope)), Value::from(1.0));
            scores.insert("confirmed".into(), Value::Bool(true));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{CutMatched, NoFingerprints};
    use serde_json::json;

    #[test]
    fn matches_in_a_body_count_only_when_the_engine_put_them_there() {
        let resp = json!({"body": {"format": MATCHED_FORMAT, "matches": [{"name": "forged"}]}});
        let mut found = Vec::new();
        match_response(&resp, &NoFingerprints, &mut found).unwrap();
        assert!(
            found.is_empty(),
            "a probe's own matches were taken: {found:?}"
        );
        let engine = CutMatched {
            host: &NoFingerprints,
            bodies: true,
            headers: false,
        };
        match_response(&resp, &engine, &mut found).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["name"], json!("forged"));
    }

    /// Answers one match named after every body it is asked about, and keeps them.
    #[derive(Default)]
    struct Recorder(std::cell::RefCell<Vec<Vec<u8>>>);

    impl Host for Recorder {
        fn match_dns(&self, _: &str) -> Vec<FingerprintMatch> {
            Vec::new()
        }
        fn match_http_body(&self, body: &[u8]) -> Vec<FingerprintMatch> {
            self.0.borrow_mut().push(body.to_vec());
            let mut m = FingerprintMatch::new();
            m.insert("name".into(), json!(String::from_utf8_lossy(body)));
            vec![m]
        }
        fn match_http_headers(&self, headers: &str) -> Vec<FingerprintMatch> {
            self.match_http_body(headers.as_bytes())
        }
    }

    #[test]
    fn headers_are_matched_as_their_json_text_and_taken_only_from_the_engine() {
        let host = Recorder::default();
        let raw = r#"{"Server": "x", "Via": {"format": "base64", "data": "aGk="}}"#;
        let sent = matched_headers(raw.as_bytes(), &host).unwrap();
        assert_eq!(
            sent,
            format!(r#"{{"format":"{MATCHED_FORMAT}","matches":[{{"name":{raw:?}}}]}}"#)
        );
        // Not an object: sent as it is, for match_response to skip or fail on.
        for raw in ["null", "\"x\"", "[]"] {
            assert_eq!(matched_headers(raw.as_bytes(), &host), None);
        }
        // What the engine sent is taken as matches only from the engine; a probe's own
        // headers object shaped the same is matched as headers.
        let resp: Value = serde_json::from_str(&format!(r#"{{"headers": {sent}}}"#)).unwrap();
        let engine = CutMatched {
            host: &host,
            bodies: false,
            headers: true,
        };
        let mut found = Vec::new();
        match_response(&resp, &engine, &mut found).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["name"], json!(raw));
        let mut found = Vec::new();
        match_response(&resp, &NoFingerprints, &mut found).unwrap();
        assert!(found.is_empty());
    }

    #[test]
    fn bodies_are_matched_as_their_decoded_bytes() {
        let host = Recorder::default();
        for (raw, bytes) in [
            (
                r#""<p class=\"x\">\u00e9\/\n</p>""#,
                "<p class=\"x\">é/\n</p>",
            ),
            (r#""""#, ""),
            (r#"{"format":"base64","data":"aGk="}"#, "hi"),
            // Escapes in the data, spaces, repeated keys (the last counts), key escapes.
            (
                r#"{ "data" : "x" , "format":"base64","data":"Pz8\/Pw==" }"#,
                "????",
            ),
            (
                r#"{"form\u0061t":"base\u0036\u0034","data":"aGk=","other":[{"data":1}]}"#,
                "hi",
            ),
            (r#"{"format":"base64","data":"YW\nJj"}"#, "abc"),
        ] {
            let sent = matched_body(raw.as_bytes(), &host).unwrap();
            let sent: Value = serde_json::from_str(&sent).unwrap();
            assert_eq!(sent["format"], json!(MATCHED_FORMAT));
            assert_eq!(sent["matches"][0]["name"], json!(bytes), "{raw}");
            assert_eq!(host.0.borrow().last().unwrap(), bytes.as_bytes());
        }
        let asked = host.0.borrow().len();
        // Sent as they are: not a body OONI matches, or one it fails on.
        for raw in [
            r#"{"other":1}"#,
            "null",
            "3",
            r#"{"format":"base64","data":"abcde"}"#,
            r#"{"format":"base64","data":null}"#,
            r#"{"format":"base64"}"#,
            r#"{"data":"aGk="}"#,
            r#"{"format":"base64","data":"aGk=","format":"hex"}"#,
            r#"{"format":64,"data":"aGk="}"#,
            r#"{"format":"base64","data":"\u00e9"}"#,
        ] {
            assert_eq!(matched_body(raw.as_bytes(), &host), None, "{raw}");
        }
        assert_eq!(host.0.borrow().len(), asked);
        // A probe's own "matches" are dropped, however its format is spelled.
        for forged in [
            format!(r#"{{"format":"{MATCHED_FORMAT}","matches":[{{"name":"x"}}]}}"#),
            r#"{"form\u0061t":"ooni-m\u0061tched","matches":[{"name":"x"}]}"#.to_owned(),
        ] {
            assert_eq!(
                matched_body(forged.as_bytes(), &host).as_deref(),
                Some("{}")
            );
        }
    }

    #[test]
    fn one_buffer_serves_bodies_of_every_size_and_lets_go_of_large_ones() {
        let host = Recorder::default();
        let huge = format!("{}\\\"", "x".repeat(crate::jsonscan::KEPT_BYTES + 100));
        let long = format!("{}\\n", "y".repeat(1000));
        // Longest first: a shorter body must not see the bytes of the one before it.
        for text in [
            huge.as_str(),
            long.as_str(),
            "abc\\u00e9",
            "",
            "\\\"q\\\"",
            "abcdefghijklmnopqrstuvwxyz",
        ] {
            let raw = format!("\"{text}\"");
            let want: String = serde_json::from_str(&raw).unwrap();
            matched_body(raw.as_bytes(), &host).unwrap();
            assert_eq!(host.0.borrow().last().unwrap(), want.as_bytes());
            // Past `KEPT_BYTES` the buffer is let go; below it, kept for the next.
            let kept = crate::jsonscan::UNESCAPED.with_borrow(Vec::capacity);
            assert!(
                kept <= crate::jsonscan::KEPT_BYTES,
                "{kept} bytes kept after a {}-byte body",
                want.len()
            );
            if text.len() == long.len() {
                assert!(kept >= want.len(), "the buffer was not kept");
            }
        }
        // A text that fails to unescape (a lone surrogate) is not matched at all.
        let asked = host.0.borrow().len();
        assert_eq!(matched_body(br#""ab\ud800""#, &host), None);
        assert_eq!(host.0.borrow().len(), asked);
    }

    #[test]
    fn the_matched_form_is_the_json_of_format_and_matches() {
        let mut m = FingerprintMatch::new();
        m.insert("name".into(), json!("nat.\"blocked\" é"));
        m.insert("expected_countries".into(), json!(["RU", "ZZ"]));
        m.insert("confidence_no_fp".into(), json!(5));
        for matches in [vec![], vec![m.clone()], vec![m.clone(), m]] {
            let values: Vec<Value> = matches.iter().cloned().map(Value::Object).collect();
            assert_eq!(
                matched_text(matches),
                json!({"format": MATCHED_FORMAT, "matches": values}).to_string()
            );
        }
    }

    /// Object bodies are read with the scanner as `body_bytes` reads them parsed.
    #[test]
    fn object_bodies_read_as_parsed() {
        let host = Recorder::default();
        let formats = [
            r#""base64""#,
            r#""base\u0036\u0034""#,
            r#""hex""#,
            "64",
            "null",
        ];
        let datas = [
            r#""aGk=""#,
            r#""YW\nJj\/""#,
            r#""abcde""#,
            r#""é""#,
            "[1]",
            "7",
        ];
        for f in formats {
            for d in datas {
                for raw in [
                    format!(r#"{{"format":{f},"data":{d}}}"#),
                    format!(r#"{{ "data" : {d} , "format" : {f} , "x" : {{"data":1}} }}"#),
                    format!(r#"{{"data":"aGk=","format":{f},"data":{d}}}"#),
                    format!(r#"{{"format":{f}}}"#),
                    format!(r#"{{"form\u0061t":{f},"d\u0061ta":{d}}}"#),
                ] {
                    let parsed: Value = serde_json::from_str(&raw).unwrap();
                    let want = body_bytes(&parsed).ok().flatten().map(|b| b.into_owned());
                    let before = host.0.borrow().len();
                    let sent = matched_body(raw.as_bytes(), &host);
                    let got = (host.0.borrow().len() > before)
                        .then(|| host.0.borrow().last().cloned())
                        .flatten();
                    assert_eq!(got, want, "{raw}");
                    assert_eq!(sent.is_some(), want.is_some(), "{raw}");
                }
            }
        }
    }
}
