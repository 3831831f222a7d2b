//! The default object store: files under a directory. Each object is written to a
//! temporary name, fsync'd and renamed, and every directory on its path is fsync'd,
//! so an object that `put` acknowledged survives a crash and a torn one never
//! appears under its key.

use super::ObjectStoreError;
use bytes::Bytes;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Suffix of objects being written; never listed, removed when found stale.
const TMP_SUFFIX: &str = ".part";

#[derive(Clone, Debug)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: PathBuf) -> Self {
        LocalStore { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io_err(key: &str) -> impl FnOnce(io::Error) -> ObjectStoreError + '_ {
        move |source| ObjectStoreError::Io {
            key: key.to_owned(),
            source,
        }
    }

    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectStoreError> {
        let root = self.root.clone();
        let k = key.to_owned();
        tokio::task::spawn_blocking(move || put_blocking(&root, &k, &data))
            .await
            .map_err(|e| ObjectStoreError::Io {
                key: key.to_owned(),
                source: io::Error::other(e),
            })?
            .map_err(Self::io_err(key))
    }

    pub async fn get(
        &self,
        key: &str,
        max_bytes: usize,
    ) -> Result<Option<Bytes>, ObjectStoreError> {
        let path = self.root.join(key);
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.len() > max_bytes as u64 => {
                return Err(ObjectStoreError::TooLarge {
                    key: key.to_owned(),
                    size: m.len(),
                    max: max_bytes,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            _ => {}
        }
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Some(b.into())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io_err(key)(e)),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectStoreError> {
        let root = self.root.clone();
        let p = prefix.to_owned();
        tokio::task::spawn_blocking(move || list_blocking(&root, &p))
            .await
            .map_err(|e| ObjectStoreError::Io {
                key: prefix.to_owned(),
                source: io::Error::other(e),
            })?
            .map_err(Self::io_err(prefix))
    }

    pub async fn ping(&self) -> Result<(), ObjectStoreError> {
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(Self::io_err(""))
    }
}

fn put_blocking(root: &Path, key: &str, data: &[u8]) -> io::Result<()> {
    let path = root.join(key);
    let dir = path.parent().unwrap_or(root);
    fs::create_dir_all(dir)?;
    let tmp = path.with_file_name(format!(
        "{}{TMP_SUFFIX}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object")
    ));
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &path)?;
    // The rename and any directory created for it must reach the disk too.
    let mut d = Some(dir);
    while let Some(cur) = d {
        File::open(cur)?.sync_all()?;
        if cur == root {
            break;
        }
        d = cur.parent();
    }
    Ok(())
}

fn list_blocking(root: &Path, prefix: &str) -> io::Result<Vec<String>> {
    // Walk only the directory the prefix names, not the whole store.
    let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    let start = root.join(dir_part);
    let mut out = Vec::new();
    let mut stack = vec![start];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            let path = e.path();
            if e.file_type()?.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let key = rel.to_string_lossy().replace('\\', "/");
            if key.ends_with(TMP_SUFFIX) || !key.starts_with(prefix) {
                continue;
            }
            out.push(key);
        }
    }
    Ok(out)
}
