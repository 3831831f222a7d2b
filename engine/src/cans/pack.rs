//! Packing spooled measurements into a can pair, in one pass over the files.

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use ooni_core::measurement::parse_upload;
use serde_json::Value;
use std::io::{self, Write};

/// When a can is full, and how hard it is compressed. OONI closes a postcan once its
/// compressed size passes 20,000,000 bytes; the raw cap also bounds what reading one
/// line back costs.
#[derive(Debug, Clone, Copy)]
pub struct CanOptions {
    pub max_compressed: usize,
    pub max_raw: usize,
    /// gzip level, 1 (fastest) to 9 (smallest).
    pub gzip_level: u32,
}

impl CanOptions {
    /// Most bytes a reader accepts from one can: the raw cap, plus one body that an
    /// empty can took whatever its size.
    pub fn read_limit(&self, max_body: usize) -> usize {
        self.max_raw.saturating_add(max_body)
    }
}

impl Default for CanOptions {
    fn default() -> Self {
        CanOptions {
            max_compressed: 20_000_000,
            max_raw: 64 * 1024 * 1024,
            gzip_level: 6,
        }
    }
}

/// One `jsonl` index row of a packed measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub measurement_uid: String,
    pub report_id: String,
    pub input: String,
    pub linenum: i32,
}

/// A finished can pair, ready to upload.
pub struct Can {
    pub postcan: Bytes,
    pub jsonl: Bytes,
    pub entries: Vec<IndexEntry>,
    /// Uncompressed bytes of the POST bodies it holds.
    pub raw_bytes: usize,
}

pub struct CanBuilder {
    dir: String,
    tar: tar::Builder<GzEncoder<Vec<u8>>>,
    jsonl: GzEncoder<Vec<u8>>,
    entries: Vec<IndexEntry>,
    raw_bytes: usize,
    limits: CanOptions,
}

impl CanBuilder {
    /// A can for the spool directory `dir` (member names are `{dir}/{uid}.post`).
    pub fn new(dir: &str, limits: CanOptions) -> Self {
        let level = Compression::new(limits.gzip_level.clamp(1, 9));
        let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), level));
        tar.mode(tar::HeaderMode::Deterministic);
        CanBuilder {
            dir: dir.to_owned(),
            tar,
            jsonl: GzEncoder::new(Vec::new(), level),
            entries: Vec::new(),
            raw_bytes: 0,
            limits,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when a body of `len` bytes may still go in: the compressed postcan is
    /// under its cap (OONI checks after adding, so a can passes it by one body at
    /// most) and the raw bytes stay under theirs. An empty can takes any body.
    pub fn fits(&self, len: usize) -> bool {
        self.entries.is_empty()
            || (self.tar.get_ref().get_ref().len() <= self.limits.max_compressed
                && self.raw_bytes + len <= self.limits.max_raw)
    }

    /// Adds one POST body; `mtime` is when the spool file was written.
    pub fn add(&mut self, uid: &str, body: &[u8], mtime: u64) -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        self.tar
            .append_data(&mut h, format!("{}/{uid}.post", self.dir), body)?;
        let (line, report_id, input) = jsonl_line(body);
        self.jsonl.write_all(&line)?;
        self.jsonl.write_all(b"\n")?;
        self.entries.push(IndexEntry {
            measurement_uid: uid.to_owned(),
            report_id,
            input,
            linenum: self.entries.len() as i32,
        });
        self.raw_bytes += body.len();
        Ok(())
    }

    pub fn finish(self) -> io::Result<Can> {
        let postcan = self.tar.into_inner()?.finish()?;
        let jsonl = self.jsonl.finish()?;
        Ok(Can {
            postcan: postcan.into(),
            jsonl: jsonl.into(),
            entries: self.entries,
            raw_bytes: self.raw_bytes,
        })
    }
}

/// The jsonl line of a POST body (without its newline), with the `report_id` and
/// `input` its index row carries. The line is the envelope's `content` with the
/// insignificant whitespace removed, so numbers and strings stay exactly as the
/// probe sent them. A body that is not a JSON envelope gives `{}`, as in OONI.
pub fn jsonl_line(body: &[u8]) -> (Vec<u8>, String, String) {
    let Ok(upload) = parse_upload(body) else {
        return (b"{}".to_vec(), String::new(), String::new());
    };
    let fields = &upload.measurement.fields;
    let report_id = match fields.get("report_id") {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let input = match fields.get("input") {
        Some(Value::String(s)) => s.clone(),
        // meek_fronted_requests_test sends a list; the row joins it the same way.
        Some(Value::Array(items)) if !items.is_empty() => {
            let parts: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            format!("{{{}}}", parts.join(","))
        }
        _ => String::new(),
    };
    (minify(upload.measurement.json.as_bytes()), report_id, input)
}

/// Drops whitespace outside strings from valid JSON text.
pub fn minify(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minify_keeps_strings_and_numbers_exact() {
        let text = br#"{ "a" : [1.0, 2e3 ,"x y\" }" ], "b":{ } }"#;
        assert_eq!(
            minify(text),
            br#"{"a":[1.0,2e3,"x y\" }"],"b":{}}"#.to_vec()
        );
    }

    #[test]
    fn lines_come_from_the_envelope_content() {
        let body =
            br#"{"format":"json","content":{"report_id":"r1", "input":"https://x.org/","k":1.50}}"#;
        let (line, rid, input) = jsonl_line(body);
        assert_eq!(
            line,
            br#"{"report_id":"r1","input":"https://x.org/","k":1.50}"#.to_vec()
        );
        assert_eq!((rid.as_str(), input.as_str()), ("r1", "https://x.org/"));
        let (line, rid, _) = jsonl_line(b"not json");
        assert_eq!((line.as_slice(), rid.as_str()), (&b"{}"[..], ""));
        let (_, _, input) =
            jsonl_line(br#"{"format":"json","content":{"input":["a","b"],"report_id":null}}"#);
        assert_eq!(input, "{a,b}");
    }

    #[test]
    fn cans_close_at_their_limits() {
        let mut b = CanBuilder::new(
            "2024010100_IT_ndt",
            CanOptions {
                max_compressed: usize::MAX,
                max_raw: 100,
                gzip_level: 1,
            },
        );
        assert!(b.fits(500), "an empty can takes any body");
        b.add("u1", &[b' '; 60], 0).unwrap();
        assert!(b.fits(40));
        assert!(!b.fits(41), "the raw cap is never passed");
        b.add("u2", &[b' '; 40], 0).unwrap();
        let can = b.finish().unwrap();
        assert_eq!(can.entries.len(), 2);
        assert_eq!(can.entries[1].linenum, 1);
        assert_eq!(can.raw_bytes, 100);
    }
}
