//! Hostile WebAssembly scorers, loaded in process: each misbehaviour fails only its
//! own call, with a clear reason, and the runtime goes on serving good calls.

use ooni_engine::fingerprints::{FingerprintSet, Fingerprints};
use ooni_engine::scoring::wasm::{CallError, Limits, WasmRuntime, WasmScorer};
use std::path::Path;
use std::time::{Duration, Instant};

fn constant_wat() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/plugins/constant.wat"),
    )
    .unwrap()
}

/// The reference module with its `ooni_score` body (and optionally its ABI version)
/// replaced.
fn variant(score_body: &str, abi: i32) -> String {
    let wat = constant_wat();
    let start = wat.find("  (func (export \"ooni_score\")").unwrap();
    let mut out = wat[..start].to_owned();
    out.push_str(&format!("  (func (export \"ooni_score\") (param $ptr i32) (param $len i32) (result i64)\n    {score_body})\n)\n"));
    out.replace(
        "(func (export \"ooni_abi_version\") (result i32)\n    (i32.const 1))",
        &format!("(func (export \"ooni_abi_version\") (result i32)\n    (i32.const {abi}))"),
    )
}

fn limits() -> Limits {
    Limits {
        timeout: Duration::from_millis(200),
        memory_bytes: 32 * 1024 * 1024,
    }
}

fn load(rt: &WasmRuntime, wat: &str) -> Result<WasmScorer, String> {
    WasmScorer::load(
        rt,
        wat.as_bytes(),
        limits(),
        Fingerprints::new(FingerprintSet::empty()),
    )
    .map_err(|e| e.to_string())
}

const MSM: &str = r#"{"test_name":"constant_test","test_keys":{}}"#;

#[test]
fn the_reference_wat_scorer_scores() {
    let rt = WasmRuntime::new().unwrap();
    let s = load(&rt, &constant_wat()).unwrap();
    let scores = s.call_checked(MSM).unwrap();
    assert_eq!(scores["scored_by"], "wat");
    // Instances are reused: many calls, each cheap.
    let t = Instant::now();
    for _ in 0..1000 {
        s.call_checked(MSM).unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn each_misbehaviour_fails_only_its_call() {
    let rt = WasmRuntime::new().unwrap();
    let good = load(&rt, &constant_wat()).unwrap();
    let cases: [(&str, &str, &str); 6] = [
        (
            "loops forever",
            "(loop $l (br $l)) (i64.const 0)",
            "timed out",
        ),
        (
            "allocates without bound",
            "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable",
            "trapped",
        ),
        ("traps", "unreachable", "trapped"),
        (
            "answers garbage",
            "(i64.or (i64.shl (i64.const 20) (i64.const 32)) (i64.const 10))",
            "not JSON",
        ),
        (
            "answers too much",
            "(i64.or (i64.shl (i64.const 0) (i64.const 32)) (i64.const 8388608))",
            "exceeds",
        ),
        (
            "answers outside its memory",
            "(i64.or (i64.shl (i64.const 4000000000) (i64.const 32)) (i64.const 100))",
            "outside",
        ),
    ];
    for (what, body, reason) in cases {
        let bad = load(&rt, &variant(body, 1)).unwrap_or_else(|e| panic!("{what}: {e}"));
        let t = Instant::now();
        for _ in 0..3 {
            match bad.call_checked(MSM) {
                Err(CallError::Fault(m)) => assert!(m.contains(reason), "{what}: {m}"),
                other => panic!("{what}: {other:?}"),
            }
        }
        // The limit is enforced: three calls in well under three seconds.
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{what}: {:?}",
            t.elapsed()
        );
        // Good calls are unaffected, before and after.
        assert_eq!(
            good.call_checked(MSM).unwrap()["scored_by"],
            "wat",
            "{what}"
        );
    }
}

#[test]
fn a_declining_scorer_is_not_a_fault() {
    let rt = WasmRuntime::new().unwrap();
    let wat = variant("(i64.or (i64.shl (i64.const 512) (i64.const 32)) (i64.const 18))", 1)
        .replace("(memory (export \"memory\") 1)", "(memory (export \"memory\") 1)\n  (data (i32.const 512) \"{\\\"error\\\":\\\"no way\\\"}\")");
    let s = load(&rt, &wat).unwrap();
    assert_eq!(
        s.call_checked(MSM),
        Err(CallError::Declined("no way".into()))
    );
}

#[test]
fn modules_that_do_not_fit_the_abi_are_refused_with_a_reason() {
    let rt = WasmRuntime::new().unwrap();
    let e = load(&rt, &variant("unreachable", 2)).err().unwrap();
    assert!(e.contains("ABI version 2 is not supported"), "{e}");
    let e = load(&rt, "(module)").err().unwrap();
    assert!(e.contains("missing or mistyped export"), "{e}");
    let e = load(&rt, "(module (import \"wasi_snapshot_preview1\" \"fd_write\" (func (param i32 i32 i32 i32) (result i32))))").err().unwrap();
    assert!(e.contains("wasi_snapshot_preview1.fd_write"), "{e}");
    let e = load(&rt, "not wasm at all").err().unwrap();
    assert!(e.contains("not a valid WebAssembly module"), "{e}");
    let no_names = constant_wat().replace(
        "\\\"test_names\\\":[\\\"constant_test\\\"]",
        "\\\"test_names\\\":[               ]",
    );
    let e = load(&rt, &no_names).err().unwrap();
    assert!(e.contains("test_names"), "{e}");
    for (meta, want) in [
        (
            r#"{"abi":1,"name":"k","version":"1","test_names":["c"],"unread":"drop"}"#,
            "`unread` needs `reads`",
        ),
        (
            r#"{"abi":1,"name":"k","version":"1","test_names":["c"],"reads":[],"unread":5}"#,
            "`unread` must be",
        ),
        (
            r#"{"abi":1,"name":"k","version":"1","test_names":["c"],"headers":["h"]}"#,
            "`bodies` and `headers` need `reads`",
        ),
        (
            r#"{"name":"k","version":"1","test_names":["c"],"reads":["h"],"headers":["h"]}"#,
            "reads it whole",
        ),
        (
            r#"{"name":"k","version":"1","test_names":["c"],"compared":["s"]}"#,
            "`compared` needs `reads`",
        ),
        (
            r#"{"name":"k","version":"1","test_names":["c"],"reads":["t"],"compared":["t"]}"#,
            "either compared or read",
        ),
    ] {
        let e = load(&rt, &with_meta(meta)).err().unwrap();
        assert!(e.contains(want), "{meta}: {e}");
    }
    let dropping = r#"{"name":"k","version":"1","test_names":["c"],"reads":[],"unread":"drop"}"#;
    assert!(load(&rt, &with_meta(dropping)).is_ok());
    let comparing =
        r#"{"name":"k","version":"1","test_names":["c"],"reads":["r"],"compared":["s"]}"#;
    assert!(load(&rt, &with_meta(comparing)).is_ok());
}

/// The reference module with another `ooni_meta` answer, padded with spaces to the
/// 76 bytes its code returns.
fn with_meta(json: &str) -> String {
    const LEN: usize = 76;
    let original =
        r#"{"abi":1,"name":"constant","version":"1.0.0","test_names":["constant_test"]}"#;
    assert_eq!(original.len(), LEN);
    let json = json.trim_end_matches('}');
    assert!(json.len() < LEN, "{json}");
    let padded = format!("{json}{}}}", " ".repeat(LEN - 1 - json.len()));
    let escape = |t: &str| t.replace('"', "\\\"");
    let wat = constant_wat();
    assert!(wat.contains(&escape(original)));
    wat.replace(&escape(original), &escape(&padded))
}
