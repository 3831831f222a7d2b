//! Which scorer runs for which test name. The set of plugins is built from the bundled
//! plugins overlaid with the files of the plugins directory, and swapped whole on
//! reload: a measurement is scored start to end with the set it started with.

use crate::fingerprints::Fingerprints;
use crate::scoring::wasm::{Limits, WasmRuntime, WasmScorer};
use arc_swap::ArcSwap;
use ooni_core::row::ScorerSelect;
use ooni_core::rules::RuleScorer;
use ooni_core::scores::{ScoreError, ScorerInfo, Scores};
use ooni_core::{DefaultScorer, Measurement, Scorer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled_plugins.rs"));
}

/// The scorers built into the engine: (file name, contents), WebAssembly modules
/// (`.wasm`) and rule files (`.toml`).
pub fn bundled_modules() -> &'static [(&'static str, &'static [u8])] {
    bundled::BUNDLED
}

/// Calls, failures and time spent, per loaded plugin.
#[derive(Default)]
pub struct PluginStats {
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    pub nanos: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Time per call, for `/metrics`.
    pub seconds: crate::metrics::Histogram,
}

/// A scorer plugin as loaded, instrumented.
pub struct LoadedPlugin {
    /// `plugins/x.toml`, or `bundled:x.wasm`.
    pub source: String,
    pub kind: &'static str,
    /// SHA-256 of the file, first 16 hex digits.
    pub digest: String,
    pub info: ScorerInfo,
    pub test_names: Vec<String>,
    pub stats: Arc<PluginStats>,
    scorer: Box<dyn Scorer>,
}

impl Scorer for LoadedPlugin {
    fn info(&self) -> ScorerInfo {
        self.info.clone()
    }

    fn score(&self, msm: &Measurement<'_>) -> Result<Scores, ScoreError> {
        let t = Instant::now();
        let r = self.scorer.score(msm);
        let took = t.elapsed();
        self.stats.nanos.fetch_add(took.as_nanos() as u64, Relaxed);
        self.stats.seconds.observe(took.as_secs_f64());
        self.stats.calls.fetch_add(1, Relaxed);
        if let Err(e) = &r {
            self.stats.failures.fetch_add(1, Relaxed);
            if let Ok(mut last) = self.stats.last_error.lock() {
                *last = Some(e.0.clone());
            }
        }
        r
    }

    fn cut_plan(&self) -> Option<ooni_core::scores::CutPlan<'_>> {
        self.scorer.cut_plan()
    }
}

/// One immutable generation of plugins.
pub struct PluginSet {
    pub plugins: Vec<Arc<LoadedPlugin>>,
    by_test: HashMap<String, Arc<LoadedPlugin>>,
    default: DefaultScorer,
}

impl PluginSet {
    /// A set of just this plugin (for `plugins check`).
    pub fn single(p: LoadedPlugin) -> PluginSet {
        let p = Arc::new(p);
        let by_test = p
            .test_names
            .iter()
            .map(|t| (t.clone(), p.clone()))
            .collect();
        PluginSet {
            plugins: vec![p],
            by_test,
            default: DefaultScorer,
        }
    }

    pub fn plugin_for(&self, test_name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.by_test.get(test_name)
    }
}

impl ScorerSelect for PluginSet {
    fn select(&self, test_name: &str) -> &dyn Scorer {
        match self.by_test.get(test_name) {
            Some(p) => p.as_ref(),
            None => &self.default,
        }
    }
}

/// A file the registry refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub source: String,
    pub error: String,
}

pub struct RegistryOptions {
    pub dir: Option<PathBuf>,
    pub limits: Limits,
    pub bundled: bool,
    /// Where compiled WebAssembly modules are kept between starts; `None`: compile
    /// every module at every start.
    pub cache_dir: Option<PathBuf>,
}

pub struct Registry {
    rt: WasmRuntime,
    limits: Limits,
    fingerprints: Arc<Fingerprints>,
    dir: Option<PathBuf>,
    bundled: Vec<Arc<LoadedPlugin>>,
    /// The live generation; readers take it without locking.
    current: ArcSwap<PluginSet>,
    /// The plugins directory's files as last loaded: path → plugin.
    files: Mutex<BTreeMap<PathBuf, Arc<LoadedPlugin>>>,
    refused: Mutex<Vec<Refusal>>,
    generation: AtomicU64,
}

fn digest(bytes: &[u8]) -> String {
    ooni_core::ids::hex(&Sha256::digest(bytes)[..8])
}

/// Loads one plugin file from its bytes; the kind comes from the extension.
pub fn load_plugin(
    rt: &WasmRuntime,
    limits: Limits,
    fingerprints: &Arc<Fingerprints>,
    source: &str,
    bytes: &[u8],
) -> Result<LoadedPlugin, String> {
    let ext = Path::new(source)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    let (kind, scorer, info, test_names): (&'static str, Box<dyn Scorer>, ScorerInfo, Vec<String>) =
        match ext {
            "wasm" | "wat" => {
                let w = WasmScorer::load(rt, bytes, limits, fingerprints.clone())
                    .map_err(|e| e.to_string())?;
                let (info, names) = (w.info(), w.test_names.clone());
                ("wasm", Box::new(w), info, names)
            }
            "toml" => {
                let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
                let r = RuleScorer::parse(text).map_err(|e| e.to_string())?;
                let (info, names) = (r.info(), r.test_names.clone());
                ("rules", Box::new(r), info, names)
            }
            other => {
                return Err(format!(
                    "unknown plugin kind .{other}: use .wasm, .wat or .toml"
                ))
            }
        };
    Ok(LoadedPlugin {
        source: source.to_owned(),
        kind,
        digest: digest(bytes),
        info,
        test_names,
        stats: Arc::default(),
        scorer,
    })
}

/// Files the plugins directory may hold; editors' temporary files are skipped.
fn is_plugin_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.')
        && !name.ends_with('~')
        && p.extension()
            .is_some_and(|e| e == "wasm" || e == "wat" || e == "toml")
        && p.is_file()
}

impl Registry {
    pub fn new(
        opts: RegistryOptions,
        fingerprints: Arc<Fingerprints>,
    ) -> anyhow::Result<Arc<Registry>> {
        let rt = match &opts.cache_dir {
            Some(dir) => WasmRuntime::with_cache(dir)?,
            None => WasmRuntime::new()?,
        };
        let mut bundled = Vec::new();
        if opts.bundled {
            for (name, bytes) in bundled::BUNDLED {
                let p = load_plugin(&rt, opts.limits, &fingerprints, name, bytes)
                    .map_err(|e| anyhow::anyhow!("bundled plugin {name}: {e}"))?;
                let mut p = p;
                p.source = format!("bundled:{name}");
                bundled.push(Arc::new(p));
            }
        }
        let reg = Arc::new(Registry {
            rt,
            limits: opts.limits,
            fingerprints,
            dir: opts.dir,
            bundled,
            current: ArcSwap::from_pointee(PluginSet {
                plugins: Vec::new(),
                by_test: HashMap::new(),
                default: DefaultScorer,
            }),
            files: Mutex::new(BTreeMap::new()),
            refused: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
        });
        reg.reload();
        if let Some(cache) = reg.rt.cache() {
            let (compiled, reused) = cache.counts();
            tracing::info!(compiled, from_cache = reused, dir = %cache.dir().display(), "scorer modules loaded");
        }
        Ok(reg)
    }

    pub fn runtime(&self) -> &WasmRuntime {
        &self.rt
    }

    pub fn fingerprints(&self) -> &Arc<Fingerprints> {
        &self.fingerprints
    }

    /// The current plugins, to score one measurement with.
    pub fn snapshot(&self) -> Arc<PluginSet> {
        self.current.load_full()
    }

    pub fn refused(&self) -> Vec<Refusal> {
        self.refused.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Re-reads the plugins directory. A file that fails to load is refused and, if
    /// an earlier version of it was loaded, that version keeps serving.
    pub fn reload(&self) -> Vec<Refusal> {
        let mut refused = Vec::new();
        let previous = self.files.lock().map(|f| f.clone()).unwrap_or_default();
        let mut files: BTreeMap<PathBuf, Arc<LoadedPlugin>> = BTreeMap::new();
        if let Some(dir) = &self.dir {
            let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| is_plugin_file(p))
                    .collect(),
                Err(e) => {
                    refused.push(Refusal {
                        source: dir.display().to_string(),
                        error: format!("cannot read the plugins directory: {e}"),
                    });
                    Vec::new()
                }
            };
            paths.sort();
            for path in paths {
                let source = path.display().to_string();
                let bytes = match std::fs::read(&path) {
                    Ok(b) => b,
                    Err(e) => {
                        refused.push(Refusal {
                            source,
                            error: format!("cannot read: {e}"),
                        });
                        continue;
                    }
                };
                if let Some(old) = previous
                    .get(&path)
                    .filter(|old| old.digest == digest(&bytes))
                {
                    files.insert(path, old.clone());
                    continue;
                }
                match load_plugin(&self.rt, self.limits, &self.fingerprints, &source, &bytes) {
                    Ok(p) => {
                        files.insert(path, Arc::new(p));
                    }
                    Err(error) => {
                        if let Some(old) = previous.get(&path) {
                            files.insert(path.clone(), old.clone());
                        }
                        refused.push(Refusal { source, error });
                    }
                }
            }
        }
        // Bundled first; the directory overrides them. Two directory files claiming
        // one test name: the first in name order keeps it, the other is refused.
        let mut by_test: HashMap<String, Arc<LoadedPlugin>> = HashMap::new();
        let mut plugins: Vec<Arc<LoadedPlugin>> = Vec::new();
        for p in &self.bundled {
            for t in &p.test_names {
                by_test.insert(t.clone(), p.clone());
            }
        }
        let mut claimed: HashMap<String, String> = HashMap::new();
        let mut kept_files = BTreeMap::new();
        for (path, p) in files {
            if let Some((t, other)) = p
                .test_names
                .iter()
                .find_map(|t| claimed.get(t).map(|o| (t, o)))
            {
                refused.push(Refusal {
                    source: p.source.clone(),
                    error: format!("test name {t} is already scored by {other}"),
                });
                continue;
            }
            for t in &p.test_names {
                claimed.insert(t.clone(), p.source.clone());
                by_test.insert(t.clone(), p.clone());
            }
            kept_files.insert(path, p);
        }
        for p in self.bundled.iter().chain(kept_files.values()) {
            if p.test_names
                .iter()
                .any(|t| by_test.get(t).is_some_and(|q| Arc::ptr_eq(p, q)))
            {
                plugins.push(p.clone());
            }
        }
        for r in &refused {
            tracing::error!(plugin = %r.source, error = %r.error, "plugin refused");
        }
        let set = Arc::new(PluginSet {
            plugins,
            by_test,
            default: DefaultScorer,
        });
        tracing::info!(
            plugins = set.plugins.len(),
            refused = refused.len(),
            "plugins loaded"
        );
        self.current.store(set);
        if let Ok(mut f) = self.files.lock() {
            *f = kept_files;
        }
        if let Ok(mut r) = self.refused.lock() {
            *r = refused.clone();
        }
        self.generation.fetch_add(1, Relaxed);
        refused
    }

    /// How many times the plugin set has been rebuilt.
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// Everything `/admin/plugins` shows.
    pub fn status(&self) -> Value {
        let set = self.snapshot();
        let plugins: Vec<Value> = set
            .plugins
            .iter()
            .map(|p| {
                let calls = p.stats.calls.load(Relaxed);
                let nanos = p.stats.nanos.load(Relaxed);
                json!({
                    "name": p.info.name,
                    "version": p.info.version,
                    "kind": p.kind,
                    "source": p.source,
                    "digest": p.digest,
                    "test_names": p.test_names,
                    "calls": calls,
                    "failures": p.stats.failures.load(Relaxed),
                    "time_spent_ms": nanos as f64 / 1e6,
                    "mean_call_us": if calls > 0 { nanos as f64 / calls as f64 / 1e3 } else { 0.0 },
                    "last_error": p.stats.last_error.lock().ok().and_then(|e| e.clone()),
                })
            })
            .collect();
        let refused: Vec<Value> = self
            .refused()
            .into_iter()
            .map(|r| json!({"source": r.source, "error": r.error}))
            .collect();
        json!({
            "directory": self.dir.as_ref().map(|d| d.display().to_string()),
            "generation": self.generation(),
            "plugins": plugins,
            "refused": refused,
        })
    }

    /// Watches the plugins directory and reloads, debounced, after changes.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<Option<notify::RecommendedWatcher>> {
        let Some(dir) = self.dir.clone() else {
            return Ok(None);
        };
        let weak = Arc::downgrade(self);
        crate::watch::watch_dir(&dir, "plugin-watch", move || match weak.upgrade() {
            Some(reg) => {
                reg.reload();
                true
            }
            None => false,
        })
        .map(Some)
    }
}
