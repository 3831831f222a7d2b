//! `base64.b64decode` as Python does it by default: characters outside the alphabet
//! are skipped, and bad padding is an error (OONI's `binascii.Error`).

/// Each byte's sextet; `NONE` for bytes outside the alphabet.
const NONE: u8 = 0xff;
const SEXTETS: [u8; 256] = {
    let mut t = [NONE; 256];
    let mut i = 0;
    while i < 64 {
        let c = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i];
        t[c as usize] = i as u8;
        i += 1;
    }
    t
};

fn sextet(c: u8) -> Option<u32> {
    let v = SEXTETS[usize::from(c)];
    (v != NONE).then_some(u32::from(v))
}

/// Decodes like `binascii.a2b_base64(s, strict_mode=False)`.
pub fn decode(s: &str) -> Result<Vec<u8>, String> {
    decode_bytes(s.as_bytes())
}

/// `decode` of text given as bytes (non-ASCII bytes are refused as non-ASCII
/// characters are), for data read straight from a JSON token.
pub fn decode_bytes(b: &[u8]) -> Result<Vec<u8>, String> {
    decode_with(b, true)
}

/// `quads`: take eight alphabet characters at a time where nothing is pending
/// (without it, every character goes through the state machine, as tests compare).
fn decode_with(b: &[u8], quads: bool) -> Result<Vec<u8>, String> {
    if !b.is_ascii() {
        return Err("string argument should contain only ASCII characters".to_owned());
    }
    // Decoding never yields more than three bytes for four characters; the slack lets
    // the fast path store eight bytes where it keeps six.
    let mut out = vec![0u8; b.len() / 4 * 3 + 8];
    let mut o = 0;
    let (mut acc, mut bits, mut quad, mut pads) = (0u32, 0u32, 0u32, 0u32);
    let mut i = 0;
    while i < b.len() {
        // Between quads (nothing pending), eight alphabet characters are six bytes:
        // nearly all of a body, decoded without the state machine below.
        if quads && quad == 0 {
            while let (Some(chars), Some(dst)) = (b.get(i..i + 8), out.get_mut(o..o + 8)) {
                let mut n = 0u64;
                let mut none = 0u8;
                for &c in chars {
                    let v = SEXTETS[usize::from(c)];
                    none |= v;
                    n = n << 6 | u64::from(v);
                }
                // Sextets are below 64; only `NONE` sets the top bits.
                if none & 0xC0 != 0 {
                    break;
                }
                dst.copy_from_slice(&(n << 16).to_be_bytes());
                (i, o) = (i + 8, o + 6);
            }
            if i == b.len() {
                break;
            }
        }
        let c = b[i];
        i += 1;
        if c == b'=' {
            if quad >= 2 {
                pads += 1;
                if quad + pads >= 4 {
                    // A complete padded quad ends the data: what follows is not read.
                    out.truncate(o);
                    return Ok(out);
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
            out[o] = (acc >> bits) as u8;
            o += 1;
            acc &= (1 << bits) - 1;
        }
    }
    out.truncate(o);
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
        // Python stops at the end of a padded quad.
        assert_eq!(decode("aGk=aGk=").unwrap(), b"hi");
        assert_eq!(decode("aGk==aGk").unwrap(), b"hi");
        assert_eq!(decode("aG==x").unwrap(), b"h");
        assert_eq!(decode("aGk=\n").unwrap(), b"hi");
    }

    #[test]
    fn the_fast_path_decodes_as_the_state_machine() {
        let alphabet = b"AZaz09+/=\n ~-";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..6000 {
            let len = round % 70;
            let text: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Mostly alphabet, now and then padding or junk.
                    if seed.is_multiple_of(5) {
                        char::from(alphabet[(seed >> 8) as usize % alphabet.len()])
                    } else {
                        char::from(b"QUJDRA"[(seed >> 8) as usize % 6])
                    }
                })
                .collect();
            let (got, want) = (decode(&text), super::decode_with(text.as_bytes(), false));
            assert_eq!(got, want, "{text:?}");
        }
    }
}
