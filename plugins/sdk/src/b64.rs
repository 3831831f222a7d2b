//! `base64.b64decode` as Python does it by default: characters outside the alphabet
//! are skipped, and bad padding is an error (OONI's `binascii.Error`).

fn sextet(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

/// Decodes like `binascii.a2b_base64(s, strict_mode=False)`.
pub fn decode(s: &str) -> Result<Vec<u8>, String> {
    if !s.is_ascii() {
        return Err("string argument should contain only ASCII characters".to_owned());
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits, mut quad, mut pads) = (0u32, 0u32, 0u32, 0u32);
    for c in s.bytes() {
        if c == b'=' {
            if quad >= 2 {
                pads += 1;
                if quad + pads >= 4 {
                    // A complete padded quad: start afresh.
                    quad = 0;
                    pads = 0;
                    acc = 0;
                    bits = 0;
                }
            }
            continue;
        }
        let Some(v) = sextet(c) else { continue };
        pads = 0;
        acc = (acc << 6) | v;
        bits += 6;
        quad = (quad + 1) % 4;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    match quad {
        0 => Ok(out),
        1 => Err("Invalid base64-encoded string: number of data characters (1 more than a multiple of 4)".to_owned()),
        _ => Err("Incorrect padding".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_like_python() {
        assert_eq!(decode("aGk=").unwrap(), b"hi");
        assert_eq!(decode("aGVsbG8gd29ybGQ=").unwrap(), b"hello world");
        assert_eq!(decode("aGVs\nbG8=").unwrap(), b"hello");
        assert_eq!(decode("").unwrap(), b"");
        assert!(
            decode("aGk").is_err(),
            "OONI's web_connectivity_b64_incorrect case"
        );
        assert!(decode("a").is_err());
        assert!(decode("é").is_err());
    }
}
