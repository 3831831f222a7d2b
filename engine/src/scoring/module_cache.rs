//! Compiled scorer modules kept on disk, so that a restart does not compile every
//! plugin again.
//!
//! Cranelift spends seconds of CPU on each bundled module, and the engine loads its
//! plugins before it listens: without this cache every restart refuses uploads for that
//! long. An entry is named by the SHA-256 of the module's bytes and of the wasmtime
//! engine's compatibility hash (its version and compilation settings), so a changed
//! plugin or a new engine build never reads an old entry. Each entry also carries the
//! SHA-256 of its own contents: `Module::deserialize` trusts what it is given, so a torn
//! or corrupted file is recompiled and replaced rather than loaded.
//!
//! What the directory holds is native code the engine runs: it must be writable only by
//! whoever may replace the engine's binary (it lives under the data directory).

use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use wasmtime::{Engine, Module};

const MAGIC: &[u8; 8] = b"OONIWCM1";
const EXT: &str = "cwasm";
const HEADER: usize = MAGIC.len() + 32;

/// Where a module came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Compiled,
    Cache,
}

pub struct ModuleCache {
    dir: PathBuf,
    /// Entries this process has read or written; `prune` keeps only these.
    used: Mutex<HashSet<String>>,
    compiled: AtomicU64,
    reused: AtomicU64,
}

/// Feeds `Hash` output into SHA-256, so the engine's compatibility hash is the same
/// from one run of a binary to the next (std's hashers promise no such thing).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0
    }
}

impl ModuleCache {
    /// A cache in `dir`, created if missing.
    pub fn open(dir: &Path) -> std::io::Result<ModuleCache> {
        std::fs::create_dir_all(dir)?;
        Ok(ModuleCache {
            dir: dir.to_owned(),
            used: Mutex::new(HashSet::new()),
            compiled: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// (modules compiled, modules read from the cache) since the cache was opened.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.compiled.load(Ordering::Relaxed),
            self.reused.load(Ordering::Relaxed),
        )
    }

    fn key(engine: &Engine, bytes: &[u8]) -> String {
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        h.0.update(bytes);
        ooni_core::ids::hex(&h.0.finalize())
    }

    /// The module for `bytes` (`.wasm`, or `.wat` text): from the cache when an intact
    /// entry for this engine exists, else compiled and stored. A cache that cannot be
    /// read or written costs a compile and a warning, never the module.
    pub fn module(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<(Module, Source)> {
        let key = Self::key(engine, bytes);
        let path = self.dir.join(format!("{key}.{EXT}"));
        if let Ok(mut used) = self.used.lock() {
            used.insert(key.clone());
        }
        if let Some(module) = self.read(engine, &path) {
            self.reused.fetch_add(1, Ordering::Relaxed);
            return Ok((module, Source::Cache));
        }
        let module = Module::new(engine, bytes)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = module.serialize().and_then(|code| {
            self.write(&path, &code)
                .map_err(|e| wasmtime::Error::msg(e.to_string()))
        }) {
            tracing::warn!(path = %path.display(), error = %e, "cannot store the compiled plugin; the next start compiles it again");
        }
        Ok((module, Source::Compiled))
    }

    fn read(&self, engine: &Engine, path: &Path) -> Option<Module> {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read a cached plugin; compiling it");
                return None;
            }
        };
        let intact = data.len() >= HEADER
            && &data[..MAGIC.len()] == MAGIC
            && Sha256::digest(&data[HEADER..])[..] == data[MAGIC.len()..HEADER];
        if !intact {
            tracing::warn!(path = %path.display(), "cached plugin is damaged; compiling it again");
            return None;
        }
        // SAFETY: the bytes are the output of `Module::serialize` by an engine with this
        // compatibility hash (the entry's name) and unchanged since (the digest); wasmtime
        // checks the version and settings in them once more.
        match unsafe { Module::deserialize(engine, &data[HEADER..]) } {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cached plugin refused by wasmtime; compiling it again");
                None
            }
        }
    }

    /// Writes an entry under a temporary name and renames it into place, so a reader
    /// (another engine sharing the directory, or the next start after a crash) sees the
    /// whole entry or none. Not synced: a lost entry only costs a compile.
    fn write(&self, path: &Path, code: &[u8]) -> std::io::Result<()> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".{}.{}.tmp",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&Sha256::digest(code))?;
            f.write_all(code)?;
            drop(f);
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Removes entries no module of this process has used (plugins since replaced, or
    /// built by another engine version), and temporary files older than an hour.
    /// Returns how many were removed.
    pub fn prune(&self) -> usize {
        let used = match self.used.lock() {
            Ok(u) => u.clone(),
            Err(_) => return 0,
        };
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let stale = if let Some(key) = name.strip_suffix(&format!(".{EXT}")) {
                !used.contains(key)
            } else if name.starts_with('.') && name.ends_with(".tmp") {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > 3600)
            } else {
                false
            };
            if stale && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAT: &str = r#"(module (func (export "answer") (result i32) i32.const 42))"#;
    const OTHER: &str = r#"(module (func (export "answer") (result i32) i32.const 7))"#;

    fn answer(engine: &Engine, module: &Module) -> i32 {
        let mut store = wasmtime::Store::new(engine, ());
        let instance = wasmtime::Instance::new(&mut store, module, &[]).expect("instantiates");
        let f = instance
            .get_typed_func::<(), i32>(&mut store, "answer")
            .expect("export");
        f.call(&mut store, ()).expect("runs")
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("cache dir")
            .map(|e| e.expect("entry").path())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_second_load_reads_the_entry_the_first_wrote() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let engine = Engine::default();
        let first = ModuleCache::open(tmp.path()).expect("open");
        let (m, src) = first.module(&engine, WAT.as_bytes()).expect("module");
        assert_eq!(src, Source::Compiled);
        assert_eq!(answer(&engine, &m), 42);
        let files = entries(tmp.path());
        assert_eq!(files.len(), 1, "{files:?}");
        let written = std::fs::read(&files[0]).expect("entry");

        // A new process (a restart) opens the same directory.
        let second = ModuleCache::open(tmp.path()).expect("open");
        let (m, src) = second.module(&engine, WAT.as_bytes()).expect("module");
        assert_eq!(src, Source::Cache);
        assert_eq!(answer(&engine, &m), 42);
        assert_eq!(second.counts(), (0, 1));
        assert_eq!(std::fs::read(&files[0]).expect("entry"), written);

        // Different bytes are a different entry, never the cached one.
        let (m, src) = second.module(&engine, OTHER.as_bytes()).expect("module");
        assert_eq!(src, Source::Compiled);
        assert_eq!(answer(&engine, &m), 7);
        assert_eq!(entries(tmp.path()).len(), 2);
    }

    #[test]
    fn a_damaged_entry_is_compiled_again_and_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let engine = Engine::default();
        ModuleCache::open(tmp.path())
            .expect("open")
            .module(&engine, WAT.as_bytes())
            .expect("module");
        let path = entries(tmp.path()).remove(0);
        let good = std::fs::read(&path).expect("entry");
        let last = good.len() - 1;
        let mut flipped = good.clone();
        flipped[last] ^= 0x55;
        for damaged in [flipped, good[..good.len() / 2].to_vec(), Vec::new()] {
            std::fs::write(&path, &damaged).expect("damage");
            let cache = ModuleCache::open(tmp.path()).expect("open");
            let (m, src) = cache.module(&engine, WAT.as_bytes()).expect("module");
            assert_eq!(src, Source::Compiled);
            assert_eq!(answer(&engine, &m), 42);
            assert_eq!(std::fs::read(&path).expect("entry"), good);
        }
    }

    #[test]
    fn an_engine_with_other_settings_does_not_read_the_entry() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let plain = Engine::default();
        let mut cfg = wasmtime::Config::new();
        cfg.epoch_interruption(true);
        let epochs = Engine::new(&cfg).expect("engine");
        let cache = ModuleCache::open(tmp.path()).expect("open");
        cache.module(&plain, WAT.as_bytes()).expect("module");
        let (_, src) = cache.module(&epochs, WAT.as_bytes()).expect("module");
        assert_eq!(src, Source::Compiled);
        assert_eq!(entries(tmp.path()).len(), 2);
    }

    #[test]
    fn prune_keeps_only_what_this_process_used() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let engine = Engine::default();
        let old = ModuleCache::open(tmp.path()).expect("open");
        old.module(&engine, WAT.as_bytes()).expect("module");
        old.module(&engine, OTHER.as_bytes()).expect("module");
        std::fs::write(tmp.path().join("notes.txt"), "kept").expect("write");

        let new = ModuleCache::open(tmp.path()).expect("open");
        new.module(&engine, WAT.as_bytes()).expect("module");
        assert_eq!(new.prune(), 1);
        let names: Vec<String> = entries(tmp.path())
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.contains(&"notes.txt".to_owned()));
        assert_eq!(
            new.module(&engine, WAT.as_bytes()).expect("module").1,
            Source::Cache
        );
    }

    #[test]
    fn an_unwritable_cache_still_gives_the_module() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let engine = Engine::default();
        let cache = ModuleCache::open(&tmp.path().join("c")).expect("open");
        // The directory is replaced by a file: every write fails.
        std::fs::remove_dir(cache.dir()).expect("rmdir");
        std::fs::write(cache.dir(), "not a directory").expect("write");
        let (m, src) = cache.module(&engine, WAT.as_bytes()).expect("module");
        assert_eq!(src, Source::Compiled);
        assert_eq!(answer(&engine, &m), 42);
    }
}
