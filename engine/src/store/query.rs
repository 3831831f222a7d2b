//! Read queries of the measurements API (spec/api.md §2.2, §2.5): the search list and
//! measurement metadata, written once for both databases.

use super::{fastpath_row, Store, StoreError, COLUMNS};
use chrono::NaiveDateTime;
use ooni_core::FastpathRow;
use sqlx::{QueryBuilder, Row};

/// The columns `/api/v1/measurements` can order by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderBy {
    MeasurementStartTime,
    Input,
    ProbeCc,
    ProbeAsn,
    TestName,
}

impl OrderBy {
    pub fn parse(s: &str) -> Option<OrderBy> {
        Some(match s {
            "measurement_start_time" => OrderBy::MeasurementStartTime,
            "input" => OrderBy::Input,
            "probe_cc" => OrderBy::ProbeCc,
            "probe_asn" => OrderBy::ProbeAsn,
            "test_name" => OrderBy::TestName,
            _ => return None,
        })
    }

    fn column(self) -> &'static str {
        match self {
            OrderBy::MeasurementStartTime => "measurement_start_time",
            OrderBy::Input => "input",
            OrderBy::ProbeCc => "probe_cc",
            OrderBy::ProbeAsn => "probe_asn",
            OrderBy::TestName => "test_name",
        }
    }
}

/// The filters of a search, already validated.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub report_id: Option<String>,
    pub input: Option<String>,
    pub domain: Option<String>,
    pub probe_cc: Option<String>,
    pub probe_asn: Option<i64>,
    pub test_name: Option<String>,
    pub category_code: Option<String>,
    /// Exclusive.
    pub since: Option<NaiveDateTime>,
    /// Inclusive.
    pub until: Option<NaiveDateTime>,
    pub anomaly: Option<bool>,
    pub confirmed: Option<bool>,
    pub failure: Option<bool>,
    pub software_versions: Vec<String>,
    pub test_versions: Vec<String>,
    pub engine_versions: Vec<String>,
    pub ooni_run_link_id: Option<i64>,
    pub order_by: OrderBy,
    pub descending: bool,
    pub offset: i64,
    pub limit: i64,
}

/// The test-list category of `f.input`: the global list's first, as OONI prefers.
pub(super) const CATEGORY: &str =
    "(SELECT c.category_code FROM citizenlab c WHERE c.url = f.input \
    ORDER BY (c.cc = 'ZZ') DESC, c.category_code LIMIT 1)";

macro_rules! push_list_filters {
    ($qb:expr, $q:expr) => {{
        let q = $q;
        $qb.push(" WHERE 1 = 1");
        if let Some(v) = &q.report_id {
            $qb.push(" AND f.report_id = ").push_bind(v.clone());
        }
        // `input` overrides `domain` and `category_code`, as in OONI.
        if let Some(v) = &q.input {
            $qb.push(" AND f.input = ").push_bind(v.clone());
        } else {
            if let Some(v) = &q.domain {
                $qb.push(" AND f.domain = ").push_bind(v.clone());
            }
            if let Some(v) = &q.category_code {
                $qb.push(" AND EXISTS (SELECT 1 FROM citizenlab c WHERE c.url = f.input AND c.category_code = ")
                    .push_bind(v.clone())
                    .push(")");
            }
        }
        match &q.probe_cc {
            Some(v) => $qb.push(" AND f.probe_cc = ").push_bind(v.clone()),
            None => $qb.push(" AND f.probe_cc <> 'ZZ'"),
        };
        match q.probe_asn {
            Some(v) => $qb.push(" AND f.probe_asn = ").push_bind(v),
            None => $qb.push(" AND f.probe_asn <> 0"),
        };
        if let Some(v) = &q.test_name {
            $qb.push(" AND f.test_name = ").push_bind(v.clone());
        }
        if let Some(v) = q.since {
            $qb.push(" AND f.measurement_start_time > ").push_bind(v);
        }
        if let Some(v) = q.until {
            $qb.push(" AND f.measurement_start_time <= ").push_bind(v);
        }
        for (col, v) in [
            ("anomaly", q.anomaly),
            ("confirmed", q.confirmed),
            ("msm_failure", q.failure),
        ] {
            if let Some(v) = v {
                $qb.push(format!(" AND f.{col} = ")).push_bind(v);
            }
        }
        for (col, list) in [
            ("software_version", &q.software_versions),
            ("test_version", &q.test_versions),
            ("engine_version", &q.engine_versions),
        ] {
            push_in_list!($qb, col, list);
        }
        if let Some(v) = q.ooni_run_link_id {
            $qb.push(" AND f.ooni_run_link_id = ").push_bind(v);
        }
    }};
}

/// How a metadata lookup names its measurement.
pub enum MetaKey<'a> {
    Uid(&'a str),
    Report {
        report_id: &'a str,
        input: Option<&'a str>,
    },
}

impl Store {
    /// One page of a search, ordered as asked and then by uid so pages never
    /// overlap.
    pub async fn list_measurements(&self, q: &ListQuery) -> Result<Vec<FastpathRow>, StoreError> {
        let dir = if q.descending { "DESC" } else { "ASC" };
        let order = format!(
            " ORDER BY f.{} {dir}, f.measurement_uid {dir} LIMIT ",
            q.order_by.column()
        );
        macro_rules! run {
            ($pool:expr) => {{
                let mut qb = QueryBuilder::new(format!("SELECT {COLUMNS} FROM fastpath f"));
                push_list_filters!(qb, q);
                qb.push(&order)
                    .push_bind(q.limit)
                    .push(" OFFSET ")
                    .push_bind(q.offset);
                let rows = qb.build().fetch_all($pool).await?;
                rows.iter()
                    .map(fastpath_row)
                    .collect::<Result<Vec<_>, _>>()?
            }};
        }
        Ok(on_pool!(self, p => run!(p)))
    }

    /// The row a metadata lookup names (first by uid), without rows of ASN 0, and its
    /// test-list category: `None` when no join was made (a report_id lookup without
    /// input), `""` when joined without a match.
    pub async fn measurement_meta(
        &self,
        key: MetaKey<'_>,
    ) -> Result<Option<(FastpathRow, Option<String>)>, StoreError> {
        let base = format!("SELECT {COLUMNS}, ");
        macro_rules! run {
            ($pool:expr) => {{
                let mut qb = QueryBuilder::new(&base);
                match &key {
                    MetaKey::Uid(uid) => {
                        qb.push(format!("COALESCE({CATEGORY}, '') AS category_code FROM fastpath f WHERE f.measurement_uid = "))
                            .push_bind(uid.to_string());
                    }
                    MetaKey::Report { report_id, input: Some(input) } => {
                        qb.push(format!("COALESCE({CATEGORY}, '') AS category_code FROM fastpath f WHERE f.report_id = "))
                            .push_bind(report_id.to_string())
                            .push(" AND f.input = ")
                            .push_bind(input.to_string());
                    }
                    MetaKey::Report { report_id, input: None } => {
                        qb.push("CAST(NULL AS TEXT) AS category_code FROM fastpath f WHERE f.report_id = ")
                            .push_bind(report_id.to_string())
                            .push(" AND f.input = ''");
                    }
                }
                qb.push(" AND f.probe_asn <> 0 ORDER BY f.measurement_uid LIMIT 1");
                match qb.build().fetch_optional($pool).await? {
                    Some(r) => Some((fastpath_row(&r)?, r.try_get("category_code")?)),
                    None => None,
                }
            }};
        }
        Ok(on_pool!(self, p => run!(p)))
    }
}
