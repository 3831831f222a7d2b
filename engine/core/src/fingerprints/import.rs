//! Importers from OONI's fingerprint files to this engine's TOML:
//! - the JSON snapshots (`fingerprints_dns.json`, `fingerprints_http.json`: the eight
//!   columns the fastpath reads);
//! - the ooni/blocking-fingerprints CSV (a header row and eleven columns);
//! - the first fastpath list of 2019 (no header: id, cc, body_match, header_name,
//!   header_prefix, header_full).
//!
//! Every column is kept. `expected_countries` becomes an array (items trimmed and
//! upper-cased, empty items dropped, which OONI's own validator forbids anyway).

use super::schema::Kind;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub name: String,
    pub scope: String,
    pub location_found: String,
    pub pattern_type: String,
    pub pattern: String,
    pub confidence_no_fp: i64,
    pub expected_countries: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub other_names: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub exp_url: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

impl Record {
    pub fn kind(&self) -> Kind {
        if self.location_found == "dns" {
            Kind::Dns
        } else {
            Kind::Http
        }
    }
}

pub fn countries(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(|c| c.trim().to_uppercase())
        .filter(|c| !c.is_empty())
        .collect()
}

/// Parses RFC 4180 CSV: quoted fields may hold commas, doubled quotes and line breaks.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut line = 1;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => {
                    if c == '\n' {
                        line += 1;
                    }
                    field.push(c);
                }
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                line += 1;
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            c => field.push(c),
        }
    }
    if quoted {
        return Err(format!("unterminated quoted field (line {line})"));
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

fn str_field(o: &serde_json::Map<String, Value>, k: &str) -> Result<String, String> {
    match o.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) | None => Ok(String::new()),
        Some(v) => Ok(v.to_string()),
    }
}

/// OONI's JSON snapshot format (a list of objects).
pub fn from_json(text: &str) -> Result<Vec<Record>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = v
        .as_array()
        .ok_or("expected a JSON array of fingerprints")?;
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            let o = item
                .as_object()
                .ok_or(format!("item {i} is not an object"))?;
            Ok(Record {
                name: str_field(o, "name")?,
                scope: str_field(o, "scope")?,
                location_found: str_field(o, "location_found")?,
                pattern_type: str_field(o, "pattern_type")?,
                pattern: str_field(o, "pattern")?,
                confidence_no_fp: o
                    .get("confidence_no_fp")
                    .and_then(Value::as_i64)
                    .unwrap_or(5),
                expected_countries: countries(&str_field(o, "expected_countries")?),
                other_names: str_field(o, "other_names")?,
                source: str_field(o, "source")?,
                exp_url: str_field(o, "exp_url")?,
                notes: str_field(o, "notes")?,
            })
        })
        .collect()
}

/// The blocking-fingerprints CSV (with header), or the 2019 list (without).
pub fn from_csv(text: &str, source_label: &str) -> Result<Vec<Record>, String> {
    let rows = parse_csv(text.strip_prefix('\u{feff}').unwrap_or(text))?;
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    if first.first().map(String::as_str) == Some("name") {
        let col = |name: &str| first.iter().position(|h| h == name);
        let idx: Vec<Option<usize>> = [
            "name",
            "scope",
            "other_names",
            "location_found",
            "pattern_type",
            "pattern",
            "confidence_no_fp",
            "expected_countries",
            "source",
            "exp_url",
            "notes",
        ]
        .iter()
        .map(|c| col(c))
        .collect();
        let get =
            |r: &Vec<String>, i: usize| idx[i].and_then(|j| r.get(j)).cloned().unwrap_or_default();
        return rows[1..]
            .iter()
            .filter(|r| r.iter().any(|f| !f.is_empty()))
            .enumerate()
            .map(|(n, r)| {
                if r.len() != first.len() {
                    return Err(format!(
                        "row {} has {} fields, the header {}",
                        n + 2,
                        r.len(),
                        first.len()
                    ));
                }
                Ok(Record {
                    name: get(r, 0),
                    scope: get(r, 1),
                    other_names: get(r, 2),
                    location_found: get(r, 3),
                    pattern_type: get(r, 4),
                    pattern: get(r, 5),
                    confidence_no_fp: get(r, 6)
                        .trim()
                        .parse()
                        .map_err(|_| format!("row {}: confidence_no_fp is not a number", n + 2))?,
                    expected_countries: countries(&get(r, 7)),
                    source: get(r, 8),
                    exp_url: get(r, 9),
                    notes: get(r, 10),
                })
            })
            .collect();
    }
    // The 2019 list: one pattern per row, body substring or header prefix / full value.
    rows.iter()
        .filter(|r| r.iter().any(|f| !f.is_empty()))
        .enumerate()
        .map(|(n, r)| {
            let f = |i: usize| r.get(i).cloned().unwrap_or_default();
            if r.len() != 6 {
                return Err(format!("row {}: expected 6 fields (id, cc, body_match, header_name, header_prefix, header_full), got {}", n + 1, r.len()));
            }
            let (location_found, pattern_type, pattern) = if !f(2).is_empty() {
                ("body".to_owned(), "contains", f(2))
            } else if !f(4).is_empty() {
                (format!("header.{}", f(3).to_lowercase()), "prefix", f(4))
            } else {
                (format!("header.{}", f(3).to_lowercase()), "full", f(5))
            };
            Ok(Record {
                name: format!("pipeline2019.{}", f(0)),
                // The 2019 list has no scope; every match counted as confirmed then.
                scope: "nat".into(),
                location_found,
                pattern_type: pattern_type.into(),
                pattern,
                confidence_no_fp: 5,
                expected_countries: countries(&f(1)),
                other_names: String::new(),
                source: source_label.to_owned(),
                exp_url: String::new(),
                notes: "imported from the 2019 fastpath list; scope assumed".into(),
            })
        })
        .collect()
}

#[derive(Serialize)]
struct OutFile<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dns: Vec<&'a Record>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    http: Vec<&'a Record>,
}

/// Writes records as one fingerprint TOML file, in their order.
pub fn to_toml(records: &[Record], header_comment: &str) -> Result<String, String> {
    let file = OutFile {
        dns: records.iter().filter(|r| r.kind() == Kind::Dns).collect(),
        http: records.iter().filter(|r| r.kind() == Kind::Http).collect(),
    };
    let body = toml::to_string(&file).map_err(|e| e.to_string())?;
    let comment: String = header_comment.lines().map(|l| format!("# {l}\n")).collect();
    Ok(format!("{comment}\n{body}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprints::schema::parse_file;

    #[test]
    fn csv_with_quotes_commas_and_line_breaks() {
        let rows = parse_csv("a,\"b,c\",\"d\"\"e\"\r\n\"multi\nline\",x,\n").unwrap();
        assert_eq!(
            rows,
            vec![vec!["a", "b,c", "d\"e"], vec!["multi\nline", "x", ""]]
        );
        assert!(parse_csv("\"open").is_err());
    }

    #[test]
    fn round_trip_keeps_every_column_and_byte() {
        let json = r#"[{"name":"t.1","scope":"nat","other_names":"x","location_found":"body","pattern_type":"contains",
            "pattern":"  a\"b\\c\r\nd é 禁止  ","confidence_no_fp":7,"expected_countries":"RU, ZZ,,"},
            {"name":"t.2","scope":"isp","other_names":"","location_found":"dns","pattern_type":"full","pattern":"1.2.3.4","confidence_no_fp":0,"expected_countries":""}]"#;
        let recs = from_json(json).unwrap();
        let text = to_toml(&recs, "test").unwrap();
        let back = parse_file("t.toml", &text).unwrap();
        assert_eq!(back.len(), 2);
        let body = back.iter().find(|f| f.name == "t.1").unwrap();
        assert_eq!(body.pattern, "  a\"b\\c\r\nd é 禁止  ");
        assert_eq!(body.expected_countries, ["RU", "ZZ"]);
        assert_eq!((body.confidence_no_fp, body.other_names.as_str()), (7, "x"));
        assert_eq!(
            back.iter()
                .find(|f| f.name == "t.2")
                .unwrap()
                .location_found,
            "dns"
        );
    }

    #[test]
    fn the_2019_list() {
        let csv = "15,ID,,Location,http://internet-positif.org,\n18,SA,,Server,,Protected by WireFilter\n1,IR,\"iframe src=\"\"http://10.10\",,,\n";
        let recs = from_csv(csv, "ooni/pipeline 2019").unwrap();
        assert_eq!(recs[0].location_found, "header.location");
        assert_eq!(recs[0].pattern_type, "prefix");
        assert_eq!(recs[1].pattern_type, "full");
        assert_eq!(recs[2].pattern, "iframe src=\"http://10.10");
        assert_eq!(recs[2].expected_countries, ["IR"]);
    }
}
