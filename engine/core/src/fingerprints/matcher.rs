//! The compiled fingerprint set. Built once per reload, then shared read-only.
//!
//! Each field is scanned once whatever the number of fingerprints: literal patterns go
//! into one `LiteralScan` per location (see `literal_scan`), regular expressions into
//! one regex set, exact values into a hash map. Matches come back in the order of the
//! set, as OONI reports them.

use super::literal_scan::LiteralScan;
use super::schema::{regex_source, Fingerprint, Kind, PatternType, REGEX_SIZE_LIMIT};
use ooni_scorer_sdk::{b64, FingerprintMatch, Host};
use regex::bytes::{RegexSet, RegexSetBuilder};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Which matching semantics (documented in `fingerprints/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// OONI fastpath 0.92 byte for byte: DNS compares exactly whatever the pattern
    /// type; every body pattern is a plain substring; header `contains` and `regexp`
    /// rows are ignored; `ZZ` is dropped from expected countries.
    Compat,
    /// Every pattern type means what it says, headers included; DNS names compare
    /// case-insensitively without a trailing dot; `ZZ` means "any country".
    Strict,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "compat" => Ok(Mode::Compat),
            "strict" => Ok(Mode::Strict),
            other => Err(format!(
                "unknown fingerprint mode {other:?} (compat or strict)"
            )),
        }
    }
}

/// Literal patterns of one location, searched in one pass (see `literal_scan`).
struct Literals {
    scan: LiteralScan,
    /// For each distinct pattern: (fingerprint index, its type).
    owners: Vec<Vec<(u32, PatternType)>>,
}

impl Literals {
    fn build(items: Vec<(u32, PatternType, Vec<u8>)>) -> Literals {
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut owners: Vec<Vec<(u32, PatternType)>> = Vec::new();
        for (fp, ty, pat) in items {
            let i = *index.entry(pat.clone()).or_insert_with(|| {
                patterns.push(pat);
                owners.push(Vec::new());
                patterns.len() - 1
            });
            owners[i].push((fp, ty));
        }
        Literals {
            scan: LiteralScan::new(&patterns),
            owners,
        }
    }

    /// Fingerprints whose literal occurs in `hay` (as a prefix, for `prefix` rows
    /// when `honour_prefix`), pushed to `out`.
    fn scan(&self, hay: &[u8], honour_prefix: bool, out: &mut Vec<u32>) {
        self.scan.find_each(hay, |p| {
            for &(fp, ty) in &self.owners[p] {
                if !(honour_prefix && ty == PatternType::Prefix)
                    || hay.starts_with(self.scan.pattern(p))
                {
                    out.push(fp);
                }
            }
        });
    }
}

/// The fingerprints of one header name, searched like bodies: one pass whatever
/// their number.
struct HeaderIndex {
    full: HashMap<String, Vec<u32>>,
    literals: Literals,
    regex: (RegexSet, Vec<u32>),
}

pub struct Matcher {
    mode: Mode,
    minis: Vec<FingerprintMatch>,
    dns_exact: HashMap<String, Vec<u32>>,
    dns_literals: Literals,
    dns_regex: (RegexSet, Vec<u32>),
    body_literals: Literals,
    body_full: HashMap<Vec<u8>, Vec<u32>>,
    body_regex: (RegexSet, Vec<u32>),
    /// Header fingerprints by lower-case header name, each list in set order.
    headers: HashMap<String, HeaderIndex>,
    len: usize,
}

fn prepare_countries(cs: &[String], mode: Mode) -> Vec<String> {
    let mut v: Vec<String> = cs
        .iter()
        .map(|c| c.trim().to_uppercase())
        .filter(|c| !c.is_empty() && (mode == Mode::Strict || c != "ZZ"))
        .collect();
    v.sort();
    v.dedup();
    v
}

fn dns_key(s: &str, mode: Mode) -> String {
    match mode {
        Mode::Compat => s.to_owned(),
        Mode::Strict => s.trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// One set for the regexps of one location. Each was compiled alone on load within
/// `REGEX_SIZE_LIMIT`; the set needs about the sum of their sizes, so its limit is
/// that much per member (with one shared limit, a few large regexps that each load
/// fine would make the set fail to build).
fn regex_set(items: &[(u32, &str)]) -> (RegexSet, Vec<u32>) {
    let set = RegexSetBuilder::new(items.iter().map(|(_, p)| regex_source(p)))
        .size_limit(REGEX_SIZE_LIMIT.saturating_mul(items.len().max(1)))
        .build()
        .expect("regexps were validated on load, each within REGEX_SIZE_LIMIT");
    (set, items.iter().map(|(i, _)| *i).collect())
}

impl Matcher {
    pub fn new(fps: &[Fingerprint], mode: Mode) -> Matcher {
        let mut minis = Vec::with_capacity(fps.len());
        let mut dns_exact: HashMap<String, Vec<u32>> = HashMap::new();
        let (mut dns_lits, mut dns_res) = (Vec::new(), Vec::new());
        let (mut body_lits, mut body_res) = (Vec::new(), Vec::new());
        let mut body_full: HashMap<Vec<u8>, Vec<u32>> = HashMap::new();
        // Per header name: full values, literals, regexps.
        type HeaderParts<'a> = (
            HashMap<String, Vec<u32>>,
            Vec<(u32, PatternType, Vec<u8>)>,
            Vec<(u32, &'a str)>,
        );
        let mut header_parts: HashMap<String, HeaderParts> = HashMap::new();
        for (i, fp) in fps.iter().enumerate() {
            let i = i as u32;
            let mut m = Map::new();
            m.insert("name".into(), Value::from(fp.name.as_str()));
            m.insert("scope".into(), Value::from(fp.scope.as_str()));
            m.insert(
                "location_found".into(),
                Value::from(fp.location_found.as_str()),
            );
            m.insert("confidence_no_fp".into(), Value::from(fp.confidence_no_fp));
            m.insert(
                "expected_countries".into(),
                Value::Array(
                    prepare_countries(&fp.expected_countries, mode)
                        .into_iter()
                        .map(Value::from)
                        .collect(),
                ),
            );
            minis.push(m);
            match (fp.kind, mode) {
                (Kind::Dns, Mode::Compat) => {
                    dns_exact.entry(fp.pattern.clone()).or_default().push(i)
                }
                (Kind::Dns, Mode::Strict) => match fp.pattern_type {
                    PatternType::Full => dns_exact
                        .entry(dns_key(&fp.pattern, mode))
                        .or_default()
                        .push(i),
                    PatternType::Regexp => dns_res.push((i, fp.pattern.as_str())),
                    ty => dns_lits.push((i, ty, dns_key(&fp.pattern, mode).into_bytes())),
                },
                (Kind::Http, _) if fp.location_found == "body" => match (mode, fp.pattern_type) {
                    (Mode::Compat, ty) => body_lits.push((i, ty, fp.pattern.as_bytes().to_vec())),
                    (Mode::Strict, PatternType::Full) => body_full
                        .entry(fp.pattern.as_bytes().to_vec())
                        .or_default()
                        .push(i),
                    (Mode::Strict, PatternType::Regexp) => body_res.push((i, fp.pattern.as_str())),
                    (Mode::Strict, ty) => body_lits.push((i, ty, fp.pattern.as_bytes().to_vec())),
                },
                (Kind::Http, _) => {
                    let name = fp.location_found.trim_start_matches("header.").to_owned();
                    let parts = header_parts.entry(name).or_default();
                    match (mode, fp.pattern_type) {
                        (_, PatternType::Full) => {
                            parts.0.entry(fp.pattern.clone()).or_default().push(i)
                        }
                        (_, PatternType::Prefix) | (Mode::Strict, PatternType::Contains) => parts
                            .1
                            .push((i, fp.pattern_type, fp.pattern.as_bytes().to_vec())),
                        (Mode::Strict, PatternType::Regexp) => {
                            parts.2.push((i, fp.pattern.as_str()))
                        }
                        // OONI ignores header contains and regexp rows.
                        (Mode::Compat, _) => {}
                    }
                }
            }
        }
        Matcher {
            mode,
            minis,
            dns_exact,
            dns_literals: Literals::build(dns_lits),
            dns_regex: regex_set(&dns_res),
            body_literals: Literals::build(body_lits),
            body_full,
            body_regex: regex_set(&body_res),
            headers: header_parts
                .into_iter()
                .map(|(name, (full, lits, res))| {
                    let index = HeaderIndex {
                        full,
                        literals: Literals::build(lits),
                        regex: regex_set(&res),
                    };
                    (name, index)
                })
                .collect(),
            len: fps.len(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn collect(&self, mut ids: Vec<u32>) -> Vec<FingerprintMatch> {
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .map(|i| self.minis[i as usize].clone())
            .collect()
    }

    pub fn dns(&self, answer: &str) -> Vec<FingerprintMatch> {
        let key = dns_key(answer, self.mode);
        let mut ids: Vec<u32> = self.dns_exact.get(&key).cloned().unwrap_or_default();
        if self.mode == Mode::Strict {
            self.dns_literals.scan(key.as_bytes(), true, &mut ids);
            ids.extend(
                self.dns_regex
                    .0
                    .matches(key.as_bytes())
                    .iter()
                    .map(|k| self.dns_regex.1[k]),
            );
        }
        self.collect(ids)
    }

    pub fn body(&self, body: &[u8]) -> Vec<FingerprintMatch> {
        let mut ids = Vec::new();
        self.body_literals
            .scan(body, self.mode == Mode::Strict, &mut ids);
        if self.mode == Mode::Strict {
            if let Some(f) = self.body_full.get(body) {
                ids.extend(f);
            }
            if !self.body_regex.1.is_empty() {
                ids.extend(
                    self.body_regex
                        .0
                        .matches(body)
                        .iter()
                        .map(|k| self.body_regex.1[k]),
                );
            }
        }
        self.collect(ids)
    }

    /// `headers_json` is the measurement's `response.headers` object.
    pub fn headers(&self, headers_json: &str) -> Vec<FingerprintMatch> {
        if self.headers.is_empty() {
            return Vec::new();
        }
        let Ok(Value::Object(raw)) = serde_json::from_str::<Value>(headers_json) else {
            return Vec::new();
        };
        // Lower-cased names; of two names differing only in case the last one wins.
        let mut lower: HashMap<String, &Value> = HashMap::with_capacity(raw.len());
        for (k, v) in raw.iter() {
            lower.insert(k.to_lowercase(), v);
        }
        let mut ids = Vec::new();
        for (name, v) in &lower {
            let Some(index) = self.headers.get(name) else {
                continue;
            };
            let (text, decoded) = match v {
                Value::String(s) => (s.clone(), false),
                // A base64 value, decoded as Latin-1 (OONI does so for prefix rows only).
                Value::Object(o) if o.get("format").and_then(Value::as_str) == Some("base64") => {
                    let data = o.get("data").and_then(Value::as_str).unwrap_or("");
                    match b64::decode(data) {
                        Ok(b) => (b.iter().map(|&c| c as char).collect::<String>(), true),
                        Err(_) => continue,
                    }
                }
                _ => continue,
            };
            if !(decoded && self.mode == Mode::Compat) {
                if let Some(f) = index.full.get(&text) {
                    ids.extend(f);
                }
                if !index.regex.1.is_empty() {
                    ids.extend(
                        index
                            .regex
                            .0
                            .matches(text.as_bytes())
                            .iter()
                            .map(|k| index.regex.1[k]),
                    );
                }
            }
            index.literals.scan(text.as_bytes(), true, &mut ids);
        }
        self.collect(ids)
    }
}

impl Host for Matcher {
    fn match_dns(&self, answer: &str) -> Vec<FingerprintMatch> {
        self.dns(answer)
    }
    fn match_http_body(&self, body: &[u8]) -> Vec<FingerprintMatch> {
        self.body(body)
    }
    fn match_http_headers(&self, headers_json: &str) -> Vec<FingerprintMatch> {
        self.headers(headers_json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprints::schema::{check_unique, parse_file};

    const SET: &str = r#"
[[dns]]
name = "d.full"
scope = "nat"
pattern_type = "full"
pattern = "Blocked.Example."
expected_countries = ["IT", "ZZ"]

[[dns]]
name = "d.ip"
scope = "isp"
pattern_type = "full"
pattern = "10.10.34.34"

[[http]]
name = "b.contains"
scope = "nat"
location_found = "body"
pattern_type = "contains"
pattern = "Access denied"

[[http]]
name = "b.full"
scope = "isp"
location_found = "body"
pattern_type = "full"
pattern = "<HTML></HTML>"

[[http]]
name = "b.regexp"
scope = "prod"
location_found = "body"
pattern_type = "regexp"
pattern = 'U\.S\..*Command'

[[http]]
name = "b.prefix"
scope = "fp"
location_found = "body"
pattern_type = "prefix"
pattern = "<!-- blockpage"

[[http]]
name = "h.prefix"
scope = "isp"
location_found = "header.location"
pattern_type = "prefix"
pattern = "http://warning.example/"

[[http]]
name = "h.full"
scope = "prod"
location_found = "header.server"
pattern_type = "full"
pattern = "Protected by WireFilter"

[[http]]
name = "h.contains"
scope = "prov"
location_found = "header.location"
pattern_type = "contains"
pattern = "geoblock"

[[http]]
name = "h.regexp"
scope = "vbw"
location_found = "header.via"
pattern_type = "regexp"
pattern = 'Cisco-WSA/\d+'
"#;

    fn names(ms: Vec<FingerprintMatch>) -> Vec<String> {
        ms.into_iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect()
    }

    fn both() -> (Matcher, Matcher) {
        let fps = parse_file("set.toml", SET).unwrap();
        (
            Matcher::new(&fps, Mode::Compat),
            Matcher::new(&fps, Mode::Strict),
        )
    }

    #[test]
    fn dns_rules() {
        let (c, s) = both();
        assert_eq!(names(c.dns("10.10.34.34")), ["d.ip"]);
        assert!(c.dns("blocked.example").is_empty(), "compat: exact only");
        assert_eq!(
            names(s.dns("blocked.example")),
            ["d.full"],
            "strict: case and trailing dot"
        );
        assert_eq!(
            c.dns("Blocked.Example.")[0]["expected_countries"],
            serde_json::json!(["IT"]),
            "compat drops ZZ"
        );
        assert_eq!(
            s.dns("Blocked.Example.")[0]["expected_countries"],
            serde_json::json!(["IT", "ZZ"])
        );
        let first = c.dns("10.10.34.34").remove(0);
        let keys: Vec<&String> = first.keys().collect();
        assert_eq!(
            keys,
            [
                "name",
                "scope",
                "location_found",
                "confidence_no_fp",
                "expected_countries"
            ]
        );
    }

    #[test]
    fn body_rules_per_mode() {
        let (c, s) = both();
        let page = b"<html>Access denied by U.S. Cyber Command</html><!-- blockpage -->";
        // compat: every body row is a literal substring; the regexp never matches.
        assert_eq!(names(c.body(page)), ["b.contains", "b.prefix"]);
        // strict: the regexp matches, the prefix must start the body.
        assert_eq!(names(s.body(page)), ["b.contains", "b.regexp"]);
        assert_eq!(names(s.body(b"<!-- blockpage v2")), ["b.prefix"]);
        assert_eq!(names(s.body(b"<HTML></HTML>")), ["b.full"]);
        assert!(
            s.body(b"x<HTML></HTML>").is_empty(),
            "strict full is the whole body"
        );
        assert_eq!(
            names(c.body(b"x<HTML></HTML>")),
            ["b.full"],
            "compat full is a substring"
        );
    }

    #[test]
    fn header_rules_per_mode() {
        let (c, s) = both();
        let h = r#"{"Location": "http://warning.example/geoblock?x", "SERVER": "Protected by WireFilter", "Via": "1.1 proxy (Cisco-WSA/9.1.1-074)"}"#;
        assert_eq!(
            names(c.headers(h)),
            ["h.prefix", "h.full"],
            "compat ignores contains and regexp rows"
        );
        assert_eq!(
            names(s.headers(h)),
            ["h.prefix", "h.full", "h.contains", "h.regexp"]
        );
        let b64 =
            r#"{"location": {"format": "base64", "data": "aHR0cDovL3dhcm5pbmcuZXhhbXBsZS94"}}"#;
        assert_eq!(names(c.headers(b64)), ["h.prefix"]);
        assert!(c.headers("not json").is_empty());
    }

    /// Found with the `fingerprints` fuzz target: three regexps that each load (each
    /// compiles within the size limit) passed the limit together, and `Matcher::new`
    /// panicked building their set, so a reload of valid files took the engine down.
    #[test]
    fn large_regexps_that_each_load_build_a_matcher() {
        let mut text = String::new();
        for i in 0..3 {
            text.push_str(&format!(
                "[[dns]]\nname = \"d{i}\"\nscope = \"isp\"\npattern_type = \"regexp\"\npattern = '\\w{{100}}{i}'\n\n\
                 [[http]]\nname = \"b{i}\"\nscope = \"isp\"\nlocation_found = \"body\"\npattern_type = \"regexp\"\npattern = '\\w{{100}}{i}'\n\n\
                 [[http]]\nname = \"h{i}\"\nscope = \"isp\"\nlocation_found = \"header.x\"\npattern_type = \"regexp\"\npattern = '\\w{{100}}{i}'\n\n"
            ));
        }
        let fps = parse_file("big_regexps.toml", &text).unwrap();
        assert_eq!(fps.len(), 9);
        check_unique(&fps).unwrap();
        let c = Matcher::new(&fps, Mode::Compat);
        let s = Matcher::new(&fps, Mode::Strict);
        let hit = format!("{}2", "é".repeat(100));
        assert_eq!(names(s.dns(&hit)), ["d2"]);
        assert_eq!(names(s.body(hit.as_bytes())), ["b2"]);
        assert_eq!(
            names(s.headers(&serde_json::json!({ "X": hit }).to_string())),
            ["h2"]
        );
        assert!(
            c.body(hit.as_bytes()).is_empty(),
            "compat: regexps are literals"
        );
    }

    /// Found with the `fingerprints` fuzz target (a fingerprint must match its own
    /// pattern): the loader lower-cased header names in ASCII only and the matcher
    /// lower-cases a measurement's names Unicode-wide, so a fingerprint on a header
    /// name with a non-ASCII capital could never match.
    #[test]
    fn non_ascii_header_names_match_in_any_case() {
        let text = r#"
[[http]]
name = "h"
scope = "isp"
location_found = "header.X-\u00c9"
pattern_type = "full"
pattern = "x"
"#;
        let fps = parse_file("h.toml", text).unwrap();
        assert_eq!(fps[0].location_found, "header.x-\u{e9}");
        for mode in [Mode::Compat, Mode::Strict] {
            let m = Matcher::new(&fps, mode);
            for name in ["X-\u{c9}", "x-\u{e9}", "X-\u{e9}"] {
                let h = serde_json::json!({ name: "x" }).to_string();
                assert_eq!(names(m.headers(&h)), ["h"], "{mode:?} {name}");
            }
        }
    }

    /// Real-looking blockpages against body rows of every shape the literal scan
    /// treats apart: long (anchored) and short (side searcher) patterns, non-ASCII,
    /// quotes, CR/LF, and one pattern shared by a prefix row and a contains row.
    #[test]
    fn blockpage_bodies() {
        let rows = [
            ("ru.title", "contains", "<title>Доступ ограничен</title>"),
            ("id.iframe", "contains", r#"iframe src=\"http://10.10."#),
            ("kr.warning", "contains", "http://warning.or.kr"),
            ("crlf", "contains", r"</h1>\r\n<p>The page"),
            ("busy", "contains", "BUSY"),
            ("start", "prefix", "<html><head><title>Blocked"),
            ("anywhere", "contains", "<html><head><title>Blocked"),
        ];
        let mut text = String::new();
        for (name, ty, pattern) in rows {
            text.push_str(&format!(
                "[[http]]\nname = \"{name}\"\nscope = \"isp\"\nlocation_found = \"body\"\n\
                 pattern_type = \"{ty}\"\npattern = \"{pattern}\"\n\n"
            ));
        }
        let fps = parse_file("blockpages.toml", &text).unwrap();
        let (c, s) = (
            Matcher::new(&fps, Mode::Compat),
            Matcher::new(&fps, Mode::Strict),
        );
        let ru = "<html><head><meta charset=\"utf-8\"><title>Доступ ограничен</title></head>\r\n\
                  <body><h1>Доступ ограничен</h1>\r\n<p>The page is blocked</p></body></html>";
        for m in [&c, &s] {
            assert_eq!(names(m.body(ru.as_bytes())), ["ru.title", "crlf"]);
        }
        let id = r#"<body><iframe src="http://10.10.34.36/?BUSY" width="100%"></iframe></body>"#;
        for m in [&c, &s] {
            assert_eq!(names(m.body(id.as_bytes())), ["id.iframe", "busy"]);
        }
        let kr = "<html><head><title>Blocked</title></head>\n<body>\
                  <iframe src='http://warning.or.kr' width='100%'></iframe></body></html>";
        assert_eq!(
            names(s.body(kr.as_bytes())),
            ["kr.warning", "start", "anywhere"]
        );
        let later = format!("<!-- x -->{kr}");
        assert_eq!(names(s.body(later.as_bytes())), ["kr.warning", "anywhere"]);
        assert_eq!(
            names(c.body(later.as_bytes())),
            ["kr.warning", "start", "anywhere"],
            "compat: every body row is a substring"
        );
        assert!(s.body(b"<html><head><title>Blocke").is_empty());
        assert!(s.body(b"").is_empty());
    }

    #[test]
    fn many_fingerprints_one_pass() {
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(&format!("[[http]]\nname = \"n{i}\"\nscope = \"isp\"\nlocation_found = \"body\"\npattern_type = \"contains\"\npattern = \"needle-{i}-x\"\n\n"));
        }
        let fps = parse_file("big.toml", &text).unwrap();
        let m = Matcher::new(&fps, Mode::Strict);
        assert_eq!(m.len(), 5000);
        assert_eq!(
            names(m.body(b"... needle-4999-x ... needle-7-x")),
            ["n7", "n4999"]
        );
    }
}
