//! Reading cans back: the POST bodies of a postcan, the lines of a jsonl can.

use bytes::Bytes;
use flate2::read::GzDecoder;
use std::io::{self, Read};

/// One member of a postcan.
pub struct Posted {
    pub uid: String,
    pub body: Vec<u8>,
}

/// Every `{uid}.post` member of a `.tar.gz` postcan, in can order. Members are named
/// by path; only the base name counts, as OONI's readers do.
pub fn read_postcan(data: &[u8], max_raw: usize) -> io::Result<Vec<Posted>> {
    // Tar headers and long-name entries are read whole by the tar crate: the cap on
    // the decompressed stream bounds them too.
    let slack = 1 << 20;
    let mut archive =
        tar::Archive::new(GzDecoder::new(data).take(max_raw.saturating_add(slack) as u64));
    let mut out = Vec::new();
    let mut total = 0usize;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let Some(uid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".post"))
            .map(str::to_owned)
        else {
            continue;
        };
        let size = entry.header().size()? as usize;
        total += size;
        if total > max_raw {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("postcan holds more than {max_raw} bytes"),
            ));
        }
        let mut body = Vec::with_capacity(size);
        entry.read_to_end(&mut body)?;
        out.push(Posted { uid, body });
    }
    Ok(out)
}

/// A decompressed jsonl can with the offset of each line.
pub struct CanLines {
    data: Bytes,
    /// Start of each line; the line ends before the next start's newline.
    starts: Vec<usize>,
}

impl CanLines {
    /// Decompresses a `.jsonl.gz`, refusing one larger than `max_raw` bytes.
    pub fn decode(gz: &[u8], max_raw: usize) -> io::Result<CanLines> {
        let mut data = Vec::new();
        GzDecoder::new(gz)
            .take(max_raw as u64 + 1)
            .read_to_end(&mut data)?;
        if data.len() > max_raw {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("jsonl can decompresses to more than {max_raw} bytes"),
            ));
        }
        let mut starts = vec![0];
        starts.extend(
            data.iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .map(|(i, _)| i + 1)
                .filter(|&i| i < data.len()),
        );
        if data.is_empty() {
            starts.clear();
        }
        Ok(CanLines {
            data: data.into(),
            starts,
        })
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    pub fn byte_len(&self) -> usize {
        self.data.len()
    }

    /// Line `n` (0-based) without its newline.
    pub fn line(&self, n: usize) -> Option<Bytes> {
        let start = *self.starts.get(n)?;
        let end = self.starts.get(n + 1).map_or(self.data.len(), |&next| next);
        let end = if end > start && self.data[end - 1] == b'\n' {
            end - 1
        } else {
            end
        };
        Some(self.data.slice(start..end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cans::{CanBuilder, CanOptions};

    #[test]
    fn a_packed_can_reads_back_in_order() {
        let mut b = CanBuilder::new("2024010100_IT_ndt", CanOptions::default());
        let bodies = [
            br#"{"format":"json","content":{"report_id":"a","n":1}}"#.to_vec(),
            b"garbage".to_vec(),
            br#"{"format":"json","content":{ "report_id" : "c" }}"#.to_vec(),
        ];
        for (i, body) in bodies.iter().enumerate() {
            b.add(&format!("uid{i}"), body, 1_700_000_000).unwrap();
        }
        let can = b.finish().unwrap();
        let posted = read_postcan(&can.postcan, 1 << 20).unwrap();
        assert_eq!(posted.len(), 3);
        for (i, p) in posted.iter().enumerate() {
            assert_eq!(p.uid, format!("uid{i}"));
            assert_eq!(p.body, bodies[i]);
        }
        let lines = CanLines::decode(&can.jsonl, 1 << 20).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(&lines.line(0).unwrap()[..], br#"{"report_id":"a","n":1}"#);
        assert_eq!(&lines.line(1).unwrap()[..], b"{}");
        assert_eq!(&lines.line(2).unwrap()[..], br#"{"report_id":"c"}"#);
        assert!(lines.line(3).is_none());
        assert!(CanLines::decode(&can.jsonl, 10).is_err());
        assert!(read_postcan(&can.postcan, 10).is_err());
        assert!(read_postcan(&can.jsonl[..10], 1 << 20).is_err());
    }
}
