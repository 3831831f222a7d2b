//! Decompressed jsonl cans kept in memory, least recently used first out, within a
//! byte budget. Explorer opens measurements one by one, often several from the
//! same hour; the first costs one GET and one decompression of the can (both
//! bounded by the can limits), the rest are slices of memory.

use super::read::CanLines;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct CanCache {
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, (Arc<CanLines>, u64)>,
    bytes: usize,
    tick: u64,
}

impl CanCache {
    pub fn new(budget_bytes: usize) -> Self {
        CanCache {
            budget: budget_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<CanLines>> {
        let mut g = self.inner.lock().ok()?;
        g.tick += 1;
        let tick = g.tick;
        let e = g.entries.get_mut(key)?;
        e.1 = tick;
        Some(e.0.clone())
    }

    pub fn insert(&self, key: &str, lines: Arc<CanLines>) {
        let size = lines.byte_len();
        if size > self.budget {
            return;
        }
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        g.tick += 1;
        let tick = g.tick;
        if let Some((old, _)) = g.entries.insert(key.to_owned(), (lines, tick)) {
            g.bytes -= old.byte_len();
        }
        g.bytes += size;
        while g.bytes > self.budget {
            let Some(oldest) = g
                .entries
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((gone, _)) = g.entries.remove(&oldest) {
                g.bytes -= gone.byte_len();
            }
        }
    }

    /// Drops a can, e.g. after it was replaced in the store.
    pub fn forget(&self, key: &str) {
        if let Ok(mut g) = self.inner.lock() {
            if let Some((gone, _)) = g.entries.remove(key) {
                g.bytes -= gone.byte_len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn lines(n: usize) -> Arc<CanLines> {
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![b'x'; n]).unwrap();
        Arc::new(CanLines::decode(&gz.finish().unwrap(), 1 << 20).unwrap())
    }

    #[test]
    fn least_recently_used_goes_first_within_the_budget() {
        let c = CanCache::new(250);
        c.insert("a", lines(100));
        c.insert("b", lines(100));
        assert!(c.get("a").is_some());
        c.insert("c", lines(100));
        assert!(c.get("b").is_none(), "b was least recently used");
        assert!(c.get("a").is_some() && c.get("c").is_some());
        c.insert("huge", lines(1000));
        assert!(c.get("huge").is_none());
        c.forget("a");
        assert!(c.get("a").is_none());
    }
}
