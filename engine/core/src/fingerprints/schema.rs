//! The fingerprint file format (documented in `fingerprints/README.md`): TOML files
//! with `[[dns]]` and `[[http]]` tables. Every problem is reported with its file and
//! line.

use serde::Deserialize;
use std::fmt;
use toml::Spanned;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dns,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternType {
    Contains,
    Full,
    Prefix,
    Regexp,
}

impl PatternType {
    pub fn as_str(self) -> &'static str {
        match self {
            PatternType::Contains => "contains",
            PatternType::Full => "full",
            PatternType::Prefix => "prefix",
            PatternType::Regexp => "regexp",
        }
    }
}

/// The scopes OONI uses: national, ISP, institution, middlebox product, known false
/// positive, vague blocking word, benign injection, provider-side blocking.
pub const SCOPES: [&str; 8] = ["nat", "isp", "inst", "prod", "fp", "vbw", "injb", "prov"];

/// One fingerprint, as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub kind: Kind,
    pub name: String,
    pub scope: String,
    /// `dns`, `body` or `header.<lower-case name>`.
    pub location_found: String,
    pub pattern_type: PatternType,
    pub pattern: String,
    pub confidence_no_fp: u8,
    /// As written (upper-case country codes; `ZZ` allowed).
    pub expected_countries: Vec<String>,
    pub other_names: String,
    pub source: String,
    pub exp_url: String,
    pub notes: String,
    /// Where it was defined: `file:line`.
    pub origin: String,
}

/// The compiled size a single regexp may reach (the regex crate's default, made
/// explicit): checked on load, and the matcher's sets allow this much per member.
pub const REGEX_SIZE_LIMIT: usize = 10 << 20;

/// Compiles one fingerprint regexp as the loader checks it.
pub(crate) fn compile_regex(pattern: &str) -> Result<regex::bytes::Regex, regex::Error> {
    regex::bytes::RegexBuilder::new(&regex_source(pattern))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// The regexps come from Censored Planet and are written for Go's RE2, where a `{`
/// that does not open a counted repetition (`{2}`, `{2,}`, `{2,5}`) is a literal.
/// Rust's regex refuses those, so they are escaped.
pub fn regex_source(pattern: &str) -> String {
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut i = 0;
    let mut in_class = false;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && i + 1 < b.len() {
            // Copy the escape and the (possibly multi-byte) character after it.
            let next = pattern[i + 1..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&pattern[i..i + 1 + next]);
            i += 1 + next;
            continue;
        }
        match c {
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'{' if !in_class => {
                let rest = &pattern[i + 1..];
                let close = rest.find('}');
                let counted = close.is_some_and(|j| {
                    let inner = &rest[..j];
                    let (lo, hi) = inner.split_once(',').unwrap_or((inner, "0"));
                    !lo.is_empty()
                        && lo.bytes().all(|d| d.is_ascii_digit())
                        && hi.bytes().all(|d| d.is_ascii_digit())
                });
                if !counted {
                    out.push_str("\\{");
                    i += 1;
                    continue;
                }
            }
            _ => {}
        }
        let ch = pattern[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for FingerprintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file, l, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for FingerprintError {}

fn default_confidence() -> i64 {
    5
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFingerprint {
    name: String,
    scope: String,
    #[serde(default)]
    location_found: Option<String>,
    pattern_type: String,
    pattern: String,
    #[serde(default = "default_confidence")]
    confidence_no_fp: i64,
    #[serde(default)]
    expected_countries: Vec<String>,
    #[serde(default)]
    other_names: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    exp_url: String,
    #[serde(default)]
    notes: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    dns: Vec<Spanned<RawFingerprint>>,
    #[serde(default)]
    http: Vec<Spanned<RawFingerprint>>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn check(kind: Kind, raw: RawFingerprint, origin: String) -> Result<Fingerprint, String> {
    if raw.name.trim().is_empty() {
        return Err("name is empty".into());
    }
    if !SCOPES.contains(&raw.scope.as_str()) {
        return Err(format!(
            "unknown scope {:?} (expected one of {})",
            raw.scope,
            SCOPES.join(", ")
        ));
    }
    let pattern_type = match raw.pattern_type.as_str() {
        "contains" => PatternType::Contains,
        "full" => PatternType::Full,
        "prefix" => PatternType::Prefix,
        "regexp" | "regex" => PatternType::Regexp,
        other => {
            return Err(format!(
                "unknown pattern_type {other:?} (expected contains, full, prefix or regexp)"
            ))
        }
    };
    if raw.pattern.is_empty() {
        return Err("pattern is empty".into());
    }
    if pattern_type == PatternType::Regexp {
        compile_regex(&raw.pattern).map_err(|e| format!("invalid regexp: {e}"))?;
    }
    let location_found = match (kind, raw.location_found) {
        (Kind::Dns, None) => "dns".to_owned(),
        (Kind::Dns, Some(l)) if l == "dns" => l,
        (Kind::Dns, Some(l)) => {
            return Err(format!(
                "a [[dns]] fingerprint is found in \"dns\", not {l:?}"
            ))
        }
        (Kind::Http, None) => {
            return Err("location_found is required: \"body\" or \"header.<name>\"".into())
        }
        (Kind::Http, Some(l)) if l == "body" => l,
        (Kind::Http, Some(l)) => match l.strip_prefix("header.") {
            // Lower-cased as the matcher lower-cases a measurement's header names
            // (and as the importers do): Unicode-wide, not ASCII only.
            Some(h) if !h.is_empty() => format!("header.{}", h.to_lowercase()),
            _ => {
                return Err(format!(
                    "location_found {l:?} must be \"body\" or \"header.<name>\""
                ))
            }
        },
    };
    let confidence_no_fp = u8::try_from(raw.confidence_no_fp)
        .ok()
        .filter(|c| *c <= 10)
        .ok_or_else(|| format!("confidence_no_fp {} must be 0 to 10", raw.confidence_no_fp))?;
    for cc in &raw.expected_countries {
        if cc.len() != 2 || !cc.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "expected_countries item {cc:?} must be two upper-case letters (ZZ: any)"
            ));
        }
    }
    Ok(Fingerprint {
        kind,
        name: raw.name,
        scope: raw.scope,
        location_found,
        pattern_type,
        pattern: raw.pattern,
        confidence_no_fp,
        expected_countries: raw.expected_countries,
        other_names: raw.other_names,
        source: raw.source,
        exp_url: raw.exp_url,
        notes: raw.notes,
        origin,
    })
}

/// Parses and validates one file. `file` names it in errors.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<Fingerprint>, FingerprintError> {
    let err = |line, message: String| FingerprintError {
        file: file.to_owned(),
        line,
        message,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        err(line, e.message().to_owned())
    })?;
    let mut out = Vec::with_capacity(raw.dns.len() + raw.http.len());
    for (kind, list) in [(Kind::Dns, raw.dns), (Kind::Http, raw.http)] {
        for item in list {
            let line = line_of(text, item.span().start);
            let fp = check(kind, item.into_inner(), format!("{file}:{line}"))
                .map_err(|m| err(Some(line), m))?;
            out.push(fp);
        }
    }
    Ok(out)
}

/// Validates a whole set: names must be unique across all its files.
pub fn check_unique(fps: &[Fingerprint]) -> Result<(), FingerprintError> {
    let mut seen: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for fp in fps {
        if let Some(first) = seen.insert(&fp.name, &fp.origin) {
            let (file, line) = fp.origin.rsplit_once(':').unwrap_or((&fp.origin, ""));
            return Err(FingerprintError {
                file: file.to_owned(),
                line: line.parse().ok(),
                message: format!("duplicate name {:?} (first defined at {first})", fp.name),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[dns]]
name = "example.dns"
scope = "isp"
pattern_type = "full"
pattern = "10.0.0.1"
expected_countries = ["IT"]

[[http]]
name = "example.body"
scope = "nat"
location_found = "body"
pattern_type = "contains"
pattern = '''<title>Blocked "here"</title>'''
confidence_no_fp = 10
"#;

    #[test]
    fn go_style_literal_braces_are_escaped() {
        assert_eq!(regex_source(r#"{"msg":.*"id":"#), r#"\{"msg":.*"id":"#);
        assert_eq!(regex_source(r"a{2,3}b{x}"), r"a{2,3}b\{x}");
        assert_eq!(regex_source(r"[{]\{é"), r"[{]\{é");
        assert!(regex::Regex::new(&regex_source(r#"{"msg":.*"id":"#)).is_ok());
    }

    #[test]
    fn a_valid_file() {
        let fps = parse_file("a.toml", GOOD).unwrap();
        assert_eq!(fps.len(), 2);
        assert_eq!(fps[0].location_found, "dns");
        assert_eq!(fps[1].pattern, "<title>Blocked \"here\"</title>");
        assert_eq!(fps[1].origin, "a.toml:9");
        check_unique(&fps).unwrap();
    }

    fn error_of(text: &str) -> String {
        parse_file("f.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn every_problem_names_file_and_line() {
        assert!(error_of("[[dns]]\nname = \n").starts_with("f.toml:2:"));
        let e =
            error_of(&GOOD.replace("confidence_no_fp = 10", "confidence_no_fp = 10\ncolour = 1"));
        assert!(e.starts_with("f.toml:") && e.contains("colour"), "{e}");
        let e = error_of(&GOOD.replace("scope = \"nat\"", "scope = \"national\""));
        assert!(
            e.starts_with("f.toml:9:") && e.contains("unknown scope"),
            "{e}"
        );
        let e = error_of(
            &GOOD
                .replace("pattern_type = \"contains\"", "pattern_type = \"regexp\"")
                .replace("'''<title>Blocked \"here\"</title>'''", "\"a(b\""),
        );
        assert!(e.contains("invalid regexp"), "{e}");
        let e = error_of(&GOOD.replace(
            "location_found = \"body\"",
            "location_found = \"headers.x\"",
        ));
        assert!(e.contains("location_found"), "{e}");
        let e = error_of(&GOOD.replace("[\"IT\"]", "[\"it\"]"));
        assert!(
            e.starts_with("f.toml:2:") && e.contains("expected_countries"),
            "{e}"
        );
        let mut two = parse_file("a.toml", GOOD).unwrap();
        two.extend(parse_file("b.toml", GOOD).unwrap());
        let e = check_unique(&two).unwrap_err().to_string();
        assert!(
            e.starts_with("b.toml:2:") && e.contains("first defined at a.toml:2"),
            "{e}"
        );
    }
}
