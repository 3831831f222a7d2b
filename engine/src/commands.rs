//! The command-line tools beside `serve`: `score` (try scorers without a server) and
//! `plugins check` (validate a plugin file and explain every problem).

use crate::config::Config;
use crate::fingerprints::{FingerprintSet, Fingerprints};
use crate::scoring::registry::{load_plugin, PluginSet};
use crate::scoring::wasm::{CallError, Limits, WasmRuntime, WasmScorer};
use ooni_core::{derive_row, Outcome};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// Scores one body (envelope or bare measurement) as a JSON line. No receive time is
/// known, so the date sanity check does not run, as in OONI's `score_measurement`.
pub fn score_one(set: &PluginSet, source: &str, body: &[u8]) -> Value {
    // The scoring path trusts the JSON it reads (uploads are checked on receipt);
    // files given here have not been.
    if let Err(e) = ooni_scorer_sdk::jsonscan::validate(body) {
        return json!({
            "source": source,
            "dropped": {"kind": "failed", "reason": format!("invalid JSON: {e}")},
        });
    }
    match derive_row(body, "", set) {
        Outcome::Row(r) => {
            let scores: Value = serde_json::from_str(&r.scores).unwrap_or(Value::Null);
            json!({
                "source": source,
                "test_name": r.test_name,
                "scores": scores,
                "anomaly": r.anomaly,
                "confirmed": r.confirmed,
                "msm_failure": r.msm_failure,
                "scorer": {"name": r.scorer_name, "version": r.scorer_version},
            })
        }
        Outcome::Dropped(d) => json!({
            "source": source,
            "dropped": {"kind": d.kind.as_str(), "reason": d.reason},
        }),
    }
}

/// `ooni-engine score FILE… | -`: one JSON line per measurement on `out`, scored with
/// the configured plugins and fingerprints.
pub fn score(files: &[String], cfg: &Config, out: &mut dyn Write) -> anyhow::Result<()> {
    let fingerprints = crate::serve::open_fingerprints(cfg)?;
    let registry = crate::serve::open_registry(cfg, fingerprints)?;
    for r in registry.refused() {
        eprintln!("plugin refused: {}: {}", r.source, r.error);
    }
    let set = registry.snapshot();
    for f in files {
        if f == "-" {
            let stdin = std::io::stdin();
            for (i, line) in stdin.lock().lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                writeln!(
                    out,
                    "{}",
                    score_one(&set, &format!("stdin:{}", i + 1), line.as_bytes())
                )?;
            }
        } else {
            let body = std::fs::read(f).map_err(|e| anyhow::anyhow!("{f}: {e}"))?;
            writeln!(out, "{}", score_one(&set, f, &body))?;
        }
    }
    Ok(())
}

/// What `plugins check` found.
pub struct CheckReport {
    pub lines: Vec<String>,
    pub ok: bool,
}

fn sample_measurement(test_name: &str) -> String {
    json!({
        "report_id": "20260101T000000Z_sample_IT_30722_n1_abcdefghijklmnop",
        "test_name": test_name,
        "probe_cc": "IT",
        "probe_asn": "AS30722",
        "input": null,
        "test_start_time": "2026-01-01 00:00:00",
        "measurement_start_time": "2026-01-01 00:00:01",
        "software_name": "ooni-engine-check",
        "software_version": env!("CARGO_PKG_VERSION"),
        "test_keys": {},
    })
    .to_string()
}

/// `ooni-engine plugins check PATH [--sample FILE]`.
pub fn check_plugin(path: &Path, sample: Option<&Path>, limits: Limits) -> CheckReport {
    let mut lines = Vec::new();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return CheckReport {
                lines: vec![format!("error: cannot read {}: {e}", path.display())],
                ok: false,
            }
        }
    };
    let source = path.display().to_string();
    let fps = Fingerprints::new(FingerprintSet::empty());
    let rt = match WasmRuntime::new() {
        Ok(rt) => rt,
        Err(e) => {
            return CheckReport {
                lines: vec![format!("error: {e}")],
                ok: false,
            }
        }
    };
    let plugin = match load_plugin(&rt, limits, &fps, &source, &bytes) {
        Ok(p) => p,
        Err(e) => {
            return CheckReport {
                lines: vec![format!("error: {source}: {e}")],
                ok: false,
            }
        }
    };
    lines.push(format!(
        "ok: {} plugin {} {} (ABI 1)",
        plugin.kind, plugin.info.name, plugin.info.version
    ));
    lines.push(format!(
        "ok: scores test names: {}",
        plugin.test_names.join(", ")
    ));
    let sample_json = match sample {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(s) => s,
            Err(e) => {
                lines.push(format!("error: cannot read sample {}: {e}", p.display()));
                return CheckReport { lines, ok: false };
            }
        },
        None => sample_measurement(&plugin.test_names[0]),
    };
    let mut ok = true;
    let sample_test = serde_json::from_str::<Value>(&sample_json)
        .ok()
        .and_then(|v| {
            let m = v.get("content").cloned().unwrap_or(v);
            m.get("test_name")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    if let Some(t) = sample_test.filter(|t| !plugin.test_names.contains(t)) {
        lines.push(format!(
            "warning: the sample is a {t} measurement, which this plugin does not score ({})",
            plugin.test_names.join(", ")
        ));
    }
    if plugin.kind == "wasm" {
        // Load again to reach the module directly and tell faults from refusals.
        match WasmScorer::load(&rt, &bytes, limits, fps) {
            Ok(w) => {
                let body: Value = serde_json::from_str(&sample_json).unwrap_or(Value::Null);
                let content = body.get("content").cloned().unwrap_or(body);
                match w.call_checked(content.to_string()) {
                    Ok(s) => lines.push(format!(
                        "ok: trial run scored the sample: {}",
                        Value::Object(s)
                    )),
                    Err(CallError::Declined(m)) => lines.push(format!(
                        "warning: trial run: the scorer declined the sample: {m}"
                    )),
                    Err(CallError::Fault(m)) => {
                        ok = false;
                        lines.push(format!("error: trial run: {m}"));
                    }
                }
            }
            Err(e) => {
                ok = false;
                lines.push(format!("error: {e}"));
            }
        }
    } else {
        let set = PluginSet::single(plugin);
        let line = score_one(&set, "sample", sample_json.as_bytes());
        match line.get("scores") {
            Some(s)
                if line["scores"]["msg"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("scorer error:")) =>
            {
                lines.push(format!("warning: trial run: {}", s["msg"]));
            }
            Some(s) => lines.push(format!("ok: trial run scored the sample: {s}")),
            None => lines.push(format!(
                "warning: trial run gave no row: {}",
                line["dropped"]
            )),
        }
    }
    CheckReport { lines, ok }
}

/// `ooni-engine fingerprints import FILE… --out DIR`: OONI's JSON or CSV fingerprint
/// files to TOML, one output file per input. Returns the files written.
pub fn import_fingerprints(
    inputs: &[PathBuf],
    out_dir: &Path,
) -> anyhow::Result<Vec<(PathBuf, usize)>> {
    use ooni_core::fingerprints::import::{from_csv, from_json, to_toml};
    std::fs::create_dir_all(out_dir)?;
    let mut written = Vec::new();
    for input in inputs {
        let text = std::fs::read_to_string(input)
            .map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
        let name = input
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("fingerprints");
        let records = if input.extension().is_some_and(|e| e == "json") {
            from_json(&text)
        } else {
            from_csv(&text, name)
        }
        .map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
        let stem = input
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("fingerprints");
        let out = out_dir.join(format!("{stem}.toml"));
        let header = format!("Imported by `ooni-engine fingerprints import` from {name}.\nSchema: fingerprints/README.md");
        let toml =
            to_toml(&records, &header).map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
        // Refuse to write what we could not read back.
        ooni_core::fingerprints::parse_file(&out.display().to_string(), &toml)
            .map_err(|e| anyhow::anyhow!("import of {} does not validate: {e}", input.display()))?;
        std::fs::write(&out, toml)?;
        written.push((out, records.len()));
    }
    Ok(written)
}
