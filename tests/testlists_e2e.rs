//! Test lists end to end: the repository's hand-written Citizen Lab lists imported
//! with `ooni-engine testlists import`, then served as the prioritised
//! `/api/v1/test-list/urls`, as the check-in's URL list and through the domain
//! routes; a re-import replaces them; a broken file is refused naming its line.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

fn repo_lists() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testlists")
}

fn web(url: &str) -> Value {
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    json!({
        "test_name": "web_connectivity", "probe_cc": "IT", "probe_asn": "AS30722",
        "software_name": "testlists-e2e", "software_version": "1", "test_version": "0.4.3",
        "test_start_time": now, "measurement_start_time": now, "input": url,
        "test_keys": {"blocking": false, "accessible": true}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_lists_feed_the_url_lists_and_the_domain_routes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let db = TestDb::new(Db::Sqlite, tmp.path()).await;
    let import = |dir: &Path| {
        run_cli(
            &["testlists", "import", dir.to_str().unwrap()],
            &data,
            &db.url,
            &[],
        )
    };
    let out = import(&repo_lists());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("6 test-list entries"));

    let e = Engine::start(&data, &db.url, &[("OONI_UPLOAD_INTERVAL_SECS", "0")]);
    let c = client();
    // Measured twice from Italy lately: it goes to the end of Italy's list.
    let measured = "https://www.example.org/";
    let uids = vec![
        submit_measurement(&c, &e, &web(measured)).await,
        submit_measurement(&c, &e, &web(measured)).await,
    ];
    wait_all_known(&db.store().await, &uids, Duration::from_secs(30)).await;

    let get = |path: String| {
        let c = c.clone();
        let url = e.url(&path);
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = get("/api/v1/test-list/urls?country_code=IT".into()).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["metadata"],
        json!({"count": 5, "current_page": -1, "limit": -1, "next_url": "", "pages": 1})
    );
    let results = v["results"].as_array().unwrap();
    let urls: Vec<&str> = results.iter().map(|r| r["url"].as_str().unwrap()).collect();
    assert_eq!(urls.last(), Some(&measured), "{urls:?}");
    let both = results
        .iter()
        .find(|r| r["url"] == "https://example.com/")
        .unwrap();
    assert_eq!(
        both["country_code"], "IT",
        "a URL on both lists comes from the country's"
    );
    let global = results
        .iter()
        .find(|r| r["url"] == "https://news.example/")
        .unwrap();
    assert_eq!(
        global,
        &json!({"category_code": "NEWS", "url": "https://news.example/", "country_code": "XX"})
    );
    let (_, v) =
        get("/api/v1/test-list/urls?country_code=IT&category_codes=news,POLR&limit=2".into()).await;
    let cats: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["category_code"].as_str().unwrap())
        .collect();
    assert_eq!(cats.len(), 2);
    assert!(
        cats.iter().all(|c| ["NEWS", "POLR"].contains(c)),
        "{cats:?}"
    );
    let (_, v) = get("/api/v1/test-list/urls?country_code=FR".into()).await;
    assert_eq!(
        v["metadata"]["count"],
        json!(4),
        "other countries get the global list"
    );
    assert_eq!(
        get("/api/v1/test-list/urls?limit=x".into()).await,
        (200, json!({}))
    );

    // The check-in offers the same list, limited as OONI limits it.
    let r = c
        .post(e.url("/api/v1/check-in"))
        .json(
            &json!({"probe_cc": "IT", "probe_asn": "AS30722", "charging": false,
                      "web_connectivity": {"category_codes": ["HUMR", "POLR"]}}),
        )
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let urls = v["tests"]["web_connectivity"]["urls"].as_array().unwrap();
    let mut got: Vec<&str> = urls.iter().map(|u| u["url"].as_str().unwrap()).collect();
    got.sort();
    assert_eq!(got, ["https://example.com/", "https://www.example.it/"]);

    // Domains of the lists.
    let (_, v) = get("/api/_/domain_metadata?domain=example.org".into()).await;
    assert_eq!(
        v,
        json!({"canonical_domain": "www.example.org", "category_code": "NEWS"})
    );
    let (_, v) = get("/api/_/domains".into()).await;
    let d = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["domain_name"] == "www.example.org")
        .unwrap();
    assert_eq!(d["measurement_count"], json!(2));
    let (_, v) = get("/api/v1/measurements?category_code=NEWS&probe_cc=IT".into()).await;
    assert_eq!(v["metadata"]["count"], json!(2));

    // A re-import replaces the lists; a broken file is refused and changes nothing.
    let fewer = tmp.path().join("lists");
    std::fs::create_dir_all(&fewer).unwrap();
    std::fs::write(
        fewer.join("global.csv"),
        "url,category_code\nhttps://news.example/,NEWS\n",
    )
    .unwrap();
    let out = import(&fewer);
    assert!(out.status.success());
    let (_, v) = get("/api/v1/test-list/urls?country_code=IT".into()).await;
    assert_eq!(v["metadata"]["count"], json!(1));
    std::fs::write(
        fewer.join("it.csv"),
        "url,category_code\n\"https://x.it/,POLR\n",
    )
    .unwrap();
    let out = import(&fewer);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("it.csv:2") && err.contains("unterminated"),
        "{err}"
    );
    let (_, v) = get("/api/v1/test-list/urls?country_code=IT".into()).await;
    assert_eq!(v["metadata"]["count"], json!(1));
}
