//! Queries of Explorer's private routes (`/api/_/…`, spec/api.md §3).

use super::aggregate::{bucket, Grain};
use super::{Store, StoreError};
use chrono::NaiveDateTime;

/// Per month: distinct countries, distinct networks, measurements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthCounts {
    /// `YYYY-MM-01`.
    pub month: String,
    pub countries: i64,
    pub networks: i64,
    pub measurements: i64,
}

/// A domain of the test lists with its category and web_connectivity count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainCount {
    pub domain: String,
    pub category_code: String,
    pub measurement_count: i64,
}

impl Store {
    /// (measurements, distinct networks, distinct countries) over every row, from the
    /// monthly network rollup (`fastpath_networks`, kept by triggers).
    pub async fn global_overview(&self) -> Result<(i64, i64, i64), StoreError> {
        let q = "SELECT CAST(COALESCE(SUM(measurement_count), 0) AS BIGINT), \
                 COUNT(DISTINCT probe_asn), COUNT(DISTINCT probe_cc) \
                 FROM fastpath_networks WHERE measurement_count > 0";
        Ok(on_pool!(self, p => sqlx::query_as(q).fetch_one(p).await?))
    }

    /// Monthly counts of measurements started at or after `since`, oldest first.
    pub async fn overview_by_month(
        &self,
        since: NaiveDateTime,
    ) -> Result<Vec<MonthCounts>, StoreError> {
        // `since` is a month's first instant, so whole months of the rollup answer.
        let month = bucket(Grain::Month, matches!(self, Store::Postgres(_)))
            .replace("f.measurement_start_time", "f.month");
        let q = format!(
            "SELECT {month} AS m, COUNT(DISTINCT f.probe_cc), COUNT(DISTINCT f.probe_asn), \
             CAST(SUM(f.measurement_count) AS BIGINT) \
             FROM fastpath_networks f WHERE f.month >= $1 AND f.measurement_count > 0 \
             GROUP BY m ORDER BY m"
        );
        let rows: Vec<(String, i64, i64, i64)> =
            on_pool!(self, p => sqlx::query_as(&q).bind(since).fetch_all(p).await?);
        Ok(rows
            .into_iter()
            .map(|(month, countries, networks, measurements)| MonthCounts {
                month,
                countries,
                networks,
                measurements,
            })
            .collect())
    }

    /// (first measurement start, measurements, distinct networks) of one country.
    pub async fn country_overview(
        &self,
        cc: &str,
    ) -> Result<(Option<NaiveDateTime>, i64, i64), StoreError> {
        // The first start is one index seek; the counts come from the network rollup.
        let q = "SELECT (SELECT MIN(measurement_start_time) FROM fastpath WHERE probe_cc = $1), \
                 CAST(COALESCE(SUM(measurement_count), 0) AS BIGINT), COUNT(DISTINCT probe_asn) \
                 FROM fastpath_networks WHERE probe_cc = $1 AND measurement_count > 0";
        Ok(on_pool!(self, p => sqlx::query_as(q).bind(cc).fetch_one(p).await?))
    }

    /// Measurements per country code.
    pub async fn count_by_country(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let q = "SELECT probe_cc, CAST(SUM(measurement_count) AS BIGINT) FROM fastpath_networks \
                 WHERE measurement_count > 0 GROUP BY probe_cc ORDER BY probe_cc";
        Ok(on_pool!(self, p => sqlx::query_as(q).fetch_all(p).await?))
    }

    /// Measurements per network, with the network's newest known name.
    pub async fn count_by_network(&self) -> Result<Vec<(i64, i64, Option<String>)>, StoreError> {
        let q = "SELECT f.probe_asn, CAST(SUM(f.measurement_count) AS BIGINT), \
                 (SELECT a.org_name FROM asnmeta a WHERE a.asn = f.probe_asn ORDER BY a.changed DESC LIMIT 1) \
                 FROM fastpath_networks f WHERE f.probe_asn <> 0 AND f.measurement_count > 0 \
                 GROUP BY f.probe_asn ORDER BY f.probe_asn";
        Ok(on_pool!(self, p => sqlx::query_as(q).fetch_all(p).await?))
    }

    /// The newest name of a network.
    pub async fn asn_org_name(&self, asn: i64) -> Result<Option<String>, StoreError> {
        let q = "SELECT org_name FROM asnmeta WHERE asn = $1 ORDER BY changed DESC LIMIT 1";
        Ok(on_pool!(self, p => sqlx::query_scalar(q).bind(asn).fetch_optional(p).await?))
    }

    /// The test-list entry of a domain (with or without `www.`): the global list's
    /// first, then the shortest URL. `(category_code, domain)`.
    pub async fn domain_entry(&self, domain: &str) -> Result<Option<(String, String)>, StoreError> {
        let bare = domain.strip_prefix("www.").unwrap_or(domain);
        let www = format!("www.{bare}");
        let q = "SELECT category_code, domain FROM citizenlab WHERE domain IN ($1, $2) \
                 ORDER BY (cc = 'ZZ') DESC, LENGTH(url), url LIMIT 1";
        Ok(on_pool!(self, p => sqlx::query_as(q).bind(bare).bind(&www).fetch_optional(p).await?))
    }

    /// Every test-list domain with its category (global list first) and its
    /// web_connectivity measurement count.
    pub async fn domain_counts(&self) -> Result<Vec<DomainCount>, StoreError> {
        let q = "SELECT d.domain, \
                 (SELECT c.category_code FROM citizenlab c WHERE c.domain = d.domain \
                  ORDER BY (c.cc = 'ZZ') DESC, c.category_code LIMIT 1), \
                 (SELECT COUNT(*) FROM fastpath f WHERE f.domain = d.domain AND f.test_name = 'web_connectivity') \
                 FROM (SELECT DISTINCT domain FROM citizenlab) d ORDER BY d.domain";
        let rows: Vec<(String, Option<String>, i64)> =
            on_pool!(self, p => sqlx::query_as(q).fetch_all(p).await?);
        Ok(rows
            .into_iter()
            .map(|(domain, category_code, measurement_count)| DomainCount {
                domain,
                category_code: category_code.unwrap_or_default(),
                measurement_count,
            })
            .collect())
    }

    /// How many users gave each verdict on a measurement.
    pub async fn feedback_summary(&self, uid: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let q = "SELECT status, COUNT(*) FROM msmt_feedback WHERE measurement_uid = $1 \
                 GROUP BY status ORDER BY status";
        Ok(on_pool!(self, p => sqlx::query_as(q).bind(uid).fetch_all(p).await?))
    }
}

/// One URL of one test list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestListEntry {
    pub domain: String,
    pub url: String,
    /// Lower-case country of a country list, `ZZ` for the global list.
    pub cc: String,
    pub category_code: String,
}

/// One historical name of a network (table `asnmeta`, spec/api.md Appendix A).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsnMeta {
    pub asn: i64,
    pub org_name: String,
    pub cc: String,
    pub changed: chrono::NaiveDate,
    pub aut_name: String,
    pub source: String,
}

/// A URL to test, with how often it was measured lately.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub url: String,
    pub cc: String,
    pub category_code: String,
    pub recent_measurements: i64,
}

impl Store {
    /// Replaces every test list in one transaction.
    pub async fn replace_test_lists(&self, entries: &[TestListEntry]) -> Result<(), StoreError> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query("DELETE FROM citizenlab").execute(&mut *tx).await?;
            for chunk in entries.chunks(1000) {
                let mut qb = sqlx::QueryBuilder::new("INSERT INTO citizenlab (domain, url, cc, category_code) ");
                qb.push_values(chunk, |mut b, e| {
                    b.push_bind(&e.domain).push_bind(&e.url).push_bind(&e.cc).push_bind(&e.category_code);
                });
                // A URL listed twice in one file keeps its last category.
                qb.push(" ON CONFLICT (url, cc) DO UPDATE SET category_code = excluded.category_code, domain = excluded.domain");
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Replaces every network name in one transaction.
    pub async fn replace_asnmeta(&self, rows: &[AsnMeta]) -> Result<(), StoreError> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query("DELETE FROM asnmeta").execute(&mut *tx).await?;
            for chunk in rows.chunks(1000) {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO asnmeta (asn, org_name, cc, changed, aut_name, source) ",
                );
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(r.asn)
                        .push_bind(&r.org_name)
                        .push_bind(&r.cc)
                        .push_bind(r.changed)
                        .push_bind(&r.aut_name)
                        .push_bind(&r.source);
                });
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The global list and `cc`'s list, each URL with its web_connectivity
    /// measurements from `cc` since `since`.
    pub async fn test_list_candidates(
        &self,
        cc: &str,
        since: NaiveDateTime,
    ) -> Result<Vec<Candidate>, StoreError> {
        let q = "SELECT c.url, c.cc, c.category_code, \
                 (SELECT COUNT(*) FROM fastpath f WHERE f.input = c.url AND f.probe_cc = $1 \
                  AND f.test_name = 'web_connectivity' AND f.measurement_start_time >= $2) \
                 FROM citizenlab c WHERE c.cc IN ($3, 'ZZ') ORDER BY c.url, c.cc";
        let rows: Vec<(String, String, String, i64)> = on_pool!(self, p => sqlx::query_as(q)
            .bind(cc.to_ascii_uppercase())
            .bind(since)
            .bind(cc.to_ascii_lowercase())
            .fetch_all(p)
            .await?);
        Ok(rows
            .into_iter()
            .map(|(url, cc, category_code, recent_measurements)| Candidate {
                url,
                cc,
                category_code,
                recent_measurements,
            })
            .collect())
    }
}
