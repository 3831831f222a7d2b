//! Measurement bodies for the API, wherever they are now: in the spool while fresh,
//! in a jsonl can once uploaded. Both give the same bytes: the jsonl line (the
//! envelope's content without insignificant whitespace).

use crate::cans::cache::CanCache;
use crate::cans::jsonl_line;
use crate::cans::read::CanLines;
use crate::ingest::spool::Spool;
use crate::metrics::Metrics;
use crate::objstore::{ObjectStore, ObjectStoreError};
use crate::store::{Store, StoreError};
use bytes::Bytes;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BodyError {
    #[error(transparent)]
    Db(#[from] StoreError),
    #[error(transparent)]
    Objects(#[from] ObjectStoreError),
    #[error("can {key} is indexed but missing from the object store")]
    MissingCan { key: String },
    #[error("can {key} is unreadable: {message}")]
    BadCan { key: String, message: String },
    #[error("can {key} has no line {line}")]
    MissingLine { key: String, line: i32 },
}

pub struct Bodies {
    spool: Spool,
    db: Store,
    objects: ObjectStore,
    cache: CanCache,
    /// Most bytes one can may decompress to.
    read_limit: usize,
    /// Cans fetched and decompressed at once: bounds the memory requests can pin.
    loading: tokio::sync::Semaphore,
    metrics: Arc<Metrics>,
}

/// Room for tar and gzip framing on top of the measurements in a can.
const FRAMING_SLACK: usize = 1 << 20;

impl Bodies {
    pub fn new(
        spool: Spool,
        db: Store,
        objects: ObjectStore,
        cache_bytes: usize,
        read_limit: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Bodies {
            spool,
            db,
            objects,
            cache: CanCache::new(cache_bytes),
            read_limit,
            loading: tokio::sync::Semaphore::new(2),
            metrics,
        }
    }

    /// The measurement's jsonl line, or `None` if neither the spool nor a can has it.
    pub async fn by_uid(&self, uid: &str) -> Result<Option<Bytes>, BodyError> {
        if let Some(path) = self.spool.path_of(uid) {
            if let Ok(body) = tokio::fs::read(&path).await {
                self.metrics.bodies_from_spool.fetch_add(1, Relaxed);
                return Ok(Some(jsonl_line(&body).0.into()));
            }
        }
        // Not (or no longer) in the spool: the uploader indexes before it deletes,
        // so a measurement that left the spool is in the index.
        let Some(loc) = self.db.locate_body(uid).await? else {
            return Ok(None);
        };
        let line = self.line(&loc.s3path, loc.linenum).await?;
        self.metrics.bodies_from_cans.fetch_add(1, Relaxed);
        Ok(Some(line))
    }

    async fn line(&self, key: &str, linenum: i32) -> Result<Bytes, BodyError> {
        let lines = match self.cache.get(key) {
            Some(l) => l,
            None => self.load(key).await?,
        };
        usize::try_from(linenum)
            .ok()
            .and_then(|n| lines.line(n))
            .ok_or_else(|| BodyError::MissingLine {
                key: key.to_owned(),
                line: linenum,
            })
    }

    /// Fetches and decompresses a can, at most two at a time; a request that waited
    /// for a load of the same can finds it in the cache.
    async fn load(&self, key: &str) -> Result<Arc<CanLines>, BodyError> {
        let _permit = self
            .loading
            .acquire()
            .await
            .map_err(|e| BodyError::BadCan {
                key: key.to_owned(),
                message: e.to_string(),
            })?;
        if let Some(l) = self.cache.get(key) {
            return Ok(l);
        }
        self.metrics.can_cache_misses.fetch_add(1, Relaxed);
        let gz = self
            .objects
            .get(key, self.read_limit.saturating_add(FRAMING_SLACK))
            .await?
            .ok_or_else(|| BodyError::MissingCan {
                key: key.to_owned(),
            })?;
        let limit = self.read_limit;
        let bad = |message: String| BodyError::BadCan {
            key: key.to_owned(),
            message,
        };
        let lines = tokio::task::spawn_blocking(move || CanLines::decode(&gz, limit))
            .await
            .map_err(|e| bad(e.to_string()))?
            .map_err(|e| bad(e.to_string()))?;
        let lines = Arc::new(lines);
        self.cache.insert(key, lines.clone());
        Ok(lines)
    }

    pub fn store(&self) -> &Store {
        &self.db
    }
}
