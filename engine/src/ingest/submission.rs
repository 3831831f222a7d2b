//! Checks on `POST /report/{report_id}` bodies (decompression, the envelope,
//! report_id/body consistency, the metadata rules): they live in the I/O-free core
//! crate, where the fuzz targets in `fuzz/` reach them, and are re-exported here.
pub use ooni_core::submission::*;
