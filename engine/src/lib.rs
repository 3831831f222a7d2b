//! The OONI measurement engine: probes upload, the spool keeps, scorers score, the
//! store serves. `main.rs` is only the command line over these modules.

pub mod api;
pub mod asnmeta;
pub mod bodies;
pub mod cans;
pub mod commands;
pub mod config;
pub mod failpoint;
pub mod fingerprints;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod objstore;
pub mod rescore;
pub mod scoring;
pub mod serve;
pub mod store;
pub mod testlists;
pub mod uploader;
pub mod watch;

// Scoring builds and drops many small JSON values per measurement, and the spool and
// cut buffers are a few KiB each: mimalloc's per-thread free lists serve both without
// glibc's consolidation passes. Declared here so that the engine, its tests and its
// benchmarks all run on the allocator the engine ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
