//! The scoring core of the engine: everything that turns one measurement into one
//! `fastpath` row, with no I/O, no async runtime and no database.
//!
//! It reproduces OONI fastpath 0.92 (see `spec/fastpath.md` in the shared specs):
//! getter semantics (null vs missing), identifier formats, the default scorer, the
//! date sanity check, the anomaly/confirmed/failure flags and every column rule.
//!
//! It also holds the checks on a probe's upload (`submission`), pure functions of the
//! request's bytes, so that the fuzz targets in `fuzz/` reach them without the engine.

pub use ooni_scorer_sdk::getters;
pub mod fingerprints;
pub mod ids;
pub mod measurement;
pub mod pyparse;
pub mod row;
pub mod rules;
pub mod scores;
pub mod submission;
pub mod ujson;
pub mod urlparse;

pub use measurement::Measurement;
pub use row::{derive_row, DropKind, Dropped, FastpathRow, Outcome};
pub use scores::{DefaultScorer, ScoreError, Scorer, ScorerInfo, Scores};
