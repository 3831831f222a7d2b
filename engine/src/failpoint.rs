//! Named crash points for fault-injection tests. `OONI_FAILPOINTS=a,b` makes the
//! process abort (as a power cut or SIGKILL would stop it) when it reaches `a` or
//! `b`; unset, every point is a no-op after one cached lookup.

use std::sync::OnceLock;

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("OONI_FAILPOINTS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Aborts the process if the point `name` is armed.
pub fn hit(name: &str) {
    if armed().iter().any(|a| a == name) {
        tracing::error!(failpoint = name, "failpoint reached: aborting");
        std::process::abort();
    }
}
