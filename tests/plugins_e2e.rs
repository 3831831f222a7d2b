//! Plugins dropped into a running engine's directory, over real HTTP: loaded,
//! replaced, refused when broken (the old version keeps serving) and removed, with
//! every row recording the scorer that made it; hostile plugins fail only their own
//! measurements.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "test-admin-token";

struct Harness {
    engine: Engine,
    c: reqwest::Client,
    db: TestDb,
    plugins: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let db = TestDb::new(Db::Sqlite, dir.path()).await;
    let engine = Engine::start(
        &dir.path().join("data"),
        &db.url,
        &[
            ("OONI_PLUGINS_DIR", plugins.to_str().unwrap()),
            ("OONI_ADMIN_TOKEN", TOKEN),
            ("OONI_PLUGIN_TIMEOUT_MS", "200"),
            ("OONI_PLUGIN_MEMORY_MB", "32"),
        ],
    );
    Harness {
        engine,
        c: client(),
        db,
        plugins,
        _dir: dir,
    }
}

impl Harness {
    async fn admin(&self) -> Value {
        admin_get(&self.c, &self.engine, "/admin/plugins", TOKEN).await
    }

    /// Waits until the engine has rebuilt its plugin set after `since` and `check` holds.
    async fn wait_for(&self, since: u64, check: impl Fn(&Value) -> bool) -> Value {
        let check = |s: &Value| s["generation"].as_u64().unwrap() > since && check(s);
        admin_wait(
            &self.c,
            &self.engine,
            "/admin/plugins",
            TOKEN,
            "plugins never reached the expected state",
            Duration::from_secs(15),
            check,
        )
        .await
    }

    async fn generation(&self) -> u64 {
        self.admin().await["generation"].as_u64().unwrap()
    }

    /// Uploads one measurement of `test_name` and returns its stored row.
    async fn upload(&self, test_name: &str) -> ooni_core::FastpathRow {
        let msm = json!({
            "test_name": test_name, "probe_cc": "IT", "probe_asn": "AS30722",
            "software_name": "plugins-e2e", "software_version": "1", "test_version": "0.1",
            "test_start_time": "2026-11-27 00:00:00", "measurement_start_time": "2026-11-27 00:00:01",
            "input": null, "test_keys": {"result": "ok"}
        });
        let uid = submit_measurement(&self.c, &self.engine, &msm).await;
        let store = self.db.store().await;
        let mut rows =
            rows_by_uid(&store, std::slice::from_ref(&uid), Duration::from_secs(30)).await;
        rows.remove(&uid).expect("a row")
    }
}

fn rule_plugin(version: &str, general: f64) -> String {
    format!(
        "name = \"dnscheck-demo\"\nversion = \"{version}\"\ntest_names = [\"dnscheck\"]\n\n[[rule]]\nset = {{ blocking_general = {general:?}, msg = \"v{version}\" }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_in_replace_refuse_and_remove_a_plugin() {
    let h = start().await;
    // No plugin for dnscheck: OONI's default.
    let row = h.upload("dnscheck").await;
    assert_eq!(
        (row.scorer_name.as_str(), row.msm_failure),
        ("default", true)
    );

    let file = h.plugins.join("dnscheck.toml");
    let g = h.generation().await;
    std::fs::write(&file, rule_plugin("1.0.0", 0.25)).unwrap();
    h.wait_for(g, |s| {
        s["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "dnscheck-demo" && p["version"] == "1.0.0")
    })
    .await;
    let row = h.upload("dnscheck").await;
    assert_eq!(
        (row.scorer_name.as_str(), row.scorer_version.as_str()),
        ("dnscheck-demo", "1.0.0")
    );
    assert!(
        row.scores.contains(r#""blocking_general":0.25"#) && row.scores.contains("v1.0.0"),
        "{}",
        row.scores
    );
    assert!(!row.msm_failure);

    // A broken edit is refused, named with its file and problem; v1 keeps serving.
    let g = h.generation().await;
    std::fs::write(&file, "name = \"dnscheck-demo\"\nversion = \n").unwrap();
    let s = h
        .wait_for(g, |s| !s["refused"].as_array().unwrap().is_empty())
        .await;
    let refusal = &s["refused"][0];
    assert!(
        refusal["source"]
            .as_str()
            .unwrap()
            .ends_with("dnscheck.toml"),
        "{s}"
    );
    assert!(refusal["error"].as_str().unwrap().contains("line 2"), "{s}");
    assert_eq!(h.upload("dnscheck").await.scorer_version, "1.0.0");

    // A new version replaces it.
    let g = h.generation().await;
    std::fs::write(&file, rule_plugin("2.0.0", 1.0)).unwrap();
    h.wait_for(g, |s| {
        s["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["version"] == "2.0.0")
            && s["refused"].as_array().unwrap().is_empty()
    })
    .await;
    let row = h.upload("dnscheck").await;
    assert_eq!(row.scorer_version, "2.0.0");
    assert!(row.anomaly);

    // A WebAssembly module, written by hand in text form, dropped in beside it.
    let g = h.generation().await;
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/plugins/constant.wat"),
        h.plugins.join("constant.wat"),
    )
    .unwrap();
    h.wait_for(g, |s| {
        s["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "constant" && p["kind"] == "wasm")
    })
    .await;
    let row = h.upload("constant_test").await;
    assert_eq!(row.scorer_name, "constant");
    assert!(row.scores.contains(r#""scored_by":"wat""#));

    // Removed: back to the default.
    let g = h.generation().await;
    std::fs::remove_file(&file).unwrap();
    h.wait_for(g, |s| {
        !s["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "dnscheck-demo")
    })
    .await;
    assert_eq!(h.upload("dnscheck").await.scorer_name, "default");

    // Calls and time are counted per plugin.
    let s = h.admin().await;
    let constant = s["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "constant")
        .unwrap()
        .clone();
    assert_eq!(constant["calls"], json!(1));
    assert_eq!(constant["failures"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_fail_only_their_measurements() {
    let h = start().await;
    let wat = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/plugins/constant.wat"),
    )
    .unwrap();
    let start_at = wat.find("  (func (export \"ooni_score\")").unwrap();
    let g = h.generation().await;
    // Names as long as "constant", so the meta answer keeps its length.
    for (name, body) in [
        ("loopsfor", "(loop $l (br $l)) (i64.const 0)"),
        ("trapsnow", "unreachable"),
    ] {
        let mut m = wat[..start_at].replace("constant", name);
        m.push_str(&format!("  (func (export \"ooni_score\") (param $ptr i32) (param $len i32) (result i64)\n    {body})\n)\n"));
        std::fs::write(h.plugins.join(format!("{name}.wat")), m).unwrap();
    }
    let s = h
        .wait_for(g, |s| {
            s["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["kind"] == "wasm" && p["source"].as_str().unwrap().ends_with(".wat"))
                .count()
                == 2
        })
        .await;
    assert!(s["refused"].as_array().unwrap().is_empty(), "{s}");

    for (test, why) in [("loopsfor_test", "timed out"), ("trapsnow_test", "trapped")] {
        let row = h.upload(test).await;
        assert!(row.msm_failure, "{test}");
        assert!(row.scores.contains(why), "{test}: {}", row.scores);
    }
    // Everything else is still scored by its own plugin.
    let t = Instant::now();
    for _ in 0..5 {
        let row = h.upload("browser_web").await;
        assert_eq!(row.scorer_name, "browser_web");
        assert!(!row.msm_failure);
    }
    assert!(t.elapsed() < Duration::from_secs(10));
    let s = h.admin().await;
    let failures: u64 = s["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"].as_str().unwrap().ends_with(".wat"))
        .map(|p| p["failures"].as_u64().unwrap())
        .sum();
    assert_eq!(failures, 2);
    // Health is unaffected.
    assert_eq!(
        h.c.get(h.engine.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_the_token() {
    let h = start().await;
    assert_eq!(
        h.c.get(h.engine.url("/admin/plugins"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        h.c.get(h.engine.url("/admin/plugins"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r =
        h.c.post(h.engine.url("/admin/reload"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    // Bundled plugins cover all 21 test names OONI scores.
    let s = h.admin().await;
    assert_eq!(test_names_served(&s), 21, "{s}");
}

/// How many test names the plugins in an `/admin/plugins` answer score.
fn test_names_served(status: &Value) -> usize {
    status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["test_names"].as_array().unwrap().len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_plugins_dir_setting_means_bundled_only() {
    // The README's table: `OONI_PLUGINS_DIR` empty loads the bundled plugins only, even
    // where the configuration file names a directory (the environment overrides it).
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join("dnscheck-demo.toml"), rule_plugin("1", 0.5)).unwrap();
    let config = dir.path().join("engine.toml");
    std::fs::write(
        &config,
        format!("plugins_dir = {:?}\n", plugins.to_str().unwrap()),
    )
    .unwrap();
    let db = TestDb::new(Db::Sqlite, dir.path()).await;
    let names = |s: &Value| -> Vec<String> {
        s["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    for (plugins_env, demo_served) in [(None, true), (Some(""), false)] {
        let mut env = vec![
            ("OONI_CONFIG", config.to_str().unwrap()),
            ("OONI_ADMIN_TOKEN", TOKEN),
        ];
        env.extend(plugins_env.map(|v| ("OONI_PLUGINS_DIR", v)));
        let engine = Engine::start(&dir.path().join("data"), &db.url, &env);
        let s = admin_get(&client(), &engine, "/admin/plugins", TOKEN).await;
        assert_eq!(
            names(&s).contains(&"dnscheck-demo".to_owned()),
            demo_served,
            "OONI_PLUGINS_DIR={plugins_env:?}: {s}"
        );
        if !demo_served {
            assert_eq!(test_names_served(&s), 21, "{s}");
        }
        drop(engine);
    }
    db.drop_db().await;
}

/// The compiled-plugin cache's entries: file name → inode (a compile writes a new file
/// and renames it into place, so a reused entry keeps its inode).
fn cache_entries(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let ino = e.metadata().unwrap().ino();
            (e.file_name().to_string_lossy().into_owned(), ino)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reads_the_compiled_plugins_back() {
    // With the README's default, compiled scorers are kept in `{data_dir}/plugin-cache`.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cache = data.join("plugin-cache");
    let db = TestDb::new(Db::Sqlite, dir.path()).await;
    let env = [
        ("OONI_PLUGIN_CACHE_DIR", ""),
        ("OONI_PLUGINS_DIR", ""),
        ("OONI_ADMIN_TOKEN", TOKEN),
    ];
    let engine = Engine::start(&data, &db.url, &env);
    let first = admin_get(&client(), &engine, "/admin/plugins", TOKEN).await;
    drop(engine);
    let wasm = first["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "wasm")
        .count();
    assert!(wasm >= 10, "{first}");
    let entries = cache_entries(&cache);
    assert_eq!(
        entries.len(),
        wasm,
        "one entry per wasm plugin: {entries:?}"
    );
    // An entry no plugin uses any more (a plugin since replaced) is removed at start.
    std::fs::write(cache.join(format!("{}.cwasm", "0".repeat(64))), "stale").unwrap();

    let engine = Engine::start(&data, &db.url, &env);
    let again = admin_get(&client(), &engine, "/admin/plugins", TOKEN).await;
    assert_eq!(again["plugins"], first["plugins"]);
    assert_eq!(
        cache_entries(&cache),
        entries,
        "the restart compiled nothing and pruned the stale entry"
    );
    // The modules read back score: a telegram measurement gets the bundled scorer's row.
    let msm = corpus_measurements()
        .into_iter()
        .find(|(rel, _)| rel.starts_with("telegram/"))
        .unwrap()
        .1;
    let c = client();
    let uid = submit_measurement(&c, &engine, &msm).await;
    let store = db.store().await;
    let rows = rows_by_uid(&store, std::slice::from_ref(&uid), Duration::from_secs(30)).await;
    let telegram = first["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["test_names"]
                .as_array()
                .unwrap()
                .contains(&json!("telegram"))
        })
        .unwrap();
    assert_eq!(rows[&uid].scorer_name, telegram["name"].as_str().unwrap());
    drop(engine);
    db.drop_db().await;
}
