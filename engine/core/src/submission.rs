//! Checks on `POST /report/{report_id}` bodies, as OONI's newer probe service makes
//! them (spec/api.md §1.11): decompression, the envelope, report_id/body consistency
//! and the metadata rules. Nothing here touches the disk.

use crate::ids::ReportId;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use std::io::Read;
use thiserror::Error;

/// Why an upload is refused. Each maps to one HTTP status and a stable `reason`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Rejection {
    #[error("body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    #[error("decompressed body exceeds the limit of {0} bytes")]
    DecompressedTooLarge(usize),
    #[error("unsupported Content-Encoding {0:?}: send identity or zstd")]
    UnsupportedEncoding(String),
    #[error("zstd decompression failed: {0}")]
    BadZstd(String),
    #[error("empty body")]
    Empty,
    #[error("body is not valid UTF-8 (byte {0})")]
    NotUtf8(usize),
    #[error("body is not valid JSON: {0}")]
    BadJson(String),
    #[error("`format` must be \"json\", got {0}")]
    BadFormat(String),
    #[error("`content` must be a JSON object holding the measurement")]
    NoContent,
    #[error("measurement field `{0}` must be a string")]
    MissingField(&'static str),
    #[error("{0}")]
    Inconsistent(String),
    #[error("{0}")]
    BadMetadata(String),
    #[error("probe_asn AS0 is not accepted")]
    Asn0,
    #[error("probe_cc ZZ is not accepted")]
    CcZz,
}

impl Rejection {
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::TooLarge(_) => "body_too_large",
            Rejection::DecompressedTooLarge(_) => "decompressed_too_large",
            Rejection::UnsupportedEncoding(_) => "unsupported_encoding",
            Rejection::BadZstd(_) => "zstd_fail",
            Rejection::Empty => "empty_body",
            Rejection::NotUtf8(_) => "not_utf8",
            Rejection::BadJson(_) => "bad_json",
            Rejection::BadFormat(_) => "bad_format",
            Rejection::NoContent => "no_content",
            Rejection::MissingField(_) => "missing_metadata",
            Rejection::Inconsistent(_) => "inconsistent_measurement",
            Rejection::BadMetadata(_) => "bad_metadata",
            Rejection::Asn0 => "asn_0",
            Rejection::CcZz => "cc_zz",
        }
    }

    /// OONI's short message for the same case (`Incorrect format`, …).
    pub fn ooni_message(&self) -> &'static str {
        match self {
            Rejection::TooLarge(_) | Rejection::DecompressedTooLarge(_) => "Request too large",
            Rejection::UnsupportedEncoding(_) => "Unsupported encoding",
            Rejection::Inconsistent(_) => "Inconsistent measurement",
            Rejection::BadMetadata(_) | Rejection::Asn0 | Rejection::CcZz => "bad_metadata",
            _ => "Incorrect format",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Rejection::TooLarge(_) | Rejection::DecompressedTooLarge(_) => 413,
            Rejection::UnsupportedEncoding(_) => 415,
            _ => 400,
        }
    }
}

/// Decodes the body per its `Content-Encoding`, never inflating past `max`. An
/// identity body is passed through without a copy.
pub fn decode_body(encoding: Option<&str>, body: Bytes, max: usize) -> Result<Bytes, Rejection> {
    match encoding.map(str::trim) {
        None | Some("") | Some("identity") => Ok(body),
        Some(e) if e.eq_ignore_ascii_case("zstd") => {
            let decoder = zstd::stream::read::Decoder::new(&body[..])
                .map_err(|e| Rejection::BadZstd(e.to_string()))?;
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max));
            decoder
                .take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Rejection::BadZstd(e.to_string()))?;
            if out.len() > max {
                return Err(Rejection::DecompressedTooLarge(max));
            }
            Ok(out.into())
        }
        Some(other) => Err(Rejection::UnsupportedEncoding(other.to_owned())),
    }
}

/// The envelope, read in one pass: `content` yields only the three fields the checks
/// need and skips the rest (test keys, bodies) without building anything.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Default)]
struct ContentMeta {
    test_name: Option<Value>,
    probe_cc: Option<Value>,
    probe_asn: Option<Value>,
}

/// A key of `content`, compared without copying it.
enum Key {
    TestName,
    ProbeCc,
    ProbeAsn,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, k: &str) -> Result<Key, E> {
                Ok(match k {
                    "test_name" => Key::TestName,
                    "probe_cc" => Key::ProbeCc,
                    "probe_asn" => Key::ProbeAsn,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(Visit)
    }
}

/// `content`'s metadata when it is an object; anything else is no measurement.
enum Content {
    Object(Box<ContentMeta>),
    NotObject,
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Content, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Content;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a measurement")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Content, A::Error> {
                let mut meta = ContentMeta::default();
                while let Some(key) = map.next_key::<Key>()? {
                    let (slot, name) = match key {
                        Key::TestName => (&mut meta.test_name, "test_name"),
                        Key::ProbeCc => (&mut meta.probe_cc, "probe_cc"),
                        Key::ProbeAsn => (&mut meta.probe_asn, "probe_asn"),
                        Key::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    if slot.is_some() {
                        return Err(serde::de::Error::duplicate_field(name));
                    }
                    *slot = Some(map.next_value()?);
                }
                Ok(Content::Object(Box::new(meta)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Content, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Content::NotObject)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Content, E> {
                Ok(Content::NotObject)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Content, E> {
                Ok(Content::NotObject)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Content, E> {
                Ok(Content::NotObject)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Content, E> {
                Ok(Content::NotObject)
            }
            fn visit_str<E>(self, _: &str) -> Result<Content, E> {
                Ok(Content::NotObject)
            }
            fn visit_unit<E>(self) -> Result<Content, E> {
                Ok(Content::NotObject)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// The metadata a submission is checked on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub test_name: String,
    pub probe_cc: String,
    pub probe_asn: String,
}

fn field(v: Option<Value>, name: &'static str) -> Result<String, Rejection> {
    match v {
        Some(Value::String(s)) => Ok(s),
        _ => Err(Rejection::MissingField(name)),
    }
}

/// Parses the envelope and reads the metadata of its `content`.
pub fn read_metadata(body: &[u8]) -> Result<Metadata, Rejection> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Rejection::Empty);
    }
    // serde_json does not check the UTF-8 of strings it skips over.
    let text =
        simdutf8::compat::from_utf8(body).map_err(|e| Rejection::NotUtf8(e.valid_up_to()))?;
    // serde would also map a JSON array onto the struct, field by field.
    if !text.trim_start().starts_with('{') {
        return Err(Rejection::BadJson(
            "the body must be a JSON object".to_owned(),
        ));
    }
    let env: Envelope =
        serde_json::from_slice(body).map_err(|e| Rejection::BadJson(e.to_string()))?;
    match &env.format {
        Some(Value::String(f)) if f.eq_ignore_ascii_case("json") => {}
        Some(other) => return Err(Rejection::BadFormat(other.to_string())),
        None => return Err(Rejection::BadFormat("nothing".to_owned())),
    }
    let Some(Content::Object(meta)) = env.content else {
        return Err(Rejection::NoContent);
    };
    Ok(Metadata {
        test_name: field(meta.test_name, "test_name")?,
        probe_cc: field(meta.probe_cc, "probe_cc")?,
        probe_asn: field(meta.probe_asn, "probe_asn")?,
    })
}

/// `_compare_report_id_to_body_meta`: CC (any case), ASN (ignoring `AS`) and test name
/// (without underscores) must agree with the report id.
pub fn check_consistency(rid: &ReportId<'_>, meta: &Metadata) -> Result<(), Rejection> {
    if !rid.cc.eq_ignore_ascii_case(&meta.probe_cc) {
        return Err(Rejection::Inconsistent(format!(
            "probe_cc {:?} does not match the report_id's {:?}",
            meta.probe_cc, rid.cc
        )));
    }
    let body_asn = meta.probe_asn.to_ascii_uppercase();
    let body_asn = body_asn.trim_start_matches(['A', 'S']);
    if body_asn != rid.asn.to_string() {
        return Err(Rejection::Inconsistent(format!(
            "probe_asn {:?} does not match the report_id's AS{}",
            meta.probe_asn, rid.asn
        )));
    }
    if meta.test_name.replace('_', "") != rid.test_name {
        return Err(Rejection::Inconsistent(format!(
            "test_name {:?} does not match the report_id's {:?}",
            meta.test_name, rid.test_name
        )));
    }
    Ok(())
}

/// `check_measurement_meta`: the shape rules on probe_cc, probe_asn and test_name.
pub fn check_metadata(meta: &Metadata) -> Result<(), Rejection> {
    let mut errors = Vec::new();
    let cc = &meta.probe_cc;
    if cc.len() != 2
        || !cc
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        errors.push(format!(
            "probe_cc {cc:?} must be 2 upper-case letters or digits"
        ));
    }
    let tn = &meta.test_name;
    if !(2..=30).contains(&tn.len())
        || !tn
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        errors.push(format!(
            "test_name {tn:?} must be 2 to 30 of a-z, 0-9 and _"
        ));
    }
    let asn = &meta.probe_asn;
    match asn.strip_prefix("AS") {
        Some(d) if (1..=10).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) => {
            if d == "0" {
                return Err(Rejection::Asn0);
            }
            if d.starts_with('0') {
                errors.push(format!("probe_asn {asn:?} has a leading zero"));
            }
        }
        _ => errors.push(format!(
            "probe_asn {asn:?} must be AS followed by 1 to 10 digits"
        )),
    }
    if !errors.is_empty() {
        return Err(Rejection::BadMetadata(format!("Errors: {errors:?}")));
    }
    if cc == "ZZ" {
        return Err(Rejection::CcZz);
    }
    Ok(())
}

/// The `POST /report` body a probe sends to open a report for `msm`, with the
/// measurement's own metadata (and OONI's defaults where it has none). Load tools and
/// tests use it to play probes.
pub fn open_report_request(msm: &Value) -> Value {
    let s = |k: &str, d: &str| msm.get(k).and_then(Value::as_str).unwrap_or(d).to_owned();
    let mut req = serde_json::json!({
        "data_format_version": s("data_format_version", "0.2.0"),
        "format": "json",
        "software_name": s("software_name", "unknown"),
        "software_version": s("software_version", "unknown"),
        "test_name": s("test_name", ""),
        "test_start_time": s("test_start_time", "2000-01-01 00:00:00"),
        "test_version": s("test_version", "0.0.0"),
    });
    for k in ["probe_cc", "probe_asn"] {
        if let Some(v) = msm.get(k).and_then(Value::as_str) {
            req[k] = Value::String(v.to_owned());
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::parse_report_id;

    fn body(content: &str) -> Vec<u8> {
        format!(r#"{{"format":"json","content":{content}}}"#).into_bytes()
    }

    const RID: &str = "20240101T000000Z_webconnectivity_IT_30722_n1_abcdefghijklmnop";

    #[test]
    fn metadata_is_read_from_the_content() {
        let m = read_metadata(&body(
            r#"{"test_name":"web_connectivity","probe_cc":"IT","probe_asn":"AS30722","test_keys":{"x":"\u00e9"}}"#,
        ))
        .unwrap();
        assert_eq!(m.test_name, "web_connectivity");
        let rid = parse_report_id(RID).unwrap();
        check_consistency(&rid, &m).unwrap();
        check_metadata(&m).unwrap();
    }

    #[test]
    fn envelope_errors() {
        assert_eq!(read_metadata(b""), Err(Rejection::Empty));
        assert_eq!(read_metadata(b"  \n"), Err(Rejection::Empty));
        assert!(matches!(
            read_metadata(b"{\"format\":"),
            Err(Rejection::BadJson(_))
        ));
        assert!(matches!(read_metadata(b"[1]"), Err(Rejection::BadJson(_))));
        assert!(matches!(
            read_metadata(br#"{"format":"yaml","content":"a: 1"}"#),
            Err(Rejection::BadFormat(_))
        ));
        assert_eq!(
            read_metadata(br#"{"format":"json"}"#),
            Err(Rejection::NoContent)
        );
        assert_eq!(
            read_metadata(br#"{"format":"json","content":"x"}"#),
            Err(Rejection::NoContent)
        );
        assert_eq!(
            read_metadata(&body(r#"{"probe_cc":"IT","probe_asn":"AS1"}"#)),
            Err(Rejection::MissingField("test_name"))
        );
        for not_object in ["[1, {}]", "null", "3.5", "true"] {
            assert_eq!(
                read_metadata(&body(not_object)),
                Err(Rejection::NoContent),
                "{not_object}"
            );
        }
        // One pass reads the metadata and checks the rest's syntax.
        assert!(matches!(
            read_metadata(&body(
                r#"{"test_name":"ndt","probe_cc":"IT","probe_asn":"AS1","test_keys":{"a":[1,}}"#
            )),
            Err(Rejection::BadJson(_))
        ));
        assert!(matches!(
            read_metadata(&body(
                r#"{"test_name":"ndt","test_name":"tor","probe_cc":"IT","probe_asn":"AS1"}"#
            )),
            Err(Rejection::BadJson(e)) if e.contains("duplicate field `test_name`")
        ));
        let m = read_metadata(&body(
            r#"{"test\u005fname":"ndt","probe_cc":"IT","probe_asn":"AS1","probe_ccx":1}"#,
        ))
        .unwrap();
        assert_eq!((m.test_name.as_str(), m.probe_cc.as_str()), ("ndt", "IT"));
        let mut bad = body(r#"{"test_name":"ndt","probe_cc":"IT","probe_asn":"AS1","x":"__"}"#);
        let at = bad.len() - 5;
        bad[at] = 0xff;
        assert!(matches!(read_metadata(&bad), Err(Rejection::NotUtf8(_))));
    }

    #[test]
    fn consistency_rules() {
        let rid = parse_report_id(RID).unwrap();
        let ok = Metadata {
            test_name: "web_connectivity".into(),
            probe_cc: "it".into(),
            probe_asn: "as30722".into(),
        };
        check_consistency(&rid, &ok).unwrap();
        for m in [
            Metadata {
                probe_cc: "FR".into(),
                ..ok.clone()
            },
            Metadata {
                probe_asn: "AS1".into(),
                ..ok.clone()
            },
            Metadata {
                test_name: "ndt".into(),
                ..ok.clone()
            },
        ] {
            assert!(matches!(
                check_consistency(&rid, &m),
                Err(Rejection::Inconsistent(_))
            ));
        }
    }

    #[test]
    fn metadata_rules() {
        let ok = Metadata {
            test_name: "ndt".into(),
            probe_cc: "IT".into(),
            probe_asn: "AS30722".into(),
        };
        check_metadata(&ok).unwrap();
        let bad = |m: Metadata| check_metadata(&m).unwrap_err().reason();
        assert_eq!(
            bad(Metadata {
                probe_cc: "it".into(),
                ..ok.clone()
            }),
            "bad_metadata"
        );
        assert_eq!(
            bad(Metadata {
                probe_cc: "ZZ".into(),
                ..ok.clone()
            }),
            "cc_zz"
        );
        assert_eq!(
            bad(Metadata {
                probe_asn: "AS0".into(),
                ..ok.clone()
            }),
            "asn_0"
        );
        assert_eq!(
            bad(Metadata {
                probe_asn: "AS012".into(),
                ..ok.clone()
            }),
            "bad_metadata"
        );
        assert_eq!(
            bad(Metadata {
                probe_asn: "ASx1".into(),
                ..ok.clone()
            }),
            "bad_metadata"
        );
        assert_eq!(
            bad(Metadata {
                probe_asn: "12".into(),
                ..ok.clone()
            }),
            "bad_metadata"
        );
        assert_eq!(
            bad(Metadata {
                test_name: "Web".into(),
                ..ok.clone()
            }),
            "bad_metadata"
        );
        assert_eq!(
            bad(Metadata {
                test_name: "x".into(),
                ..ok.clone()
            }),
            "bad_metadata"
        );
    }

    #[test]
    fn zstd_is_decoded_and_bombs_are_capped() {
        let plain = b"{\"format\":\"json\"}".to_vec();
        let z = zstd::encode_all(&plain[..], 3).unwrap();
        assert_eq!(decode_body(Some("zstd"), z.into(), 1024).unwrap(), plain);
        let bomb = zstd::encode_all(&vec![b' '; 10_000_000][..], 19).unwrap();
        assert!(bomb.len() < 10_000);
        assert_eq!(
            decode_body(Some("zstd"), bomb.into(), 1_000_000),
            Err(Rejection::DecompressedTooLarge(1_000_000))
        );
        assert!(matches!(
            decode_body(Some("zstd"), Bytes::from_static(b"not zstd"), 10),
            Err(Rejection::BadZstd(_))
        ));
        assert!(matches!(
            decode_body(Some("gzip"), Bytes::new(), 10),
            Err(Rejection::UnsupportedEncoding(_))
        ));
        assert_eq!(
            decode_body(None, Bytes::from_static(b"x"), 0).unwrap(),
            &b"x"[..]
        );
    }
}
