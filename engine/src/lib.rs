//! The OONI measurement engine: probes upload, the spool keeps, scorers score, the
//! store serves. `main.rs` is only the command line over these modules.

pub mod api;
pub mod commands;
pub mod config;
pub mod fingerprints;
pub mod ingest;
pub mod metrics;
pub mod scoring;
pub mod serve;
pub mod store;
pub mod watch;
