//! The query API's quota, as OONI's API meters it (spec/api.md §5.1): each client
//! address has a budget of request time — wall-clock seconds spent serving it — in a
//! day, a week and a month bucket that refill continuously. A request is refused
//! with 429 while any bucket is empty; otherwise it is served, its time is taken
//! from every bucket, and `X-RateLimit-Remaining` says what is left of the lowest.
//! Probe routes, `/health` and allow-listed addresses are never metered.

use super::error::ApiError;
use super::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const DAY: f64 = 86_400.0;
/// Budget a client needs left to be served: buckets refill continuously, so an
/// emptied one holds a sliver again a moment later; OONI's newer limiter counts in
/// units of 10 ms for the same reason.
const ADMIT_MIN_SECS: f64 = 0.01;
/// Independent locks, so that concurrent clients rarely wait for each other.
const SHARDS: usize = 16;

#[derive(Debug, Clone)]
pub struct QuotaSettings {
    /// (budget in seconds, period in seconds) per bucket.
    pub buckets: Vec<(f64, f64)>,
    pub allow: Vec<IpAddr>,
    /// Paths never metered: exact, or a prefix when written with a trailing `*`.
    pub unmetered: Vec<String>,
    /// Take the client address from this header (set by a trusted reverse proxy);
    /// `None` uses the socket's peer address.
    pub client_ip_header: Option<HeaderName>,
    /// Clients remembered before refilled ones are forgotten early.
    pub max_clients: usize,
}

impl QuotaSettings {
    /// OONI's buckets: 4,000 s a day, 20,000 s a week, 60,000 s a month.
    pub fn ooni(day: f64, week: f64, month: f64) -> Vec<(f64, f64)> {
        vec![(day, DAY), (week, 7.0 * DAY), (month, 30.0 * DAY)]
    }
}

struct Client {
    remaining: Vec<f64>,
    updated: Instant,
}

pub struct Quotas {
    settings: QuotaSettings,
    allow: HashSet<IpAddr>,
    shards: Vec<Mutex<HashMap<IpAddr, Client>>>,
    shard_cap: usize,
    pub rejected: AtomicU64,
}

pub enum Verdict {
    Unmetered,
    Refused,
    Metered(IpAddr),
}

impl Quotas {
    pub fn new(settings: QuotaSettings) -> Quotas {
        Quotas {
            allow: settings.allow.iter().copied().collect(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_cap: (settings.max_clients / SHARDS).max(2),
            settings,
            rejected: AtomicU64::new(0),
        }
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, Client>> {
        let h = match ip {
            IpAddr::V4(a) => u32::from(*a) as usize,
            IpAddr::V6(a) => (u128::from(*a) >> 64) as usize ^ u128::from(*a) as usize,
        };
        &self.shards[h.wrapping_mul(0x9E37_79B9) >> 7 & (SHARDS - 1)]
    }

    fn unmetered_path(&self, path: &str) -> bool {
        self.settings
            .unmetered
            .iter()
            .any(|p| match p.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => p == path,
            })
    }

    /// The client's address: the configured header's first entry when present and
    /// valid, else the socket's.
    pub fn client_ip(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        if let Some(h) = &self.settings.client_ip_header {
            let from_header = headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok());
            if from_header.is_some() {
                return from_header;
            }
        }
        peer
    }

    /// Decides before the request runs.
    pub fn admit(&self, path: &str, ip: Option<IpAddr>, now: Instant) -> Verdict {
        let Some(ip) = ip else {
            return Verdict::Unmetered;
        };
        if self.unmetered_path(path) || self.allow.contains(&ip) {
            return Verdict::Unmetered;
        }
        if self.lowest(ip, now) < ADMIT_MIN_SECS {
            self.rejected.fetch_add(1, Relaxed);
            return Verdict::Refused;
        }
        Verdict::Metered(ip)
    }

    fn refill(&self, c: &mut Client, now: Instant) {
        let dt = now.saturating_duration_since(c.updated).as_secs_f64();
        for (r, (limit, period)) in c.remaining.iter_mut().zip(&self.settings.buckets) {
            *r = (*r + dt * limit / period).min(*limit);
        }
        c.updated = now;
    }

    fn lowest(&self, ip: IpAddr, now: Instant) -> f64 {
        let Ok(mut shard) = self.shard(&ip).lock() else {
            return f64::INFINITY;
        };
        match shard.get_mut(&ip) {
            Some(c) => {
                self.refill(c, now);
                c.remaining.iter().copied().fold(f64::INFINITY, f64::min)
            }
            None => self.full_lowest(),
        }
    }

    fn full_lowest(&self) -> f64 {
        self.settings
            .buckets
            .iter()
            .map(|b| b.0)
            .fold(f64::INFINITY, f64::min)
    }

    /// Takes `cost` from every bucket of `ip`; returns what is left of the lowest.
    pub fn charge(&self, ip: IpAddr, cost: Duration, now: Instant) -> f64 {
        let Ok(mut shard) = self.shard(&ip).lock() else {
            return 0.0;
        };
        if shard.len() >= self.shard_cap && !shard.contains_key(&ip) {
            self.forget_refilled(&mut shard, now);
        }
        let c = shard.entry(ip).or_insert_with(|| Client {
            remaining: self.settings.buckets.iter().map(|b| b.0).collect(),
            updated: now,
        });
        self.refill(c, now);
        let cost = cost.as_secs_f64();
        for r in c.remaining.iter_mut() {
            *r = (*r - cost).max(0.0);
        }
        c.remaining.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// Drops clients whose buckets have refilled: they are the same as unknown ones.
    /// If a flood of addresses still fills the shard, the oldest half goes: those
    /// clients get a fresh budget, which bounds memory at a small cost in accuracy.
    fn forget_refilled(&self, shard: &mut HashMap<IpAddr, Client>, now: Instant) {
        shard.retain(|_, c| {
            self.refill(c, now);
            c.remaining
                .iter()
                .zip(&self.settings.buckets)
                .any(|(r, b)| *r < b.0)
        });
        if shard.len() >= self.shard_cap {
            let mut ages: Vec<Instant> = shard.values().map(|c| c.updated).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            shard.retain(|_, c| c.updated > cutoff);
        }
    }

    pub fn clients(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

/// The middleware: admit, run, charge, and tell the client what is left.
pub async fn limit(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(quotas) = st.quotas.as_deref() else {
        return next.run(req).await;
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ip = quotas.client_ip(req.headers(), peer);
    let started = Instant::now();
    match quotas.admit(req.uri().path(), ip, started) {
        Verdict::Unmetered => next.run(req).await,
        Verdict::Refused => {
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota exceeded",
                "rate_limited",
                "this address has used its query time budget; it refills over the day",
            )
            .into_response();
            r.headers_mut()
                .insert(REMAINING.clone(), HeaderValue::from_static("0"));
            r
        }
        Verdict::Metered(ip) => {
            let mut r = next.run(req).await;
            let left = quotas.charge(ip, started.elapsed(), Instant::now());
            r.headers_mut()
                .insert(REMAINING.clone(), HeaderValue::from(left.floor() as u64));
            r
        }
    }
}

static REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(day: f64) -> Quotas {
        Quotas::new(QuotaSettings {
            buckets: QuotaSettings::ooni(day, day * 5.0, day * 15.0),
            allow: vec!["10.0.0.9".parse().unwrap()],
            unmetered: vec!["/health".into(), "/report*".into()],
            client_ip_header: Some(HeaderName::from_static("x-real-ip")),
            max_clients: 1024,
        })
    }

    #[test]
    fn budget_is_spent_then_refused_then_refilled() {
        let q = quotas(10.0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(matches!(
            q.admit("/api/v1/measurements", Some(ip), t0),
            Verdict::Metered(_)
        ));
        let left = q.charge(ip, Duration::from_secs(4), t0);
        assert!((left - 6.0).abs() < 1e-9, "{left}");
        q.charge(ip, Duration::from_secs(7), t0);
        assert!(matches!(
            q.admit("/api/v1/measurements", Some(ip), t0),
            Verdict::Refused
        ));
        assert_eq!(q.rejected.load(Relaxed), 1);
        // A tenth of a day refills a tenth of the daily budget.
        let later = t0 + Duration::from_secs_f64(DAY / 10.0);
        assert!(q.lowest(ip, later) > 0.9 && q.lowest(ip, later) <= 1.0 + 1e-9);
        assert!(matches!(
            q.admit("/api/v1/measurements", Some(ip), later),
            Verdict::Metered(_)
        ));
    }

    #[test]
    fn unmetered_paths_and_allowed_addresses_pass() {
        let q = quotas(0.0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        assert!(matches!(
            q.admit("/health", Some(ip), now),
            Verdict::Unmetered
        ));
        assert!(matches!(
            q.admit("/report/x", Some(ip), now),
            Verdict::Unmetered
        ));
        assert!(matches!(
            q.admit("/healthz", Some(ip), now),
            Verdict::Refused
        ));
        let allowed = "10.0.0.9".parse().unwrap();
        assert!(matches!(
            q.admit("/api/v1/measurements", Some(allowed), now),
            Verdict::Unmetered
        ));
    }

    #[test]
    fn client_address_comes_from_the_trusted_header_when_valid() {
        let q = quotas(1.0);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(q.client_ip(&h, Some(peer)), Some(peer));
        h.insert(
            "x-real-ip",
            HeaderValue::from_static("203.0.113.5, 10.0.0.1"),
        );
        assert_eq!(q.client_ip(&h, Some(peer)), "203.0.113.5".parse().ok());
        h.insert("x-real-ip", HeaderValue::from_static("not an address"));
        assert_eq!(q.client_ip(&h, Some(peer)), Some(peer));
    }

    #[test]
    fn a_flood_of_addresses_is_bounded() {
        let q = quotas(100.0);
        let now = Instant::now();
        for i in 0..20_000u32 {
            q.charge(IpAddr::from(i.to_be_bytes()), Duration::from_millis(1), now);
        }
        assert!(q.clients() <= 1024, "{}", q.clients());
    }
}
