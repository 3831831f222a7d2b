//! Can object keys: building them from a spool directory and reading them back.

/// Which half of a can pair a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanKind {
    /// `.tar.gz`: the raw POST bodies.
    Postcan,
    /// `.jsonl.gz`: one measurement per line.
    Jsonl,
}

impl CanKind {
    fn suffix(self) -> &'static str {
        match self {
            CanKind::Postcan => "tar.gz",
            CanKind::Jsonl => "jsonl.gz",
        }
    }
}

/// The parts of `raw/{YYYYMMDD}/{HH}/{CC}/{testname}/{YYYYMMDDHH}_{CC}_{testname}.n{cid}.{k}.{ext}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanKey {
    /// `YYYYMMDDHH`.
    pub hour: String,
    pub cc: String,
    /// The test name without underscores, as in spool directory names.
    pub testname: String,
    pub collector_id: String,
    pub number: u32,
    pub kind: CanKind,
}

impl CanKey {
    /// The can of a spool directory `{YYYYMMDDHH}_{CC}_{testname}`; `None` when the
    /// name is not one (OONI's uploader skips those too).
    pub fn for_spool_dir(
        dir: &str,
        collector_id: &str,
        number: u32,
        kind: CanKind,
    ) -> Option<CanKey> {
        let mut parts = dir.split('_');
        let (hour, cc, testname) = (parts.next()?, parts.next()?, parts.next()?);
        let ok = parts.next().is_none()
            && hour.len() == 10
            && hour.bytes().all(|b| b.is_ascii_digit())
            && cc.len() == 2
            && cc
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            && !testname.is_empty()
            && testname
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        ok.then(|| CanKey {
            hour: hour.to_owned(),
            cc: cc.to_owned(),
            testname: testname.to_owned(),
            collector_id: collector_id.to_owned(),
            number,
            kind,
        })
    }

    pub fn spool_dir(&self) -> String {
        format!("{}_{}_{}", self.hour, self.cc, self.testname)
    }

    /// `YYYYMMDD`.
    pub fn day(&self) -> &str {
        &self.hour[..8]
    }

    pub fn with_kind(&self, kind: CanKind) -> CanKey {
        CanKey {
            kind,
            ..self.clone()
        }
    }

    pub fn key(&self) -> String {
        format!(
            "raw/{}/{}/{}/{}/{}.n{}.{}.{}",
            self.day(),
            &self.hour[8..],
            self.cc,
            self.testname,
            self.spool_dir(),
            self.collector_id,
            self.number,
            self.kind.suffix()
        )
    }

    /// Reads a key back; `None` for anything that is not a can of this layout.
    pub fn parse(key: &str) -> Option<CanKey> {
        let rest = key.strip_prefix("raw/")?;
        let mut segs = rest.split('/');
        let (day, hh, cc, testname, file) = (
            segs.next()?,
            segs.next()?,
            segs.next()?,
            segs.next()?,
            segs.next()?,
        );
        if segs.next().is_some() {
            return None;
        }
        let (stem, kind) = if let Some(s) = file.strip_suffix(".tar.gz") {
            (s, CanKind::Postcan)
        } else {
            (file.strip_suffix(".jsonl.gz")?, CanKind::Jsonl)
        };
        let (stem, number) = stem.rsplit_once('.')?;
        let (dir, cid) = stem.rsplit_once(".n")?;
        let number: u32 = number.parse().ok()?;
        let k = CanKey::for_spool_dir(dir, cid, number, kind)?;
        (k.day() == day && &k.hour[8..] == hh && k.cc == cc && k.testname == testname).then_some(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_oonis_layout_and_parse_back() {
        let k =
            CanKey::for_spool_dir("2021081711_GB_webconnectivity", "0", 3, CanKind::Jsonl).unwrap();
        assert_eq!(
            k.key(),
            "raw/20210817/11/GB/webconnectivity/2021081711_GB_webconnectivity.n0.3.jsonl.gz"
        );
        assert_eq!(CanKey::parse(&k.key()), Some(k.clone()));
        let p = k.with_kind(CanKind::Postcan);
        assert!(p.key().ends_with(".n0.3.tar.gz"));
        assert_eq!(CanKey::parse(&p.key()), Some(p));
    }

    #[test]
    fn odd_names_are_not_cans() {
        for dir in [
            "2021081711_GB",
            "202108171_GB_x",
            "2021081711_gb_x",
            "2021081711_GB_web_x",
            "x.tmp",
        ] {
            assert!(
                CanKey::for_spool_dir(dir, "0", 0, CanKind::Jsonl).is_none(),
                "{dir}"
            );
        }
        for key in [
            "raw/20210817/11/GB/webconnectivity/2021081711_GB_webconnectivity.n0.x.jsonl.gz",
            "raw/20210817/12/GB/webconnectivity/2021081711_GB_webconnectivity.n0.0.jsonl.gz",
            "jsonl/20210817/11/GB/webconnectivity/2021081711_GB_webconnectivity.n0.0.jsonl.gz",
            "raw/20210817/11/GB/webconnectivity/2021081711_GB_webconnectivity.n0.0.zip",
        ] {
            assert!(CanKey::parse(key).is_none(), "{key}");
        }
    }
}
