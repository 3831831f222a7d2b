//! The blocking-fingerprint set scorers look things up in: loaded from the TOML files
//! of the fingerprints directory, validated whole, compiled, and swapped atomically.
//! A broken file is refused with its file, line and problem, and the previous set
//! keeps serving. Rows record the version (content hash) of the set that scored them.

use arc_swap::ArcSwap;
use ooni_core::fingerprints::schema::check_unique;
use ooni_core::fingerprints::{parse_file, FingerprintError, Matcher, Mode};
use ooni_scorer_sdk::{FingerprintMatch, Host, NoFingerprints};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A fingerprint set as scorers see it, with its content hash.
#[derive(Clone)]
pub struct FingerprintSet {
    pub matcher: Arc<dyn Host + Send + Sync>,
    /// Content hash of the set (mode and files); empty for the empty set.
    pub version: Arc<str>,
    pub dns: usize,
    pub http: usize,
    pub files: Vec<String>,
}

impl FingerprintSet {
    pub fn empty() -> FingerprintSet {
        FingerprintSet {
            matcher: Arc::new(NoFingerprints),
            version: Arc::from(""),
            dns: 0,
            http: 0,
            files: Vec::new(),
        }
    }

    /// Reads, validates and compiles every `*.toml` file of `dir`.
    pub fn load_dir(dir: &Path, mode: Mode) -> Result<FingerprintSet, FingerprintError> {
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_fingerprint_file(p))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(FingerprintError {
                    file: dir.display().to_string(),
                    line: None,
                    message: e.to_string(),
                })
            }
        };
        paths.sort();
        let mut hash = Sha256::new();
        hash.update(match mode {
            Mode::Compat => b"compat\n".as_slice(),
            Mode::Strict => b"strict\n".as_slice(),
        });
        let mut all = Vec::new();
        let mut files = Vec::new();
        for p in &paths {
            let file = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|e| FingerprintError {
                file: file.clone(),
                line: None,
                message: e.to_string(),
            })?;
            hash.update(
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
                    .as_bytes(),
            );
            hash.update([0]);
            hash.update(text.as_bytes());
            hash.update([0]);
            all.extend(parse_file(&file, &text)?);
            files.push(file);
        }
        check_unique(&all)?;
        if all.is_empty() {
            return Ok(FingerprintSet {
                files,
                ..FingerprintSet::empty()
            });
        }
        let dns = all
            .iter()
            .filter(|f| f.kind == ooni_core::fingerprints::Kind::Dns)
            .count();
        let version = ooni_core::ids::hex(&hash.finalize()[..8]);
        Ok(FingerprintSet {
            matcher: Arc::new(Matcher::new(&all, mode)),
            version: Arc::from(version.as_str()),
            dns,
            http: all.len() - dns,
            files,
        })
    }
}

fn is_fingerprint_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.') && p.extension().is_some_and(|e| e == "toml") && p.is_file()
}

impl Host for FingerprintSet {
    fn match_dns(&self, answer: &str) -> Vec<FingerprintMatch> {
        self.matcher.match_dns(answer)
    }
    fn match_http_body(&self, body: &[u8]) -> Vec<FingerprintMatch> {
        self.matcher.match_http_body(body)
    }
    fn match_http_headers(&self, headers_json: &str) -> Vec<FingerprintMatch> {
        self.matcher.match_http_headers(headers_json)
    }
}

thread_local! {
    /// The set pinned for the measurement this thread is scoring.
    static PINNED: std::cell::RefCell<Option<Arc<FingerprintSet>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with `set` pinned for this thread, so that every lookup while scoring one
/// measurement uses the same set, the one its row then names.
pub fn with_pinned<R>(set: Arc<FingerprintSet>, f: impl FnOnce() -> R) -> R {
    let previous = PINNED.with(|p| p.replace(Some(set)));
    let r = f();
    PINNED.with(|p| *p.borrow_mut() = previous);
    r
}

/// The current set, swapped atomically on reload, and where it comes from.
pub struct Fingerprints {
    /// Swapped whole on reload; readers take a pointer without locking.
    current: ArcSwap<FingerprintSet>,
    source: Option<(PathBuf, Mode)>,
    last_error: Mutex<Option<String>>,
    reloads: AtomicU64,
    last_reload: Mutex<Option<(Duration, chrono::DateTime<chrono::Utc>)>>,
}

impl Fingerprints {
    /// A fixed set (no directory behind it).
    pub fn new(set: FingerprintSet) -> Arc<Fingerprints> {
        Arc::new(Fingerprints {
            current: ArcSwap::from_pointee(set),
            source: None,
            last_error: Mutex::new(None),
            reloads: AtomicU64::new(0),
            last_reload: Mutex::new(None),
        })
    }

    /// The set in `dir`, reloadable. Fails when the directory's files are invalid.
    pub fn from_dir(dir: PathBuf, mode: Mode) -> Result<Arc<Fingerprints>, FingerprintError> {
        let t = Instant::now();
        let set = FingerprintSet::load_dir(&dir, mode)?;
        tracing::info!(dir = %dir.display(), dns = set.dns, http = set.http, version = %set.version, "fingerprints loaded");
        Ok(Arc::new(Fingerprints {
            current: ArcSwap::from_pointee(set),
            source: Some((dir, mode)),
            last_error: Mutex::new(None),
            reloads: AtomicU64::new(1),
            last_reload: Mutex::new(Some((t.elapsed(), chrono::Utc::now()))),
        }))
    }

    /// The set pinned for this thread's measurement, else the current one.
    pub fn for_scoring(&self) -> Arc<FingerprintSet> {
        PINNED
            .with(|p| p.borrow().clone())
            .unwrap_or_else(|| self.current())
    }

    /// The current set (a shared pointer: taking it copies nothing).
    pub fn current(&self) -> Arc<FingerprintSet> {
        self.current.load_full()
    }

    pub fn swap(&self, set: FingerprintSet) {
        self.current.store(Arc::new(set));
    }

    /// Re-reads the directory. On any error the current set stays.
    pub fn reload(&self) -> Result<(), FingerprintError> {
        let Some((dir, mode)) = &self.source else {
            return Ok(());
        };
        let t = Instant::now();
        match FingerprintSet::load_dir(dir, *mode) {
            Ok(set) => {
                let changed = set.version != self.current().version;
                tracing::info!(dns = set.dns, http = set.http, version = %set.version, changed, took_ms = t.elapsed().as_secs_f64() * 1e3, "fingerprints reloaded");
                self.swap(set);
                if let Ok(mut e) = self.last_error.lock() {
                    *e = None;
                }
                if let Ok(mut r) = self.last_reload.lock() {
                    *r = Some((t.elapsed(), chrono::Utc::now()));
                }
                self.reloads.fetch_add(1, Relaxed);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "fingerprints refused; the previous set keeps serving");
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(e.to_string());
                }
                Err(e)
            }
        }
    }

    /// What `/admin/fingerprints` shows.
    pub fn status(&self) -> Value {
        let set = self.current();
        let (took, at) = self
            .last_reload
            .lock()
            .ok()
            .and_then(|r| *r)
            .map_or((None, None), |(d, t)| {
                (Some(d.as_secs_f64() * 1e3), Some(t.to_rfc3339()))
            });
        json!({
            "directory": self.source.as_ref().map(|(d, _)| d.display().to_string()),
            "mode": self.source.as_ref().map(|(_, m)| match m { Mode::Compat => "compat", Mode::Strict => "strict" }),
            "version": &*set.version,
            "dns": set.dns,
            "http": set.http,
            "files": set.files,
            "reloads": self.reloads.load(Relaxed),
            "last_reload_ms": took,
            "last_reload_at": at,
            "last_error": self.last_error.lock().ok().and_then(|e| e.clone()),
        })
    }

    /// Watches the directory and reloads, debounced, after changes.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<Option<notify::RecommendedWatcher>> {
        let Some((dir, _)) = &self.source else {
            return Ok(None);
        };
        let weak = Arc::downgrade(self);
        crate::watch::watch_dir(dir, "fingerprint-watch", move || match weak.upgrade() {
            Some(f) => {
                let _ = f.reload();
                true
            }
            None => false,
        })
        .map(Some)
    }
}
