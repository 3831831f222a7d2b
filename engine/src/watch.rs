//! Directory watching for hot reload (plugins, fingerprints): debounced, and blind to
//! the reads a reload itself makes.

use std::path::Path;
use std::time::Duration;

/// Calls `on_change` after files in `dir` are created, written, renamed or removed,
/// once things have been quiet for 200 ms (editors write in several steps). The
/// thread ends when `on_change` returns false or the watcher is dropped.
pub fn watch_dir(
    dir: &Path,
    thread_name: &str,
    mut on_change: impl FnMut() -> bool + Send + 'static,
) -> anyhow::Result<notify::RecommendedWatcher> {
    use notify::event::{EventKind, ModifyKind};
    use notify::{RecursiveMode, Watcher};
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let relevant = res.is_ok_and(|e| {
            matches!(
                e.kind,
                EventKind::Create(_)
                    | EventKind::Remove(_)
                    | EventKind::Modify(
                        ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any
                    )
                    | EventKind::Any
            )
        });
        if relevant {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    std::thread::Builder::new()
        .name(thread_name.to_owned())
        .spawn(move || {
            while rx.recv().is_ok() {
                while rx.recv_timeout(Duration::from_millis(200)).is_ok() {}
                if !on_change() {
                    break;
                }
            }
        })?;
    Ok(watcher)
}
