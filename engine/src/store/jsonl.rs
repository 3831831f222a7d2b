//! The `jsonl` table: which can, and which line of it, holds each measurement.

use super::{Store, StoreError, ROWS_PER_STATEMENT};
use crate::cans::IndexEntry;
use chrono::NaiveDateTime;
use sqlx::QueryBuilder;
use std::collections::HashSet;

/// Where a measurement's body is in object storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyLocation {
    pub measurement_uid: String,
    pub s3path: String,
    pub linenum: i32,
}

impl Store {
    /// Records the lines of one uploaded can, replacing any earlier record of the same
    /// uids (a re-run after a crash writes the same rows again).
    pub async fn index_can(
        &self,
        spool_dir: &str,
        can_number: u32,
        s3path: &str,
        entries: &[IndexEntry],
    ) -> Result<(), StoreError> {
        let now: NaiveDateTime = chrono::Utc::now().naive_utc();
        // 8 binds a row.
        let per_statement = ROWS_PER_STATEMENT * 3;
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for chunk in entries.chunks(per_statement) {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO jsonl (measurement_uid, report_id, input, s3path, linenum, \
                     spool_dir, can_number, indexed_at) ",
                );
                qb.push_values(chunk, |mut b, e| {
                    b.push_bind(&e.measurement_uid)
                        .push_bind(&e.report_id)
                        .push_bind(&e.input)
                        .push_bind(s3path)
                        .push_bind(e.linenum)
                        .push_bind(spool_dir)
                        .push_bind(can_number as i32)
                        .push_bind(now);
                });
                qb.push(
                    " ON CONFLICT (measurement_uid) DO UPDATE SET report_id = excluded.report_id, \
                     input = excluded.input, s3path = excluded.s3path, linenum = excluded.linenum, \
                     spool_dir = excluded.spool_dir, can_number = excluded.can_number, \
                     indexed_at = excluded.indexed_at",
                );
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Which of `uids` are already in an uploaded can.
    pub async fn indexed_uids(&self, uids: &[String]) -> Result<HashSet<String>, StoreError> {
        let mut found = HashSet::new();
        for chunk in uids.chunks(ROWS_PER_STATEMENT) {
            on_pool!(self, p => {
                let mut qb =
                    QueryBuilder::new("SELECT measurement_uid FROM jsonl WHERE measurement_uid IN (");
                let mut sep = qb.separated(", ");
                for u in chunk {
                    sep.push_bind(u);
                }
                qb.push(")");
                let rows: Vec<(String,)> = qb.build_query_as().fetch_all(p).await?;
                found.extend(rows.into_iter().map(|(u,)| u));
            });
        }
        Ok(found)
    }

    /// The number the next can of a spool hour directory gets.
    pub async fn next_can_number(&self, spool_dir: &str) -> Result<u32, StoreError> {
        let q = "SELECT MAX(can_number) FROM jsonl WHERE spool_dir = $1";
        let max: Option<i32> =
            on_pool!(self, p => sqlx::query_scalar(q).bind(spool_dir).fetch_one(p).await?);
        Ok(max.map_or(0, |m| m as u32 + 1))
    }

    /// Where the body of `uid` is, once it is in a can.
    pub async fn locate_body(&self, uid: &str) -> Result<Option<BodyLocation>, StoreError> {
        let q = "SELECT measurement_uid, s3path, linenum FROM jsonl WHERE measurement_uid = $1";
        let row: Option<(String, String, i32)> =
            on_pool!(self, p => sqlx::query_as(q).bind(uid).fetch_optional(p).await?);
        Ok(row.map(|(measurement_uid, s3path, linenum)| BodyLocation {
            measurement_uid,
            s3path,
            linenum,
        }))
    }

    /// The uid of the measurement a (report_id, input) pair names: from its can's index,
    /// else from its row (a measurement still in the spool).
    pub async fn uid_by_report(
        &self,
        report_id: &str,
        input: &str,
    ) -> Result<Option<String>, StoreError> {
        for table in ["jsonl", "fastpath"] {
            let q = format!(
                "SELECT measurement_uid FROM {table} WHERE report_id = $1 AND input = $2 \
                 ORDER BY measurement_uid LIMIT 1"
            );
            let uid: Option<String> = on_pool!(self, p => sqlx::query_scalar(&q)
                .bind(report_id)
                .bind(input)
                .fetch_optional(p)
                .await?);
            if uid.is_some() {
                return Ok(uid);
            }
        }
        Ok(None)
    }

    pub async fn count_indexed(&self) -> Result<i64, StoreError> {
        let q = "SELECT COUNT(*) FROM jsonl";
        Ok(on_pool!(self, p => sqlx::query_scalar(q).fetch_one(p).await?))
    }
}
