//! Scoring benchmarks, each beside a baseline measured in the same run.
//!
//! Run pinned to one core: `taskset -c 0 ooni-scoring-bench [CORPUS_DIR]`.
//!
//! For the corpus's web_connectivity measurements:
//! - parse-only: `serde_json` parse of the same bytes (the baseline);
//! - native: the web_connectivity scorer compiled natively (parse + score);
//! - wasm call: the same scorer as the bundled WebAssembly plugin, sent the whole
//!   measurement (copy in, parse and score inside the module, answer parsed by the
//!   host), as every call was before scorers declared their reads;
//! - full path: the engine's whole scoring path, `derive_row` (row fields, the
//!   measurement cut down to the plugin's reads with its bodies matched on the host,
//!   plugin call, date check, flags, serialised scores);
//! - host overhead: a call into a module that does no work (`tests/plugins/constant.wat`).
//!
//! Then the whole corpus through the full path against parse-only.
//!
//! Times are the CPU time of the benchmark thread (best of five rounds), so other
//! work on the machine disturbs them less. `OONI_BENCH_PROFILE=1` (or a test name)
//! instead loops over the full path alone and prints each test's share of a pass, for
//! `perf record` (with OONI's fingerprint set when `OONI_BENCH_SET=strict|compat`);
//! `OONI_WASM_PERFMAP=1` names the compiled scorer functions for perf;
//! `OONI_BENCH_STAGES=1` with `OONI_BENCH_PROFILE=web_connectivity` times its stages;
//! `OONI_BENCH_PASSES=N` with `OONI_BENCH_PROFILE` makes exactly N passes, for
//! counting instructions under callgrind where timings are too noisy;
//! `OONI_BENCH_FINGERPRINTS=1` runs the fingerprint table alone.

use ooni_core::{derive_row, Outcome};
use ooni_engine::fingerprints::{FingerprintSet, Fingerprints};
use ooni_engine::scoring::registry::{Registry, RegistryOptions};
use ooni_engine::scoring::wasm::{Limits, WasmRuntime, WasmScorer};
use ooni_scorer_sdk::{NoFingerprints, Scorer};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// CPU time this thread has used: unlike wall time, it does not count the time the
/// thread waited for a core, so other work on the machine disturbs the figures less.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` over all inputs repeatedly for about `budget` of CPU time, in rounds of
/// a fifth of it; returns µs per input of the fastest round.
fn time_per_item<T>(items: &[T], budget: Duration, mut f: impl FnMut(&T)) -> f64 {
    for it in items {
        f(it); // warm-up
    }
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = thread_cpu();
        let mut n = 0u64;
        while thread_cpu() - start < budget / 5 {
            for it in items {
                f(it);
            }
            n += items.len() as u64;
        }
        best = best.min((thread_cpu() - start).as_secs_f64() * 1e6 / n as f64);
    }
    best
}

fn load(dir: &Path, only: Option<&str>) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(dir.join("measurements"))? {
        let d = d?.path();
        let name = d
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned();
        if only.is_some_and(|o| o != name) {
            continue;
        }
        for f in std::fs::read_dir(&d)? {
            let f = f?.path();
            out.push((
                format!(
                    "{name}/{}",
                    f.file_name().and_then(|n| n.to_str()).unwrap_or("")
                ),
                std::fs::read(&f)?,
            ));
        }
    }
    out.sort();
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let corpus = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/corpus"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let budget = Duration::from_secs(3);
    let wc = load(&corpus, Some("web_connectivity"))?;
    let all = load(&corpus, None)?;
    let wc_bytes: usize = wc.iter().map(|(_, b)| b.len()).sum();
    println!(
        "web_connectivity: {} measurements, {:.1} KB on average",
        wc.len(),
        wc_bytes as f64 / wc.len() as f64 / 1e3
    );

    // `OONI_BENCH_SET=strict|compat`: profile mode scores with OONI's set imported.
    let profile_set = match std::env::var("OONI_BENCH_SET").as_deref() {
        Ok("strict") => Some(ooni_core::fingerprints::Mode::Strict),
        Ok("compat") => Some(ooni_core::fingerprints::Mode::Compat),
        _ => None,
    };
    let fingerprints = match profile_set {
        Some(mode) => {
            let dir = synthesise_set(&corpus, 1)?;
            let set = FingerprintSet::load_dir(&dir, mode)?;
            let _ = std::fs::remove_dir_all(&dir);
            set
        }
        None => FingerprintSet::empty(),
    };
    let fingerprints = Fingerprints::new(fingerprints);
    let registry = Registry::new(
        RegistryOptions {
            dir: None,
            limits: Limits::default(),
            bundled: true,
            cache_dir: None,
        },
        fingerprints.clone(),
    )?;
    let set = registry.snapshot();
    let rt = WasmRuntime::new()?;
    let wasm_bytes = ooni_engine::scoring::registry::bundled_modules()
        .iter()
        .find(|(name, _)| *name == "scorer_web_connectivity.wasm")
        .map(|(_, bytes)| *bytes)
        .ok_or_else(|| anyhow::anyhow!("the engine bundles no web_connectivity module"))?;
    let wasm = WasmScorer::load(
        &rt,
        wasm_bytes,
        Limits::default(),
        Fingerprints::new(FingerprintSet::empty()),
    )?;
    let constant = WasmScorer::load(
        &rt,
        &std::fs::read(root.join("tests/plugins/constant.wat"))?,
        Limits::default(),
        Fingerprints::new(FingerprintSet::empty()),
    )?;
    let texts: Vec<String> = wc
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    let uid = "20260101000000.000000_IT_webconnectivity_0000000000000000";

    // `OONI_BENCH_FINGERPRINTS=1`: the fingerprint table alone.
    if std::env::var_os("OONI_BENCH_FINGERPRINTS").is_some() {
        return fingerprint_bench(&corpus, &wc, &all, budget);
    }
    // `OONI_BENCH_PROFILE=1` loops over the full path only, for a profiler.
    // `OONI_BENCH_PROFILE=<test name>` the same for one test.
    if let Some(only) = std::env::var_os("OONI_BENCH_PROFILE") {
        let only = only.to_string_lossy().into_owned();
        let picked: Vec<(String, Vec<u8>)> = all
            .iter()
            .filter(|(n, _)| only == "1" || n.starts_with(&format!("{only}/")))
            .cloned()
            .collect();
        // `OONI_BENCH_PASSES=N`: exactly N passes and nothing else, for counting
        // instructions (`valgrind --tool=callgrind`; the difference between N and 0
        // passes is the scoring's), which the machine's load does not disturb.
        if let Some(passes) = std::env::var("OONI_BENCH_PASSES")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
        {
            for _ in 0..passes {
                for (_, b) in &picked {
                    black_box(matches!(derive_row(b, uid, set.as_ref()), Outcome::Row(_)));
                }
            }
            println!("{only}: {passes} passes of {} measurements", picked.len());
            return Ok(());
        }
        let secs = Duration::from_secs(5);
        let us = time_per_item(&picked, secs, |(_, b)| {
            black_box(matches!(derive_row(b, uid, set.as_ref()), Outcome::Row(_)));
        });
        println!("{only}: full path {us:.1} µs / msmt");
        // `OONI_BENCH_STAGES=1`: where a web_connectivity measurement's time goes.
        if only == "web_connectivity" && std::env::var_os("OONI_BENCH_STAGES").is_some() {
            wc_stages(
                &picked,
                &wc_scorer(&rt, &fingerprints)?,
                &fingerprints.current(),
            );
        }
        let mut by_test: std::collections::BTreeMap<&str, Vec<(String, Vec<u8>)>> =
            Default::default();
        for (name, body) in &picked {
            let test = name.split('/').next().unwrap_or("");
            by_test
                .entry(test)
                .or_default()
                .push((name.clone(), body.clone()));
        }
        let mut shares: Vec<(f64, &str, usize)> = by_test
            .iter()
            .map(|(t, items)| {
                let us = time_per_item(items, Duration::from_millis(500), |(_, b)| {
                    black_box(matches!(derive_row(b, uid, set.as_ref()), Outcome::Row(_)));
                });
                (us * items.len() as f64, *t, items.len())
            })
            .collect();
        shares.sort_by(|a, b| b.0.total_cmp(&a.0));
        let total: f64 = shares.iter().map(|s| s.0).sum();
        for (us, t, n) in shares.iter().take(12) {
            println!(
                "  {t:32} {n:3} msmts  {:7.1} µs / msmt  {:4.1}% of a pass",
                us / *n as f64,
                us / total * 100.0
            );
        }
        return Ok(());
    }
    let parse = time_per_item(&wc, budget, |(_, b)| {
        black_box(serde_json::from_slice::<serde_json::Value>(b).ok());
    });
    let native = time_per_item(&texts, budget, |t| {
        let v: serde_json::Value = serde_json::from_str(t).unwrap_or_default();
        black_box(scorer_web_connectivity::WebConnectivity::score(&v, &NoFingerprints).ok());
    });
    let wasm_call = time_per_item(&texts, budget, |t| {
        black_box(wasm.call(t).ok());
    });
    let full = time_per_item(&wc, budget, |(_, b)| {
        black_box(matches!(derive_row(b, uid, set.as_ref()), Outcome::Row(_)));
    });
    let overhead = time_per_item(&texts, budget, |t| {
        black_box(constant.call(t).ok());
    });
    let small = "{\"test_name\":\"constant_test\"}".to_owned();
    let overhead_small = time_per_item(std::slice::from_ref(&small), budget, |t| {
        black_box(constant.call(t).ok());
    });

    println!("\n| web_connectivity, one core | µs / msmt | msmt/s | vs parse-only |");
    println!("|---|---:|---:|---:|");
    for (what, us) in [
        ("serde_json parse only (baseline)", parse),
        ("native scorer (parse + score)", native),
        (
            "wasm scorer call (copy in, parse + score in wasm, answer out)",
            wasm_call,
        ),
        (
            "engine full path (derive_row with the bundled plugin)",
            full,
        ),
    ] {
        println!(
            "| {what} | {us:.1} | {:.0} | {:.2}x |",
            1e6 / us,
            us / parse
        );
    }
    println!(
        "\nwasm / native: {:.2}x; full path / parse-only: {:.2}x",
        wasm_call / native,
        full / parse
    );
    println!(
        "host overhead per call (no-op module): {overhead:.2} µs with a {:.1} KB measurement copied in, {overhead_small:.2} µs with a tiny one",
        wc_bytes as f64 / wc.len() as f64 / 1e3
    );

    let parse_all = time_per_item(&all, budget, |(_, b)| {
        black_box(serde_json::from_slice::<serde_json::Value>(b).ok());
    });
    let full_all = time_per_item(&all, budget, |(_, b)| {
        black_box(matches!(derive_row(b, uid, set.as_ref()), Outcome::Row(_)));
    });
    println!(
        "\n| whole corpus ({} measurements), one core | µs / msmt | msmt/s | vs parse-only |",
        all.len()
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| serde_json parse only (baseline) | {parse_all:.1} | {:.0} | 1.00x |",
        1e6 / parse_all
    );
    println!(
        "| engine full path | {full_all:.1} | {:.0} | {:.2}x |",
        1e6 / full_all,
        full_all / parse_all
    );
    println!("| reference Python fastpath (spec/reference-perf.md, same machine kind) | 835.0 | 1198 | |");
    println!(
        "\nfull path vs reference: {:.1}x on the whole corpus",
        (1e6 / full_all) / 1197.6
    );
    fingerprint_bench(&corpus, &wc, &all, budget)?;
    Ok(())
}

fn wc_scorer(
    rt: &WasmRuntime,
    fingerprints: &std::sync::Arc<Fingerprints>,
) -> anyhow::Result<WasmScorer> {
    let bytes = ooni_engine::scoring::registry::bundled_modules()
        .iter()
        .find(|(name, _)| *name == "scorer_web_connectivity.wasm")
        .map(|(_, bytes)| *bytes)
        .ok_or_else(|| anyhow::anyhow!("the engine bundles no web_connectivity module"))?;
    Ok(WasmScorer::load(
        rt,
        bytes,
        Limits::default(),
        fingerprints.clone(),
    )?)
}

/// Where a web_connectivity measurement's time goes, stage by stage.
fn wc_stages(items: &[(String, Vec<u8>)], wasm: &WasmScorer, set: &FingerprintSet) {
    use ooni_scorer_sdk::projection::Reads;
    let info = scorer_web_connectivity::WebConnectivity::INFO;
    let Ok(Some(reads)) = Reads::for_info(&info) else {
        return;
    };
    let t = Duration::from_secs(2);
    let hook = |kind, raw: &[u8]| ooni_scorer_sdk::matching::matched_value(kind, raw, set);
    let cuts: Vec<Vec<u8>> = items
        .iter()
        .map(|(_, b)| reads.project_with(b, Some(&hook)).unwrap_or_default())
        .collect();
    let utf8 = time_per_item(items, t, |(_, b)| {
        black_box(std::str::from_utf8(b).is_ok());
    });
    let upload = time_per_item(items, t, |(_, b)| {
        black_box(ooni_core::measurement::parse_upload(b).is_ok());
    });
    let cut_plain = time_per_item(items, t, |(_, b)| {
        black_box(reads.project_with(b, None).is_ok());
    });
    let cut = time_per_item(items, t, |(_, b)| {
        black_box(reads.project_with(b, Some(&hook)).is_ok());
    });
    let call = time_per_item(&cuts, t, |c| {
        black_box(wasm.call(c).is_ok());
    });
    let native = time_per_item(&cuts, t, |c| {
        let v: serde_json::Value = serde_json::from_slice(c).unwrap_or_default();
        black_box(
            scorer_web_connectivity::WebConnectivity::score(
                &v,
                &ooni_scorer_sdk::host::CutMatched::for_info(set, &info),
            )
            .ok(),
        );
    });
    let parse_cut = time_per_item(&cuts, t, |c| {
        black_box(serde_json::from_slice::<serde_json::Value>(c).ok());
    });
    println!("  native on the cut {native:.1} µs, of which parse {parse_cut:.1}");
    let sent: usize = cuts.iter().map(Vec::len).sum();
    println!("  stages: from_utf8 {utf8:.1} µs; parse_upload {upload:.1}; cut without bodies matched {cut_plain:.1}; cut with them {cut:.1}; module call on the cut {call:.1} ({:.1} KB sent on average)", sent as f64 / cuts.len() as f64 / 1e3);
}

/// Writes OONI's set, imported, `copies` times over (names and patterns made unique)
/// into a fresh directory.
fn synthesise_set(corpus: &Path, copies: usize) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ooni-bench-fps-{}-{copies}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let src = corpus.join("fingerprints");
    ooni_engine::commands::import_fingerprints(
        &[
            src.join("fingerprints_dns.json"),
            src.join("fingerprints_http.json"),
        ],
        &dir,
    )?;
    for k in 1..copies {
        for f in ["fingerprints_dns", "fingerprints_http"] {
            let text = std::fs::read_to_string(dir.join(format!("{f}.toml")))?;
            // A different but equally long name and pattern for every copy.
            let copy = text
                .lines()
                .map(|l| {
                    if let Some(rest) = l.strip_prefix("pattern = \"\"\"") {
                        format!("pattern = \"\"\"{k:03}{rest}")
                    } else if let Some(rest) = l.strip_prefix("pattern = '''") {
                        format!("pattern = '''{k:03}{rest}")
                    } else if let Some(rest) = l.strip_prefix("name = \"") {
                        format!("name = \"copy{k}.{rest}")
                    } else if let Some(rest) = l.strip_prefix("pattern = \"") {
                        format!("pattern = \"{k:03}{rest}")
                    } else if let Some(rest) = l.strip_prefix("pattern = '") {
                        format!("pattern = '{k:03}{rest}")
                    } else {
                        l.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(dir.join(format!("{f}.copy{k}.toml")), copy)?;
        }
    }
    Ok(dir)
}

fn fingerprint_bench(
    corpus: &Path,
    wc: &[(String, Vec<u8>)],
    all: &[(String, Vec<u8>)],
    budget: Duration,
) -> anyhow::Result<()> {
    use ooni_core::fingerprints::Mode;
    let uid = "20260101000000.000000_IT_webconnectivity_0000000000000000";
    // The matcher alone, on the bodies and headers of the same measurements.
    let parts: Vec<(Vec<u8>, String)> = wc
        .iter()
        .flat_map(|(_, b)| {
            let v: serde_json::Value = serde_json::from_slice(b).unwrap_or_default();
            let reqs = v["test_keys"]["requests"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            reqs.into_iter()
                .map(|r| {
                    let body = r["response"]["body"]
                        .as_str()
                        .unwrap_or("")
                        .as_bytes()
                        .to_vec();
                    (body, r["response"]["headers"].to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let per_msmt = parts.len() as f64 / wc.len() as f64;
    let body_kb: f64 =
        parts.iter().map(|(b, _)| b.len()).sum::<usize>() as f64 / wc.len() as f64 / 1e3;
    println!(
        "\nbodies scanned: {body_kb:.1} KB per web_connectivity measurement ({per_msmt:.1} bodies)"
    );
    // Every body four times over, as one haystack: the cost per byte of a long scan.
    let long: Vec<u8> = (0..4)
        .flat_map(|_| parts.iter().flat_map(|(b, _)| b.iter().copied()))
        .collect();
    println!("\n| fingerprints, one core | set size | load + compile (ms) | matcher alone: bodies + headers µs / msmt | bodies ns / KB | one {:.1} MB haystack ns / KB | web_connectivity µs / msmt | msmt/s | whole corpus msmt/s |", long.len() as f64 / 1e6);
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut base = None;
    for (label, copies, mode) in [
        ("none", 0usize, Mode::Strict),
        ("OONI's set, strict", 1, Mode::Strict),
        ("OONI's set, compat", 1, Mode::Compat),
        ("3x OONI's set, strict", 3, Mode::Strict),
        ("10x OONI's set, strict", 10, Mode::Strict),
    ] {
        let (set, ms) = if copies == 0 {
            (FingerprintSet::empty(), 0.0)
        } else {
            let dir = synthesise_set(corpus, copies)?;
            let t = Instant::now();
            let set = FingerprintSet::load_dir(&dir, mode)?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let _ = std::fs::remove_dir_all(&dir);
            (set, ms)
        };
        let size = set.dns + set.http;
        let body_us = time_per_item(&parts, budget / 2, |(b, _)| {
            black_box(ooni_scorer_sdk::Host::match_http_body(&set, b));
        }) * per_msmt;
        let head_us = time_per_item(&parts, budget / 2, |(_, h)| {
            black_box(ooni_scorer_sdk::Host::match_http_headers(&set, h));
        }) * per_msmt;
        let long_ns_kb = time_per_item(std::slice::from_ref(&long), budget / 2, |b| {
            black_box(ooni_scorer_sdk::Host::match_http_body(&set, b));
        }) * 1e3
            / (long.len() as f64 / 1e3);

        let registry = Registry::new(
            RegistryOptions {
                dir: None,
                limits: Limits::default(),
                bundled: true,
                cache_dir: None,
            },
            Fingerprints::new(set),
        )?;
        let plugins = registry.snapshot();
        let wc_us = time_per_item(wc, budget, |(_, b)| {
            black_box(matches!(
                derive_row(b, uid, plugins.as_ref()),
                Outcome::Row(_)
            ));
        });
        let all_us = time_per_item(all, budget, |(_, b)| {
            black_box(matches!(
                derive_row(b, uid, plugins.as_ref()),
                Outcome::Row(_)
            ));
        });
        let extra = base.map_or(String::new(), |b: f64| format!(" (+{:.1} µs)", wc_us - b));
        base.get_or_insert(wc_us);
        println!(
            "| {label} | {size} | {ms:.1} | {body_us:.1} + {head_us:.1} | {:.0} | {long_ns_kb:.0} | {wc_us:.1}{extra} | {:.0} | {:.0} |",
            body_us * 1e3 / body_kb,
            1e6 / wc_us,
            1e6 / all_us
        );
    }
    println!("reference Python fastpath with OONI's set: ~240 web_connectivity msmt/s, 1,198 whole-corpus msmt/s per core");
    Ok(())
}
