//! Report ids and measurement uids (`ooni_core::ids`) on arbitrary strings. Where a
//! parse succeeds, checks what the parsers promise: the parts are the input's own
//! `_`-separated fields, in the documented charsets, and minting an id from parsed
//! parts gives the input back.
//!
//! Input: any bytes, read as UTF-8 (lossily).

#![no_main]

use chrono::{NaiveDateTime, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use ooni_core::ids::{
    body_hash16, format_measurement_uid, format_report_id, parse_measurement_uid, parse_report_id,
};

fn lower_alnum(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn check_report_id(input: &str) {
    let Ok(rid) = parse_report_id(input) else {
        return;
    };
    // The charset check: nothing that could leave a file name.
    assert!((1..=100).contains(&input.len()));
    assert!(input
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    let fields: Vec<&str> = input.split('_').collect();
    assert_eq!(fields.len(), 6, "{input:?}");
    assert_eq!(fields[0], rid.timestamp);
    assert_eq!(fields[1], rid.test_name);
    assert_eq!(fields[2], rid.cc);
    assert_eq!(rid.cc.len(), 2);
    assert!((2..30).contains(&rid.test_name.len()) && lower_alnum(rid.test_name));
    // The ASN is the decimal field, leading zeros aside.
    assert!(rid.asn >= 0);
    let digits = fields[3].trim_start_matches('0');
    let canonical = if digits.is_empty() { "0" } else { digits };
    assert_eq!(rid.asn.to_string(), canonical, "{input:?}");

    // Minting from the parts gives the id back, when the id is in minted form.
    let (collector, rand) = (fields[4], fields[5]);
    if let (Some(collector), Ok(ts)) = (
        collector.strip_prefix('n'),
        NaiveDateTime::parse_from_str(rid.timestamp, "%Y%m%dT%H%M%SZ"),
    ) {
        let now = Utc.from_utc_datetime(&ts);
        let minted = format_report_id(now, rid.test_name, rid.cc, rid.asn, collector, rand);
        let in_minted_form =
            now.format("%Y%m%dT%H%M%SZ").to_string() == rid.timestamp && fields[3] == canonical;
        if in_minted_form {
            assert_eq!(minted, input);
        }
        // Re-minting may lengthen the id: chrono can read fewer digits than it writes.
        if minted.len() <= 100 {
            let again = parse_report_id(&minted).expect("a minted report id parses");
            assert_eq!(
                (again.test_name, again.cc, again.asn),
                (rid.test_name, rid.cc, rid.asn)
            );
        }
    }
}

fn check_uid(input: &str) {
    let Some(uid) = parse_measurement_uid(input) else {
        return;
    };
    assert_eq!(
        format!(
            "{}_{}_{}_{}",
            uid.timestamp, uid.cc, uid.test_name, uid.hash16
        ),
        input
    );
    assert_eq!(uid.timestamp.len(), 21);
    assert_eq!(uid.hour(), &input[..10]);
    let dir = uid.spool_dir();
    assert!(
        dir.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "{dir:?}"
    );
    assert_eq!(dir.split('_').count(), 3);
    // A uid whose timestamp is a real instant is the one minted at that instant,
    // up to its hash.
    if let Ok(t) = NaiveDateTime::parse_from_str(uid.timestamp, "%Y%m%d%H%M%S%.6f") {
        let t = Utc.from_utc_datetime(&t);
        let minted = format_measurement_uid(t, uid.cc, uid.test_name, b"");
        if t.format("%Y%m%d%H%M%S%.6f").to_string() == uid.timestamp {
            assert_eq!(minted[..minted.len() - 16], input[..input.len() - 16]);
        }
        assert!(parse_measurement_uid(&minted).is_some(), "{minted:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_report_id(&text);
    check_uid(&text);

    // The other way round: a uid minted for any body parses back with its hash.
    let t = Utc.with_ymd_and_hms(2021, 2, 8, 22, 7, 10).unwrap();
    let uid = format_measurement_uid(t, "MA", "web_connectivity", data);
    let p = parse_measurement_uid(&uid).expect("a minted uid parses");
    assert_eq!(p.hash16, body_hash16(data));
    assert_eq!(p.spool_dir(), "2021020822_MA_webconnectivity");
});
