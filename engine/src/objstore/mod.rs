//! Where cans live: a local directory by default, any S3-compatible service by
//! configuration. Both are written through the same three calls, so the uploader,
//! the read-back path and rescoring do not know which one they talk to.

mod local;
mod s3;

pub use local::LocalStore;
pub use s3::{S3Settings, S3Store};

use bytes::Bytes;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ObjectStoreError {
    #[error("object store I/O on {key}: {source}")]
    Io { key: String, source: std::io::Error },
    #[error("S3 {op} {key}: {message}")]
    S3 {
        op: &'static str,
        key: String,
        message: String,
    },
    #[error("object {key} holds {size} bytes, more than the {max} accepted")]
    TooLarge { key: String, size: u64, max: usize },
    #[error("invalid object key {0:?}")]
    Key(String),
    #[error(
        "invalid object store URL {0:?}: use a directory path, file:///DIR or s3://BUCKET[/PREFIX]"
    )]
    Url(String),
}

#[derive(Clone, Debug)]
pub enum ObjectStore {
    Local(LocalStore),
    S3(S3Store),
}

impl ObjectStore {
    /// Stores `data` under `key`, replacing any object there. Returns once the
    /// object is durable (fsync'd locally; acknowledged by S3).
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectStoreError> {
        check_key(key)?;
        match self {
            ObjectStore::Local(s) => s.put(key, data).await,
            ObjectStore::S3(s) => s.put(key, data).await,
        }
    }

    /// The object's bytes, or `None` when there is no such object. An object larger
    /// than `max_bytes` is refused before it is read.
    pub async fn get(
        &self,
        key: &str,
        max_bytes: usize,
    ) -> Result<Option<Bytes>, ObjectStoreError> {
        check_key(key)?;
        match self {
            ObjectStore::Local(s) => s.get(key, max_bytes).await,
            ObjectStore::S3(s) => s.get(key, max_bytes).await,
        }
    }

    /// Every key that starts with `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectStoreError> {
        let mut keys = match self {
            ObjectStore::Local(s) => s.list(prefix).await?,
            ObjectStore::S3(s) => s.list(prefix).await?,
        };
        keys.sort();
        Ok(keys)
    }

    /// A cheap round trip that shows the store answers.
    pub async fn ping(&self) -> Result<(), ObjectStoreError> {
        match self {
            ObjectStore::Local(s) => s.ping().await,
            ObjectStore::S3(s) => s.ping().await,
        }
    }

    /// For logs: `local:/path` or `s3://bucket/prefix at endpoint`.
    pub fn describe(&self) -> String {
        match self {
            ObjectStore::Local(s) => format!("local:{}", s.root().display()),
            ObjectStore::S3(s) => s.describe(),
        }
    }
}

/// Keys are relative, `/`-separated, without `.` or `..` segments: a key can never
/// name a path outside a local store's root.
fn check_key(key: &str) -> Result<(), ObjectStoreError> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && !key.contains('\\')
        && !key.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(ObjectStoreError::Key(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_root() {
        assert!(check_key("raw/20240101/00/IT/ndt/x.jsonl.gz").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "raw/../x",
            "raw//x",
            "./x",
            "a\\b",
            "a\0b",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn local_round_trip_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::Local(LocalStore::new(dir.path().join("objects")));
        store.ping().await.unwrap();
        store
            .put("raw/20240101/00/IT/ndt/b", Bytes::from_static(b"two"))
            .await
            .unwrap();
        store
            .put("raw/20240101/00/IT/ndt/a", Bytes::from_static(b"one"))
            .await
            .unwrap();
        store
            .put("raw/20240102/00/IT/ndt/c", Bytes::from_static(b"three"))
            .await
            .unwrap();
        assert_eq!(
            store
                .get("raw/20240101/00/IT/ndt/a", 100)
                .await
                .unwrap()
                .unwrap(),
            Bytes::from_static(b"one")
        );
        assert!(store.get("raw/nope", 100).await.unwrap().is_none());
        assert!(matches!(
            store.get("raw/20240101/00/IT/ndt/a", 2).await,
            Err(ObjectStoreError::TooLarge { .. })
        ));
        assert_eq!(
            store.list("raw/20240101/").await.unwrap(),
            vec!["raw/20240101/00/IT/ndt/a", "raw/20240101/00/IT/ndt/b"]
        );
        assert_eq!(store.list("raw/").await.unwrap().len(), 3);
        // Replacing an object is atomic and leaves no temporary file behind.
        store
            .put("raw/20240101/00/IT/ndt/a", Bytes::from_static(b"uno"))
            .await
            .unwrap();
        assert_eq!(store.list("raw/").await.unwrap().len(), 3);
        assert_eq!(
            &store
                .get("raw/20240101/00/IT/ndt/a", 100)
                .await
                .unwrap()
                .unwrap()[..],
            b"uno"
        );
    }
}
