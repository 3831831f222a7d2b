//! Enough of PEP 440 (Python's `packaging.version.Version`) to compare probe versions:
//! release numbers, pre-releases (`a`, `b`, `rc`, also spelled `-alpha`, `-beta.3`),
//! post- and dev-releases. Anything else does not parse, as `Version()` would raise.

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    release: Vec<u64>,
    /// (0 = a, 1 = b, 2 = rc, number)
    pre: Option<(u8, u64)>,
    post: Option<u64>,
    dev: Option<u64>,
}

fn split_number(s: &str) -> (&str, &str) {
    let i = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (&s[..i], &s[i..])
}

fn strip_sep(s: &str) -> &str {
    s.strip_prefix(['-', '_', '.']).unwrap_or(s)
}

/// An optional separator and number after a label.
fn label_number(rest: &str) -> (u64, &str) {
    let r = strip_sep(rest);
    let (n, after) = split_number(r);
    if n.is_empty() {
        (0, rest)
    } else {
        (n.parse().unwrap_or(u64::MAX), after)
    }
}

/// (release, pre-release, post-release, dev-release), each with its "absent" rank.
type SortKey = (Vec<u64>, (i8, u8, u64), (i8, u64), (i8, u64));

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim().to_ascii_lowercase();
        let mut rest = s.strip_prefix('v').unwrap_or(&s);
        let mut release = Vec::new();
        loop {
            let (n, after) = split_number(rest);
            if n.is_empty() {
                return None;
            }
            release.push(n.parse().ok()?);
            match after.strip_prefix('.') {
                Some(a) if a.starts_with(|c: char| c.is_ascii_digit()) => rest = a,
                _ => {
                    rest = after;
                    break;
                }
            }
        }
        let mut pre = None;
        let labels: [(&str, u8); 8] = [
            ("alpha", 0),
            ("beta", 1),
            ("preview", 2),
            ("pre", 2),
            ("rc", 2),
            ("a", 0),
            ("b", 1),
            ("c", 2),
        ];
        let r = strip_sep(rest);
        if let Some((label, kind)) = labels.iter().find(|(l, _)| r.starts_with(l)) {
            let (n, after) = label_number(&r[label.len()..]);
            pre = Some((*kind, n));
            rest = after;
        }
        let mut post = None;
        if let Some(a) = rest
            .strip_prefix('-')
            .filter(|a| a.starts_with(|c: char| c.is_ascii_digit()))
        {
            let (n, after) = split_number(a);
            post = Some(n.parse().ok()?);
            rest = after;
        } else {
            let r = strip_sep(rest);
            if let Some(label) = ["post", "rev", "r"].iter().find(|l| r.starts_with(**l)) {
                let (n, after) = label_number(&r[label.len()..]);
                post = Some(n);
                rest = after;
            }
        }
        let mut dev = None;
        let r = strip_sep(rest);
        if let Some(a) = r.strip_prefix("dev") {
            let (n, after) = label_number(a);
            dev = Some(n);
            rest = after;
        }
        if let Some(local) = rest.strip_prefix('+') {
            if local.is_empty()
                || !local
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
            {
                return None;
            }
            rest = "";
        }
        if !rest.is_empty() {
            return None;
        }
        while release.len() > 1 && release.last() == Some(&0) {
            release.pop();
        }
        Some(Version {
            release,
            pre,
            post,
            dev,
        })
    }

    /// PEP 440's sort key: a dev-only release sorts before its pre-releases.
    fn key(&self) -> SortKey {
        let pre = match (self.pre, self.post, self.dev) {
            (None, None, Some(_)) => (-1, 0, 0),
            (None, _, _) => (1, 0, 0),
            (Some((k, n)), _, _) => (0, k, n),
        };
        let post = self.post.map_or((-1, 0), |n| (0, n));
        let dev = self.dev.map_or((1, 0), |n| (0, n));
        (self.release.clone(), pre, post, dev)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.key(), other.key());
        let len = a.0.len().max(b.0.len());
        let pad = |r: &Vec<u64>| {
            (0..len)
                .map(|i| r.get(i).copied().unwrap_or(0))
                .collect::<Vec<_>>()
        };
        pad(&a.0)
            .cmp(&pad(&b.0))
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    }
}

#[cfg(test)]
mod tests {
    use super::Version;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn ordering_follows_pep_440() {
        assert!(v("0.2.3") < v("0.2.4"));
        assert!(v("0.2.3") == v("0.2.3.0"));
        assert!(v("3.16.0-alpha") < v("3.16.0"));
        assert!(v("3.16.0-alpha") < v("3.17.2"));
        assert!(v("3.10.0-beta.3") < v("3.10.0rc1"));
        assert!(v("3.10.0.dev1") < v("3.10.0a1"));
        assert!(v("1.0") < v("1.0.post1"));
        assert!(v("1.0.post1") < v("1.1"));
        assert!(v("v3.17.2") == v("3.17.2"));
        assert!(v("1.0+local.1") == v("1.0+local.1"));
        for bad in ["", "x.y", "1.0-", "1..0", "3.16.0-alpha-foo", "1.0+"] {
            assert!(Version::parse(bad).is_none(), "{bad}");
        }
    }
}
