//! Network names for `/api/_/asnmeta`, `/api/_/networks` and Explorer's network
//! pages. Two inputs, told apart by their first byte, each optionally gzipped:
//!
//! - OONI's own source, `all_as_org_map.json` (ooni/historical-geoip, the file OONI's
//!   `asnmeta_updater` loads): `{"<asn>": [[org_name, cc, "YYYYMMDD", aut_name,
//!   source], …]}`, every historical entry of every network.
//! - CAIDA's AS-organisation file (`YYYYMMDD.as-org2info.txt`), which that JSON is
//!   built from: `# format:` lines name the columns of the organisation section
//!   (`org_id|changed|org_name|country|source`) and of the AS section
//!   (`aut|changed|aut_name|org_id|opaque_id|source`); older files say `name` for
//!   both names and have no `opaque_id`.
//!
//! An import replaces the whole table in one transaction, as OONI swaps its table;
//! readers take the newest `changed` of a network.

use crate::store::{AsnMeta, Store, StoreError};
use chrono::NaiveDate;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AsnMetaError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: no networks in the file")]
    Empty { path: PathBuf },
    #[error(transparent)]
    Db(#[from] StoreError),
}

/// Reads a file (plain or gzipped) into rows.
pub fn read_file(path: &Path) -> Result<Vec<AsnMeta>, AsnMetaError> {
    let read_err = |source| AsnMetaError::Read {
        path: path.to_owned(),
        source,
    };
    let raw = std::fs::read(path).map_err(read_err)?;
    let text = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_string(&mut s)
            .map_err(read_err)?;
        s
    } else {
        String::from_utf8(raw).map_err(|e| AsnMetaError::Format {
            path: path.to_owned(),
            message: format!("not UTF-8 text: {e}"),
        })?
    };
    let rows = parse(&text).map_err(|message| AsnMetaError::Format {
        path: path.to_owned(),
        message,
    })?;
    if rows.is_empty() {
        return Err(AsnMetaError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(rows)
}

/// Parses either format (see the module's comment).
pub fn parse(text: &str) -> Result<Vec<AsnMeta>, String> {
    let mut rows = if text.trim_start().starts_with('{') {
        parse_ooni_json(text)?
    } else {
        parse_caida(text)?
    };
    rows.sort_by_key(|r| (r.asn, r.changed));
    // The table's key is (asn, changed): one name per network and day.
    rows.dedup_by(|b, a| a.asn == b.asn && a.changed == b.changed);
    Ok(rows)
}

fn day(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y%m%d")
        .map_err(|e| format!("changed {s:?} is not YYYYMMDD: {e}"))
}

fn asn(s: &str) -> Result<i64, String> {
    s.trim()
        .parse::<u32>()
        .map(i64::from)
        .map_err(|_| format!("AS number {s:?} is not a 32-bit unsigned number"))
}

fn parse_ooni_json(text: &str) -> Result<Vec<AsnMeta>, String> {
    type Entry = (String, String, String, String, String);
    let map: HashMap<String, Vec<Entry>> =
        serde_json::from_str(text).map_err(|e| format!("not an AS-to-organisation map: {e}"))?;
    let mut rows = Vec::new();
    for (a, history) in map {
        let asn = asn(&a)?;
        for (org_name, cc, changed, aut_name, source) in history {
            rows.push(AsnMeta {
                asn,
                org_name,
                cc,
                changed: day(&changed).map_err(|e| format!("AS{asn}: {e}"))?,
                aut_name,
                source,
            });
        }
    }
    Ok(rows)
}

/// One organisation of CAIDA's file: name and country.
struct Org {
    name: String,
    country: String,
}

fn parse_caida(text: &str) -> Result<Vec<AsnMeta>, String> {
    let mut orgs: HashMap<String, Org> = HashMap::new();
    // AS rows wait for the organisation section, which may come after them.
    let mut ases: Vec<(i64, NaiveDate, String, String, String)> = Vec::new();
    let mut columns: Option<Vec<String>> = None;
    for (i, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}", i + 1);
        if let Some(rest) = line.strip_prefix('#') {
            if let Some(spec) = rest.trim_start().strip_prefix("format:") {
                columns = Some(spec.trim().split('|').map(str::to_owned).collect());
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let cols = columns
            .as_ref()
            .ok_or_else(|| at("data before any \"# format:\" line".into()))?;
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() != cols.len() {
            return Err(at(format!(
                "{} fields where the format line names {}",
                fields.len(),
                cols.len()
            )));
        }
        let get = |names: &[&str]| {
            cols.iter()
                .position(|c| names.contains(&c.as_str()))
                .map(|i| fields[i])
        };
        let (Some(changed), Some(name), Some(source)) = (
            get(&["changed"]),
            get(&["org_name", "aut_name", "name"]),
            get(&["source"]),
        ) else {
            return Err(at("the format lacks changed, a name or source".into()));
        };
        if let Some(aut) = get(&["aut"]) {
            let org_id = get(&["org_id"]).unwrap_or_default();
            // Some entries carry no date; they sort oldest.
            let changed = if changed.is_empty() {
                NaiveDate::MIN
            } else {
                day(changed).map_err(at)?
            };
            ases.push((
                asn(aut).map_err(at)?,
                changed,
                name.to_owned(),
                org_id.to_owned(),
                source.to_owned(),
            ));
        } else if let Some(org_id) = get(&["org_id"]) {
            orgs.insert(
                org_id.to_owned(),
                Org {
                    name: name.to_owned(),
                    country: get(&["country"]).unwrap_or_default().to_owned(),
                },
            );
        } else {
            return Err(at("a format line with neither aut nor org_id".into()));
        }
    }
    Ok(ases
        .into_iter()
        .map(|(asn, changed, aut_name, org_id, source)| {
            // An AS whose organisation is missing keeps its own name.
            let (org_name, cc) = orgs
                .get(&org_id)
                .map_or((aut_name.clone(), String::new()), |o| {
                    (o.name.clone(), o.country.clone())
                });
            AsnMeta {
                asn,
                org_name,
                cc,
                changed,
                aut_name,
                source,
            }
        })
        .collect())
}

/// Replaces the network names with those of `path`; returns how many rows.
pub async fn import(path: &Path, store: &Store) -> Result<usize, AsnMetaError> {
    let rows = read_file(path)?;
    store.replace_asnmeta(&rows).await?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ooni_json_keeps_every_historical_entry() {
        let text = r#"{"30722": [["Vodafone Italia S.p.A.", "IT", "20180101", "VODAFONE-IT-ASN", "RIPE"],
                                 ["Vodafone Italia S.p.A. (new)", "IT", "20240501", "VODAFONE-IT-ASN", "RIPE"]],
                       "13335": [["Cloudflare, Inc.", "US", "20170217", "CLOUDFLARENET", "ARIN"]]}"#;
        let rows = parse(text).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].asn, 13335);
        assert_eq!(rows[2].org_name, "Vodafone Italia S.p.A. (new)");
        assert_eq!(
            rows[2].changed,
            NaiveDate::from_ymd_opt(2024, 5, 1).unwrap()
        );
        assert!(parse(r#"{"x": []}"#).unwrap_err().contains("\"x\""));
        assert!(parse(r#"{"1": [["a", "b", "2020-01-01", "c", "d"]]}"#)
            .unwrap_err()
            .contains("YYYYMMDD"));
    }

    #[test]
    fn caida_joins_ases_to_organisations_in_either_order() {
        let text = "# name: AS Org\n\
            # format:aut|changed|aut_name|org_id|opaque_id|source\n\
            1|20120224|LVLT-1|LVLT-ARIN|e5e3b9c_ARIN|ARIN\n\
            64512||PRIVATE|NOPE|x|ARIN\n\
            # format:org_id|changed|org_name|country|source\n\
            LVLT-ARIN|20120130|Level 3 Communications, Inc.|US|ARIN\n";
        let rows = parse(text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].asn, rows[0].org_name.as_str(), rows[0].cc.as_str()),
            (1, "Level 3 Communications, Inc.", "US")
        );
        assert_eq!(rows[0].aut_name, "LVLT-1");
        assert_eq!(
            (rows[1].org_name.as_str(), rows[1].changed),
            ("PRIVATE", NaiveDate::MIN)
        );
        // The older layout: `name` for both names, no opaque_id.
        let old = "# format: org_id|changed|name|country|source\n\
            O-1|20100101|Org One|DE|RIPE\n\
            # format: aut|changed|name|org_id|source\n\
            3320|20100102|DTAG|O-1|RIPE\n";
        let rows = parse(old).unwrap();
        assert_eq!(
            (rows[0].org_name.as_str(), rows[0].cc.as_str()),
            ("Org One", "DE")
        );
        assert!(parse("1|2|3\n").unwrap_err().contains("line 1"));
        assert!(
            parse("# format:aut|changed|aut_name|org_id|source\n1|20200101|A\n")
                .unwrap_err()
                .contains("line 2: 3 fields")
        );
    }

    #[test]
    fn gzipped_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.json.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(
            &mut gz,
            br#"{"7": [["Seven", "ZA", "20200101", "S", "AFRINIC"]]}"#,
        )
        .unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let rows = read_file(&path).unwrap();
        assert_eq!((rows[0].asn, rows[0].org_name.as_str()), (7, "Seven"));
        std::fs::write(&path, "{}").unwrap();
        assert!(matches!(read_file(&path), Err(AsnMetaError::Empty { .. })));
    }
}
