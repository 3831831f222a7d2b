//! The measurements API Explorer's search and measurement pages use, against the
//! corpus loaded through the real ingest path, on SQLite and PostgreSQL:
//! `/api/v1/measurements` (filters, ordering, defaults, limits, errors, a pagination
//! walk that follows `next_url`) and `/api/v1/measurement_meta` (by uid and by report
//! id, `full=true`, the test-list category join, not-found answers).

mod common;

use common::*;
use ooni_core::FastpathRow;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

const WIDE: &str = "since=2000-01-01&until=2100-01-01";

struct Api {
    e: Engine,
    c: reqwest::Client,
    db: TestDb,
    expected: BTreeMap<String, Vec<u8>>,
    /// Rows OONI's list can show (not ZZ, not AS0).
    rows: HashMap<String, FastpathRow>,
    /// Every row.
    all: HashMap<String, FastpathRow>,
    tmp: tempfile::TempDir,
}

impl Api {
    async fn start(db: Db) -> Api {
        let tmp = tempfile::tempdir().unwrap();
        let db = TestDb::new(db, tmp.path()).await;
        let e = Engine::start(
            &tmp.path().join("data"),
            &db.url,
            &[("OONI_UPLOAD_INTERVAL_SECS", "0")],
        );
        let c = client();
        let expected = upload_corpus(&c, &e).await;
        let uids: Vec<String> = expected.keys().cloned().collect();
        let all = rows_by_uid(&db.store().await, &uids, Duration::from_secs(60)).await;
        let rows = all
            .iter()
            .filter(|(_, r)| r.probe_cc != "ZZ" && r.probe_asn != 0)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Api {
            e,
            c,
            db,
            expected,
            rows,
            all,
            tmp,
        }
    }

    async fn get(&self, path_and_query: &str) -> (u16, Value) {
        self.get_url(&self.e.url(path_and_query)).await
    }

    async fn get_owned(&self, path_and_query: String) -> (u16, Value) {
        self.get(&path_and_query).await
    }

    async fn get_url(&self, url: &str) -> (u16, Value) {
        let r = self.c.get(url).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// Every result of a search, following `next_url`; checks each page's metadata.
    async fn walk(&self, query: &str, limit: i64) -> Vec<Value> {
        let mut url = self
            .e
            .url(&format!("/api/v1/measurements?{query}&limit={limit}"));
        let mut out = Vec::new();
        let mut page = 1;
        loop {
            let (status, v) = self.get_url(&url).await;
            assert_eq!(status, 200, "{url}: {v}");
            let m = &v["metadata"];
            let results = v["results"].as_array().unwrap();
            assert_eq!(m["limit"], json!(limit));
            assert_eq!(m["offset"], json!((page - 1) * limit), "{m}");
            assert_eq!(m["current_page"], json!(page), "{m}");
            out.extend(results.iter().cloned());
            match m["next_url"].as_str() {
                Some(next) => {
                    assert_eq!(results.len() as i64, limit);
                    assert_eq!(
                        (m["count"].clone(), m["pages"].clone()),
                        (json!(-1), json!(-1))
                    );
                    url = next.to_owned();
                    page += 1;
                }
                None => {
                    let count = out.len() as i64;
                    assert_eq!(m["count"], json!(count), "{m}");
                    assert_eq!(m["pages"], json!((count + limit - 1) / limit), "{m}");
                    return out;
                }
            }
        }
    }

    /// uids of rows matching `keep`, in the list's default order (newest first, then uid).
    fn ordered(&self, keep: impl Fn(&FastpathRow) -> bool) -> Vec<String> {
        let mut v: Vec<&FastpathRow> = self.rows.values().filter(|r| keep(r)).collect();
        v.sort_by(|a, b| {
            (b.measurement_start_time, &b.measurement_uid)
                .cmp(&(a.measurement_start_time, &a.measurement_uid))
        });
        v.into_iter().map(|r| r.measurement_uid.clone()).collect()
    }
}

fn uids(results: &[Value]) -> Vec<String> {
    results
        .iter()
        .map(|r| r["measurement_uid"].as_str().unwrap().to_owned())
        .collect()
}

async fn suite(kind: Db) {
    let api = Api::start(kind).await;
    assert!(api.rows.len() > 100, "{} rows", api.rows.len());

    // A pagination walk over everything, in order, nothing twice.
    let all = api.walk(WIDE, 7).await;
    assert_eq!(uids(&all), api.ordered(|_| true), "{kind:?}");

    // Item shape (spec/api.md B.3).
    for item in &all {
        let uid = item["measurement_uid"].as_str().unwrap();
        let row = &api.rows[uid];
        let keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "anomaly",
                "confirmed",
                "failure",
                "input",
                "measurement_start_time",
                "measurement_uid",
                "measurement_url",
                "probe_asn",
                "probe_cc",
                "report_id",
                "scores",
                "test_name"
            ]
        );
        assert_eq!(item["probe_asn"], json!(format!("AS{}", row.probe_asn)));
        assert_eq!(
            item["measurement_start_time"],
            json!(row
                .measurement_start_time
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string())
        );
        assert_eq!(
            item["input"],
            if row.input.is_empty() {
                Value::Null
            } else {
                json!(row.input)
            }
        );
        assert_eq!(
            (
                item["anomaly"].clone(),
                item["confirmed"].clone(),
                item["failure"].clone()
            ),
            (
                json!(row.anomaly),
                json!(row.confirmed),
                json!(row.msm_failure)
            )
        );
        assert_eq!(
            item["scores"],
            serde_json::from_str::<Value>(&row.scores).unwrap()
        );
        assert_eq!(
            item["measurement_url"],
            json!(api
                .e
                .url(&format!("/api/v1/raw_measurement?measurement_uid={uid}")))
        );
    }

    // Filters, each against the rows read back independently.
    let it = api.walk(&format!("{WIDE}&probe_cc=IT"), 100).await;
    assert_eq!(uids(&it), api.ordered(|r| r.probe_cc == "IT"));
    let wc = api
        .walk(
            &format!("{WIDE}&test_name=web_connectivity&anomaly=true"),
            100,
        )
        .await;
    assert_eq!(
        uids(&wc),
        api.ordered(|r| r.test_name == "web_connectivity" && r.anomaly)
    );
    assert!(!wc.is_empty());
    let ok = api
        .walk(&format!("{WIDE}&anomaly=false&failure=false"), 100)
        .await;
    assert_eq!(uids(&ok), api.ordered(|r| !r.anomaly && !r.msm_failure));
    let some = api.rows.values().find(|r| r.probe_asn != 0).unwrap();
    let by_asn = api
        .walk(&format!("{WIDE}&probe_asn=AS{}", some.probe_asn), 100)
        .await;
    assert_eq!(
        uids(&by_asn),
        api.ordered(|r| r.probe_asn == some.probe_asn)
    );
    let since = "2024-01-01T00:00:00";
    let recent = api
        .walk(&format!("since={since}&until=2100-01-01"), 100)
        .await;
    let cut = chrono::NaiveDateTime::parse_from_str(since, "%Y-%m-%dT%H:%M:%S").unwrap();
    assert_eq!(
        uids(&recent),
        api.ordered(|r| r.measurement_start_time > cut)
    );
    let with_input = api
        .rows
        .values()
        .find(|r| !r.input.is_empty() && !r.domain.is_empty())
        .unwrap();
    let by_domain = api
        .walk(&format!("{WIDE}&domain={}", with_input.domain), 100)
        .await;
    assert_eq!(
        uids(&by_domain),
        api.ordered(|r| r.domain == with_input.domain)
    );

    // Report id (+ input): no date window applies (B.3).
    let (s, v) = api
        .get(&format!(
            "/api/v1/measurements?report_id={}&input={}",
            with_input.report_id,
            urlencode(&with_input.input)
        ))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["metadata"]["count"], json!(1), "{v}");
    assert_eq!(
        v["results"][0]["measurement_uid"],
        json!(with_input.measurement_uid)
    );

    // Ordering by another column, ascending.
    let asc = api
        .walk(&format!("{WIDE}&order_by=probe_cc&order=ASC"), 100)
        .await;
    let ccs: Vec<&str> = asc
        .iter()
        .map(|r| r["probe_cc"].as_str().unwrap())
        .collect();
    assert!(ccs.windows(2).all(|w| w[0] <= w[1]), "{ccs:?}");
    assert_eq!(asc.len(), all.len());

    // The default window: tomorrow and 30 days back.
    let (s, v) = api.get("/api/v1/measurements").await;
    assert_eq!(s, 200);
    let floor = chrono::Utc::now().naive_utc() - chrono::Duration::days(31);
    for r in v["results"].as_array().unwrap() {
        let t = chrono::NaiveDateTime::parse_from_str(
            r["measurement_start_time"].as_str().unwrap(),
            "%Y-%m-%dT%H:%M:%SZ",
        )
        .unwrap();
        assert!(t > floor, "{r}");
    }

    // Empty results and paging past the end (B.6).
    let (_, v) = api
        .get("/api/v1/measurements?probe_cc=IT&since=2099-01-01&until=2099-02-01")
        .await;
    assert_eq!(
        v,
        json!({"metadata": {"count": 0, "current_page": 1, "limit": 100, "next_url": null, "offset": 0, "pages": 0, "query_time": v["metadata"]["query_time"]}, "results": []})
    );
    let (_, v) = api
        .get(&format!("/api/v1/measurements?{WIDE}&offset=300&limit=100"))
        .await;
    assert_eq!(
        (
            v["metadata"]["count"].clone(),
            v["metadata"]["pages"].clone(),
            v["metadata"]["current_page"].clone()
        ),
        (json!(300), json!(3), json!(4))
    );

    // Errors.
    for (q, status) in [
        ("limit=101", 400),
        ("limit=0", 400),
        ("limit=ten", 400),
        ("order=sideways", 400),
        ("order_by=scores", 400),
        ("probe_cc=ZZ", 403),
        ("probe_asn=AS0", 403),
        ("probe_cc=italy", 400),
        ("report_id=short", 400),
        ("since=yesterday", 400),
        ("test_name=BOGUS", 400),
        ("input=%3Cscript%3E", 400),
    ] {
        let (s, v) = api.get(&format!("/api/v1/measurements?{q}")).await;
        assert_eq!(s, status, "{q}: {v}");
        assert!(v["error"].is_string(), "{q}: {v}");
    }

    // Old Android probes get OONI's fixed answer.
    let r = api
        .c
        .get(api.e.url("/api/v1/measurements"))
        .header("User-Agent", "okhttp/3.12")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["results"], json!([{"measurement_url": ""}]));

    meta(&api).await;
    aggregation(&api).await;
    categories(&api).await;
    private_routes(&api).await;
    api.db.drop_db().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn meta(api: &Api) {
    let row = api
        .rows
        .values()
        .find(|r| !r.input.is_empty() && !r.domain.is_empty())
        .unwrap();
    let uid = &row.measurement_uid;
    let (s, v) = api
        .get(&format!(
            "/api/v1/measurement_meta?measurement_uid={uid}&full=true"
        ))
        .await;
    assert_eq!(s, 200);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "anomaly",
            "category_code",
            "confirmed",
            "failure",
            "input",
            "measurement_start_time",
            "measurement_uid",
            "probe_asn",
            "probe_cc",
            "raw_measurement",
            "report_id",
            "scores",
            "test_name",
            "test_start_time",
            "verification_status",
        ]
    );
    assert_eq!(v["probe_asn"], json!(row.probe_asn), "an integer here");
    assert_eq!(v["verification_status"], json!("unverified"));
    assert_eq!(v["scores"], json!(row.scores), "a JSON string here");
    assert_eq!(v["category_code"], json!(""), "joined, no test-list entry");
    assert_eq!(v["input"], json!(row.input));
    assert_eq!(
        v["test_start_time"],
        json!(row.test_start_time.format("%Y-%m-%dT%H:%M:%SZ").to_string())
    );
    assert_eq!(
        v["raw_measurement"].as_str().unwrap().as_bytes(),
        &api.expected[uid][..]
    );
    // By report id and input: the same measurement.
    let (_, by_rid) = api
        .get(&format!(
            "/api/v1/measurement_meta?report_id={}&input={}",
            row.report_id,
            urlencode(&row.input)
        ))
        .await;
    assert_eq!(by_rid["measurement_uid"], json!(uid));
    assert!(by_rid.get("raw_measurement").is_none());
    // By report id without input: no join, category_code null (B.4).
    if let Some(r) = api.rows.values().find(|r| r.input.is_empty()) {
        let (_, v) = api
            .get(&format!(
                "/api/v1/measurement_meta?report_id={}",
                r.report_id
            ))
            .await;
        assert_eq!(v["measurement_uid"], json!(r.measurement_uid));
        assert_eq!(v["category_code"], Value::Null);
    }
    // Not found, and missing parameters.
    let none = "20991231000000.000000_IT_ndt_0123456789abcdef";
    assert_eq!(
        api.get(&format!("/api/v1/measurement_meta?measurement_uid={none}"))
            .await,
        (200, json!({}))
    );
    assert_eq!(
        api.get(&format!(
            "/api/v1/measurement_meta?measurement_uid={none}&full=true"
        ))
        .await,
        (200, json!({"raw_measurement": ""}))
    );
    assert_eq!(api.get("/api/v1/measurement_meta").await.0, 400);
    assert_eq!(
        api.get("/api/v1/measurement_meta?report_id=short").await.0,
        400
    );
}

/// `category_code` through the test-list table: the list filter and the meta join.
async fn categories(api: &Api) {
    let row = api
        .rows
        .values()
        .find(|r| !r.input.is_empty() && !r.domain.is_empty())
        .unwrap();
    let store = api.db.store().await;
    let q = "INSERT INTO citizenlab (domain, url, cc, category_code) VALUES ($1, $2, 'ZZ', 'NEWS'), ($1, $2, 'it', 'POLR')";
    match &store {
        ooni_engine::store::Store::Sqlite(p) => {
            sqlx::query(q)
                .bind(&row.domain)
                .bind(&row.input)
                .execute(p)
                .await
                .unwrap();
        }
        ooni_engine::store::Store::Postgres(p) => {
            sqlx::query(q)
                .bind(&row.domain)
                .bind(&row.input)
                .execute(p)
                .await
                .unwrap();
        }
    }
    let news = api.walk(&format!("{WIDE}&category_code=NEWS"), 100).await;
    let (_, v) = api
        .get("/api/v1/aggregation?axis_x=category_code&since=2000-01-01&until=2100-01-01")
        .await;
    assert_eq!(v["result"][0]["category_code"], json!("NEWS"), "{v}");
    assert_eq!(v["result"][0]["measurement_count"], json!(news.len()));
    assert_eq!(uids(&news), api.ordered(|r| r.input == row.input));
    let set: HashSet<String> = uids(&news).into_iter().collect();
    assert_eq!(
        set.len(),
        news.len(),
        "two list entries, no duplicate results"
    );
    let (_, v) = api
        .get(&format!(
            "/api/v1/measurement_meta?measurement_uid={}",
            row.measurement_uid
        ))
        .await;
    assert_eq!(v["category_code"], json!("NEWS"), "the global list first");
    // `input` overrides `category_code`, as in OONI.
    let other = api
        .rows
        .values()
        .find(|r| !r.input.is_empty() && r.input != row.input)
        .unwrap();
    let (_, v) = api
        .get(&format!(
            "/api/v1/measurements?{WIDE}&category_code=NEWS&input={}",
            urlencode(&other.input)
        ))
        .await;
    assert!(uids(v["results"].as_array().unwrap()).contains(&other.measurement_uid));
}

/// OONI's five counts over a set of rows, keys sorted as the API sends them.
fn counts<'a>(rows: impl Iterator<Item = &'a FastpathRow>) -> serde_json::Map<String, Value> {
    let (mut a, mut c, mut f, mut ok, mut n) = (0, 0, 0, 0, 0);
    for r in rows {
        n += 1;
        if r.msm_failure {
            f += 1;
        } else if r.confirmed {
            c += 1;
        } else if r.anomaly {
            a += 1;
        } else {
            ok += 1;
        }
    }
    let v = json!({"anomaly_count": a, "confirmed_count": c, "failure_count": f, "measurement_count": n, "ok_count": ok});
    v.as_object().unwrap().clone()
}

fn t(s: &str) -> chrono::NaiveDateTime {
    chrono::NaiveDateTime::parse_from_str(&format!("{s} 00:00:00"), "%Y-%m-%d %H:%M:%S").unwrap()
}

async fn aggregation(api: &Api) {
    let agg = |q: &str| api.get_owned(format!("/api/v1/aggregation?{q}"));
    // No axis: one object of counts.
    let (s, v) = agg("probe_cc=IT&since=2000-01-01&until=2100-01-01").await;
    assert_eq!(s, 200);
    assert_eq!(v["dimension_count"], json!(0));
    assert_eq!(
        v["result"],
        Value::Object(counts(api.rows.values().filter(|r| r.probe_cc == "IT")))
    );
    // One axis, ascending.
    let (_, v) = agg("axis_x=probe_cc&since=2000-01-01&until=2100-01-01").await;
    let result = v["result"].as_array().unwrap();
    let mut by_cc: BTreeMap<String, Vec<&FastpathRow>> = BTreeMap::new();
    for r in api.rows.values() {
        by_cc.entry(r.probe_cc.clone()).or_default().push(r);
    }
    assert_eq!(result.len(), by_cc.len());
    for (item, (cc, rows)) in result.iter().zip(&by_cc) {
        let mut want = counts(rows.iter().copied());
        want.insert("probe_cc".into(), json!(cc));
        want.sort_keys();
        assert_eq!(item, &Value::Object(want));
    }
    // Two axes.
    let (_, v) = agg("axis_x=test_name&axis_y=probe_asn&since=2000-01-01&until=2100-01-01").await;
    assert_eq!(v["dimension_count"], json!(2));
    let result = v["result"].as_array().unwrap();
    let groups: HashSet<(String, i64)> = api
        .rows
        .values()
        .map(|r| (r.test_name.clone(), r.probe_asn))
        .collect();
    assert_eq!(result.len(), groups.len());
    assert!(result.iter().all(|r| r["probe_asn"].is_i64()));
    let total: i64 = result
        .iter()
        .map(|r| r["measurement_count"].as_i64().unwrap())
        .sum();
    assert_eq!(total as usize, api.rows.len());

    // Time axis: each grain, buckets computed here independently.
    let (lo, hi) = (t("2020-01-01"), t("2026-01-01"));
    let in_range: Vec<&FastpathRow> = api
        .rows
        .values()
        .filter(|r| r.measurement_start_time >= lo && r.measurement_start_time < hi)
        .collect();
    for (grain, key) in [
        (
            "day",
            Box::new(|r: &FastpathRow| r.measurement_start_time.format("%Y-%m-%d").to_string())
                as Box<dyn Fn(&FastpathRow) -> String>,
        ),
        (
            "week",
            Box::new(|r: &FastpathRow| {
                use chrono::Datelike;
                let d = r.measurement_start_time.date();
                (d - chrono::Duration::days(d.weekday().num_days_from_sunday() as i64))
                    .format("%Y-%m-%d")
                    .to_string()
            }),
        ),
        (
            "month",
            Box::new(|r: &FastpathRow| r.measurement_start_time.format("%Y-%m-01").to_string()),
        ),
        (
            "year",
            Box::new(|r: &FastpathRow| r.measurement_start_time.format("%Y-01-01").to_string()),
        ),
    ] {
        let (s, v) = agg(&format!(
            "axis_x=measurement_start_day&time_grain={grain}&since=2020-01-01&until=2026-01-01"
        ))
        .await;
        assert_eq!(s, 200, "{grain}: {v}");
        let mut want: BTreeMap<String, Vec<&FastpathRow>> = BTreeMap::new();
        for r in &in_range {
            want.entry(key(r)).or_default().push(r);
        }
        let got: Vec<(String, i64)> = v["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["measurement_start_day"].as_str().unwrap().to_owned(),
                    r["measurement_count"].as_i64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(String, i64)> = want
            .into_iter()
            .map(|(k, rows)| (k, rows.len() as i64))
            .collect();
        assert_eq!(got, want, "{grain}");
    }
    // auto over two days: hours (B.5).
    let one = in_range[0].measurement_start_time.date();
    let (since, until) = (
        one.to_string(),
        (one + chrono::Duration::days(2)).to_string(),
    );
    let (_, v) = agg(&format!(
        "axis_x=measurement_start_day&since={since}&until={until}"
    ))
    .await;
    let first = v["result"][0]["measurement_start_day"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(first.ends_with(":00:00Z") && first.contains('T'), "{first}");

    // CSV, and downloads.
    let r = api
        .c
        .get(api.e.url("/api/v1/aggregation?probe_cc=IT&since=2000-01-01&until=2100-01-01&format=CSV&download=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/csv");
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=ooni-aggregate-data.csv"
    );
    let c = counts(api.rows.values().filter(|r| r.probe_cc == "IT"));
    let line: Vec<String> = c.values().map(|v| v.to_string()).collect();
    assert_eq!(
        r.text().await.unwrap(),
        format!(
            "anomaly_count,confirmed_count,failure_count,measurement_count,ok_count\r\n{}\r\n",
            line.join(",")
        )
    );

    // OONI's error answers (B.5).
    assert_eq!(
        agg("axis_x=probe_cc&axis_y=probe_cc").await,
        (
            200,
            json!({"error": "Axis X and Y cannot be the same", "v": 0})
        )
    );
    assert_eq!(
        agg("test_name=BOGUS").await,
        (200, json!({"error": "Invalid characters", "v": 0}))
    );
    assert_eq!(agg("format=XML").await.0, 200);
    assert_eq!(
        agg("axis_x=measurement_start_day&time_grain=hour&since=2019-01-01&until=2021-01-01").await,
        (
            400,
            json!({"error": "Choose time_grain between day, week, month, year, auto for the given time range", "v": 0})
        )
    );
    assert_eq!(
        agg("axis_x=measurement_start_day").await,
        (
            400,
            json!({"error": "Invalid since and until values", "v": 0})
        )
    );
    assert_eq!(agg("axis_x=scores").await.0, 200);
}

/// Explorer's private routes, against counts made here from the rows read back.
async fn private_routes(api: &Api) {
    let r = api
        .c
        .get(api.e.url("/api/_/global_overview"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "*",
        "Explorer calls cross-origin"
    );
    let v: Value = r.json().await.unwrap();
    let ccs: HashSet<&str> = api.all.values().map(|r| r.probe_cc.as_str()).collect();
    let asns: HashSet<i64> = api.all.values().map(|r| r.probe_asn).collect();
    assert_eq!(
        v,
        json!({"country_count": ccs.len(), "measurement_count": api.all.len(), "network_count": asns.len()})
    );

    let (_, v) = api.get("/api/_/global_overview_by_month").await;
    use chrono::Datelike;
    let today = chrono::Utc::now().date_naive();
    let first = chrono::NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap()
        - chrono::Months::new(23);
    let mut by_month: BTreeMap<String, Vec<&FastpathRow>> = BTreeMap::new();
    for r in api
        .all
        .values()
        .filter(|r| r.measurement_start_time.date() >= first)
    {
        by_month
            .entry(
                r.measurement_start_time
                    .format("%Y-%m-01T00:00:00+00:00")
                    .to_string(),
            )
            .or_default()
            .push(r);
    }
    let want: Vec<Value> = by_month
        .iter()
        .map(|(d, rows)| json!({"date": d, "value": rows.len()}))
        .collect();
    assert_eq!(v["measurements_by_month"], json!(want));
    assert!(v["countries_by_month"].is_array() && v["networks_by_month"].is_array());

    let it: Vec<&FastpathRow> = api.all.values().filter(|r| r.probe_cc == "IT").collect();
    let (_, v) = api.get("/api/_/country_overview?probe_cc=IT").await;
    let first_it = it.iter().map(|r| r.measurement_start_time).min().unwrap();
    let nets: HashSet<i64> = it.iter().map(|r| r.probe_asn).collect();
    assert_eq!(
        v,
        json!({"first_bucket_date": first_it.format("%Y-%m-%d").to_string(), "measurement_count": it.len(), "network_count": nets.len()})
    );
    assert_eq!(api.get("/api/_/country_overview").await.0, 400);

    let (_, v) = api.get("/api/_/countries").await;
    let countries = v["countries"].as_array().unwrap();
    let italy = countries.iter().find(|c| c["alpha_2"] == "IT").unwrap();
    assert_eq!(italy["name"], "Italy");
    assert_eq!(italy["count"], json!(it.len()));
    assert!(
        countries.iter().all(|c| c["alpha_2"] != "ZZ"),
        "no country named ZZ"
    );

    // Networks, named once asnmeta knows them: OONI's AS-to-organisation map
    // imported by the CLI, two historical names, the newest wins.
    let asn = it[0].probe_asn;
    let map = api.tmp.path().join("as_org_map.json");
    let data = api.tmp.path().join("data");
    std::fs::write(
        &map,
        json!({
            asn.to_string(): [["Old Telecom", "IT", "20150101", "OLD-AS", "RIPE"],
                              ["Example Telecom", "IT", "20240101", "EXAMPLE-AS", "RIPE"]],
            "64496": [["Doc Net", "ZZ", "20200101", "DOC", "test"]]
        })
        .to_string(),
    )
    .unwrap();
    let out = run_cli_ok(
        &["asnmeta", "import", map.to_str().unwrap()],
        &data,
        &api.db.url,
    );
    assert!(out.starts_with("3 network names imported"), "{out}");
    // A broken file names itself and leaves the table as it was.
    std::fs::write(&map, r#"{"1": [["x", "IT", "2024-01-01", "y", "z"]]}"#).unwrap();
    let out = run_cli(
        &["asnmeta", "import", map.to_str().unwrap()],
        &data,
        &api.db.url,
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("as_org_map.json") && err.contains("YYYYMMDD"),
        "{err}"
    );
    let (_, v) = api.get("/api/_/networks").await;
    let nets = v["results"].as_array().unwrap();
    let mine = nets.iter().find(|n| n["probe_asn"] == json!(asn)).unwrap();
    assert_eq!(mine["org_name"], "Example Telecom");
    assert_eq!(
        mine["cnt"],
        json!(api.all.values().filter(|r| r.probe_asn == asn).count())
    );
    assert!(nets.iter().all(|n| n["probe_asn"] != json!(0)));
    assert_eq!(
        api.get(&format!("/api/_/asnmeta?asn={asn}")).await,
        (200, json!({"org_name": "Example Telecom"}))
    );
    assert_eq!(
        api.get("/api/_/asnmeta?asn=4294967295").await,
        (200, json!({"org_name": "Unknown"}))
    );
    assert_eq!(api.get("/api/_/asnmeta?asn=AS1").await.0, 400);

    // Domains of the test lists (the categories step put one on them).
    let listed = api
        .rows
        .values()
        .find(|r| !r.input.is_empty() && !r.domain.is_empty())
        .unwrap();
    let (_, v) = api
        .get(&format!("/api/_/domain_metadata?domain={}", listed.domain))
        .await;
    assert_eq!(
        v,
        json!({"canonical_domain": listed.domain, "category_code": "NEWS"})
    );
    let (_, v) = api
        .get("/api/_/domain_metadata?domain=unlisted.example")
        .await;
    assert_eq!(
        v,
        json!({"canonical_domain": "unlisted.example", "category_code": "MISC"})
    );
    let (_, v) = api.get("/api/_/domains").await;
    let d = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["domain_name"] == json!(listed.domain))
        .unwrap();
    assert_eq!(d["category_code"], "NEWS");
    assert_eq!(
        d["measurement_count"],
        json!(api
            .all
            .values()
            .filter(|r| r.domain == listed.domain && r.test_name == "web_connectivity")
            .count())
    );

    // What Explorer's pages need to render for an anonymous visitor.
    let (s, v) = api
        .get(&format!(
            "/api/_/measurement_feedback/{}",
            listed.measurement_uid
        ))
        .await;
    assert_eq!((s, v), (200, json!({"summary": {}})));
    let r = api
        .c
        .post(api.e.url("/api/_/measurement_feedback"))
        .json(&json!({"measurement_uid": listed.measurement_uid, "status": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        api.get("/api/_/account_metadata").await,
        (401, json!({"logged_in": false}))
    );
    assert_eq!(
        api.get("/api/v1/incidents/search?theme=news_media").await,
        (200, json!({"incidents": []}))
    );
    let (s, doc) = api.get("/openapi.json").await;
    assert_eq!(s, 200);
    assert!(doc["paths"]["/api/v1/aggregation"]["get"]["parameters"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measurements_api_sqlite() {
    suite(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measurements_api_postgres() {
    suite(Db::Postgres).await;
}
