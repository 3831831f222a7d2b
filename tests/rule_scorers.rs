//! Each TOML rule scorer shipped in `plugins/`, branch by branch, on hand-written
//! measurements (OONI's rules: spec/fastpath.md §2).

use ooni_core::rules::RuleScorer;
use serde_json::{json, Value};
use std::path::Path;

fn scorer(name: &str) -> RuleScorer {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/{name}.toml"));
    RuleScorer::parse(&std::fs::read_to_string(&p).unwrap())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Scores `msm` and returns the scores with the five `blocking_*` keys at 0.0 removed,
/// which keeps the expectations short. The measurement is scored whole and as the
/// engine scores it (cut down to what the rules read): both must agree.
fn score(name: &str, msm: Value) -> Value {
    let rules = scorer(name);
    let s = rules.score_value(&msm).unwrap();
    let json = msm.to_string();
    let cut = ooni_core::Scorer::score(
        &rules,
        &ooni_core::measurement::Measurement::new(&json, Default::default()),
    )
    .unwrap();
    assert_eq!(
        cut, s,
        "{name}: the cut-down measurement scores differently"
    );
    let mut out = serde_json::Map::new();
    for (k, v) in s {
        if k.starts_with("blocking_") && k != "blocking_general" && v == json!(0.0) {
            continue;
        }
        out.insert(k, v);
    }
    Value::Object(out)
}

fn zeros_plus(extra: Value) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("blocking_general".into(), json!(0.0));
    for (k, v) in extra.as_object().unwrap() {
        m.insert(k.clone(), v.clone());
    }
    Value::Object(m)
}

#[test]
fn stunreachability() {
    assert_eq!(
        score(
            "stunreachability",
            json!({"test_keys": {"endpoint": "stun.x:3478"}})
        ),
        zeros_plus(json!({"extra": {"endpoint": "stun.x:3478"}}))
    );
    assert_eq!(
        score(
            "stunreachability",
            json!({"test_keys": {"endpoint": "e", "failure": "timeout"}})
        ),
        json!({"blocking_general": 1.0, "extra": {"endpoint": "e", "failure": "timeout"}})
    );
    assert_eq!(
        score("stunreachability", json!({"test_keys": null})),
        zeros_plus(json!({"extra": {"endpoint": null}}))
    );
}

#[test]
fn riseupvpn_ndt_and_dns_consistency() {
    assert_eq!(
        scorer("riseupvpn")
            .score_value(&json!({"test_keys": {"api_status": "blocked"}}))
            .unwrap(),
        serde_json::Map::new()
    );
    assert_eq!(
        scorer("ndt").score_value(&json!({})).unwrap(),
        serde_json::Map::new()
    );
    assert_eq!(
        score(
            "dns_consistency",
            json!({"test_keys": {"inconsistent": ["x"]}})
        ),
        zeros_plus(json!({}))
    );
}

#[test]
fn torsf() {
    let android_383 = json!({"software_name": "ooniprobe-android-unattended", "software_version": "3.8.3", "test_keys": {"failure": "x"}});
    assert_eq!(
        score("torsf", android_383),
        zeros_plus(json!({"accuracy": 0.0}))
    );
    assert_eq!(
        score("torsf", json!({"test_keys": {"failure": "eof"}})),
        json!({"blocking_general": 1.0})
    );
    assert_eq!(
        score(
            "torsf",
            json!({"test_runtime": 3.5, "test_keys": {"failure": null, "bootstrap_time": 2.5}})
        ),
        zeros_plus(json!({"extra": {"bootstrap_time": 2.5, "test_runtime": 3.5}}))
    );
}

#[test]
fn browser_web() {
    let extra = |n: &str, t: Value| json!({"browser_name": n, "load_time_ms": t});
    assert_eq!(
        score(
            "browser_web",
            json!({"test_keys": {"result": "ok", "browser_name": "chrome", "load_time_ms": 120}})
        ),
        zeros_plus(json!({"extra": extra("chrome", json!(120))}))
    );
    assert_eq!(
        score("browser_web", json!({"test_keys": {"result": "error"}})),
        json!({"blocking_general": 1.0, "extra": extra("", json!(0))})
    );
    assert_eq!(
        score("browser_web", json!({"test_keys": {"result": null}})),
        zeros_plus(json!({"accuracy": 0.0, "extra": extra("", json!(0))}))
    );
}

#[test]
fn openvpn() {
    assert_eq!(
        score(
            "openvpn",
            json!({"test_runtime": 1.0, "test_keys": {"success": false}})
        ),
        json!({"blocking_general": 1.0, "extra": {"test_runtime": 1.0}})
    );
    assert_eq!(
        score("openvpn", json!({"test_keys": {"success": true}})),
        zeros_plus(json!({"extra": {"test_runtime": null}}))
    );
    assert_eq!(
        score("openvpn", json!({"test_keys": {}})),
        zeros_plus(json!({"accuracy": 0.0, "extra": {"test_runtime": null}}))
    );
    // `is False` is identity: 0 is not false.
    assert_eq!(
        score("openvpn", json!({"test_keys": {"success": 0}})),
        zeros_plus(json!({"extra": {"test_runtime": null}}))
    );
}

#[test]
fn tcp_connect() {
    let m = |conn: Value| json!({"input": "1.2.3.4:443", "test_keys": {"connection": conn}});
    assert_eq!(
        score("tcp_connect", m(json!("success"))),
        zeros_plus(json!({}))
    );
    for c in [
        "generic_timeout_error",
        "connection_refused_error",
        "connect_error",
        "tcp_timed_out_error",
    ] {
        assert_eq!(
            score("tcp_connect", m(json!(c))),
            json!({"blocking_general": 0.8}),
            "{c}"
        );
    }
    assert_eq!(
        score("tcp_connect", m(json!("something_else"))),
        json!({"blocking_general": 1.0})
    );
    assert_eq!(
        score("tcp_connect", m(json!(null))),
        json!({"blocking_general": 1.0})
    );
    assert!(
        scorer("tcp_connect")
            .score_value(&json!({"input": "", "test_keys": {}}))
            .is_err(),
        "OONI asserts an input"
    );
}

#[test]
fn dash() {
    assert_eq!(
        score("dash", json!({"test_keys": {}})),
        zeros_plus(json!({"accuracy": 0.0}))
    );
    assert_eq!(
        score("dash", json!({"test_keys": null})),
        zeros_plus(json!({"accuracy": 0.0}))
    );
    assert_eq!(
        score(
            "dash",
            json!({"test_keys": {"failure": null, "simple": {}}})
        ),
        zeros_plus(json!({}))
    );
    assert_eq!(
        score("dash", json!({"test_keys": {"failure": "eof_error"}})),
        json!({"blocking_general": 0.1, "accuracy": 0.0})
    );
    assert_eq!(
        score(
            "dash",
            json!({"test_keys": {"failure": "ssl_error: bad cert"}})
        ),
        json!({"blocking_general": 0.1, "accuracy": 0.0})
    );
    assert_eq!(
        score("dash", json!({"test_keys": {"failure": "odd"}})),
        zeros_plus(json!({"msg": "Probe error", "accuracy": 0.0}))
    );
}

#[test]
fn psiphon() {
    let ok = json!({"resolver_ip": "1.1.1.1", "test_runtime": 9.0, "test_keys": {"failure": null, "bootstrap_time": 3.0}});
    assert_eq!(
        score("psiphon", ok),
        zeros_plus(json!({"accuracy": 1.0, "extra": {"test_runtime": 9.0, "bootstrap_time": 3.0}}))
    );
    let no_bt = json!({"resolver_ip": "1.1.1.1", "test_keys": {"failure": null}});
    assert_eq!(
        score("psiphon", no_bt),
        zeros_plus(json!({"accuracy": 0.0, "extra": {"test_runtime": null, "bootstrap_time": 0}}))
    );
    let null_bt =
        json!({"resolver_ip": "1.1.1.1", "test_keys": {"failure": null, "bootstrap_time": null}});
    assert_eq!(
        score("psiphon", null_bt)["accuracy"],
        json!(1.0),
        "a null bootstrap_time is not 0"
    );
    let failed =
        json!({"resolver_ip": "1.1.1.1", "test_keys": {"failure": "x", "bootstrap_time": 0}});
    assert_eq!(
        score("psiphon", failed),
        json!({"blocking_general": 1.0, "accuracy": 1.0, "extra": {"test_runtime": null, "bootstrap_time": 0}})
    );
    let no_resolver = json!({"test_keys": {"failure": null, "bootstrap_time": 3.0}});
    assert_eq!(score("psiphon", no_resolver)["accuracy"], json!(0.0));
}

#[test]
fn facebook_messenger() {
    let all_good = json!({
        "facebook_b_api_dns_consistent": true, "facebook_b_api_reachable": true,
        "facebook_b_graph_dns_consistent": true, "facebook_b_graph_reachable": true,
        "facebook_dns_blocking": true, "facebook_edge_dns_consistent": true, "facebook_edge_reachable": true,
        "facebook_star_dns_consistent": true, "facebook_star_reachable": true,
        "facebook_stun_dns_consistent": true, "facebook_tcp_blocking": false
    });
    assert_eq!(
        score("facebook_messenger", json!({"test_keys": all_good})),
        zeros_plus(json!({})),
        "the dns_blocking workaround"
    );
    let one = json!({"facebook_edge_reachable": false});
    assert_eq!(
        score("facebook_messenger", json!({"test_keys": one})),
        json!({"blocking_general": 0.5, "facebook_edge_reachable": false})
    );
    let two = json!({"facebook_tcp_blocking": true, "facebook_star_dns_consistent": false, "facebook_stun_dns_consistent": 0});
    let s = scorer("facebook_messenger")
        .score_value(&json!({"test_keys": two}))
        .unwrap();
    let keys: Vec<&String> = s.keys().collect();
    assert_eq!(
        keys[5..],
        ["facebook_star_dns_consistent", "facebook_tcp_blocking"],
        "penalised keys in list order"
    );
    assert_eq!(s["blocking_general"], json!(1.0));
    assert_eq!(
        score("facebook_messenger", json!({"test_keys": null})),
        zeros_plus(json!({}))
    );
}
