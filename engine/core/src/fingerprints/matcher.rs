//! The compiled fingerprint set. Built once per reload, then shared read-only.
//!
//! Each field is scanned once whatever the number of fingerprints: literal patterns go
//! into one `LiteralScan` per location (see `literal_scan`), exact values into a hash
//! map. A regular expression every match of which starts (or ends) with one of a few
//! literals is *gated* (all of OONI's body regexps are: every match of
//! `U\.S\..*Command` ends with `Command`): its literals join the same scan, and it
//! runs, alone, only on a haystack where one of them occurs. The others go into one
//! regex set per location. Matches come back in the order of the set, as OONI reports
//! them.

use super::literal_scan::LiteralScan;
use super::schema::{
    compile_regex, regex_source, Fingerprint, Kind, PatternType, REGEX_SIZE_LIMIT,
};
use ooni_scorer_sdk::jsonscan::{key_text, unescape_into, Cursor, ScanError};
use ooni_scorer_sdk::{b64, FingerprintMatch, Host};
use regex::bytes::{Regex, RegexSet, RegexSetBuilder};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use serde_json::{Map, Value};
use std::borrow::Cow;
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

/// A regexp is gated only if its gate has at most this many literals (a
/// case-insensitive word has a literal per case variant, and is left to the set)...
const GATE_MAX_LITERALS: usize = 64;
/// ...each at least this long. Shorter ones occur in many bodies, and a 3-byte one
/// makes the literal scan's side searcher (Teddy) work on 3-byte pieces for all its
/// patterns, not 4: gating `\u{fffd}.*\u{fffd}` on its 3-byte character made the scan
/// of OONI's body set ~25% slower, more than that regexp costs alone.
const GATE_MIN_LITERAL_LEN: usize = 4;

/// Literals of which every match of `source` (a `regex_source`) contains one, if
/// they make a gate. Of the literals every match starts with and those every match
/// ends with, each a gate if finite, non-empty, at most `GATE_MAX_LITERALS` of them
/// and none shorter than `GATE_MIN_LITERAL_LEN`, the one whose shortest literal is
/// longer (the prefix literals on a tie): a longer literal is rarer in a body, and
/// long ones are anchored by the literal scan rather than left to its side searcher
/// (see `literal_scan`). `<meta name=.*twitter:card` is gated on `twitter:card`,
/// which few bodies contain, rather than on `<meta name=`, which most do.
fn gate_literals(source: &str) -> Option<Vec<Vec<u8>>> {
    // Parsed as `regex::bytes` parses it (`utf8(false)`, default flags), so the
    // literals are those of the very matches the regexp finds.
    let hir = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .build()
        .parse(source)
        .ok()?;
    let gate = |kind: ExtractKind| -> Option<Vec<Vec<u8>>> {
        let seq = Extractor::new().kind(kind).extract(&hir);
        let literals = seq.literals()?;
        if literals.is_empty()
            || literals.len() > GATE_MAX_LITERALS
            || seq.min_literal_len()? < GATE_MIN_LITERAL_LEN
        {
            return None;
        }
        let mut out: Vec<Vec<u8>> = literals.iter().map(|l| l.as_bytes().to_vec()).collect();
        out.sort_unstable();
        out.dedup();
        // Where `blocked` occurs, so does `block`: only the latter is needed.
        let all = out.clone();
        out.retain(|l| {
            !all.iter()
                .any(|k| k.len() < l.len() && l.windows(k.len()).any(|w| w == k.as_slice()))
        });
        Some(out)
    };
    let shortest = |g: &Option<Vec<Vec<u8>>>| g.as_ref().and_then(|g| g.iter().map(Vec::len).min());
    let prefix = gate(ExtractKind::Prefix);
    let suffix = gate(ExtractKind::Suffix);
    if shortest(&suffix) > shortest(&prefix) {
        suffix
    } else {
        prefix
    }
}

/// What a distinct literal of a location stands for.
#[derive(Debug, Clone, Copy)]
enum Owner {
    /// A literal fingerprint: its index and type.
    Row(u32, PatternType),
    /// A gate literal of `Literals::gated[_]`.
    Gate(u32),
}

/// Literal patterns of one location, searched in one pass (see `literal_scan`), with
/// the gate literals of its gated regexps.
struct Literals {
    scan: LiteralScan,
    /// For each distinct pattern: the fingerprints and gates it stands for.
    owners: Vec<Vec<Owner>>,
    /// Gated regexps (fingerprint index, regexp compiled alone), each run on the whole
    /// haystack when one of its gate literals occurs in it: a literal found anywhere
    /// means it may match, not that a match starts there.
    gated: Vec<(u32, Regex)>,
}

impl Literals {
    /// The literal fingerprints `items` and regexps `regexps` of one location: those
    /// regexps that can be gated are, the others come back as one set (`regex_set`).
    fn build(
        items: Vec<(u32, PatternType, Vec<u8>)>,
        regexps: &[(u32, &str)],
    ) -> (Literals, (RegexSet, Vec<u32>)) {
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut owners: Vec<Vec<Owner>> = Vec::new();
        let mut add = |pat: Vec<u8>, owner: Owner| {
            let i = *index.entry(pat.clone()).or_insert_with(|| {
                patterns.push(pat);
                owners.push(Vec::new());
                patterns.len() - 1
            });
            owners[i].push(owner);
        };
        for (fp, ty, pat) in items {
            add(pat, Owner::Row(fp, ty));
        }
        let mut gated = Vec::new();
        let mut ungated = Vec::new();
        for &(fp, pattern) in regexps {
            let source = regex_source(pattern);
            match gate_literals(&source) {
                Some(literals) => {
                    let g = u32::try_from(gated.len()).expect("fewer than 2^32 regexps");
                    for lit in literals {
                        add(lit, Owner::Gate(g));
                    }
                    let re = compile_regex(pattern)
                        .expect("regexps were validated on load, each within REGEX_SIZE_LIMIT");
                    gated.push((fp, re));
                }
                None => ungated.push((fp, pattern)),
            }
        }
        let literals = Literals {
            scan: LiteralScan::new(&patterns),
            owners,
            gated,
        };
        (literals, regex_set(&ungated))
    }

    /// Fingerprints whose literal occurs in `hay` (as a prefix, for `prefix` rows
    /// when `honour_prefix`), and gated regexps that match `hay`, pushed to `out`.
    fn scan(&self, hay: &[u8], honour_prefix: bool, out: &mut Vec<u32>) {
        let mut gates: Vec<u32> = Vec::new();
        self.scan.find_each(hay, |p| {
            for &owner in &self.owners[p] {
                match owner {
                    Owner::Row(fp, ty) => {
                        if !(honour_prefix && ty == PatternType::Prefix)
                            || hay.starts_with(self.scan.pattern(p))
                        {
                            out.push(fp);
                        }
                    }
                    Owner::Gate(g) => gates.push(g),
                }
            }
        });
        // A regexp with several gate literals found runs once.
        gates.sort_unstable();
        gates.dedup();
        for g in gates {
            let (fp, re) = &self.gated[g as usize];
            if re.is_match(hay) {
                out.push(*fp);
            }
        }
    }
}

/// The fingerprints of one header name, searched like bodies: one pass whatever
/// their number.
struct HeaderIndex {
    full: HashMap<String, Vec<u32>>,
    /// Literal rows and gated regexps (strict mode only: compat has no header
    /// regexps, so a literal scan there never runs one).
    literals: Literals,
    /// The regexps that could not be gated.
    regex: (RegexSet, Vec<u32>),
}

/// The lengths of a map's keys, for telling most strings apart from them without
/// hashing them.
struct KeyLengths(Box<[usize]>);

impl KeyLengths {
    fn of(lens: impl Iterator<Item = usize>) -> KeyLengths {
        let mut lens: Vec<usize> = lens.collect();
        lens.sort_unstable();
        lens.dedup();
        KeyLengths(lens.into_boxed_slice())
    }

    fn may_hold(&self, len: usize) -> bool {
        self.0.binary_search(&len).is_ok()
    }
}

pub struct Matcher {
    mode: Mode,
    minis: Vec<FingerprintMatch>,
    dns_exact: HashMap<String, Vec<u32>>,
    /// Literal rows and gated regexps.
    dns_literals: Literals,
    /// The regexps that could not be gated.
    dns_regex: (RegexSet, Vec<u32>),
    body_literals: Literals,
    body_full: HashMap<Vec<u8>, Vec<u32>>,
    /// The lengths of the keys of `body_full`: a body of another length is not hashed
    /// (SipHash over a whole body costs about as much as the literal scan).
    body_full_lens: KeyLengths,
    body_regex: (RegexSet, Vec<u32>),
    /// Header fingerprints by lower-case header name, each list in set order.
    headers: HashMap<String, HeaderIndex>,
    /// The lengths of the keys of `headers`.
    header_name_lens: KeyLengths,
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

/// One set for the regexps of one location that could not be gated (see
/// `Literals::build`). Each was compiled alone on load within
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
        let (dns_literals, dns_regex) = Literals::build(dns_lits, &dns_res);
        let (body_literals, body_regex) = Literals::build(body_lits, &body_res);
        let body_full_lens = KeyLengths::of(body_full.keys().map(Vec::len));
        Matcher {
            mode,
            minis,
            dns_exact,
            dns_literals,
            dns_regex,
            body_literals,
            body_full,
            body_full_lens,
            body_regex,
            header_name_lens: KeyLengths::of(header_parts.keys().map(String::len)),
            headers: header_parts
                .into_iter()
                .map(|(name, (full, lits, res))| {
                    let (literals, regex) = Literals::build(lits, &res);
                    let index = HeaderIndex {
                        full,
                        literals,
                        regex,
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
            if !self.dns_regex.1.is_empty() {
                ids.extend(
                    self.dns_regex
                        .0
                        .matches(key.as_bytes())
                        .iter()
                        .map(|k| self.dns_regex.1[k]),
                );
            }
        }
        self.collect(ids)
    }

    pub fn body(&self, body: &[u8]) -> Vec<FingerprintMatch> {
        let mut ids = Vec::new();
        self.body_literals
            .scan(body, self.mode == Mode::Strict, &mut ids);
        if self.mode == Mode::Strict {
            if self.body_full_lens.may_hold(body.len()) {
                if let Some(f) = self.body_full.get(body) {
                    ids.extend(f);
                }
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
        let Some(named) = self.indexed_headers(headers_json) else {
            return Vec::new();
        };
        let mut ids = Vec::new();
        for (name, raw) in named {
            let Some(index) = self.headers.get(&name) else {
                continue;
            };
            let (text, decoded) = match raw.first() {
                Some(b'"') => {
                    let mut bytes = Vec::new();
                    if !unescape_into(raw, &mut bytes) {
                        continue;
                    }
                    match String::from_utf8(bytes) {
                        Ok(s) => (s, false),
                        Err(_) => continue,
                    }
                }
                // A base64 value, decoded as Latin-1 (OONI does so for prefix rows only).
                Some(b'{') => {
                    let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(raw) else {
                        continue;
                    };
                    if o.get("format").and_then(Value::as_str) != Some("base64") {
                        continue;
                    }
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

    /// The members of a headers object (JSON text) whose lower-cased names the set
    /// indexes, each as its lower-cased name and its value's raw JSON text, as parsing
    /// it with serde_json and then lower-casing the names would leave them: of repeated
    /// names the last value at the first one's place, then of names equal but for case
    /// the last in that order. Read with the scanner: no tree is built and no value is
    /// copied but those looked up. `None` when the text is not one JSON object.
    fn indexed_headers<'t>(&self, json: &'t str) -> Option<Vec<(String, &'t [u8])>> {
        let b = json.as_bytes();
        let mut cur = Cursor::new(b);
        if cur.peek() != Some(b'{') {
            return None;
        }
        // Looked up by hash: a hostile object may repeat an indexed name in thousands
        // of spellings.
        let mut exact: Vec<(String, &'t [u8])> = Vec::new();
        let mut exact_at: HashMap<Cow<'t, str>, usize> = HashMap::new();
        let mut lowered = String::new();
        cur.object(|raw, escaped, cur| {
            let Some(key) = key_text(raw, escaped) else {
                return Err(ScanError {
                    what: "invalid key",
                    offset: cur.i,
                });
            };
            let start = cur.i;
            cur.skip_value()?;
            let value = &b[start..cur.i];
            // Most names are ASCII and not indexed: told so by their length
            // (lower-casing keeps an ASCII name's), or lower-cased into one buffer to
            // be looked up; only an indexed name gets a string of its own.
            if key.is_ascii() {
                if !self.header_name_lens.may_hold(key.len()) {
                    return Ok(());
                }
                lowered.clear();
                lowered.push_str(&key);
                lowered.make_ascii_lowercase();
            } else {
                lowered = key.to_lowercase();
            }
            if !self.headers.contains_key(lowered.as_str()) {
                return Ok(());
            }
            match exact_at.get(&key) {
                Some(&at) => exact[at].1 = value,
                None => {
                    exact_at.insert(key, exact.len());
                    exact.push((lowered.clone(), value));
                }
            }
            Ok(())
        })
        .ok()?;
        cur.end().ok()?;
        let mut named: Vec<(String, &[u8])> = Vec::with_capacity(exact.len());
        let mut named_at: HashMap<String, usize> = HashMap::new();
        for (lower, value) in exact {
            match named_at.get(&lower) {
                Some(&at) => named[at].1 = value,
                None => {
                    named_at.insert(lower.clone(), named.len());
                    named.push((lower, value));
                }
            }
        }
        Some(named)
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
        for bad in [
            "not json",
            "[1]",
            r#"{"via": "x"} 1"#,
            r#"{"via": "x""#,
            r#"{"via": "\x"}"#,
        ] {
            assert!(s.headers(bad).is_empty(), "{bad}");
        }
        // Names are read as serde_json parses them and then lower-cased: a repeated
        // name keeps its first place with its last value, then of names equal but for
        // case the last in that order wins.
        let server = |v: &str| format!("{v} WireFilter");
        let repeated = format!(
            r#"{{"SERVER": "x", "server": "{}", "SERVER": "{}"}}"#,
            server("Protected by"),
            server("y")
        );
        assert_eq!(names(s.headers(&repeated)), ["h.full"]);
        let escaped = r#"{"S\u0045RVER": "Protected by \u0057ireFilter"}"#;
        assert_eq!(names(s.headers(escaped)), ["h.full"]);
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

    /// One fingerprint `name`: header `header` (TOML string text) is exactly `x`.
    fn full_header_row(name: &str, header: &str) -> Vec<Fingerprint> {
        let text = format!(
            "[[http]]\nname = \"{name}\"\nscope = \"isp\"\nlocation_found = \"header.{header}\"\n\
             pattern_type = \"full\"\npattern = \"x\"\n"
        );
        parse_file("h.toml", &text).unwrap()
    }

    /// Found with the `fingerprints` fuzz target (a fingerprint must match its own
    /// pattern): the loader lower-cased header names in ASCII only and the matcher
    /// lower-cases a measurement's names Unicode-wide, so a fingerprint on a header
    /// name with a non-ASCII capital could never match.
    #[test]
    fn non_ascii_header_names_match_in_any_case() {
        let fps = full_header_row("h", r"X-\u00c9");
        assert_eq!(fps[0].location_found, "header.x-\u{e9}");
        for mode in [Mode::Compat, Mode::Strict] {
            let m = Matcher::new(&fps, mode);
            for name in ["X-\u{c9}", "x-\u{e9}", "X-\u{e9}"] {
                let h = serde_json::json!({ name: "x" }).to_string();
                assert_eq!(names(m.headers(&h)), ["h"], "{mode:?} {name}");
            }
        }
    }

    /// Names are first told apart by length; one whose lower-case form is longer or
    /// shorter (the Kelvin sign, U+212A, lower-cases to `k`) must still be looked up.
    #[test]
    fn header_names_of_other_lengths_are_still_looked_up_lower_cased() {
        let fps = full_header_row("cookie", "set-cookie");
        for mode in [Mode::Compat, Mode::Strict] {
            let m = Matcher::new(&fps, mode);
            for (name, found) in [
                ("Set-Cookie", true),
                ("SET-COOKIE", true),
                (r"set-coo\u212aie", true),
                ("set-coo\u{212a}ie", true),
                ("set-cookies", false),
                ("set-cooki", false),
                ("Set-Cookie2", false),
            ] {
                let h = format!(r#"{{"Server":"x","{name}":"x","Date":"x"}}"#);
                let want: &[&str] = if found { &["cookie"] } else { &[] };
                assert_eq!(names(m.headers(&h)), want, "{mode:?} {name}");
            }
        }
        // Long names too.
        let long = "x-".repeat(35);
        let m = Matcher::new(&full_header_row("long", &long), Mode::Strict);
        for len in [62, 63, 64, 69, 70, 71] {
            let name = format!("{}{}", "X-".repeat(35), "x")
                .chars()
                .take(len)
                .collect::<String>();
            let h = format!(r#"{{"{name}":"x"}}"#);
            let want: &[&str] = if len == 70 { &["long"] } else { &[] };
            assert_eq!(names(m.headers(&h)), want, "{len}");
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

    /// Regexps for the equivalence test: OONI-like rows, ones that cannot be gated
    /// (no literal, short literals, many case variants), anchors and look-arounds,
    /// non-ASCII and non-UTF-8 literals, a Go-style literal brace.
    const GATE_REGEXPS: &[&str] = &[
        r"U\.S\..*Command",
        r"(?i)access denied",
        r"blocked\s+by",
        r"^<html>",
        r"a|bc|def",
        r".*x",
        r"\d{3}-block",
        r"[Bb]lock(ed)?",
        r"forbidden|no",
        r"<title>(Blocked|Forbidden)</title>",
        r"(?m)^Denied$",
        r"\bfiltered\b",
        r"Доступ.*ограничен",
        // As OONI writes it: the character itself (`regex_source` would escape the
        // brace of `\x{fffd}`).
        "\u{fffd}.*\u{fffd}",
        r#"{"msg":.*"id":"#,
        r"(?-u:\xff\xfe)bin",
        r"(?i)ok",
        r"colou?r=red;",
        r"<meta name=.*twitter:card",
        r"(?i)(?:Cisco|Squid)-proxy",
    ];

    /// Pieces of matching (and nearly matching) text planted in generated bodies.
    const PLANTS: &[&[u8]] = &[
        b"U.S.",
        b"Command",
        b" Cyber ",
        b"access denied",
        b"ACCESS Denied",
        b"blocked  by",
        b"blocked\tby",
        b"<html>",
        b"bc",
        b"def",
        b"x",
        b"123-block",
        b"12-block",
        b"Block",
        b"blocked",
        b"forbidden",
        b"no",
        b"<title>Blocked</title>",
        b"<title>Forbidden</title>",
        b"\nDenied\n",
        b"Denied",
        b"filtered",
        b"unfiltered",
        "Доступ".as_bytes(),
        "ограничен".as_bytes(),
        "\u{fffd}".as_bytes(),
        b"{\"msg\":",
        b"\"id\":",
        b"\xff\xfebin",
        b"bin",
        b"OK",
        b"color=red;",
        b"colour=red;",
        b"<meta name=\"x\">",
        b"twitter:card",
        b"squid-PROXY",
        b"cisco-proxy",
        b"\n",
    ];

    /// The indices of the members of `set` that match `hay`.
    fn set_ids(set: &RegexSet, hay: &[u8]) -> Vec<usize> {
        set.matches(hay).iter().collect()
    }

    /// Gated regexps run only where a gate literal occurs, on the whole body: the
    /// fingerprints found must be those a plain regex set over the same regexps
    /// finds, on every body.
    #[test]
    fn gated_regexps_match_as_a_regex_set() {
        let mut text = String::new();
        for (i, re) in GATE_REGEXPS.iter().enumerate() {
            text.push_str(&format!(
                "[[http]]\nname = \"r{i}\"\nscope = \"isp\"\nlocation_found = \"body\"\n\
                 pattern_type = \"regexp\"\npattern = '{re}'\n\n\
                 [[http]]\nname = \"h{i}\"\nscope = \"isp\"\nlocation_found = \"header.x\"\n\
                 pattern_type = \"regexp\"\npattern = '{re}'\n\n"
            ));
        }
        let fps = parse_file("gates.toml", &text).unwrap();
        let m = Matcher::new(&fps, Mode::Strict);
        let gated: Vec<u32> = m.body_literals.gated.iter().map(|(i, _)| *i).collect();
        assert!(gated.len() >= 10, "most of these are gated: {gated:?}");
        assert!(m.body_regex.1.len() >= 4, "and some are not");
        let set = RegexSet::new(GATE_REGEXPS.iter().map(|p| regex_source(p))).unwrap();
        // Fingerprint `2 * i` is body regexp `i`, `2 * i + 1` its header twin.
        let index = |ms: Vec<FingerprintMatch>, twin: usize| -> Vec<usize> {
            ms.into_iter()
                .map(|f| {
                    let name = f["name"].as_str().unwrap();
                    let i = fps.iter().position(|fp| fp.name == name).unwrap();
                    assert_eq!(i % 2, twin);
                    i / 2
                })
                .collect()
        };
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let filler = b"ab xyzUS.<>\n\t0123456789-_dcneoi";
        let mut hits = vec![0usize; GATE_REGEXPS.len()];
        let bodies = 4000;
        for n in 0..bodies {
            let mut body = Vec::new();
            for _ in 0..next() % 24 {
                match next() % 8 {
                    0..=3 => body.extend_from_slice(PLANTS[next() as usize % PLANTS.len()]),
                    4..=6 => {
                        for _ in 0..next() % 12 {
                            body.push(filler[next() as usize % filler.len()]);
                        }
                    }
                    // Any byte: broken UTF-8, NUL, 0xff.
                    _ => body.push(next() as u8),
                }
            }
            if n % 500 == 0 {
                // A long body, so the literal scan runs its main loop, not just its tail.
                let pad: Vec<u8> = (0..4096).map(|i| filler[i % filler.len()]).collect();
                body.splice(0..0, pad);
            }
            let want = set_ids(&set, &body);
            for &i in &want {
                hits[i] += 1;
            }
            assert_eq!(
                index(m.body(&body), 0),
                want,
                "body {:?}",
                String::from_utf8_lossy(&body)
            );
            if let Ok(s) = std::str::from_utf8(&body) {
                let h = serde_json::json!({ "X": s }).to_string();
                assert_eq!(index(m.headers(&h), 1), want, "header {s:?}");
            }
        }
        for (i, &h) in hits.iter().enumerate() {
            assert!(
                h > 0 && h < bodies,
                "{} matched {h} of {bodies} bodies: the test should plant both",
                GATE_REGEXPS[i]
            );
        }
    }

    #[test]
    fn which_regexps_are_gated() {
        let gate = |re: &str| gate_literals(&regex_source(re));
        // Both ends are literals; the longer one gates.
        assert_eq!(gate(r"U\.S\..*Command"), Some(vec![b"Command".to_vec()]));
        assert_eq!(
            gate(r"<meta name=.*twitter:card"),
            Some(vec![b"twitter:card".to_vec()])
        );
        assert_eq!(gate(r"^<html>"), Some(vec![b"<html>".to_vec()]));
        assert_eq!(
            gate(r"[Bb]lock(ed)?\d"),
            Some(vec![b"Block".to_vec(), b"block".to_vec()])
        );
        assert_eq!(gate(r"<br><br>.* \+0300"), Some(vec![b"<br><br>".to_vec()]));
        // Neither end is a gate: a match may start or end with anything, or with a
        // literal too short to be rare.
        assert_eq!(gate(r".*x"), None);
        assert_eq!(gate(r"a|bc|def"), None);
        assert_eq!(gate(r"forbidden|no"), None);
        assert_eq!(gate(r"\d{3}-block\s"), None);
        assert_eq!(gate(r"(?:)"), None);
        assert_eq!(gate("\u{fffd}.*\u{fffd}"), None, "3 bytes");
        // One literal per case variant: too many (144 and 192)...
        assert_eq!(gate(r"(?i)access denied"), None);
        // ...or not (32 of `-proxy`).
        assert_eq!(
            gate(r"(?i)(?:Cisco|Squid)-proxy").map(|g| g.len()),
            Some(32)
        );
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
