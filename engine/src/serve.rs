//! `ooni-engine serve`: wires the spool, the scoring pipeline, the store and the API,
//! recovers what a previous run left unscored, and drains on SIGTERM / Ctrl-C.

use crate::api::{router, AppState, Shared};
use crate::bodies::Bodies;
use crate::config::Config;
use crate::fingerprints::{FingerprintSet, Fingerprints};
use crate::http::{ConnectionStats, Drained};
use crate::ingest::spool::Spool;
use crate::metrics::Metrics;
use crate::scoring::registry::{Registry, RegistryOptions};
use crate::scoring::{Pipeline, PipelineConfig};
use crate::store::Store;
use crate::uploader::{RetryPolicy, Uploader};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

pub async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let url = cfg.database_url();
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("connecting to the database ({})", redact(&url)))?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

/// Hides a password in a database URL for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].find(':') {
            Some(c) => format!("{}:***{}", &url[..s + 3 + c], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// The blocking fingerprints of the fingerprints directory (created if missing).
pub fn open_fingerprints(cfg: &Config) -> anyhow::Result<Arc<Fingerprints>> {
    let dir = cfg.fingerprints_dir.clone();
    if dir.as_os_str().is_empty() {
        return Ok(Fingerprints::new(FingerprintSet::empty()));
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating fingerprints directory {}", dir.display()))?;
    Ok(Fingerprints::from_dir(dir, cfg.fingerprint_mode()?)?)
}

/// The scorer plugins: bundled ones, overridden by the plugins directory.
pub fn open_registry(
    cfg: &Config,
    fingerprints: Arc<Fingerprints>,
) -> anyhow::Result<Arc<Registry>> {
    let dir = cfg.plugins_dir();
    if let Some(d) = &dir {
        std::fs::create_dir_all(d)
            .with_context(|| format!("creating plugins directory {}", d.display()))?;
    }
    Registry::new(
        RegistryOptions {
            dir,
            limits: cfg.plugin_limits(),
            bundled: true,
            cache_dir: Some(cfg.plugin_cache_dir()),
        },
        fingerprints,
    )
}

/// The uploader of the configured spool and object store.
pub fn open_uploader(
    cfg: &Config,
    store: Store,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<Uploader>> {
    let objects = cfg.object_store().context("configuring the object store")?;
    Ok(Arc::new(Uploader::new(
        cfg.spool_dir().join("incoming"),
        store,
        objects,
        cfg.collector_id.clone(),
        cfg.can_options(),
        RetryPolicy::default(),
        metrics,
    )))
}

pub async fn run(mut cfg: Config) -> anyhow::Result<()> {
    raise_open_file_limit();
    let store = open_store(&cfg).await?;
    let spool = Spool::open(&cfg.spool_dir(), cfg.spool_group_commit)
        .with_context(|| format!("opening the spool at {}", cfg.spool_dir().display()))?;
    let metrics = Arc::new(Metrics::default());
    let uploader = open_uploader(&cfg, store.clone(), metrics.clone())?;
    let bodies = Arc::new(Bodies::new(
        spool.clone(),
        store.clone(),
        uploader.objects().clone(),
        cfg.can_cache_mb * 1024 * 1024,
        cfg.can_read_limit(),
        metrics.clone(),
    ));
    let schedule = (cfg.upload_interval_secs > 0).then(|| {
        uploader
            .clone()
            .spawn_schedule(Duration::from_secs(cfg.upload_interval_secs))
    });
    let fingerprints = open_fingerprints(&cfg)?;
    let _fingerprint_watcher = fingerprints
        .watch()
        .context("watching the fingerprints directory")?;
    let registry = open_registry(&cfg, fingerprints.clone())?;
    // Entries of plugins since replaced would otherwise pile up release after release.
    // Only the server prunes: a one-shot command with other plugins must not remove
    // what a running server uses.
    if let Some(cache) = registry.runtime().cache() {
        let pruned = cache.prune();
        if pruned > 0 {
            tracing::info!(pruned, "unused compiled plugins removed from the cache");
        }
    }
    let _watcher = registry.watch().context("watching the plugins directory")?;
    let sighup = spawn_sighup_reload(registry.clone());
    let (pipeline, tasks) = Pipeline::start(
        &PipelineConfig {
            workers: cfg.scoring_workers(),
            queue: cfg.scoring_queue,
            queue_bytes: cfg.scoring_queue_mb.max(1) * 1024 * 1024,
            batch_rows: cfg.db_batch_rows,
            batch_wait: cfg.db_batch_wait(store.backend() == "sqlite"),
        },
        store.clone(),
        registry.clone(),
        metrics.clone(),
    )?;

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    if cfg.public_url.is_empty() {
        cfg.public_url = format!("http://{addr}");
    }
    tracing::info!(%addr, database = store.backend(), data_dir = %cfg.data_dir.display(), objects = %uploader.objects().describe(), "engine started");
    // A line on stdout that scripts and tests can wait for.
    println!("ooni-engine listening on {addr}");

    let recovery = {
        let (p, s, st) = (pipeline.clone(), spool.clone(), store.clone());
        tokio::spawn(async move {
            match p.catch_up(&s, &st).await {
                Ok(n) => tracing::info!(queued = n, "start-up recovery scan done"),
                Err(e) => tracing::error!(error = %e, "start-up recovery scan failed"),
            }
        })
    };
    let watch = pipeline.spawn_backlog_watch(spool.clone(), store.clone());

    let quotas = cfg
        .quota_settings()?
        .map(|q| Arc::new(crate::api::ratelimit::Quotas::new(q)));
    let limits = cfg.server_limits();
    let connections = Arc::new(ConnectionStats::default());
    let state = AppState::new(Shared {
        config: Arc::new(cfg),
        spool,
        pipeline: pipeline.clone(),
        store,
        metrics,
        registry,
        bodies,
        uploader,
        quotas,
        connections: connections.clone(),
    });
    let drain_bound = limits.shutdown_timeout;
    match crate::http::serve(
        listener,
        router(state),
        limits,
        connections,
        shutdown_signal(),
    )
    .await
    {
        Drained::Clean => tracing::info!("stopped accepting; in-flight requests finished"),
        Drained::Cut(n) => tracing::warn!(
            connections = n,
            "connections still busy at the shutdown bound were cut"
        ),
    }

    tracing::info!("draining the scoring pipeline");
    watch.abort();
    sighup.abort();
    if let Some(s) = schedule {
        s.abort();
    }
    recovery.abort();
    let drain = tasks.shutdown(vec![pipeline]);
    if tokio::time::timeout(drain_bound, drain).await.is_err() {
        // The database is down or slow: what is not written is in the spool and is
        // scored again at the next start.
        tracing::warn!("batched rows not written within the shutdown bound; the spool keeps them");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Each connection and spool file takes a descriptor; the soft limit is often far
/// below what the hard limit allows.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!("could not raise the open-file limit");
            }
        }
    }
}

/// SIGHUP reloads plugins and fingerprints, as `POST /admin/reload` does.
fn spawn_sighup_reload(registry: Arc<Registry>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading plugins and fingerprints");
            let reg = registry.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let _ = reg.fingerprints().reload();
                reg.reload();
            })
            .await;
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("sqlite://data/x"), "sqlite://data/x");
    }
}
