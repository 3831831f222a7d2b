//! The `netloc` of Python's `urllib.parse.urlparse`, which OONI stores as `domain`.

/// Returns `Err` where Python raises (an unbalanced `[` / `]` in the netloc), which
/// makes the fastpath drop the row.
pub fn netloc(url: &str) -> Result<String, &'static str> {
    let cleaned: std::borrow::Cow<str> = if url.contains(['\t', '\r', '\n']) {
        url.replace(['\t', '\r', '\n'], "").into()
    } else {
        url.into()
    };
    let url = cleaned.trim_start_matches(|c: char| c <= ' ');
    let rest = match url.find(':') {
        Some(i)
            if i > 0
                && url.as_bytes()[0].is_ascii_alphabetic()
                && url[..i]
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')) =>
        {
            &url[i + 1..]
        }
        _ => url,
    };
    let Some(after) = rest.strip_prefix("//") else {
        return Ok(String::new());
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let net = &after[..end];
    if net.contains('[') != net.contains(']') {
        return Err("Invalid IPv6 URL");
    }
    Ok(net.to_owned())
}

#[cfg(test)]
mod tests {
    use super::netloc;

    #[test]
    fn netloc_matches_python_urlparse() {
        for (url, want) in [
            ("https://fa.wikipedia.org/", "fa.wikipedia.org"),
            ("http://example.com:8080/x?y", "example.com:8080"),
            ("http://user@host", "user@host"),
            ("vpn://openvpn.riseup/?addr=1", "openvpn.riseup"),
            ("1.2.3.4:22", ""),
            ("obfs4 1.2.3.4:443 ABC", ""),
            ("example.com:80", ""),
            ("//host/path", "host"),
            ("", ""),
            ("dnslookup://example.com", "example.com"),
            ("tlshandshake://8.8.8.8:443", "8.8.8.8:443"),
            ("ht\ntp://a\tb/", "ab"),
        ] {
            assert_eq!(netloc(url).as_deref(), Ok(want), "{url}");
        }
        assert!(netloc("http://[::1/").is_err());
    }
}
