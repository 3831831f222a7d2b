//! Blocking fingerprints: the TOML schema and its validation (`schema`), importers
//! from OONI's JSON and CSV files (`import`), and the compiled matcher (`matcher`)
//! with its two semantics, `compat` (OONI fastpath 0.92, quirks included) and
//! `strict` (every pattern type and the country rules honoured).

pub mod import;
pub mod literal_scan;
pub mod matcher;
pub mod schema;

pub use matcher::{Matcher, Mode};
pub use schema::{parse_file, Fingerprint, FingerprintError, Kind, PatternType};
