//! The engine under hostile clients and failing parts: slow, idle and oversized
//! requests, injection attempts, a nearly full disk, a database outage, SIGTERM with
//! requests in flight, and the query API's rate limit.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn measurement(i: usize) -> Value {
    json!({
        "test_name": "web_connectivity",
        "probe_cc": "IT",
        "probe_asn": "AS30722",
        "input": format!("https://example.org/{i}"),
        "test_start_time": "2026-11-27 00:00:00",
        "measurement_start_time": "2026-11-27 00:00:01",
        "data_format_version": "0.2.0",
        "software_name": "ooniprobe-cli",
        "software_version": "3.20.0",
        "test_version": "0.4.3",
        "test_keys": {"accessible": true, "blocking": false}
    })
}

fn addr_of(e: &Engine) -> String {
    e.base.trim_start_matches("http://").to_owned()
}

/// Reads until the peer closes or `within` passes; returns what arrived and whether
/// the peer closed.
fn read_until_closed(s: &mut TcpStream, within: Duration) -> (String, bool) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

async fn health_status(c: &reqwest::Client, e: &Engine) -> (u16, Value) {
    let r = c.get(e.url("/health")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_oversized_clients_are_cut_and_service_goes_on() {
    let Scratch {
        dir: _dir,
        data,
        db,
    } = Scratch::new(Db::Sqlite).await;
    let e = Engine::start(
        &data,
        &db.url,
        &[
            ("OONI_HEADER_TIMEOUT_SECS", "1"),
            ("OONI_BODY_TIMEOUT_SECS", "1"),
            ("OONI_MAX_CONNECTIONS", "32"),
            ("OONI_MAX_HEADER_BYTES", "16384"),
        ],
    );
    let addr = addr_of(&e);
    let c = client();

    // A head that never ends (slowloris) is cut after the header timeout.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"POST /report/x HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .unwrap();
    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(10));
    assert!(closed, "a never-ending request head keeps its connection");

    // A body that stalls gets 408 with a JSON reason.
    let (rid, content, _) = post_measurement(&c, &e, &measurement(0)).await;
    let body = json!({"format": "json", "content": content}).to_string();
    let mut stall = TcpStream::connect(&addr).unwrap();
    write!(
        stall,
        "POST /report/{rid} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    let (answer, _) = read_until_closed(&mut stall, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"reason\":\"body_timeout\""), "{answer}");

    // Three times more idle connections than the server serves at once: they are
    // closed after the header timeout, and a real client is served meanwhile.
    let mut idle: Vec<TcpStream> = (0..96)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let r = c.get(e.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for s in idle.iter_mut() {
        let (_, closed) = read_until_closed(s, Duration::from_secs(15));
        assert!(closed, "an idle connection was never closed");
    }

    // An oversized head is refused (431, unless the close outruns the answer) and
    // the server goes on.
    let mut big = TcpStream::connect(&addr).unwrap();
    // The server may close while this is still being written.
    let _ = write!(
        big,
        "GET /health HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let (answer, closed) = read_until_closed(&mut big, Duration::from_secs(10));
    assert!(closed, "an oversized head kept its connection");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer:.80}"
    );
    assert_eq!(health_status(&c, &e).await.0, 200);

    // The upload whose body stalled was never acknowledged; a whole one is.
    uid_of(post_body(&c, &e, &rid, body).await).await;
    let m = metrics_text(&c, &e).await;
    assert_eq!(
        metric(&m, "ooni_upload_rejections_total{reason=\"body_timeout\"}"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_and_traversal_attempts_get_clear_errors() {
    let Scratch {
        dir: _dir,
        data,
        db,
    } = Scratch::new(Db::Sqlite).await;
    let e = Engine::start(&data, &db.url, &[]);
    let c = client();
    let uid = submit_measurement(&c, &e, &measurement(1)).await;
    wait_all_known(
        &db.store().await,
        std::slice::from_ref(&uid),
        Duration::from_secs(30),
    )
    .await;

    // Parameters that try SQL: refused where the value has a shape, or matched
    // literally (bound parameters) where it is free text.
    for (q, status) in [
        ("probe_cc=IT'%20OR%20'1'='1", 400),
        ("probe_asn=1%20OR%201=1", 400),
        ("since=2026-01-01'%3B%20DROP%20TABLE%20fastpath%3B--", 400),
        ("test_name=web_connectivity'--", 400),
        ("domain=example.org'%20OR%201=1--", 400),
        ("input=%25'%20OR%20'1'='1", 400),
        // A LIKE wildcard is a literal character, not "anything".
        ("input=%25", 200),
        ("report_id=x'%20UNION%20SELECT%201--", 400),
    ] {
        let r = c
            .get(e.url(&format!("/api/v1/measurements?{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{q}");
        let v: Value = r.json().await.unwrap();
        if status == 200 {
            assert_eq!(v["results"], json!([]), "{q} matched something: {v}");
        } else {
            assert!(
                v["error"].is_string() || v["detail"].is_string(),
                "{q}: {v}"
            );
        }
    }
    // The table is still there and whole.
    let v: Value = c
        .get(e.url("/api/v1/measurements?probe_cc=IT"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 1);

    // A CR/LF in a parameter never becomes a response header.
    let r = c
        .get(e.url(
            "/api/v1/measurements?probe_cc=IT%0d%0aSet-Cookie:%20x=1&order_by=test_name%0d%0aX-Injected:%201",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.headers().get("x-injected").is_none());

    // Paths and uids that try to leave the data directory.
    for path in [
        "/api/v1/raw_measurement?measurement_uid=../../../../etc/passwd",
        "/api/v1/measurement/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/v1/measurement_meta?measurement_uid=%2Fetc%2Fpasswd",
        "/..%2f..%2fetc/passwd",
        "/api/v1/raw_measurement?report_id=../../x&input=y",
    ] {
        let r = c.get(e.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(!text.contains("root:"), "{path} leaked a file");
        let v = serde_json::from_str::<Value>(&text).unwrap_or_else(|_| panic!("{path}: {text}"));
        // OONI answers an unknown uid of raw_measurement with an empty object.
        assert!(
            (400..500).contains(&status) || (status == 200 && v == json!({})),
            "{path}: {status} {v}"
        );
    }
    assert_eq!(health_status(&c, &e).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_full_spool_disk_refuses_uploads_with_503() {
    let Scratch {
        dir: _dir,
        data,
        db,
    } = Scratch::new(Db::Sqlite).await;
    // A reserve larger than any disk: the spool's filesystem is "nearly full".
    let e = Engine::start(
        &data,
        &db.url,
        &[("OONI_SPOOL_MIN_FREE_MB", "1000000000000")],
    );
    let c = client();
    let (_, _, r) = post_measurement(&c, &e, &measurement(2)).await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["reason"], "spool_full", "{v}");
    assert!(v["detail"].as_str().unwrap().contains("retry later"), "{v}");
    let spooled = walk(&data.join("spool/incoming"));
    assert!(
        spooled.iter().all(|p| !p.ends_with(".post")),
        "a refused upload was written: {spooled:?}"
    );
    let (status, health) = health_status(&c, &e).await;
    assert_eq!(status, 503);
    assert!(health["errors"].to_string().contains("reserve"), "{health}");
    let m = metrics_text(&c, &e).await;
    assert_eq!(
        metric(&m, "ooni_upload_rejections_total{reason=\"spool_full\"}"),
        Some(1.0)
    );
    assert!(metric(&m, "ooni_spool_free_bytes").unwrap() > 0.0);
    drop(e);

    // With room again, the same engine data accepts uploads.
    let e = Engine::start(&data, &db.url, &[]);
    let (_, _, r) = post_measurement(&c, &e, &measurement(2)).await;
    uid_of(r).await;
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// The database goes away (every connection cut, new ones refused) while probes
/// upload: uploads are still acknowledged, `/health` says what is wrong, memory stays
/// bounded (the small queue overflows into the spool), and when the database is back
/// every acknowledged measurement gets its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_acknowledges_uploads_and_rows_catch_up() {
    let Scratch {
        dir: _dir,
        data,
        db,
    } = Scratch::new(Db::Postgres).await;
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let via_proxy = db
        .url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
    // Small queues, so that the outage overflows them into the spool.
    let e = Engine::start(
        &data,
        &via_proxy,
        &[("OONI_SCORING_QUEUE", "8"), ("OONI_DB_BATCH_ROWS", "2")],
    );
    let c = client();
    let store = db.store().await;

    let mut acked = Vec::new();
    for i in 0..10 {
        acked.push(submit_measurement(&c, &e, &measurement(i)).await);
    }
    wait_all_known(&store, &acked, Duration::from_secs(30)).await;

    proxy.set_up(false);
    // Report ids are formed without the database, so probes go on as usual.
    for i in 10..70 {
        acked.push(submit_measurement(&c, &e, &measurement(i)).await);
    }
    let (status, health) = health_status(&c, &e).await;
    assert_eq!(status, 503);
    assert!(
        health["errors"].to_string().contains("database"),
        "{health}"
    );
    let m = metrics_text(&c, &e).await;
    assert!(
        metric(&m, "ooni_score_queue_overflows_total").unwrap() > 0.0,
        "{m}"
    );
    assert!(
        metric(&m, "ooni_score_queue_bytes").unwrap() < 256.0 * 1024.0 * 1024.0,
        "{m}"
    );
    assert_eq!(store.known_uids(&acked[10..]).await.unwrap().len(), 0);

    proxy.set_up(true);
    wait_all_known(&store, &acked, Duration::from_secs(90)).await;
    assert_eq!(store.fetch_rows(&acked).await.unwrap().len(), acked.len());
    let m = metrics_text(&c, &e).await;
    assert!(metric(&m, "ooni_db_errors_total").unwrap() > 0.0);
    assert_eq!(health_status(&c, &e).await.0, 200);
    drop(e);
    drop(proxy);
    db.drop_db().await;
}

/// SIGTERM with uploads in flight and a client stuck mid-body: the engine stops
/// accepting at once, answers what is in flight, writes every acknowledged row, cuts
/// the stuck client at the shutdown bound, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_uploads_and_exits_within_its_bound() {
    let Scratch {
        dir: _dir,
        data,
        db,
    } = Scratch::new(Db::Sqlite).await;
    let mut e = Engine::start(
        &data,
        &db.url,
        &[
            ("OONI_DB_BATCH_WAIT_MS", "1500"),
            ("OONI_SHUTDOWN_TIMEOUT_SECS", "3"),
            ("OONI_BODY_TIMEOUT_SECS", "60"),
        ],
    );
    let c = client();
    let addr = addr_of(&e);
    let (rid, content, _) = post_measurement(&c, &e, &measurement(0)).await;
    let body = json!({"format": "json", "content": content}).to_string();
    let mut stuck = TcpStream::connect(&addr).unwrap();
    write!(
        stuck,
        "POST /report/{rid} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..5]
    )
    .unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probes = spawn_uploaders(
        &c,
        &e.base,
        std::sync::Arc::new(vec![(rid.clone(), body.clone())]),
        8,
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let pid = e.child.id() as i32;
    let t = Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    // New connections are refused soon after the signal.
    let mut refused_new = false;
    while t.elapsed() < Duration::from_secs(3) {
        if TcpStream::connect(&addr).is_err() {
            refused_new = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = e.child.wait().unwrap();
    let took = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, refused) = join_uploaders(probes).await;
    assert!(status.success(), "{status:?}");
    assert!(refused_new, "still accepting connections after SIGTERM");
    // Two bounds of 3 s (connections, then rows) and start-up slack; a hang fails.
    assert!(took < Duration::from_secs(15), "exit took {took:?}");
    assert!(acked.len() > 10, "{} acknowledged", acked.len());
    let (answer, closed) = read_until_closed(&mut stuck, Duration::from_secs(1));
    assert!(closed && !answer.contains("measurement_uid"), "{answer}");
    // Every acknowledged upload has its row, written before the exit.
    let store = db.store().await;
    let known = store.known_uids(&acked).await.unwrap();
    assert_eq!(
        known.len(),
        acked.len(),
        "{refused} uploads refused after SIGTERM"
    );
}

async fn query(c: &reqwest::Client, e: &Engine, path: &str, ip: &str) -> reqwest::Response {
    c.get(e.url(path))
        .header("x-real-ip", ip)
        .send()
        .await
        .unwrap()
}

fn remaining(r: &reqwest::Response) -> Option<u64> {
    r.headers()
        .get("x-ratelimit-remaining")
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

/// spec/api.md §5: each client address has a budget of request time; the API says
/// what is left, refuses with 429 and a JSON error once it is spent, never meters
/// probe routes or `/health`, and skips allow-listed addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_api_is_rate_limited_per_client() {
    let Scratch {
        dir: _dir,
        data,
        db,
    } = Scratch::new(Db::Sqlite).await;
    let e = Engine::start(
        &data,
        &db.url,
        &[
            ("OONI_RATE_LIMIT_DAY_SECS", "0.05"),
            ("OONI_CLIENT_IP_HEADER", "X-Real-Ip"),
            ("OONI_RATE_LIMIT_ALLOW", "203.0.113.77"),
        ],
    );
    let c = client();
    let greedy = "198.51.100.1";
    let path = "/api/v1/aggregation?axis_x=measurement_start_day&since=2020-01-01&until=2026-12-31";
    let mut served = 0;
    let refused = loop {
        let r = query(&c, &e, path, greedy).await;
        assert_eq!(remaining(&r), Some(0), "budget below one second");
        if r.status() == 429 {
            break r;
        }
        assert_eq!(r.status(), 200);
        served += 1;
        assert!(served < 20_000, "never limited");
    };
    assert!(served >= 1);
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["error"], "quota exceeded", "{v}");
    assert_eq!(v["reason"], "rate_limited", "{v}");

    // Still refused; other clients have their own budget.
    assert_eq!(query(&c, &e, path, greedy).await.status(), 429);
    let other = query(&c, &e, path, "198.51.100.2").await;
    assert_eq!(other.status(), 200);
    assert_eq!(remaining(&other), Some(0));
    let allowed = query(&c, &e, path, "203.0.113.77").await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(remaining(&allowed), None);

    // The limited client can still be a probe and check health.
    let h = query(&c, &e, "/health", greedy).await;
    assert_eq!(h.status(), 200);
    assert_eq!(remaining(&h), None);
    let r = c
        .post(e.url("/report"))
        .header("x-real-ip", greedy)
        .json(&open_request(&measurement(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = metrics_text(&c, &e).await;
    assert_eq!(metric(&m, "ooni_rate_limited_requests"), Some(2.0));
}

/// `/metrics` carries what an operator watches (per-plugin latency and failures,
/// versions, database batches, spool and connections), and with `log_format = "json"`
/// every log line is one JSON object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_json_logs_are_there_for_operators() {
    let Scratch { dir, data, db } = Scratch::new(Db::Sqlite).await;
    let log = dir.path().join("engine.log");
    let e = Engine::start_logging(
        &data,
        &db.url,
        &[
            ("OONI_LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
            ("OONI_ADMIN_TOKEN", "t0ken"),
        ],
        Some(&log),
    );
    let c = client();
    let mut uids = Vec::new();
    for i in 0..3 {
        uids.push(submit_measurement(&c, &e, &measurement(i)).await);
    }
    wait_all_known(&db.store().await, &uids, Duration::from_secs(30)).await;
    let m = metrics_text(&c, &e).await;
    let sample = |prefix: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(m.contains("ooni_plugin_info{plugin=\""), "{m}");
    assert!(m.contains("ooni_fingerprints_info{version=\""), "{m}");
    assert_eq!(sample("ooni_plugin_score_seconds_count{"), 3.0, "{m}");
    assert_eq!(sample("ooni_plugin_calls_total{"), 3.0, "{m}");
    assert_eq!(sample("ooni_plugin_failures_total{"), 0.0, "{m}");
    // Each upload scored once: the start-up scan, running beside the first uploads,
    // leaves them to the upload path.
    assert_eq!(metric(&m, "ooni_recovered_total"), Some(0.0), "{m}");
    assert_eq!(metric(&m, "ooni_rows_written_total"), Some(3.0), "{m}");
    assert_eq!(metric(&m, "ooni_db_batch_rows_sum"), Some(3.0), "{m}");
    assert!(metric(&m, "ooni_db_batch_seconds_count").unwrap() >= 1.0);
    assert_eq!(metric(&m, "ooni_uploads_accepted_total"), Some(3.0));
    assert_eq!(metric(&m, "ooni_spool_depth"), Some(3.0));
    assert!(metric(&m, "ooni_spool_oldest_hour_age_seconds").unwrap() < 7200.0);
    assert!(metric(&m, "ooni_http_connections_open").unwrap() >= 1.0);
    // Canned: the spool is empty again.
    let r = c
        .post(e.url("/admin/upload?all=true"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = metrics_text(&c, &e).await;
    assert_eq!(metric(&m, "ooni_spool_depth"), Some(0.0), "{m}");
    drop(e);

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "engine started" && l["level"] == "INFO"),
        "{text}"
    );
}
