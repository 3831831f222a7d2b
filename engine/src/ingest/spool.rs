//! The durability point. Each measurement is one file,
//! `incoming/{YYYYMMDDHH}_{CC}_{testname}/{uid}.post`, as in OONI, so that cans and
//! postcans can be built from it unchanged.
//!
//! Writes go through one committer thread that groups them: every write waiting when a
//! group starts is written to a `.post.tmp` file and renamed into place; a second
//! thread then makes the group durable with ONE `syncfs` (shared by every group
//! written by the time it starts), and only then is each writer answered. The next
//! group is written while the last one syncs. A
//! file that a crash leaves behind before that sync was never acknowledged; its
//! content is checked against the SHA-512 prefix in its own uid on recovery, so a
//! torn file is set aside instead of scored (see `verify_body`).

use bytes::Bytes;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

use ooni_core::ids::{body_hash16, parse_measurement_uid};

struct WriteJob {
    dir: String,
    uid: String,
    body: Bytes,
    done: oneshot::Sender<io::Result<()>>,
}

/// Figures of the last group commits, read by `/metrics`.
#[derive(Debug, Default)]
pub struct SpoolStats {
    pub groups: std::sync::atomic::AtomicU64,
    pub writes: std::sync::atomic::AtomicU64,
    pub sync_micros: std::sync::atomic::AtomicU64,
    /// Measurements in the spool when it was opened.
    pub files_at_open: std::sync::atomic::AtomicU64,
    /// Free bytes of the spool's filesystem at the last check, and when that was
    /// (milliseconds since the spool opened, plus one; 0 = never).
    free_bytes: std::sync::atomic::AtomicU64,
    free_checked_ms: std::sync::atomic::AtomicU64,
}

#[derive(Clone)]
pub struct Spool {
    incoming: PathBuf,
    quarantine: PathBuf,
    tx: mpsc::Sender<WriteJob>,
    pub stats: Arc<SpoolStats>,
    opened: Instant,
    /// uids of the files an earlier process left, not yet checked against their
    /// hash. Only those can be torn: this process answers a write only after the
    /// group's sync, and a write that fails never leaves a `.post` file.
    unchecked: Arc<std::sync::Mutex<HashSet<String>>>,
}

/// How often the free space is read again; a burst of uploads shares one reading.
const FREE_SPACE_TTL_MS: u64 = 250;

/// A spooled measurement found on disk.
#[derive(Debug, Clone)]
pub struct SpooledFile {
    pub uid: String,
    pub path: PathBuf,
}

impl Spool {
    /// Opens (creating) the spool under `root` and starts its committer thread.
    /// Leftover `.post.tmp` files were never acknowledged and are removed.
    pub fn open(root: &Path, group_max: usize) -> io::Result<Spool> {
        let incoming = root.join("incoming");
        let quarantine = root.join("quarantine");
        fs::create_dir_all(&incoming)?;
        fs::create_dir_all(&quarantine)?;
        let mut files_at_open = 0u64;
        let mut unchecked = HashSet::new();
        for dir in fs::read_dir(&incoming)? {
            let dir = dir?.path();
            if !dir.is_dir() {
                continue;
            }
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                // An uploader removed the (empty) hour directory meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for f in entries {
                let p = f?.path();
                if p.extension().is_some_and(|e| e == "post") {
                    files_at_open += 1;
                    if let Some(uid) = p.file_stem().and_then(|n| n.to_str()) {
                        unchecked.insert(uid.to_owned());
                    }
                }
                if p.extension().is_some_and(|e| e == "tmp") {
                    tracing::info!(path = %p.display(), "removing unacknowledged temporary spool file");
                    fs::remove_file(&p)?;
                }
            }
        }
        let (tx, rx) = mpsc::channel(group_max.max(1) * 4);
        let stats = Arc::new(SpoolStats::default());
        stats
            .files_at_open
            .store(files_at_open, std::sync::atomic::Ordering::Relaxed);
        let root_fd = File::open(&incoming)?;
        let thread_incoming = incoming.clone();
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || {
                committer(thread_incoming, root_fd, rx, group_max.max(1), thread_stats)
            })?;
        Ok(Spool {
            incoming,
            quarantine,
            tx,
            stats,
            opened: Instant::now(),
            unchecked: Arc::new(std::sync::Mutex::new(unchecked)),
        })
    }

    /// Free bytes (for an unprivileged writer) of the spool's filesystem, re-read at
    /// most every quarter second.
    pub fn free_bytes(&self) -> io::Result<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.opened.elapsed().as_millis() as u64 + 1;
        let last = self.stats.free_checked_ms.load(Relaxed);
        if last != 0 && now.saturating_sub(last) < FREE_SPACE_TTL_MS {
            return Ok(self.stats.free_bytes.load(Relaxed));
        }
        let free = filesystem_free_bytes(&self.incoming)?;
        self.stats.free_bytes.store(free, Relaxed);
        self.stats.free_checked_ms.store(now, Relaxed);
        Ok(free)
    }

    /// `Some(why)` when the spool's filesystem has less than `reserve_mb` MiB free:
    /// uploads are then refused, so that what was acknowledged always fits.
    pub fn short_of_room(&self, reserve_mb: u64) -> io::Result<Option<String>> {
        let free = self.free_bytes()?;
        Ok((free < reserve_mb.saturating_mul(1024 * 1024)).then(|| {
            format!(
                "the spool's disk has {} MiB free, below the {reserve_mb} MiB kept in reserve",
                free / (1024 * 1024)
            )
        }))
    }

    /// The hour (`YYYYMMDDHH`) of the oldest hour directory still in the spool: how
    /// far behind the uploader is.
    pub fn oldest_hour(&self) -> io::Result<Option<String>> {
        Ok(fs::read_dir(&self.incoming)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| {
                let hour = n.split('_').next()?;
                (hour.len() == 10 && hour.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| hour.to_owned())
            })
            .min())
    }

    /// Stores `body` as `{dir}/{uid}.post` and returns once it is durable on disk.
    pub async fn write(&self, dir: String, uid: String, body: Bytes) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        let job = WriteJob {
            dir,
            uid,
            body,
            done,
        };
        self.tx
            .send(job)
            .await
            .map_err(|_| io::Error::other("spool committer stopped"))?;
        wait.await
            .map_err(|_| io::Error::other("spool committer stopped"))?
    }

    /// Where a measurement lives while it is in the spool.
    pub fn path_of(&self, uid: &str) -> Option<PathBuf> {
        let parsed = parse_measurement_uid(uid)?;
        Some(
            self.incoming
                .join(parsed.spool_dir())
                .join(format!("{uid}.post")),
        )
    }

    pub fn incoming_dir(&self) -> &Path {
        &self.incoming
    }

    /// Every `.post` file in the spool, oldest hour first.
    pub fn scan(&self) -> io::Result<Vec<SpooledFile>> {
        let mut dirs: Vec<PathBuf> = fs::read_dir(&self.incoming)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        let mut out = Vec::new();
        for dir in dirs {
            // The uploader may remove an hour directory while we scan.
            out.extend(posts_in(&dir)?);
        }
        Ok(out)
    }

    /// Whether `body`, read back from `uid`'s file, can be scored: a file an earlier
    /// process left is checked against the hash in its uid (once); a file this
    /// process wrote is whole. Re-reading the spool after the scoring queue overflows
    /// thus costs no second SHA-512 per measurement.
    pub fn intact(&self, uid: &str, body: &[u8]) -> bool {
        let earlier = self
            .unchecked
            .lock()
            .map(|set| set.contains(uid))
            .unwrap_or(true);
        if !earlier {
            return true;
        }
        let ok = verify_body(uid, body);
        if ok {
            if let Ok(mut set) = self.unchecked.lock() {
                set.remove(uid);
            }
        }
        ok
    }

    /// Moves a file that failed its integrity check out of the way, keeping it for
    /// an operator to look at.
    pub fn quarantine(&self, file: &SpooledFile) -> io::Result<PathBuf> {
        let to = self.quarantine.join(format!("{}.post", file.uid));
        fs::rename(&file.path, &to)?;
        Ok(to)
    }
}

/// The `.post` files of one spool hour directory, in uid order; none when the
/// directory is gone.
pub fn posts_in(dir: &Path) -> io::Result<Vec<SpooledFile>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e?.path();
        let Some(uid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".post"))
        else {
            continue;
        };
        out.push(SpooledFile {
            uid: uid.to_owned(),
            path,
        });
    }
    out.sort_by(|a, b| a.uid.cmp(&b.uid));
    Ok(out)
}

/// True when `body` is what the uid's hash says was stored.
fn verify_body(uid: &str, body: &[u8]) -> bool {
    parse_measurement_uid(uid).is_some_and(|p| p.hash16 == body_hash16(body))
}

fn write_file(incoming: &Path, known_dirs: &mut HashSet<String>, job: &WriteJob) -> io::Result<()> {
    let dir = incoming.join(&job.dir);
    if !known_dirs.contains(&job.dir) {
        fs::create_dir_all(&dir)?;
        known_dirs.insert(job.dir.clone());
    }
    let tmp = dir.join(format!("{}.post.tmp", job.uid));
    let mut f = match File::create(&tmp) {
        // The uploader removed the (then empty) hour directory since we made it.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(&dir)?;
            File::create(&tmp)?
        }
        r => r?,
    };
    f.write_all(&job.body)?;
    drop(f);
    fs::rename(&tmp, dir.join(format!("{}.post", job.uid)))
}

fn filesystem_free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in spool path"))?;
    // SAFETY: statvfs writes only into the zeroed struct passed; `c` outlives the call.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
        Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}

fn syncfs(f: &File) -> io::Result<()> {
    // SAFETY: syncfs only reads the descriptor, which `f` keeps open.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A group whose files are written (or failed), waiting for a sync.
struct Written {
    jobs: Vec<WriteJob>,
    results: Vec<io::Result<()>>,
}

/// Writes groups of files, then hands each to the syncer (`syncer`): while one
/// group's sync runs, the next group is being written, so a sync's wait is not added
/// to every write's.
fn committer(
    incoming: PathBuf,
    root_fd: File,
    mut rx: mpsc::Receiver<WriteJob>,
    group_max: usize,
    stats: Arc<SpoolStats>,
) {
    // Two groups may wait for the syncer; a slower disk then makes bigger groups.
    let (to_sync, written) = std::sync::mpsc::sync_channel::<Written>(2);
    let sync_thread = std::thread::Builder::new()
        .name("spool-sync".into())
        .spawn(move || syncer(root_fd, written, stats));
    if let Err(e) = sync_thread {
        tracing::error!(error = %e, "cannot start the spool's sync thread");
        return;
    }
    let mut known_dirs = HashSet::new();
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = Vec::with_capacity(group_max);
        jobs.push(first);
        while jobs.len() < group_max {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let results = jobs
            .iter()
            .map(|job| {
                let r = write_file(&incoming, &mut known_dirs, job);
                if r.is_err() {
                    // A directory removed under us (by the uploader) must be re-created.
                    known_dirs.remove(&job.dir);
                }
                r
            })
            .collect();
        if to_sync.send(Written { jobs, results }).is_err() {
            // The syncer is gone: dropping the jobs tells their writers it failed.
            return;
        }
    }
}

/// Makes written groups durable: every group already written when a sync starts
/// shares that one `syncfs`, and only then are their writers answered.
fn syncer(root_fd: File, written: std::sync::mpsc::Receiver<Written>, stats: Arc<SpoolStats>) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut groups = Vec::new();
    while let Ok(first) = written.recv() {
        groups.push(first);
        groups.extend(written.try_iter());
        let t = Instant::now();
        let synced = syncfs(&root_fd);
        stats
            .sync_micros
            .fetch_add(t.elapsed().as_micros() as u64, Relaxed);
        stats.groups.fetch_add(1, Relaxed);
        for group in groups.drain(..) {
            stats.writes.fetch_add(group.jobs.len() as u64, Relaxed);
            for (job, r) in group.jobs.into_iter().zip(group.results) {
                let r = match (&synced, r) {
                    (Err(e), _) => Err(io::Error::new(e.kind(), format!("syncfs: {e}"))),
                    (Ok(()), r) => r,
                };
                // The writer may have gone away (client disconnected); the file stays.
                let _ = job.done.send(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_files_left_by_an_earlier_process_are_checked() {
        let root = tempfile::tempdir().unwrap();
        let body = Bytes::from_static(b"{\"a\":1}");
        let uid = |i: u32| format!("20240101000000.{i:06}_IT_ndt_{}", body_hash16(&body));
        {
            let earlier = Spool::open(root.path(), 8).unwrap();
            for i in [1, 2] {
                earlier
                    .write("2024010100_IT_ndt".into(), uid(i), body.clone())
                    .await
                    .unwrap();
            }
        }
        let spool = Spool::open(root.path(), 8).unwrap();
        spool
            .write("2024010100_IT_ndt".into(), uid(3), body.clone())
            .await
            .unwrap();
        // An earlier file is checked: a torn read of it is refused, a whole one passes.
        assert!(!spool.intact(&uid(1), b"{\"a\""));
        assert!(spool.intact(&uid(1), &body));
        assert!(spool.intact(&uid(2), &body));
        // This process's own file was answered only after its sync: not re-hashed.
        assert!(spool.intact(&uid(3), b"not what was hashed"));
    }

    #[tokio::test]
    async fn writes_are_durable_files_named_by_uid() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::open(root.path(), 8).unwrap();
        let body = Bytes::from_static(b"{\"a\":1}");
        let uid = format!("20240101000000.000001_IT_ndt_{}", body_hash16(&body));
        spool
            .write("2024010100_IT_ndt".into(), uid.clone(), body.clone())
            .await
            .unwrap();
        let path = spool.path_of(&uid).unwrap();
        assert_eq!(fs::read(&path).unwrap(), &body[..]);
        let found = spool.scan().unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].uid, uid);
        assert!(verify_body(&uid, &body));
        assert!(!verify_body(&uid, b"{}"));
    }

    #[tokio::test]
    async fn concurrent_writes_share_syncs() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::open(root.path(), 64).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let s = spool.clone();
            tasks.push(tokio::spawn(async move {
                let body = Bytes::from(format!("{{\"i\":{i}}}"));
                let uid = format!("20240101000000.{i:06}_IT_ndt_{}", body_hash16(&body));
                s.write("2024010100_IT_ndt".into(), uid, body).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(spool.stats.writes.load(Relaxed), 200);
        assert!(spool.stats.groups.load(Relaxed) < 200);
        assert_eq!(spool.scan().unwrap().len(), 200);
    }

    #[tokio::test]
    async fn free_space_and_oldest_hour_are_read() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::open(root.path(), 8).unwrap();
        assert!(spool.free_bytes().unwrap() > 0);
        assert_eq!(spool.oldest_hour().unwrap(), None);
        for d in [
            "2026112805_IT_web_connectivity",
            "2026112803_DE_ndt",
            "notanhour",
        ] {
            fs::create_dir_all(spool.incoming_dir().join(d)).unwrap();
        }
        assert_eq!(spool.oldest_hour().unwrap().as_deref(), Some("2026112803"));
    }

    #[test]
    fn stale_temporary_files_are_removed_on_open() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("incoming/2024010100_IT_ndt");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("x.post.tmp"), b"partial").unwrap();
        fs::write(
            dir.join("20240101000000.000001_IT_ndt_0000000000000000.post"),
            b"{}",
        )
        .unwrap();
        let spool = Spool::open(root.path(), 8).unwrap();
        assert!(!dir.join("x.post.tmp").exists());
        assert_eq!(spool.scan().unwrap().len(), 1);
    }
}
