//! Python's parsing rules where OONI's columns depend on them: `int()` of a string and
//! `datetime.strptime` with the two formats the fastpath uses.

use chrono::{NaiveDate, NaiveDateTime};

/// `int(s)` for a Python `str`: surrounding whitespace, an optional sign, ASCII digits
/// with single underscores between them.
pub fn int_from_str(s: &str) -> Option<i128> {
    let t = s.trim_matches(|c: char| c.is_whitespace());
    let (neg, digits) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let mut v: i128 = 0;
    for c in digits.bytes() {
        match c {
            b'_' => continue,
            b'0'..=b'9' => {
                v = v.checked_mul(10)?.checked_add(i128::from(c - b'0'))?;
            }
            _ => return None,
        }
    }
    Some(if neg { -v } else { v })
}

/// Reads 1 or 2 ASCII digits (Python's `%m`, `%d`, `%H`, `%M`, `%S` accept both).
fn one_or_two_digits(b: &[u8], pos: &mut usize) -> Option<u32> {
    let start = *pos;
    while *pos < b.len() && *pos - start < 2 && b[*pos].is_ascii_digit() {
        *pos += 1;
    }
    if *pos == start {
        return None;
    }
    std::str::from_utf8(&b[start..*pos]).ok()?.parse().ok()
}

fn expect(b: &[u8], pos: &mut usize, c: u8) -> Option<()> {
    (b.get(*pos) == Some(&c)).then(|| *pos += 1)
}

/// `datetime.strptime(s, "%Y-%m-%d %H:%M:%S")`.
pub fn ooni_datetime(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    if b.len() < 4 || !b[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let year: i32 = s[..4].parse().ok()?;
    let mut pos = 4;
    expect(b, &mut pos, b'-')?;
    let month = one_or_two_digits(b, &mut pos)?;
    expect(b, &mut pos, b'-')?;
    let day = one_or_two_digits(b, &mut pos)?;
    expect(b, &mut pos, b' ')?;
    let hour = one_or_two_digits(b, &mut pos)?;
    expect(b, &mut pos, b':')?;
    let minute = one_or_two_digits(b, &mut pos)?;
    expect(b, &mut pos, b':')?;
    let second = one_or_two_digits(b, &mut pos)?;
    if pos != b.len() {
        return None;
    }
    NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, minute, second)
}

/// The receive time encoded in an API measurement_uid: `strptime(uid[:22], "%Y%m%d%H%M%S.%f_")`.
pub fn uid_receive_time(uid: &str) -> Option<NaiveDateTime> {
    let b = uid.as_bytes();
    if b.len() < 22 || b[14] != b'.' || b[21] != b'_' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = &b[r];
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let year = i32::try_from(digits(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, digits(4..6)?, digits(6..8)?)?.and_hms_micro_opt(
        digits(8..10)?,
        digits(10..12)?,
        digits(12..14)?,
        digits(15..21)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_from_str_follows_python() {
        assert_eq!(int_from_str("123"), Some(123));
        assert_eq!(int_from_str(" -7 "), Some(-7));
        assert_eq!(int_from_str("+1_000"), Some(1000));
        assert_eq!(int_from_str(""), None);
        assert_eq!(int_from_str("1__0"), None);
        assert_eq!(int_from_str("_1"), None);
        assert_eq!(int_from_str("12a"), None);
        assert_eq!(int_from_str("1.5"), None);
    }

    #[test]
    fn ooni_datetime_accepts_python_strptime_shapes() {
        let d = ooni_datetime("2020-02-29 01:51:41").unwrap();
        assert_eq!(d.to_string(), "2020-02-29 01:51:41");
        assert_eq!(
            ooni_datetime("2020-2-3 4:5:6").unwrap().to_string(),
            "2020-02-03 04:05:06"
        );
        for bad in [
            "2020-02-30 00:00:00",
            "2020-01-01T00:00:00",
            "2020-01-01 00:00:00Z",
            "2020-01-01 00:00:60",
            "20-01-01 00:00:00",
            "",
        ] {
            assert_eq!(ooni_datetime(bad), None, "{bad}");
        }
    }

    #[test]
    fn uid_receive_time_reads_the_first_22_characters() {
        let t = uid_receive_time("20210208220710.181572_MA_ndt_7888edc7748936bf").unwrap();
        assert_eq!(t.to_string(), "2021-02-08 22:07:10.181572");
        assert_eq!(
            uid_receive_time("01202102037f9c2ba4e88f827d61604550760585"),
            None
        );
        assert_eq!(uid_receive_time("20210208220710_181572_MA"), None);
    }
}
