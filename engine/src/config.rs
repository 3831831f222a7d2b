//! One TOML file, overridden by `OONI_*` environment variables, overridden by flags.
//! Every key has a default so that `ooni-engine serve` runs with no setup.

use crate::cans::CanOptions;
use crate::objstore::{LocalStore, ObjectStore, ObjectStoreError, S3Settings, S3Store};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value {value:?} for environment variable {var}")]
    Env { var: &'static str, value: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Root of everything kept on local disk: the spool, and the SQLite file by default.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; empty means `sqlite://{data_dir}/ooni.sqlite`.
    pub database_url: String,
    /// The `n{collector_id}` part of report ids and can names.
    pub collector_id: String,
    /// The address probes are told to upload to (`/api/v1/collectors`).
    pub public_url: String,
    /// Largest request body accepted, compressed or not (413 above it).
    pub max_body_bytes: usize,
    /// Largest measurement accepted after zstd decompression (413 above it).
    pub max_decompressed_bytes: usize,
    /// Scoring threads; 0 means one per core.
    pub scoring_workers: usize,
    /// Measurements held in memory between the spool and the scorers; beyond it they
    /// wait in the spool and are picked up by the catch-up scan.
    pub scoring_queue: usize,
    /// Most spool writes that share one filesystem sync.
    pub spool_group_commit: usize,
    /// Most rows written to the database in one transaction.
    pub db_batch_rows: usize,
    /// Longest a scored row waits for its batch to fill, in milliseconds; unset, it
    /// depends on the database (`db_batch_wait`).
    pub db_batch_wait_ms: Option<u64>,
    pub log_format: LogFormat,
    /// Directory of scorer plugins (`*.wasm`, `*.wat`, `*.toml`), watched for changes;
    /// they override the bundled ones. Empty: bundled plugins only.
    pub plugins_dir: PathBuf,
    /// Where compiled WebAssembly scorers are kept between starts, so a restart does
    /// not compile them again; empty means `{data_dir}/plugin-cache`. It holds native
    /// code the engine runs: only whoever may replace the binary should write to it.
    pub plugin_cache_dir: PathBuf,
    /// Wall-clock limit of one WebAssembly scorer call, in milliseconds.
    pub plugin_timeout_ms: u64,
    /// Memory cap of one WebAssembly scorer instance, in MiB.
    pub plugin_memory_mb: usize,
    /// Bearer token for `/admin/*`; those routes are refused while it is empty.
    pub admin_token: String,
    /// Directory of blocking-fingerprint TOML files, watched for changes.
    pub fingerprints_dir: PathBuf,
    /// `strict` (every pattern type and country rule honoured) or `compat` (OONI
    /// fastpath 0.92's matching, quirks included, for byte-equal scores).
    pub fingerprint_mode: String,
    /// Where cans go: empty for the local directory `{data_dir}/objects`, another
    /// directory path (or `file:///DIR`), or `s3://BUCKET[/PREFIX]`.
    pub object_store: String,
    /// S3 endpoint, e.g. `http://127.0.0.1:9000` for MinIO; empty for AWS.
    pub s3_endpoint: String,
    pub s3_region: String,
    pub s3_access_key_id: String,
    pub s3_secret_access_key: String,
    /// Path-style addressing (`endpoint/bucket/key`), which MinIO, Garage and Ceph need.
    pub s3_path_style: bool,
    /// Seconds between uploader passes inside `serve`; 0 turns the schedule off.
    pub upload_interval_secs: u64,
    /// A can is closed once its compressed postcan passes this size (OONI: 20 MB).
    pub can_max_bytes: usize,
    /// … or once the measurements in it pass this many bytes uncompressed, which
    /// bounds what reading one line of a can back costs.
    pub can_max_raw_bytes: usize,
    /// Memory for decompressed cans kept to serve measurement bodies, in MiB.
    pub can_cache_mb: usize,
    /// gzip level of cans: 1 (fastest) to 9 (smallest).
    pub can_gzip_level: u32,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Longest wait for a request's head, idle keep-alive time included, in seconds.
    pub header_timeout_secs: u64,
    /// Largest request head (request line and headers), in bytes; 431 above it.
    pub max_header_bytes: usize,
    /// Longest wait for an upload's body, in seconds; 408 after it.
    pub body_timeout_secs: u64,
    /// Longest wait, on SIGTERM, for in-flight requests and then for batched rows,
    /// in seconds each. What is cut is in the spool and is scored at the next start.
    pub shutdown_timeout_secs: u64,
    /// Uploads are refused with 503 while the spool's filesystem has less free space
    /// than this, in MiB, so that what was acknowledged always fits.
    pub spool_min_free_mb: u64,
    /// Bytes of measurements held between the spool and the scorers, in MiB; beyond
    /// it (or `scoring_queue` measurements) they wait in the spool.
    pub scoring_queue_mb: usize,
    /// Meter the query API per client address (spec/api.md §5).
    pub rate_limit: bool,
    /// Request-time budget per client address, in seconds, per day / week / month.
    pub rate_limit_day_secs: f64,
    pub rate_limit_week_secs: f64,
    pub rate_limit_month_secs: f64,
    /// Client addresses never metered (Explorer's server, monitoring).
    pub rate_limit_allow: Vec<String>,
    /// Paths never metered: exact, or a prefix when they end in `*`.
    pub rate_limit_unmetered: Vec<String>,
    /// Header holding the client address, set by a trusted reverse proxy (for
    /// example `X-Real-Ip`); empty uses the connection's address. Only set this behind
    /// a proxy that overwrites the header, or clients choose their own address.
    pub client_ip_header: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            database_url: String::new(),
            collector_id: "1".to_owned(),
            public_url: String::new(),
            max_body_bytes: 20 * 1024 * 1024,
            max_decompressed_bytes: 40 * 1024 * 1024,
            scoring_workers: 0,
            scoring_queue: 4096,
            spool_group_commit: 512,
            db_batch_rows: 5000,
            db_batch_wait_ms: None,
            log_format: LogFormat::Text,
            plugins_dir: PathBuf::from("plugins"),
            plugin_cache_dir: PathBuf::new(),
            plugin_timeout_ms: 1000,
            plugin_memory_mb: 256,
            admin_token: String::new(),
            fingerprints_dir: PathBuf::from("fingerprints"),
            fingerprint_mode: "strict".to_owned(),
            object_store: String::new(),
            s3_endpoint: String::new(),
            s3_region: "us-east-1".to_owned(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_path_style: true,
            upload_interval_secs: 3600,
            can_max_bytes: 20_000_000,
            can_max_raw_bytes: 64 * 1024 * 1024,
            can_cache_mb: 256,
            can_gzip_level: 6,
            max_connections: 4096,
            header_timeout_secs: 30,
            max_header_bytes: 64 * 1024,
            body_timeout_secs: 60,
            shutdown_timeout_secs: 30,
            spool_min_free_mb: 256,
            scoring_queue_mb: 256,
            rate_limit: true,
            rate_limit_day_secs: 4000.0,
            rate_limit_week_secs: 20_000.0,
            rate_limit_month_secs: 60_000.0,
            rate_limit_allow: Vec::new(),
            rate_limit_unmetered: [
                "/",
                "/health",
                "/metrics",
                "/report*",
                "/api/v1/check-in",
                "/api/v1/collectors",
                "/api/v1/test-helpers",
                "/api/v1/test-list/urls",
                "/admin/*",
            ]
            .map(str::to_owned)
            .to_vec(),
            client_ip_header: String::new(),
        }
    }
}

fn env_parse<T: std::str::FromStr>(var: &'static str, into: &mut T) -> Result<(), ConfigError> {
    if let Some(v) = env_value(var)? {
        *into = v;
    }
    Ok(())
}

/// `var`'s value parsed, `None` when it is not set.
fn env_value<T: std::str::FromStr>(var: &'static str) -> Result<Option<T>, ConfigError> {
    match std::env::var(var) {
        Ok(value) => match value.parse() {
            Ok(v) => Ok(Some(v)),
            Err(_) => Err(ConfigError::Env { var, value }),
        },
        Err(_) => Ok(None),
    }
}

/// A comma-separated list.
fn env_list(var: &'static str, into: &mut Vec<String>) {
    if let Ok(value) = std::env::var(var) {
        *into = value
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
    }
}

impl Config {
    /// Reads the file if one is given, then applies `OONI_*` variables.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.to_owned(),
                    message: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        env_parse("OONI_LISTEN", &mut cfg.listen)?;
        env_parse("OONI_DATA_DIR", &mut cfg.data_dir)?;
        env_parse("OONI_DATABASE_URL", &mut cfg.database_url)?;
        env_parse("OONI_COLLECTOR_ID", &mut cfg.collector_id)?;
        env_parse("OONI_PUBLIC_URL", &mut cfg.public_url)?;
        env_parse("OONI_MAX_BODY_BYTES", &mut cfg.max_body_bytes)?;
        env_parse(
            "OONI_MAX_DECOMPRESSED_BYTES",
            &mut cfg.max_decompressed_bytes,
        )?;
        env_parse("OONI_SCORING_WORKERS", &mut cfg.scoring_workers)?;
        env_parse("OONI_SCORING_QUEUE", &mut cfg.scoring_queue)?;
        env_parse("OONI_SPOOL_GROUP_COMMIT", &mut cfg.spool_group_commit)?;
        env_parse("OONI_DB_BATCH_ROWS", &mut cfg.db_batch_rows)?;
        if let Some(ms) = env_value("OONI_DB_BATCH_WAIT_MS")? {
            cfg.db_batch_wait_ms = Some(ms);
        }
        env_parse("OONI_PLUGINS_DIR", &mut cfg.plugins_dir)?;
        env_parse("OONI_PLUGIN_CACHE_DIR", &mut cfg.plugin_cache_dir)?;
        env_parse("OONI_PLUGIN_TIMEOUT_MS", &mut cfg.plugin_timeout_ms)?;
        env_parse("OONI_PLUGIN_MEMORY_MB", &mut cfg.plugin_memory_mb)?;
        env_parse("OONI_ADMIN_TOKEN", &mut cfg.admin_token)?;
        env_parse("OONI_FINGERPRINTS_DIR", &mut cfg.fingerprints_dir)?;
        env_parse("OONI_FINGERPRINT_MODE", &mut cfg.fingerprint_mode)?;
        env_parse("OONI_OBJECT_STORE", &mut cfg.object_store)?;
        env_parse("OONI_S3_ENDPOINT", &mut cfg.s3_endpoint)?;
        env_parse("OONI_S3_REGION", &mut cfg.s3_region)?;
        env_parse("OONI_S3_ACCESS_KEY_ID", &mut cfg.s3_access_key_id)?;
        env_parse("OONI_S3_SECRET_ACCESS_KEY", &mut cfg.s3_secret_access_key)?;
        env_parse("OONI_S3_PATH_STYLE", &mut cfg.s3_path_style)?;
        env_parse("OONI_UPLOAD_INTERVAL_SECS", &mut cfg.upload_interval_secs)?;
        env_parse("OONI_CAN_MAX_BYTES", &mut cfg.can_max_bytes)?;
        env_parse("OONI_CAN_MAX_RAW_BYTES", &mut cfg.can_max_raw_bytes)?;
        env_parse("OONI_CAN_CACHE_MB", &mut cfg.can_cache_mb)?;
        env_parse("OONI_CAN_GZIP_LEVEL", &mut cfg.can_gzip_level)?;
        env_parse("OONI_MAX_CONNECTIONS", &mut cfg.max_connections)?;
        env_parse("OONI_HEADER_TIMEOUT_SECS", &mut cfg.header_timeout_secs)?;
        env_parse("OONI_MAX_HEADER_BYTES", &mut cfg.max_header_bytes)?;
        env_parse("OONI_BODY_TIMEOUT_SECS", &mut cfg.body_timeout_secs)?;
        env_parse("OONI_SHUTDOWN_TIMEOUT_SECS", &mut cfg.shutdown_timeout_secs)?;
        env_parse("OONI_SPOOL_MIN_FREE_MB", &mut cfg.spool_min_free_mb)?;
        env_parse("OONI_SCORING_QUEUE_MB", &mut cfg.scoring_queue_mb)?;
        env_parse("OONI_RATE_LIMIT", &mut cfg.rate_limit)?;
        env_parse("OONI_RATE_LIMIT_DAY_SECS", &mut cfg.rate_limit_day_secs)?;
        env_parse("OONI_RATE_LIMIT_WEEK_SECS", &mut cfg.rate_limit_week_secs)?;
        env_parse("OONI_RATE_LIMIT_MONTH_SECS", &mut cfg.rate_limit_month_secs)?;
        env_list("OONI_RATE_LIMIT_ALLOW", &mut cfg.rate_limit_allow);
        env_list("OONI_RATE_LIMIT_UNMETERED", &mut cfg.rate_limit_unmetered);
        env_parse("OONI_CLIENT_IP_HEADER", &mut cfg.client_ip_header)?;
        cfg.quota_settings()?;
        cfg.fingerprint_mode()?;
        if let Ok(v) = std::env::var("OONI_LOG_FORMAT") {
            cfg.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError::Env {
                        var: "OONI_LOG_FORMAT",
                        value: v,
                    })
                }
            };
        }
        Ok(cfg)
    }

    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("ooni.sqlite").display())
        } else {
            self.database_url.clone()
        }
    }

    /// Longest a row waits for its batch. A commit writes every index page its rows
    /// touch, so rows of one commit share those pages: on SQLite, whose writer shares
    /// the engine's cores, 250 ms batches cost 96 µs of CPU a row under load against
    /// 173 for 20 ms ones (tools/loadgen, 2,300 uploads/s). PostgreSQL writes in its own
    /// processes and showed no such gain, so its rows keep landing within about 0.1 s.
    pub fn db_batch_wait(&self, sqlite: bool) -> std::time::Duration {
        let default = if sqlite { 250 } else { 20 };
        std::time::Duration::from_millis(self.db_batch_wait_ms.unwrap_or(default))
    }

    pub fn public_url(&self) -> String {
        if self.public_url.is_empty() {
            format!("http://{}", self.listen)
        } else {
            self.public_url.clone()
        }
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir.join("spool")
    }

    /// The object store the configuration names.
    pub fn object_store(&self) -> Result<ObjectStore, ObjectStoreError> {
        let url = self.object_store.trim();
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(ObjectStoreError::Url(url.to_owned()));
            }
            return Ok(ObjectStore::S3(S3Store::new(S3Settings {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
                endpoint: self.s3_endpoint.clone(),
                region: self.s3_region.clone(),
                access_key_id: self.s3_access_key_id.clone(),
                secret_access_key: self.s3_secret_access_key.clone(),
                path_style: self.s3_path_style,
            })));
        }
        let dir = if url.is_empty() {
            self.data_dir.join("objects")
        } else if let Some(p) = url.strip_prefix("file://") {
            PathBuf::from(p)
        } else if url.contains("://") {
            return Err(ObjectStoreError::Url(url.to_owned()));
        } else {
            PathBuf::from(url)
        };
        Ok(ObjectStore::Local(LocalStore::new(dir)))
    }

    pub fn can_options(&self) -> CanOptions {
        CanOptions {
            max_compressed: self.can_max_bytes.max(1),
            max_raw: self.can_max_raw_bytes.max(1),
            gzip_level: self.can_gzip_level.clamp(1, 9),
        }
    }

    /// Most bytes read back from one can (see `CanOptions::read_limit`).
    pub fn can_read_limit(&self) -> usize {
        self.can_options().read_limit(self.max_decompressed_bytes)
    }

    pub fn plugin_limits(&self) -> crate::scoring::wasm::Limits {
        crate::scoring::wasm::Limits {
            timeout: std::time::Duration::from_millis(self.plugin_timeout_ms.max(1)),
            memory_bytes: self.plugin_memory_mb.max(1) * 1024 * 1024,
        }
    }

    pub fn fingerprint_mode(&self) -> Result<ooni_core::fingerprints::Mode, ConfigError> {
        self.fingerprint_mode.parse().map_err(|_| ConfigError::Env {
            var: "fingerprint_mode (OONI_FINGERPRINT_MODE)",
            value: self.fingerprint_mode.clone(),
        })
    }

    pub fn plugin_cache_dir(&self) -> PathBuf {
        if self.plugin_cache_dir.as_os_str().is_empty() {
            self.data_dir.join("plugin-cache")
        } else {
            self.plugin_cache_dir.clone()
        }
    }

    pub fn plugins_dir(&self) -> Option<PathBuf> {
        (!self.plugins_dir.as_os_str().is_empty()).then(|| self.plugins_dir.clone())
    }

    /// The rate limiter's settings; `None` when it is off.
    pub fn quota_settings(
        &self,
    ) -> Result<Option<crate::api::ratelimit::QuotaSettings>, ConfigError> {
        use crate::api::ratelimit::QuotaSettings;
        if !self.rate_limit {
            return Ok(None);
        }
        let allow = self
            .rate_limit_allow
            .iter()
            .map(|a| {
                a.parse().map_err(|_| ConfigError::Env {
                    var: "rate_limit_allow (OONI_RATE_LIMIT_ALLOW)",
                    value: a.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        let client_ip_header = match self.client_ip_header.trim() {
            "" => None,
            h => Some(h.parse().map_err(|_| ConfigError::Env {
                var: "client_ip_header (OONI_CLIENT_IP_HEADER)",
                value: h.to_owned(),
            })?),
        };
        Ok(Some(QuotaSettings {
            buckets: QuotaSettings::ooni(
                self.rate_limit_day_secs,
                self.rate_limit_week_secs,
                self.rate_limit_month_secs,
            ),
            allow,
            unmetered: self.rate_limit_unmetered.clone(),
            client_ip_header,
            max_clients: 1 << 20,
        }))
    }

    pub fn server_limits(&self) -> crate::http::ServerLimits {
        use std::time::Duration;
        crate::http::ServerLimits {
            max_connections: self.max_connections.max(1),
            header_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
            max_header_bytes: self.max_header_bytes,
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
        }
    }

    pub fn scoring_workers(&self) -> usize {
        if self.scoring_workers > 0 {
            self.scoring_workers
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Config::load` of a file holding `toml`.
    fn load_toml(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, toml).unwrap();
        Config::load(Some(&p))
    }

    #[test]
    fn file_values_override_defaults_and_unknown_keys_are_refused() {
        let c = load_toml("listen = \"0.0.0.0:9000\"\ncollector_id = \"7\"\n").unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.collector_id, "7");
        assert_eq!(c.max_body_bytes, 20 * 1024 * 1024);
        let err = load_toml("lisen = \"0.0.0.0:9000\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn default_database_is_sqlite_under_the_data_dir() {
        let c = Config::default();
        assert_eq!(c.database_url(), "sqlite://data/ooni.sqlite");
    }

    #[test]
    fn row_batches_wait_longer_on_sqlite_unless_set() {
        use std::time::Duration;
        let c = load_toml("db_batch_rows = 7\n").unwrap();
        assert_eq!(c.db_batch_wait(true), Duration::from_millis(250));
        assert_eq!(c.db_batch_wait(false), Duration::from_millis(20));
        let c = load_toml("db_batch_wait_ms = 5\n").unwrap();
        assert_eq!(c.db_batch_wait(true), Duration::from_millis(5));
        assert_eq!(c.db_batch_wait(false), Duration::from_millis(5));
    }

    #[test]
    fn object_store_urls() {
        let mut c = Config::default();
        assert_eq!(c.object_store().unwrap().describe(), "local:data/objects");
        c.object_store = "s3://ooni-data/backups/".into();
        c.s3_endpoint = "http://127.0.0.1:9000".into();
        assert_eq!(
            c.object_store().unwrap().describe(),
            "s3://ooni-data/backups at http://127.0.0.1:9000"
        );
        c.object_store = "/srv/cans".into();
        assert_eq!(c.object_store().unwrap().describe(), "local:/srv/cans");
        for bad in ["s3://", "gs://bucket"] {
            c.object_store = bad.into();
            assert!(c.object_store().is_err(), "{bad}");
        }
    }
}
