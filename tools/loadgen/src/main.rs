//! Plays many concurrent probes against a running engine: each opens a report per
//! test, submits corpus measurements re-labelled with its own country, network and a
//! recent start time, and closes. Prints acknowledged uploads/s, latency quantiles and
//! the engine's own acknowledgement→row latency from `/metrics`.

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use rand::{seq::SliceRandom, Rng, SeedableRng};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "ooni-loadgen")]
struct Args {
    /// Base URL of the engine.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent probes.
    #[arg(long, default_value_t = 64)]
    probes: usize,
    /// How long to upload, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Stop after this many uploads in total (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_uploads: usize,
    /// The corpus of real measurements.
    #[arg(long, default_value = "../shared/corpus")]
    corpus: PathBuf,
    /// Send bodies zstd-compressed, as ooniprobe does.
    #[arg(long)]
    zstd: bool,
    /// Seed for the choice of countries, networks and measurements.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Query mode: instead of uploading, every client GETs this path (e.g.
    /// `/api/v1/measurements?limit=10`) as fast as it is answered.
    #[arg(long)]
    get: Option<String>,
}

const COUNTRIES: [&str; 12] = [
    "IT", "IR", "RU", "US", "BR", "IN", "TR", "CN", "DE", "MM", "EG", "VE",
];

/// Corpus measurements that OONI would store a row for, parsed.
fn load_corpus(root: &std::path::Path) -> anyhow::Result<Vec<Value>> {
    let dir = root.join("measurements");
    let mut out = Vec::new();
    for d in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let d = d?.path();
        for f in std::fs::read_dir(&d)? {
            let f = f?.path();
            let rel = f.strip_prefix(&dir)?;
            let expected: Value =
                serde_json::from_slice(&std::fs::read(root.join("expected/fastpath").join(rel))?)?;
            if expected["dropped"] == json!(true) {
                continue;
            }
            let m: Value = serde_json::from_slice(&std::fs::read(&f)?)?;
            if m["probe_asn"]
                .as_str()
                .is_some_and(|a| a.starts_with("AS0"))
            {
                continue;
            }
            out.push(m);
        }
    }
    if out.is_empty() {
        bail!("no usable measurements under {}", dir.display());
    }
    Ok(out)
}

struct Probe {
    /// (report id, body) per upload this probe cycles through.
    uploads: Vec<(String, Bytes)>,
}

async fn setup_probe(
    c: &reqwest::Client,
    base: &str,
    corpus: &[Value],
    rng: &mut rand::rngs::StdRng,
    zstd: bool,
) -> anyhow::Result<Probe> {
    let cc = COUNTRIES[rng.gen_range(0..COUNTRIES.len())];
    let asn = format!("AS{}", rng.gen_range(1000..65000));
    let mut uploads = Vec::new();
    let mut picks: Vec<&Value> = corpus.iter().collect();
    picks.shuffle(rng);
    for m in picks.into_iter().take(8) {
        let test_name = m["test_name"].as_str().unwrap_or("web_connectivity");
        let open = json!({
            "data_format_version": "0.2.0", "format": "json", "probe_cc": cc, "probe_asn": asn,
            "software_name": "ooni-loadgen", "software_version": env!("CARGO_PKG_VERSION"),
            "test_name": test_name, "test_start_time": "2026-01-01 00:00:00", "test_version": "0.0.1",
        });
        let r: Value = c
            .post(format!("{base}/report"))
            .json(&open)
            .send()
            .await?
            .json()
            .await?;
        let rid = r["report_id"].as_str().context("no report_id")?.to_owned();
        let mut content = m.clone();
        content["report_id"] = json!(rid);
        content["probe_cc"] = json!(cc);
        content["probe_asn"] = json!(asn);
        let start = chrono_like_now_minus(rng.gen_range(0..3600));
        content["measurement_start_time"] = json!(start);
        let body = serde_json::to_vec(&json!({"format": "json", "content": content}))?;
        let body = if zstd {
            zstd::encode_all(&body[..], 3)?
        } else {
            body
        };
        uploads.push((rid, Bytes::from(body)));
    }
    Ok(Probe { uploads })
}

/// Where the upload loop connects: a plain-HTTP base URL's address, its `Host`, and the
/// path the engine's routes sit under.
#[derive(Clone)]
struct Target {
    addr: String,
    host: String,
    prefix: String,
}

fn target_of(url: &str) -> anyhow::Result<Target> {
    let uri: hyper::Uri = url.parse().context("--url is not a URL")?;
    if uri.scheme_str() != Some("http") {
        bail!("the upload loop speaks plain HTTP: --url must start with http://");
    }
    let authority = uri.authority().context("--url has no host")?;
    Ok(Target {
        addr: format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        ),
        host: authority.as_str().to_owned(),
        prefix: uri.path().trim_end_matches('/').to_owned(),
    })
}

/// A probe's keep-alive connection; dropping it closes the socket.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    task: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connect(target: &Target) -> anyhow::Result<Connection> {
    let stream = tokio::net::TcpStream::connect(&target.addr).await?;
    stream.set_nodelay(true)?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    Ok(Connection {
        sender,
        task: tokio::spawn(connection),
    })
}

/// POSTs `body` on the probe's keep-alive connection, opening one when there is none
/// (or the last failed), as a probe does. Returns the status and the whole answer.
/// A request the engine never received (it closed the kept-alive connection first) is
/// sent once more on a new connection, as a pooled client does. A bare HTTP/1
/// connection rather than a pooled client: the tool shares the cores with the engine
/// it measures, and reqwest cost it 90 µs of CPU an upload.
async fn post(
    conn: &mut Option<Connection>,
    target: &Target,
    path: &str,
    body: Bytes,
    zstd: bool,
) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
    let exchange = async {
        for attempt in 0..2 {
            let c = match conn {
                Some(c) if !c.sender.is_closed() => c,
                _ => conn.insert(connect(target).await?),
            };
            let mut req = hyper::Request::post(format!("{}{path}", target.prefix))
                .header(hyper::header::HOST, &target.host);
            if zstd {
                req = req.header(hyper::header::CONTENT_ENCODING, "zstd");
            }
            let sent = match c.sender.ready().await {
                Ok(()) => {
                    c.sender
                        .send_request(req.body(Full::new(body.clone()))?)
                        .await
                }
                Err(e) => Err(e),
            };
            match sent {
                Ok(resp) => {
                    let status = resp.status();
                    let answer = resp.into_body().collect().await?.to_bytes();
                    return anyhow::Ok((status, answer));
                }
                Err(e) if attempt == 0 && (e.is_canceled() || e.is_closed()) => *conn = None,
                Err(e) => return Err(e.into()),
            }
        }
        bail!("the engine closed two connections before taking the request")
    };
    // As the pooled client did: an engine that stops answering fails the upload.
    let answer = match tokio::time::timeout(Duration::from_secs(30), exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(anyhow::anyhow!("no answer within 30 s")),
    };
    if answer.is_err() {
        *conn = None;
    }
    answer
}

/// UTC now minus `secs`, as `YYYY-MM-DD HH:MM:SS`, without a date crate.
fn chrono_like_now_minus(secs: u64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(secs);
    let (days, rem) = (t / 86_400, t % 86_400);
    // Civil-from-days (proleptic Gregorian).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Query mode: `clients` loops of GET `path` for `seconds`; answers by status.
async fn query_load(args: &Args, path: &str) -> anyhow::Result<()> {
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(args.probes)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("{}{path}", args.url);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.probes {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut limited, mut errors) = (0usize, 0usize);
            while Instant::now() < deadline {
                let t = Instant::now();
                match c.get(&url).send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(_) => lat.push(t.elapsed().as_secs_f64()),
                        Err(_) => errors += 1,
                    },
                    Ok(r) if r.status() == 429 => limited += 1,
                    _ => errors += 1,
                }
            }
            (lat, limited, errors)
        }));
    }
    let (mut lat, mut limited, mut errors) = (Vec::new(), 0, 0);
    for t in tasks {
        let (l, r, e) = t.await?;
        lat.extend(l);
        limited += r;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "clients": args.probes,
            "path": path,
            "seconds": elapsed,
            "answered": lat.len(),
            "rate_limited": limited,
            "errors": errors,
            "requests_per_s": lat.len() as f64 / elapsed,
            "latency_ms": {"p50": quantile(&lat, 0.5) * 1e3, "p99": quantile(&lat, 0.99) * 1e3},
        })
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = args.get.clone() {
        return query_load(&args, &path).await;
    }
    let target = target_of(&args.url)?;
    let corpus = load_corpus(&args.corpus)?;
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(args.probes)
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut probes = Vec::new();
    for _ in 0..args.probes {
        probes.push(setup_probe(&c, &args.url, &corpus, &mut rng, args.zstd).await?);
    }
    let bytes_per_upload: f64 = probes
        .iter()
        .flat_map(|p| p.uploads.iter().map(|u| u.1.len() as f64))
        .sum::<f64>()
        / (probes.len() * 8) as f64;

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let budget = Arc::new(std::sync::atomic::AtomicUsize::new(
        if args.max_uploads == 0 {
            usize::MAX
        } else {
            args.max_uploads
        },
    ));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for probe in probes {
        let (target, zstd, budget) = (target.clone(), args.zstd, budget.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut conn = None;
            let mut i = 0;
            while Instant::now() < deadline {
                if budget
                    .fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |b| b.checked_sub(1),
                    )
                    .is_err()
                {
                    break;
                }
                let (rid, body) = &probe.uploads[i % probe.uploads.len()];
                i += 1;
                let t = Instant::now();
                let answer = post(
                    &mut conn,
                    &target,
                    &format!("/report/{rid}"),
                    body.clone(),
                    zstd,
                )
                .await;
                let ok = answer.is_ok_and(|(status, reply)| {
                    status.is_success()
                        && serde_json::from_slice::<Value>(&reply)
                            .is_ok_and(|v| v["measurement_uid"].is_string())
                });
                if ok {
                    lat.push(t.elapsed().as_secs_f64());
                } else {
                    errors += 1;
                }
                if i % 8 == 0 {
                    let close = format!("/report/{rid}/close");
                    let _ = post(&mut conn, &target, &close, Bytes::new(), false).await;
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);

    // Let the last batches land, then read the engine's own ack→row figures.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = c
        .get(format!("{}/metrics", args.url))
        .send()
        .await?
        .text()
        .await?;
    let ack_to_row = |q: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("ooni_ack_to_row_seconds{{quantile=\"{q}\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let groups = metrics
        .lines()
        .find(|l| l.starts_with("ooni_spool_sync_groups "))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("?");
    let report = json!({
        "probes": args.probes,
        "seconds": elapsed,
        "acknowledged": lat.len(),
        "errors": errors,
        "uploads_per_s": lat.len() as f64 / elapsed,
        "mb_per_s": lat.len() as f64 * bytes_per_upload / elapsed / 1e6,
        "bytes_per_upload": bytes_per_upload,
        "latency_ms": {"p50": quantile(&lat, 0.5) * 1e3, "p90": quantile(&lat, 0.9) * 1e3, "p99": quantile(&lat, 0.99) * 1e3},
        "ack_to_row_ms": {"p50": ack_to_row("0.5") * 1e3, "p99": ack_to_row("0.99") * 1e3},
        "spool_sync_groups": groups,
    });
    println!("{report}");
    Ok(())
}
