//! OONI Explorer's calls, replayed: every request `../shared/spec/explorer.md` A.2 and
//! A.3 recorded from Explorer's pages (build time, server side and browser), with
//! Explorer's own query strings and T = today, against data loaded through the real
//! ingest path (the corpus as it is, plus a copy of it re-dated into Explorer's
//! default windows). Each answer is checked for what the
//! page reads; every answer carries the CORS header the browser needs. Runs on SQLite
//! and PostgreSQL.

mod common;

use chrono::{Datelike, Duration as Days, NaiveDate, Utc};
use common::*;
use ooni_core::FastpathRow;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

struct Site {
    e: Engine,
    c: reqwest::Client,
    today: NaiveDate,
    /// Rows of the re-dated copies, by uid.
    recent: HashMap<String, FastpathRow>,
    /// What was sent for each re-dated uid.
    sent: HashMap<String, Value>,
}

impl Site {
    /// GET as the browser does; every answer must allow any origin.
    async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let r = self.c.get(self.e.url(path_and_query)).send().await.unwrap();
        assert_eq!(
            r.headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap()),
            Some("*"),
            "{path_and_query}"
        );
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path_and_query}: not JSON ({e}): {text}"));
        (status, v)
    }

    async fn ok(&self, path_and_query: &str) -> Value {
        let (s, v) = self.get(path_and_query).await;
        assert_eq!(s, 200, "{path_and_query}: {v}");
        assert!(v.get("error").is_none(), "{path_and_query}: {v}");
        v
    }

    fn day(&self, offset: i64) -> String {
        (self.today + Days::days(offset)).to_string()
    }

    /// Explorer's default range: the last 30 days and today.
    fn window(&self) -> String {
        format!("since={}&until={}", self.day(-30), self.day(1))
    }

    /// Re-dated rows that pass `keep`.
    fn count(&self, keep: impl Fn(&FastpathRow) -> bool) -> i64 {
        self.recent.values().filter(|r| keep(r)).count() as i64
    }
}

fn sum(v: &Value, key: &str) -> i64 {
    v["result"]
        .as_array()
        .unwrap_or_else(|| panic!("no result: {v}"))
        .iter()
        .map(|r| r[key].as_i64().unwrap())
        .sum()
}

/// The keys each chart row must hold besides its axes.
fn assert_chart_rows(v: &Value, axes: &[&str]) {
    for r in v["result"].as_array().unwrap() {
        for k in axes.iter().chain(&[
            "anomaly_count",
            "confirmed_count",
            "failure_count",
            "ok_count",
            "measurement_count",
        ]) {
            assert!(r.get(*k).is_some(), "{k} missing in {r}");
        }
    }
}

async fn load(kind: Db, tmp: &std::path::Path) -> (Site, TestDb) {
    let db = TestDb::new(kind, tmp).await;
    let data = tmp.join("data");
    // Explorer's categories need test lists with the corpus's Italian inputs.
    let lists = tmp.join("lists");
    std::fs::create_dir(&lists).unwrap();
    std::fs::write(
        lists.join("global.csv"),
        "url,category_code,category_description,date_added,source,notes\n\
         https://www.example.com/,NEWS,News Media,2024-01-01,test,\n\
         http://www.nmrc.org/,HACK,Hacking Tools,2024-01-01,test,\n\
         https://www.facebook.com/,GRP,Social Networking,2024-01-01,test,\n",
    )
    .unwrap();
    std::fs::write(
        lists.join("it.csv"),
        "url,category_code\nhttps://example.com,POLR\n",
    )
    .unwrap();
    run_cli_ok(
        &["testlists", "import", lists.to_str().unwrap()],
        &data,
        &db.url,
    );
    let map = tmp.join("as_org_map.json");
    std::fs::write(
        &map,
        r#"{"30722": [["Vodafone Italia S.p.A.", "IT", "20240101", "VODAFONE-IT-ASN", "RIPE"]]}"#,
    )
    .unwrap();
    run_cli_ok(
        &["asnmeta", "import", map.to_str().unwrap()],
        &data,
        &db.url,
    );

    let e = Engine::start(&data, &db.url, &[("OONI_UPLOAD_INTERVAL_SECS", "0")]);
    let c = client();
    upload_corpus(&c, &e).await;
    let today = Utc::now().date_naive();
    let mut sent = HashMap::new();
    for (i, (_, msm)) in corpus_measurements().into_iter().enumerate() {
        if msm["report_id"].as_str().is_none() {
            continue;
        }
        let mut m = msm.clone();
        // Yesterday and the two days before, at varied hours.
        let when = (today - Days::days(1 + (i % 3) as i64))
            .and_hms_opt((i % 20) as u32, 30, 0)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S")
            .to_string();
        m["measurement_start_time"] = json!(when);
        m["test_start_time"] = json!(when);
        let (_, content, r) = post_measurement(&c, &e, &m).await;
        if r.status() != 200 {
            continue;
        }
        let v: Value = r.json().await.unwrap();
        if let Some(uid) = v["measurement_uid"].as_str() {
            sent.insert(uid.to_owned(), content);
        }
    }
    let uids: Vec<String> = sent.keys().cloned().collect();
    let recent = rows_by_uid(&db.store().await, &uids, Duration::from_secs(60)).await;
    assert!(recent.len() > 100, "{} re-dated rows", recent.len());
    (
        Site {
            e,
            c,
            today,
            recent,
            sent,
        },
        db,
    )
}

async fn build_time(s: &Site) {
    // `/`: the three headline numbers.
    let v = s.ok("/api/_/global_overview").await;
    for k in ["measurement_count", "network_count", "country_count"] {
        assert!(v[k].as_i64().unwrap() > 0, "{k}: {v}");
    }
    // `/countries`, `/circumvention`, `/news-media`.
    let v = s.ok("/api/_/countries").await;
    let it = v["countries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["alpha_2"] == "IT")
        .expect("IT listed");
    assert_eq!(it["name"], "Italy");
    assert!(it["count"].as_i64().unwrap() >= s.count(|r| r.probe_cc == "IT"));
    for theme in ["circumvention", "news_media"] {
        let v = s
            .ok(&format!("/api/v1/incidents/search?theme={theme}"))
            .await;
        assert!(v["incidents"].is_array());
    }
}

async fn home_and_search(s: &Site) {
    // Every page: the user provider. Any JSON answer works, 401 included.
    let (st, _) = s.get("/api/_/account_metadata").await;
    assert!(st == 200 || st == 401, "{st}");

    let v = s.ok("/api/_/global_overview_by_month").await;
    let this_month = format!("{}T00:00:00+00:00", s.today.with_day(1).unwrap());
    for k in [
        "countries_by_month",
        "networks_by_month",
        "measurements_by_month",
    ] {
        let months = v[k].as_array().unwrap_or_else(|| panic!("{k}: {v}"));
        let dates: Vec<&str> = months.iter().map(|m| m["date"].as_str().unwrap()).collect();
        let mut sorted = dates.clone();
        sorted.sort();
        assert_eq!(dates, sorted, "{k} in date order");
        assert_eq!(dates.last(), Some(&this_month.as_str()), "{k}");
        assert!(months.iter().all(|m| m["value"].is_i64()));
    }

    // `/search` with its defaults, then "Load more" through next_url as given.
    let q = format!(
        "/api/v1/measurements?{w}&failure=false&limit=50&order=desc",
        w = s.window()
    );
    let v = s.ok(&q).await;
    let first = v["results"].as_array().unwrap();
    assert_eq!(first.len(), 50);
    for r in first {
        for k in [
            "measurement_uid",
            "probe_cc",
            "probe_asn",
            "test_name",
            "measurement_start_time",
            "input",
            "anomaly",
            "confirmed",
            "failure",
            "scores",
        ] {
            assert!(r.get(k).is_some(), "{k} missing in {r}");
        }
        assert!(r["probe_asn"].as_str().unwrap().starts_with("AS"));
        assert!(r["scores"].is_object());
        assert_eq!(r["failure"], false);
    }
    let next = v["metadata"]["next_url"].as_str().expect("next_url");
    assert!(next.starts_with(&s.e.base), "absolute, reachable: {next}");
    let r = s.c.get(next).send().await.unwrap();
    let more: Value = r.json().await.unwrap();
    let seen: HashSet<&str> = first
        .iter()
        .map(|r| r["measurement_uid"].as_str().unwrap())
        .collect();
    let rest = more["results"].as_array().unwrap();
    assert!(rest
        .iter()
        .all(|r| !seen.contains(r["measurement_uid"].as_str().unwrap())));
    assert_eq!(
        (first.len() + rest.len()) as i64,
        s.count(|r| !r.msm_failure && r.probe_asn != 0)
    );

    // A URL without since/until fires once without them.
    s.ok("/api/v1/measurements?failure=false&limit=50&order=desc")
        .await;
    // Every filter Explorer passes through, `only=anomalies` as anomaly=true.
    let q = format!(
        "/api/v1/measurements?probe_cc=IT&domain=www.example.com&category_code=NEWS&probe_asn=AS30722\
         &test_name=web_connectivity&{w}&failure=false&limit=50&anomaly=true&order=desc",
        w = s.window()
    );
    let v = s.ok(&q).await;
    let want = s.count(|r| {
        r.probe_cc == "IT"
            && r.domain == "www.example.com"
            && r.probe_asn == 30722
            && r.anomaly
            && !r.msm_failure
            && r.test_name == "web_connectivity"
    });
    assert_eq!(v["results"].as_array().unwrap().len() as i64, want);
    // Unticked "hide failed", `show=N` as limit, other filters one by one.
    for q in [
        "test_name=telegram",
        "probe_asn=AS30722",
        "input=https%3A%2F%2Fwww.example.com%2F",
        "only=confirmed&confirmed=true",
        "ooni_run_link_id=1",
    ] {
        let v = s
            .ok(&format!(
                "/api/v1/measurements?{q}&{w}&limit=100&order=desc",
                w = s.window()
            ))
            .await;
        assert!(v["results"].is_array(), "{q}");
    }
}

async fn country_page(s: &Site) {
    let it = |r: &FastpathRow| r.probe_cc == "IT";
    let v = s.ok("/api/_/country_overview?probe_cc=IT").await;
    assert!(v["first_bucket_date"].is_string(), "{v}");
    assert!(v["measurement_count"].as_i64().unwrap() >= s.count(it));
    assert!(v["network_count"].as_i64().unwrap() >= 1);

    // The calendar: this year by day, no time_grain.
    let jan1 = NaiveDate::from_ymd_opt(s.today.year(), 1, 1).unwrap();
    let v = s
        .ok(&format!(
            "/api/v1/aggregation?probe_cc=IT&since={jan1}&until={}&axis_x=measurement_start_day",
            s.day(1)
        ))
        .await;
    assert_eq!(
        sum(&v, "measurement_count"),
        s.count(|r| it(r) && r.measurement_start_time.date() >= jan1)
    );
    assert!(v["result"][0]["measurement_start_day"].is_string(), "{v}");

    // Categories of the last month.
    let month_ago = (s.today + Days::days(1))
        .checked_sub_months(chrono::Months::new(1))
        .unwrap();
    let v = s
        .ok(&format!(
            "/api/v1/aggregation?probe_cc=IT&since={month_ago}&until={}&test_name=web_connectivity&axis_x=category_code",
            s.day(1)
        ))
        .await;
    let cats: HashSet<&str> = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["confirmed_count"].is_i64());
            r["category_code"].as_str().unwrap()
        })
        .collect();
    assert!(cats.contains("NEWS") && cats.contains("POLR"), "{v}");

    // The three charts: first with "undefined" dates (a clean error), then for real.
    let charts = [
        ("axis_y=domain", "web_connectivity", "domain"),
        (
            "axis_y=test_name",
            "signal%2Ctelegram%2Cwhatsapp%2Cfacebook_messenger",
            "test_name",
        ),
        ("axis_y=test_name", "psiphon%2Ctor%2Ctorsf", "test_name"),
    ];
    for (axis_y, tests, key) in charts {
        let (st, v) = s
            .get(&format!(
                "/api/v1/aggregation?{axis_y}&axis_x=measurement_start_day&probe_cc=IT&since=undefined&until=undefined&test_name={tests}&time_grain=day"
            ))
            .await;
        assert!(
            (400..500).contains(&st) || (st == 200 && v.get("error").is_some()),
            "{st} {v}"
        );
        let v = s
            .ok(&format!(
                "/api/v1/aggregation?{axis_y}&axis_x=measurement_start_day&probe_cc=IT&{w}&test_name={tests}&time_grain=day",
                w = s.window()
            ))
            .await;
        assert_chart_rows(&v, &[key, "measurement_start_day"]);
        let names: Vec<String> = tests.split("%2C").map(str::to_owned).collect();
        assert_eq!(
            sum(&v, "measurement_count"),
            s.count(|r| it(r) && names.contains(&r.test_name)),
            "{tests}"
        );
    }
    let v = s.ok("/api/v1/incidents/search?country_code=IT").await;
    assert_eq!(v["incidents"], json!([]));
    let v = s
        .ok("/api/v1/measurements?limit=5&failure=false&order=desc&probe_cc=IT")
        .await;
    let rs = v["results"].as_array().unwrap();
    assert_eq!(rs.len(), 5);
    assert!(rs.iter().all(|r| r["probe_cc"] == "IT"));
}

async fn measurement_page(s: &Site) {
    let (uid, row) = s
        .recent
        .iter()
        .find(|(_, r)| r.test_name == "web_connectivity" && r.probe_cc == "IT")
        .unwrap();
    let v = s
        .ok(&format!(
            "/api/v1/measurement_meta?measurement_uid={uid}&full=true"
        ))
        .await;
    let raw: Value = serde_json::from_str(v["raw_measurement"].as_str().expect("a string"))
        .expect("raw_measurement holds JSON");
    assert_eq!(raw, s.sent[uid]);
    let scores: Value = serde_json::from_str(v["scores"].as_str().expect("a string")).unwrap();
    assert!(scores.is_object());
    assert_eq!(v["test_name"], "web_connectivity");
    assert_eq!(v["input"], json!(row.input));
    assert_eq!(v["probe_cc"], "IT");
    assert_eq!(v["report_id"], json!(row.report_id));
    for k in [
        "probe_asn",
        "measurement_start_time",
        "anomaly",
        "confirmed",
        "failure",
        "verification_status",
    ] {
        assert!(v.get(k).is_some(), "{k} missing");
    }
    let (st, fb) = s.get(&format!("/api/_/measurement_feedback/{uid}")).await;
    assert!(
        st == 404 || (st == 200 && fb["summary"].is_object()),
        "a 200 must hold summary: {fb}"
    );
    // Unknown: "Measurement not found" needs raw_measurement "".
    let v = s
        .ok("/api/v1/measurement_meta?measurement_uid=20991231000000.000000_IT_webconnectivity_0000000000000000&full=true")
        .await;
    assert_eq!(v["raw_measurement"], "");
    // The legacy page: report id and input, `:` left unescaped as axios sends it.
    let input = row.input.replace('/', "%2F");
    let v = s
        .ok(&format!(
            "/api/v1/measurement_meta?report_id={}&full=true&input={input}",
            row.report_id
        ))
        .await;
    assert_eq!(v["measurement_uid"], json!(uid));
    // The raw link under the page.
    let v = s
        .ok(&format!("/api/v1/raw_measurement?measurement_uid={uid}"))
        .await;
    assert_eq!(v, s.sent[uid]);
}

async fn charts_and_domains(s: &Site) {
    // `/chart/mat` with its defaults, then with form fields.
    let month_ago = (s.today + Days::days(1))
        .checked_sub_months(chrono::Months::new(1))
        .unwrap();
    let base = format!(
        "/api/v1/aggregation?test_name=web_connectivity&axis_x=measurement_start_day&since={month_ago}&until={}&time_grain=day",
        s.day(1)
    );
    let v = s.ok(&base).await;
    assert_eq!(v["dimension_count"], 1);
    assert_eq!(
        sum(&v, "measurement_count"),
        s.count(|r| r.test_name == "web_connectivity")
    );
    let v = s
        .ok(&format!(
            "{base}&probe_cc=IT&probe_asn=AS30722&axis_y=domain"
        ))
        .await;
    assert_eq!(v["dimension_count"], 2);
    assert_chart_rows(&v, &["domain", "measurement_start_day"]);
    assert_eq!(
        sum(&v, "measurement_count"),
        s.count(|r| r.test_name == "web_connectivity" && r.probe_asn == 30722)
    );
    let r =
        s.c.get(s.e.url(&format!("{base}&format=CSV")))
            .send()
            .await
            .unwrap();
    assert_eq!(r.headers()["content-type"], "text/csv");
    assert!(r
        .text()
        .await
        .unwrap()
        .starts_with("anomaly_count,confirmed_count,failure_count,measurement_count,measurement_start_day,ok_count"));

    // `/domain/{d}`: metadata on the server (a failure 500s the page), then charts.
    for d in ["www.example.com", "not-on-any-list.example"] {
        let v = s.ok(&format!("/api/_/domain_metadata?domain={d}")).await;
        assert!(v["category_code"].is_string() && v["canonical_domain"].is_string());
    }
    let (st, _) = s
        .get("/api/v1/aggregation?axis_x=measurement_start_day&axis_y=probe_cc&test_name=web_connectivity&domain=www.example.com&since=undefined&until=undefined&time_grain=day")
        .await;
    assert!(st < 500);
    let v = s
        .ok(&format!(
            "/api/v1/aggregation?axis_x=measurement_start_day&axis_y=probe_cc&test_name=web_connectivity&domain=www.example.com&{w}&time_grain=day",
            w = s.window()
        ))
        .await;
    assert_chart_rows(&v, &["probe_cc", "measurement_start_day"]);
    assert_eq!(
        sum(&v, "measurement_count"),
        s.count(|r| r.domain == "www.example.com" && r.test_name == "web_connectivity")
    );
    let v = s
        .ok("/api/v1/measurements?limit=5&failure=false&order=desc&domain=www.example.com")
        .await;
    assert!(v["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["input"].as_str().unwrap().contains("www.example.com")));

    // Thematic pages: comma lists of countries.
    let v = s
        .ok(&format!(
            "/api/v1/aggregation?axis_x=measurement_start_day&axis_y=probe_cc&{w}&test_name=telegram&probe_cc=CN%2CIR%2CRU&time_grain=day",
            w = s.window()
        ))
        .await;
    assert!(v["result"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| ["CN", "IR", "RU"].contains(&r["probe_cc"].as_str().unwrap())));
    assert_eq!(
        sum(&v, "measurement_count"),
        s.count(|r| r.test_name == "telegram" && ["IR", "RU"].contains(&r.probe_cc.as_str()))
    );
    let v = s
        .ok(&format!(
            "/api/v1/aggregation?axis_x=measurement_start_day&axis_y=probe_cc&{w}&test_name=web_connectivity&domain=www.facebook.com&time_grain=day",
            w = s.window()
        ))
        .await;
    assert_eq!(
        sum(&v, "measurement_count"),
        s.count(|r| r.domain == "www.facebook.com")
    );

    // `/domains` and `/networks`.
    let v = s.ok("/api/_/domains").await;
    let ex = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["domain_name"] == "www.example.com")
        .expect("listed domain");
    assert_eq!(ex["category_code"], "NEWS");
    assert!(ex["measurement_count"].as_i64().unwrap() >= 1);
    let v = s.ok("/api/_/networks").await;
    let voda = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["probe_asn"] == 30722)
        .expect("AS30722");
    assert_eq!(voda["org_name"], "Vodafone Italia S.p.A.");
    assert!(voda["cnt"].as_i64().unwrap() >= s.count(|r| r.probe_asn == 30722));
    s.ok("/api/v1/incidents/search").await;
}

async fn network_page(s: &Site) {
    // Server side: both must answer or the page 500s.
    let v = s
        .ok("/api/v1/aggregation?probe_asn=AS30722&axis_x=probe_cc")
        .await;
    let it = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["probe_cc"] == "IT")
        .expect("IT row");
    assert!(it["measurement_count"].as_i64().unwrap() >= s.count(|r| r.probe_asn == 30722));
    let v = s.ok("/api/_/asnmeta?asn=30722").await;
    assert_eq!(v["org_name"], "Vodafone Italia S.p.A.");
    // Browser: a twelve-year calendar with automatic grain, the charts, the list.
    let since = s.today - Days::days(365 * 12 + 3);
    let v = s
        .ok(&format!(
            "/api/v1/aggregation?probe_asn=AS30722&since={since}&until={}&axis_x=measurement_start_day",
            s.day(1)
        ))
        .await;
    assert!(sum(&v, "measurement_count") >= s.count(|r| r.probe_asn == 30722));
    let (st, _) = s
        .get("/api/v1/aggregation?axis_y=test_name&axis_x=measurement_start_day&probe_asn=AS30722&since=undefined&until=undefined&test_name=psiphon%2Ctor%2Ctorsf&time_grain=day")
        .await;
    assert!(st < 500);
    let v = s
        .ok(&format!(
            "/api/v1/aggregation?axis_y=test_name&axis_x=measurement_start_day&probe_asn=AS30722&{w}&test_name=psiphon%2Ctor%2Ctorsf&time_grain=day",
            w = s.window()
        ))
        .await;
    assert_eq!(
        sum(&v, "measurement_count"),
        s.count(
            |r| r.probe_asn == 30722 && ["psiphon", "tor", "torsf"].contains(&r.test_name.as_str())
        )
    );
    let v = s
        .ok("/api/v1/measurements?limit=5&failure=false&order=desc&probe_asn=AS30722")
        .await;
    assert!(v["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["probe_asn"] == "AS30722"));
}

async fn suite(kind: Db) {
    let tmp = tempfile::tempdir().unwrap();
    let (site, db) = load(kind, tmp.path()).await;
    build_time(&site).await;
    home_and_search(&site).await;
    country_page(&site).await;
    measurement_page(&site).await;
    charts_and_domains(&site).await;
    network_page(&site).await;
    drop(site);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_pages_sqlite() {
    suite(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_pages_postgres() {
    suite(Db::Postgres).await;
}
