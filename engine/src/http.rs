//! The HTTP/1 accept loop. axum's own `serve` has no bounds a public collector needs,
//! so this one adds them: a cap on open connections (beyond it, new ones wait in the
//! kernel's backlog instead of exhausting file descriptors), a deadline for a
//! request's head that also closes idle keep-alive connections (slowloris), a cap on
//! header bytes (431), the client's address for the rate limiter, and a graceful
//! shutdown that stops accepting, lets in-flight requests finish, and gives up on
//! connections that outlive a bound.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Longest wait for a complete request head, idle keep-alive time included.
    pub header_timeout: Duration,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Longest wait for in-flight requests once shutdown starts.
    pub shutdown_timeout: Duration,
}

/// Figures the accept loop keeps for `/metrics`.
#[derive(Default)]
pub struct ConnectionStats {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    pub accept_errors: AtomicU64,
}

/// How the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished its requests within the bound.
    Clean,
    /// Some connections were still busy at the bound and were cut.
    Cut(usize),
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()>,
) -> Drained {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, say: wait a moment rather than spin.
                    stats.accept_errors.fetch_add(1, Relaxed);
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        stats.accepted.fetch_add(1, Relaxed);
        stats.open.fetch_add(1, Relaxed);
        let svc = hyper::service::service_fn({
            let router = router.clone();
            move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(remote));
                router.clone().oneshot(req)
            }
        });
        let conn = http.serve_connection(TokioIo::new(stream), svc);
        let mut closing = closing_rx.clone();
        let stats = stats.clone();
        conns.spawn(async move {
            let _slot = slot;
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = closing.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            stats.open.fetch_sub(1, Relaxed);
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let all_done = async { while conns.join_next().await.is_some() {} };
    match tokio::time::timeout(limits.shutdown_timeout, all_done).await {
        Ok(()) => Drained::Clean,
        Err(_) => {
            let n = conns.len();
            conns.abort_all();
            // Aborted tasks never ran their own decrement.
            stats.open.store(0, Relaxed);
            Drained::Cut(n)
        }
    }
}
