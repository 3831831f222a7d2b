//! OONI's identifiers (spec/api.md §1.15): report ids, measurement uids, spool names.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha512};
use thiserror::Error;

/// The parts of a report id minted by `POST /report`:
/// `{YYYYMMDD}T{HHMMSS}Z_{testname}_{CC}_{asn}_n{collector}_{rand}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportId<'a> {
    pub timestamp: &'a str,
    /// Test name without underscores, as it appears in uids and spool directories.
    pub test_name: &'a str,
    pub cc: &'a str,
    pub asn: i64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReportIdError {
    #[error("report_id must be 1 to 100 characters of A-Z, a-z, 0-9 and _")]
    Charset,
    #[error("report_id must have 6 parts separated by _")]
    Parts,
    #[error("report_id country code must be 2 letters or digits")]
    CountryCode,
    #[error("report_id test name must be 2 to 29 lower-case letters or digits")]
    TestName,
    #[error("report_id ASN must be an integer")]
    Asn,
}

/// Parses a report id the way OONI's probe service checks it before accepting a
/// measurement, plus a charset check so nothing outside `[A-Za-z0-9_]` ever reaches
/// a file name.
pub fn parse_report_id(rid: &str) -> Result<ReportId<'_>, ReportIdError> {
    if rid.is_empty()
        || rid.len() > 100
        || !rid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(ReportIdError::Charset);
    }
    let parts: Vec<&str> = rid.split('_').collect();
    let [timestamp, test_name, cc, asn, _collector, _rand] = parts[..] else {
        return Err(ReportIdError::Parts);
    };
    if cc.len() != 2 {
        return Err(ReportIdError::CountryCode);
    }
    // OONI accepts any alphanumeric test name; the lower-case rule keeps the spool's
    // directory names canonical (the body's test name is lower-case by validation).
    if !(2..30).contains(&test_name.len())
        || !test_name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(ReportIdError::TestName);
    }
    let asn = asn
        .parse::<i64>()
        .ok()
        .filter(|_| asn.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(ReportIdError::Asn)?;
    Ok(ReportId {
        timestamp,
        test_name,
        cc,
        asn,
    })
}

/// Mints a report id. `rand16` is 16 characters of base64 with `+` and `/` replaced by `o`.
pub fn format_report_id(
    now: DateTime<Utc>,
    test_name: &str,
    cc: &str,
    asn: i64,
    collector_id: &str,
    rand16: &str,
) -> String {
    format!(
        "{}_{}_{}_{}_n{}_{}",
        now.format("%Y%m%dT%H%M%SZ"),
        test_name.replace('_', ""),
        cc,
        asn,
        collector_id,
        rand16
    )
}

/// The first 16 hex characters of SHA-512 over the stored bytes.
pub fn body_hash16(body: &[u8]) -> String {
    hex(&Sha512::digest(body)[..8])
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// `{YYYYMMDDHHMMSS}.{micros}_{CC}_{testname}_{hash16}`.
pub fn format_measurement_uid(
    received: DateTime<Utc>,
    cc: &str,
    test_name: &str,
    body: &[u8],
) -> String {
    format!(
        "{}_{}_{}_{}",
        received.format("%Y%m%d%H%M%S%.6f"),
        cc,
        test_name.replace('_', ""),
        body_hash16(body)
    )
}

/// The parts of an API measurement uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementUid<'a> {
    pub timestamp: &'a str,
    pub cc: &'a str,
    pub test_name: &'a str,
    pub hash16: &'a str,
}

impl MeasurementUid<'_> {
    /// `YYYYMMDDHH`, the hour the measurement was received.
    pub fn hour(&self) -> &str {
        &self.timestamp[..10]
    }

    /// The spool directory the measurement lives in: `{YYYYMMDDHH}_{CC}_{testname}`.
    pub fn spool_dir(&self) -> String {
        format!("{}_{}_{}", self.hour(), self.cc, self.test_name)
    }
}

/// Parses an API uid strictly: `\d{14}\.\d{6}_[A-Z0-9]{2}_[a-z0-9]+_[0-9a-f]{16}`.
pub fn parse_measurement_uid(uid: &str) -> Option<MeasurementUid<'_>> {
    let mut it = uid.split('_');
    let (ts, cc, tn, h) = (it.next()?, it.next()?, it.next()?, it.next()?);
    let ok = it.next().is_none()
        && ts.len() == 21
        && ts.as_bytes()[14] == b'.'
        && ts
            .bytes()
            .enumerate()
            .all(|(i, b)| i == 14 || b.is_ascii_digit())
        && cc.len() == 2
        && cc
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && !tn.is_empty()
        && tn.len() < 30
        && tn
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && h.len() == 16
        && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then_some(MeasurementUid {
        timestamp: ts,
        cc,
        test_name: tn,
        hash16: h,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_two_lower_case_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }
    use chrono::TimeZone;

    #[test]
    fn report_id_round_trip_and_length() {
        let now = Utc.with_ymd_and_hms(2021, 2, 8, 16, 27, 55).unwrap();
        let rid = format_report_id(
            now,
            "web_connectivity",
            "IE",
            34245,
            "1",
            "8swgXi7xNuRUyO9a",
        );
        assert_eq!(
            rid,
            "20210208T162755Z_webconnectivity_IE_34245_n1_8swgXi7xNuRUyO9a"
        );
        assert_eq!(rid.len(), 61);
        let p = parse_report_id(&rid).unwrap();
        assert_eq!((p.test_name, p.cc, p.asn), ("webconnectivity", "IE", 34245));
    }

    #[test]
    fn report_id_rejections() {
        assert_eq!(parse_report_id("a_b_c"), Err(ReportIdError::Parts));
        assert_eq!(
            parse_report_id("x_ndt_USA_1_n1_r"),
            Err(ReportIdError::CountryCode)
        );
        assert_eq!(
            parse_report_id("x_n_US_1_n1_r"),
            Err(ReportIdError::TestName)
        );
        assert_eq!(parse_report_id("x_ndt_US_1a_n1_r"), Err(ReportIdError::Asn));
        assert_eq!(
            parse_report_id("x_ndt_US_-1_n1_r"),
            Err(ReportIdError::Charset)
        );
        assert_eq!(
            parse_report_id("x_ndt_../_1_n1_r"),
            Err(ReportIdError::Charset)
        );
        assert_eq!(
            parse_report_id("x_ndt_U%_1_n1_r"),
            Err(ReportIdError::Charset)
        );
        assert_eq!(parse_report_id(""), Err(ReportIdError::Charset));
        assert_eq!(
            parse_report_id(&"a".repeat(101)),
            Err(ReportIdError::Charset)
        );
    }

    #[test]
    fn uid_format_matches_ooni_and_parses_back() {
        let t = Utc.with_ymd_and_hms(2021, 2, 8, 22, 7, 10).unwrap()
            + chrono::Duration::microseconds(181_572);
        let uid = format_measurement_uid(t, "MA", "ndt", b"{}");
        assert!(uid.starts_with("20210208220710.181572_MA_ndt_"), "{uid}");
        let p = parse_measurement_uid(&uid).unwrap();
        assert_eq!(p.spool_dir(), "2021020822_MA_ndt");
        assert_eq!(p.hash16, body_hash16(b"{}"));
        assert_eq!(body_hash16(b"{}").len(), 16);
        assert!(parse_measurement_uid("../../etc/passwd").is_none());
        assert!(parse_measurement_uid("20210208220710.181572_MA_ndt_7888EDC7748936BF").is_none());
    }
}
