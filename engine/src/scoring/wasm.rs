//! The host side of the WebAssembly scorer ABI (plugins/ABI.md), on wasmtime.
//!
//! Modules are compiled once. Instances are kept in a small pool and reused, so a call
//! costs a copy in, the scorer's own work and a copy out; an instance that trapped,
//! timed out or answered garbage is dropped and replaced. Every call runs under an
//! epoch deadline and a memory cap.

use super::module_cache::ModuleCache;
use crate::fingerprints::{FingerprintSet, Fingerprints};
use ooni_core::scores::{CutPlan, ScoreError, Scorer, ScorerInfo, Scores};
use ooni_core::Measurement;
use ooni_scorer_sdk::projection::Reads;
use ooni_scorer_sdk::Host;
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use wasmtime::{
    Caller, Config, Engine, Extern, InstancePre, Linker, Memory, Module, Store, StoreLimits,
    StoreLimitsBuilder, TypedFunc,
};

pub const ABI_VERSION: i32 = 1;
/// Largest answer a scorer may give.
pub const MAX_ANSWER: usize = 4 * 1024 * 1024;
const TICK: Duration = Duration::from_millis(10);
const MAX_IDLE: usize = 8;

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("not a valid WebAssembly module: {0}")]
    Compile(String),
    #[error("imports {0}, which the engine does not provide (only ooni.log and ooni.match_fingerprints)")]
    Import(String),
    #[error("missing or mistyped export: {0}")]
    Export(String),
    #[error("ABI version {0} is not supported (this engine speaks {ABI_VERSION})")]
    AbiVersion(i32),
    #[error("ooni_meta: {0}")]
    Meta(String),
    #[error("{0}")]
    Trap(String),
}

/// Limits applied to every call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(1),
            memory_bytes: 256 * 1024 * 1024,
        }
    }
}

/// One wasmtime engine for the process, with the thread that advances its epoch.
#[derive(Clone)]
pub struct WasmRuntime {
    engine: Engine,
    cache: Option<Arc<ModuleCache>>,
}

impl WasmRuntime {
    /// A runtime that compiles every module it loads.
    pub fn new() -> Result<WasmRuntime, LoadError> {
        Self::build(None)
    }

    /// A runtime that keeps compiled modules in `dir` (created if missing) and reads
    /// them back instead of compiling. A directory that cannot be created costs
    /// compiles and a warning, not the runtime.
    pub fn with_cache(dir: &Path) -> Result<WasmRuntime, LoadError> {
        let cache = match ModuleCache::open(dir) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot open the compiled-plugin cache; every start compiles the plugins");
                None
            }
        };
        Self::build(cache)
    }

    pub fn cache(&self) -> Option<&ModuleCache> {
        self.cache.as_deref()
    }

    fn module(&self, bytes: &[u8]) -> Result<Module, LoadError> {
        let compiled = match &self.cache {
            Some(cache) => cache.module(&self.engine, bytes).map(|(m, _)| m),
            None => Module::new(&self.engine, bytes),
        };
        compiled.map_err(|e| LoadError::Compile(format!("{e:#}")))
    }

    fn build(cache: Option<Arc<ModuleCache>>) -> Result<WasmRuntime, LoadError> {
        let mut cfg = Config::new();
        cfg.epoch_interruption(true);
        cfg.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // `OONI_WASM_PERFMAP=1`: name compiled scorer functions for `perf report`.
        if std::env::var_os("OONI_WASM_PERFMAP").is_some() {
            cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&cfg).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| LoadError::Compile(e.to_string()))?;
        Ok(WasmRuntime { engine, cache })
    }
}

struct HostState {
    limits: StoreLimits,
    plugin: Arc<str>,
    fingerprints: Arc<FingerprintSet>,
}

struct Live {
    store: Store<HostState>,
    instance: wasmtime::Instance,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    score: TypedFunc<(i32, i32), i64>,
}

/// A loaded WebAssembly scorer.
pub struct WasmScorer {
    info: ScorerInfo,
    pub test_names: Vec<String>,
    /// What the module reads (`reads` in its meta); `None`: the whole measurement.
    reads: Option<Reads>,
    /// Some reads are bodies or headers the host matches itself (`bodies`, `headers`
    /// in its meta).
    matched: bool,
    engine: Engine,
    pre: InstancePre<HostState>,
    limits: Limits,
    fingerprints: Arc<Fingerprints>,
    idle: Mutex<Vec<Live>>,
}

fn unpack(packed: i64) -> (usize, usize) {
    let p = packed as u64;
    ((p >> 32) as usize, (p & 0xffff_ffff) as usize)
}

fn read_guest(
    mem: &Memory,
    store: &impl wasmtime::AsContext,
    ptr: usize,
    len: usize,
) -> Result<Vec<u8>, String> {
    mem.data(store)
        .get(ptr..ptr.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format!("buffer {ptr}+{len} is outside the module's memory"))
}

fn guest_memory(caller: &mut Caller<'_, HostState>) -> wasmtime::Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(wasmtime::Error::msg("module exports no memory")),
    }
}

fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap(
        "ooni",
        "log",
        |mut caller: Caller<'_, HostState>,
         level: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<()> {
            let mem = guest_memory(&mut caller)?;
            let bytes = read_guest(
                &mem,
                &caller,
                ptr as u32 as usize,
                (len as u32 as usize).min(64 * 1024),
            )
            .map_err(wasmtime::Error::msg)?;
            let msg = String::from_utf8_lossy(&bytes);
            let plugin = caller.data().plugin.clone();
            match level {
                0 => tracing::debug!(plugin = %plugin, "{msg}"),
                1 => tracing::info!(plugin = %plugin, "{msg}"),
                2 => tracing::warn!(plugin = %plugin, "{msg}"),
                _ => tracing::error!(plugin = %plugin, "{msg}"),
            }
            Ok(())
        },
    )?;
    linker.func_wrap(
        "ooni",
        "match_fingerprints",
        |mut caller: Caller<'_, HostState>,
         kind: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<i64> {
            let mem = guest_memory(&mut caller)?;
            let input = read_guest(&mem, &caller, ptr as u32 as usize, len as u32 as usize)
                .map_err(wasmtime::Error::msg)?;
            let fps = caller.data().fingerprints.clone();
            let matches = match kind {
                0 => fps.match_dns(&String::from_utf8_lossy(&input)),
                1 => fps.match_http_body(&input),
                2 => fps.match_http_headers(&String::from_utf8_lossy(&input)),
                k => {
                    return Err(wasmtime::Error::msg(format!(
                        "match_fingerprints: unknown kind {k}"
                    )))
                }
            };
            if matches.is_empty() {
                return Ok(0);
            }
            let out = Value::Array(matches.into_iter().map(Value::Object).collect()).to_string();
            let alloc = match caller.get_export("ooni_alloc") {
                Some(Extern::Func(f)) => f.typed::<i32, i32>(&caller)?,
                _ => return Err(wasmtime::Error::msg("module exports no ooni_alloc")),
            };
            let dst = alloc.call(&mut caller, out.len() as i32)?;
            if dst == 0 {
                return Err(wasmtime::Error::msg("ooni_alloc failed"));
            }
            mem.write(&mut caller, dst as u32 as usize, out.as_bytes())?;
            Ok((((dst as u32 as u64) << 32) | out.len() as u64) as i64)
        },
    )?;
    Ok(linker)
}

impl WasmScorer {
    /// Compiles and checks a module (`.wasm`, or `.wat` text), and asks it who it is.
    pub fn load(
        rt: &WasmRuntime,
        bytes: &[u8],
        limits: Limits,
        fingerprints: Arc<Fingerprints>,
    ) -> Result<WasmScorer, LoadError> {
        let module = rt.module(bytes)?;
        let bad: Vec<String> = module
            .imports()
            .filter(|i| !(i.module() == "ooni" && matches!(i.name(), "log" | "match_fingerprints")))
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect();
        if !bad.is_empty() {
            return Err(LoadError::Import(bad.join(", ")));
        }
        let linker = linker(&rt.engine).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Import(format!("{e:#}")))?;
        let mut scorer = WasmScorer {
            info: ScorerInfo {
                name: String::new(),
                version: String::new(),
            },
            test_names: Vec::new(),
            reads: None,
            matched: false,
            engine: rt.engine.clone(),
            pre,
            limits,
            fingerprints,
            idle: Mutex::new(Vec::new()),
        };
        let mut live = scorer.instantiate("(loading)")?;
        let abi_fn = live_func::<(), i32>(&mut live, "ooni_abi_version")?;
        live.store.set_epoch_deadline(scorer.deadline_ticks());
        let abi = abi_fn
            .call(&mut live.store, ())
            .map_err(|e| LoadError::Trap(format!("ooni_abi_version trapped: {e:#}")))?;
        if abi != ABI_VERSION {
            return Err(LoadError::AbiVersion(abi));
        }
        let meta_fn = live_func::<(), i64>(&mut live, "ooni_meta")?;
        live.store.set_epoch_deadline(scorer.deadline_ticks());
        let packed = meta_fn
            .call(&mut live.store, ())
            .map_err(|e| LoadError::Trap(format!("ooni_meta trapped: {e:#}")))?;
        let (ptr, len) = unpack(packed);
        if len > MAX_ANSWER {
            return Err(LoadError::Meta(format!(
                "answer of {len} bytes is too large"
            )));
        }
        let bytes = read_guest(&live.memory, &live.store, ptr, len).map_err(LoadError::Meta)?;
        let meta: Value = serde_json::from_slice(&bytes)
            .map_err(|e| LoadError::Meta(format!("not JSON: {e}")))?;
        let s = |k: &str| {
            meta.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| LoadError::Meta(format!("`{k}` must be a non-empty string")))
        };
        scorer.info = ScorerInfo {
            name: s("name")?,
            version: s("version")?,
        };
        if let Some(a) = meta.get("abi") {
            if a.as_i64() != Some(ABI_VERSION as i64) {
                return Err(LoadError::AbiVersion(a.as_i64().unwrap_or(-1) as i32));
            }
        }
        scorer.test_names = meta
            .get("test_names")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                LoadError::Meta("`test_names` must be a non-empty array of strings".into())
            })?;
        let paths = |key: &str| -> Result<Option<Vec<&str>>, LoadError> {
            let bad = || LoadError::Meta(format!("`{key}` must be an array of paths"));
            match meta.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|p| p.as_str().filter(|s| !s.is_empty()))
                    .collect::<Option<Vec<&str>>>()
                    .map(Some)
                    .ok_or_else(bad),
                Some(_) => Err(bad()),
            }
        };
        let drop_unread = match meta.get("unread") {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) if s == "null" => false,
            Some(Value::String(s)) if s == "drop" => true,
            Some(_) => {
                return Err(LoadError::Meta(
                    "`unread` must be \"null\" or \"drop\"".into(),
                ))
            }
        };
        let (bodies, headers) = (paths("bodies")?, paths("headers")?);
        scorer.matched = bodies.is_some() || headers.is_some();
        scorer.reads = Reads::declared(
            paths("reads")?.as_deref(),
            bodies.as_deref(),
            headers.as_deref(),
            paths("compared")?.as_deref(),
            drop_unread,
        )
        .map_err(LoadError::Meta)?;
        live.store.data_mut().plugin = Arc::from(scorer.info.name.as_str());
        if let Ok(mut idle) = scorer.idle.lock() {
            idle.push(live);
        }
        Ok(scorer)
    }

    /// Whether the module declared its reads (and is sent measurements cut down).
    pub fn reads_something(&self) -> bool {
        self.reads.is_some()
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.timeout.as_millis() / TICK.as_millis()).max(1) as u64 + 1
    }

    fn instantiate(&self, plugin: &str) -> Result<Live, LoadError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(1)
            .build();
        let mut store = Store::new(
            &self.engine,
            HostState {
                limits,
                plugin: Arc::from(plugin),
                fingerprints: Arc::new(FingerprintSet::empty()),
            },
        );
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.deadline_ticks());
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| LoadError::Trap(format!("instantiation failed: {e:#}")))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| LoadError::Export("memory".into()))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "ooni_alloc")
            .map_err(|e| LoadError::Export(format!("ooni_alloc (i32) -> i32: {e:#}")))?;
        let score = instance
            .get_typed_func::<(i32, i32), i64>(&mut store, "ooni_score")
            .map_err(|e| LoadError::Export(format!("ooni_score (i32, i32) -> i64: {e:#}")))?;
        Ok(Live {
            store,
            instance,
            memory,
            alloc,
            score,
        })
    }

    /// Scores one measurement's JSON text.
    pub fn call(&self, json: impl AsRef<[u8]>) -> Result<Scores, String> {
        self.call_checked(json).map_err(|e| match e {
            CallError::Declined(m) | CallError::Fault(m) => m,
        })
    }

    /// Like `call`, telling a scorer that declined from one that misbehaved.
    pub fn call_checked(&self, json: impl AsRef<[u8]>) -> Result<Scores, CallError> {
        let json = json.as_ref();
        let mut live = match self.idle.lock().ok().and_then(|mut v| v.pop()) {
            Some(l) => l,
            None => self
                .instantiate(&self.info.name)
                .map_err(|e| CallError::Fault(e.to_string()))?,
        };
        live.store.data_mut().fingerprints = self.fingerprints.for_scoring();
        live.store.set_epoch_deadline(self.deadline_ticks());
        let result = run(&mut live, json);
        if let Err(RunError::Declined(_)) = &result {
            // The module answered properly; it can serve the next call.
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < MAX_IDLE {
                    idle.push(live);
                }
            }
            return result.map_err(RunError::into_call);
        }
        if result.is_ok() {
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < MAX_IDLE {
                    idle.push(live);
                }
            }
        }
        result.map_err(RunError::into_call)
    }
}

fn live_func<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    live: &mut Live,
    name: &str,
) -> Result<TypedFunc<P, R>, LoadError> {
    live.instance
        .get_typed_func::<P, R>(&mut live.store, name)
        .map_err(|e| LoadError::Export(format!("{name}: {e:#}")))
}

/// Why a call gave no scores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The scorer answered `{"error": …}`: it cannot score this measurement.
    Declined(String),
    /// A trap, a timeout, memory exhaustion or a malformed answer.
    Fault(String),
}

enum RunError {
    Declined(String),
    Fault(String),
}

impl RunError {
    fn into_call(self) -> CallError {
        match self {
            RunError::Declined(m) => CallError::Declined(m),
            RunError::Fault(m) => CallError::Fault(m),
        }
    }
}

impl From<String> for RunError {
    fn from(s: String) -> Self {
        RunError::Fault(s)
    }
}

fn run(live: &mut Live, json: &[u8]) -> Result<Scores, RunError> {
    let len = i32::try_from(json.len())
        .map_err(|_| RunError::Fault("measurement too large for a 32-bit module".into()))?;
    let ptr = live
        .alloc
        .call(&mut live.store, len)
        .map_err(|e| format!("ooni_alloc trapped: {e:#}"))?;
    if ptr == 0 && len > 0 {
        return Err(RunError::Fault(
            "ooni_alloc could not allocate the measurement".into(),
        ));
    }
    live.memory
        .write(&mut live.store, ptr as u32 as usize, json)
        .map_err(|e| format!("ooni_alloc returned a bad buffer: {e:#}"))?;
    let packed = live
        .score
        .call(&mut live.store, (ptr, len))
        .map_err(describe_trap)?;
    let (optr, olen) = unpack(packed);
    if olen > MAX_ANSWER {
        return Err(RunError::Fault(format!(
            "answer of {olen} bytes exceeds the {MAX_ANSWER}-byte limit"
        )));
    }
    let bytes = read_guest(&live.memory, &live.store, optr, olen)?;
    let answer: Value = serde_json::from_slice(&bytes)
        .map_err(|e| RunError::Fault(format!("answer is not JSON: {e}")))?;
    match answer {
        Value::Object(mut m) => match (m.remove("scores"), m.remove("error")) {
            (Some(Value::Object(s)), None) => Ok(s),
            (None, Some(Value::String(e))) => Err(RunError::Declined(e)),
            _ => Err(RunError::Fault(
                "answer must be {\"scores\": {…}} or {\"error\": \"…\"}".into(),
            )),
        },
        _ => Err(RunError::Fault("answer is not a JSON object".into())),
    }
}

fn describe_trap(e: wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => "timed out".to_owned(),
        Some(t) => format!("trapped: {t}"),
        None => format!("failed: {e:#}"),
    }
}

impl Scorer for WasmScorer {
    fn info(&self) -> ScorerInfo {
        self.info.clone()
    }

    fn score(&self, msm: &Measurement<'_>) -> Result<Scores, ScoreError> {
        let Some(reads) = &self.reads else {
            return self.call(msm.json).map_err(ScoreError);
        };
        if let Some(cut) = msm.cut_for(reads, self.matched) {
            return self.call(cut).map_err(ScoreError);
        }
        // Cut down to what the module reads, its bodies and headers matched here with
        // the set this call is pinned to.
        let fingerprints = self.fingerprints.for_scoring();
        let hook = |kind, raw: &[u8]| {
            ooni_scorer_sdk::matching::matched_value(kind, raw, fingerprints.as_ref())
        };
        match reads.project_with(msm.json.as_bytes(), self.matched.then_some(&hook)) {
            Ok(sent) => self.call(&sent).map_err(ScoreError),
            // Without bodies the module can say what is wrong with the text; with
            // them it must never see a text the host did not cut (nor its bodies).
            Err(_) if !self.matched => self.call(msm.json).map_err(ScoreError),
            Err(e) => Err(ScoreError(format!("measurement is not JSON: {e}"))),
        }
    }

    fn cut_plan(&self) -> Option<CutPlan<'_>> {
        Some(CutPlan {
            reads: self.reads.as_ref()?,
            bodies: self
                .matched
                .then(|| self.fingerprints.for_scoring() as Arc<dyn Host + Send + Sync>),
        })
    }
}
