//! OONI's cans: for each spool hour directory, numbered pairs of a `.tar.gz`
//! postcan (the raw POST bodies, members `{dir}/{uid}.post`) and a `.jsonl.gz`
//! (one compact measurement per line, in the same order), stored under
//! `raw/{YYYYMMDD}/{HH}/{CC}/{testname}/{dir}.n{cid}.{k}.{tar,jsonl}.gz`
//! (spec/api.md §4.2–4.3).

pub mod cache;
pub mod key;
pub mod pack;
pub mod read;

pub use key::{CanKey, CanKind};
pub use pack::{jsonl_line, Can, CanBuilder, CanOptions, IndexEntry};
