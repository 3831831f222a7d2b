//! Query-parameter parsers of the measurements API, as OONI's `urlparams.py`
//! (spec/api.md §2.1). Each returns a 400 `ApiError` naming the parameter.

use super::error::ApiError;
use chrono::{NaiveDate, NaiveDateTime};

/// The query string as ordered pairs (order matters for `next_url`).
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(raw: Option<&str>) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|e| {
                ApiError::bad_request("bad_query", format!("invalid query string: {e}"))
            })?;
        Ok(Params(pairs))
    }

    /// The last value given for `name`, as OONI's dict-of-args keeps it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A non-empty value for `name`.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }
}

pub fn invalid(name: &str, detail: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_parameter", format!("{name}: {}", detail.into()))
}

fn charset(name: &str, v: &str, ok: impl Fn(char) -> bool) -> Result<(), ApiError> {
    if v.chars().all(ok) {
        Ok(())
    } else {
        Err(invalid(name, "Invalid characters"))
    }
}

/// `param_bool`: absent or empty → None; `true` in any case → true; else false.
pub fn boolean(v: Option<&str>) -> Option<bool> {
    v.filter(|v| !v.is_empty())
        .map(|v| v.eq_ignore_ascii_case("true"))
}

/// `true`, `1` or `yes`, as `measurement_meta`'s `full` reads them.
pub fn truthy(v: Option<&str>) -> bool {
    v.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// `ASnnn` or `nnn`.
pub fn asn(name: &str, v: &str) -> Result<i64, ApiError> {
    let digits = v.strip_prefix("AS").unwrap_or(v);
    digits
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| invalid(name, format!("{v:?} is not an ASN")))
}

pub fn probe_cc(name: &str, v: &str) -> Result<String, ApiError> {
    charset(name, v, |c| c.is_ascii_uppercase())?;
    if v.len() != 2 {
        return Err(invalid(name, "a country code has two letters"));
    }
    Ok(v.to_owned())
}

pub fn lowercase_underscore(name: &str, v: &str) -> Result<String, ApiError> {
    charset(name, v, |c| c.is_ascii_lowercase() || c == '_')?;
    Ok(v.to_owned())
}

pub fn uppercase(name: &str, v: &str) -> Result<String, ApiError> {
    charset(name, v, |c| c.is_ascii_uppercase())?;
    Ok(v.to_owned())
}

/// 15–100 characters of `[A-Za-z0-9_]`.
pub fn report_id(v: &str) -> Result<String, ApiError> {
    if !(15..=100).contains(&v.len()) {
        return Err(invalid("report_id", "Invalid report_id field"));
    }
    charset("report_id", v, |c| c.is_ascii_alphanumeric() || c == '_')?;
    Ok(v.to_owned())
}

/// OONI's input charset, checked after dropping non-ASCII characters.
pub fn input(v: &str) -> Result<String, ApiError> {
    const EXTRA: &str = " :/.[]-_%+(){}=?#&!,$";
    charset("input", &v.replace(|c: char| !c.is_ascii(), ""), |c| {
        c.is_ascii_alphanumeric() || EXTRA.contains(c)
    })?;
    Ok(v.to_owned())
}

/// A domain, an IP or `[IPv6]`, with an optional port; non-ASCII (IDN) allowed.
pub fn domain(v: &str) -> Result<String, ApiError> {
    let ok = !v.is_empty()
        && v.len() <= 255
        && v.chars()
            .all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || ".-_:[]".contains(c));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(invalid("domain", "Invalid characters"))
    }
}

/// Dates as OONI accepts them: a day, or a day and a time (`T` or space, optional
/// seconds, fraction and `Z`).
pub fn date(name: &str, v: &str) -> Result<NaiveDateTime, ApiError> {
    let t = v.trim().trim_end_matches('Z');
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .ok_or_else(|| invalid(name, "bad date"));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(d);
        }
    }
    Err(invalid(name, format!("{v:?} is not a date")))
}

/// `commasplit`: split on commas, drop empties, sorted unique.
pub fn comma_list(v: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = v
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

pub fn int(name: &str, v: Option<&str>, default: i64) -> Result<i64, ApiError> {
    match v.filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| invalid(name, format!("{v:?} is not an integer"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_follow_ooni() {
        assert_eq!(boolean(Some("TRUE")), Some(true));
        assert_eq!(boolean(Some("yes")), Some(false));
        assert_eq!(boolean(Some("")), None);
        assert_eq!(asn("probe_asn", "AS3303").unwrap(), 3303);
        assert_eq!(asn("probe_asn", "3303").unwrap(), 3303);
        assert!(asn("probe_asn", "ASx").is_err());
        assert!(probe_cc("probe_cc", "it").is_err());
        assert!(probe_cc("probe_cc", "ITA").is_err());
        assert!(report_id("20210709T004340Z_webconnectivity_MY_4818_n1_YCM7J9mGcEHds2K3").is_ok());
        assert!(report_id("short").is_err());
        assert!(report_id("20210709T004340Z_webconnectivity_MY_4818+").is_err());
        assert!(input("https://www.example.org/путь?a=1&b=(2)").is_ok());
        assert!(input("https://x.org/<script>").is_err());
        assert!(input("obfs4 154.35.22.9:80 C73AD cert=gEWN/bS").is_ok());
        assert!(domain("[2a00:5a60::ad2:0ff]:853").is_ok());
        assert!(domain("bad/domain").is_err());
        assert_eq!(
            date("since", "2021-07-09").unwrap().to_string(),
            "2021-07-09 00:00:00"
        );
        assert_eq!(
            date("since", "2021-07-09T01:02:03Z").unwrap().to_string(),
            "2021-07-09 01:02:03"
        );
        assert!(date("since", "yesterday").is_err());
        assert_eq!(comma_list(Some("b,,a,b")), vec!["a", "b"]);
    }
}
