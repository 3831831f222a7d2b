//! Citizen Lab test lists (github.com/citizenlab/test-lists `lists/`): `global.csv`
//! and one `{cc}.csv` per country, columns
//! `url,category_code,category_description,date_added,source,notes`. Imported into
//! the `citizenlab` table, which feeds `category_code` filters and axes, the domain
//! routes, `/api/v1/test-list/urls` and the check-in's URL list.

use crate::store::{Store, StoreError, TestListEntry};
use ooni_core::urlparse::netloc;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TestListError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Format {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("no test-list CSV files (global.csv, {{cc}}.csv) in {0}")]
    Empty(PathBuf),
    #[error(transparent)]
    Db(#[from] StoreError),
}

/// The list a file holds: `ZZ` for `global.csv`, the lower-case country for
/// `{cc}.csv`; `None` for other files (legends, category lists).
fn list_of(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    if path.extension()? != "csv" {
        return None;
    }
    if stem == "global" {
        return Some("ZZ".to_owned());
    }
    (stem.len() == 2 && stem.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| stem.to_ascii_lowercase())
}

/// A CSV record and the line it starts on.
type Record = (usize, Vec<String>);

/// Splits CSV text into records (RFC 4180: quoted fields may hold commas, quotes
/// doubled, and newlines). Returns each record with the line it starts on.
fn csv_records(text: &str) -> Result<Vec<Record>, (usize, String)> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut record = Vec::new();
    let mut in_quotes = false;
    let mut line = 1;
    let mut start = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (in_quotes, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => in_quotes = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
            (false, '"') if field.is_empty() => in_quotes = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                if !(record.len() == 1 && record[0].is_empty()) {
                    out.push((start, std::mem::take(&mut record)));
                }
                record.clear();
                line += 1;
                start = line;
            }
            (false, c) => field.push(c),
        }
    }
    if in_quotes {
        return Err((start, "unterminated quoted field".to_owned()));
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        out.push((start, record));
    }
    Ok(out)
}

/// Reads every list file of `dir` (or of `dir/lists`).
pub fn read_dir(dir: &Path) -> Result<Vec<TestListEntry>, TestListError> {
    let dir = if dir.join("lists").is_dir() {
        dir.join("lists")
    } else {
        dir.to_owned()
    };
    let read_err = |source| TestListError::Read {
        path: dir.clone(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| list_of(p).is_some())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(TestListError::Empty(dir));
    }
    let mut out = Vec::new();
    for path in files {
        let cc = list_of(&path).unwrap_or_default();
        let text = std::fs::read_to_string(&path).map_err(|source| TestListError::Read {
            path: path.clone(),
            source,
        })?;
        let format_err = |line: usize, message: String| TestListError::Format {
            path: path.clone(),
            line,
            message,
        };
        let records = csv_records(&text).map_err(|(l, m)| format_err(l, m))?;
        let mut rows = records.into_iter();
        let Some((_, header)) = rows.next() else {
            continue;
        };
        let col = |name: &str| header.iter().position(|h| h.trim() == name);
        let (Some(url_col), Some(cat_col)) = (col("url"), col("category_code")) else {
            return Err(format_err(
                1,
                "the header needs url and category_code".into(),
            ));
        };
        for (line, rec) in rows {
            let url = rec.get(url_col).map(|s| s.trim()).unwrap_or("");
            let category = rec.get(cat_col).map(|s| s.trim()).unwrap_or("");
            if url.is_empty() {
                continue;
            }
            let domain = netloc(url).map_err(|e| format_err(line, format!("url {url:?}: {e}")))?;
            let domain = domain.rsplit_once('@').map_or(domain.as_str(), |(_, h)| h);
            let domain = domain
                .split(':')
                .next()
                .unwrap_or(domain)
                .to_ascii_lowercase();
            out.push(TestListEntry {
                domain,
                url: url.to_owned(),
                cc: cc.clone(),
                category_code: category.to_owned(),
            });
        }
    }
    Ok(out)
}

/// Replaces the test lists with those of `dir`; returns how many entries.
pub async fn import(dir: &Path, store: &Store) -> Result<usize, TestListError> {
    let entries = read_dir(dir)?;
    store.replace_test_lists(&entries).await?;
    Ok(entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_quotes_commas_and_newlines() {
        let text = "url,category_code,notes\r\nhttps://a.org/,NEWS,\"x, \"\"y\"\"\nz\"\n\nhttp://b.net:8080/p,HUMR,\n";
        let r = csv_records(text).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1].1, vec!["https://a.org/", "NEWS", "x, \"y\"\nz"]);
        assert_eq!(r[2].0, 5, "line numbers count newlines in quotes");
        assert!(csv_records("a,\"b\n").is_err());
    }

    #[test]
    fn files_name_their_lists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("global.csv"),
            "url,category_code,category_description,date_added,source,notes\nhttps://www.Example.org/x,NEWS,News,2020-01-01,,\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("it.csv"),
            "url,category_code\nhttp://user@b.it:81/,POLR\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("00-LEGEND-category_codes.csv"), "x\n").unwrap();
        let e = read_dir(dir.path()).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].cc.as_str(), e[0].domain.as_str()),
            ("ZZ", "www.example.org")
        );
        assert_eq!((e[1].cc.as_str(), e[1].domain.as_str()), ("it", "b.it"));
        std::fs::write(dir.path().join("fr.csv"), "nourl,category_code\n").unwrap();
        let err = read_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("fr.csv:1"), "{err}");
    }
}

/// One URL a probe is asked to test.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct TestTarget {
    pub category_code: String,
    pub url: String,
    /// `XX` for the global list, else the upper-case country.
    pub country_code: String,
}

/// OONI's prioritised test list (spec/api.md §1.4) for a country: the global and the
/// country's list, least measured from that country in the last two weeks first.
/// Without `url_priorities` rules every entry has priority 1, so the weight is
/// `1 / max(measurements, 0.1)`; a URL on both lists is offered once, from the
/// country's list. Ties go by URL so the answer is stable.
pub async fn prioritised(
    store: &Store,
    cc: &str,
    categories: &[String],
    limit: usize,
) -> Result<Vec<TestTarget>, StoreError> {
    let since = (chrono::Utc::now() - chrono::Duration::days(14)).naive_utc();
    let mut candidates = store.test_list_candidates(cc, since).await?;
    candidates.retain(|c| categories.is_empty() || categories.contains(&c.category_code));
    // Country entries first so that dedup keeps them.
    candidates.sort_by(|a, b| (&a.url, a.cc == "ZZ").cmp(&(&b.url, b.cc == "ZZ")));
    candidates.dedup_by(|b, a| a.url == b.url);
    candidates.sort_by(|a, b| {
        let wa = 1.0 / (a.recent_measurements as f64).max(0.1);
        let wb = 1.0 / (b.recent_measurements as f64).max(0.1);
        wb.total_cmp(&wa).then_with(|| a.url.cmp(&b.url))
    });
    Ok(candidates
        .into_iter()
        .take(limit)
        .map(|c| TestTarget {
            country_code: if c.cc == "ZZ" {
                "XX".to_owned()
            } else {
                c.cc.to_ascii_uppercase()
            },
            category_code: c.category_code,
            url: c.url,
        })
        .collect())
}
