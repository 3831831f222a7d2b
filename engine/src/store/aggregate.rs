//! `/api/v1/aggregation`'s query (spec/api.md §2.7): counts of measurements grouped by
//! up to two axes. Everything is written once except the time buckets, whose date
//! functions differ between SQLite and PostgreSQL.

use super::query::CATEGORY;
use super::{Store, StoreError};
use chrono::NaiveDateTime;
use sqlx::{QueryBuilder, Row};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    BlockingType,
    CategoryCode,
    Domain,
    Input,
    MeasurementStartDay,
    ProbeAsn,
    ProbeCc,
    TestName,
}

impl Axis {
    pub fn parse(s: &str) -> Option<Axis> {
        Some(match s {
            "blocking_type" => Axis::BlockingType,
            "category_code" => Axis::CategoryCode,
            "domain" => Axis::Domain,
            "input" => Axis::Input,
            "measurement_start_day" => Axis::MeasurementStartDay,
            "probe_asn" => Axis::ProbeAsn,
            "probe_cc" => Axis::ProbeCc,
            "test_name" => Axis::TestName,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Axis::BlockingType => "blocking_type",
            Axis::CategoryCode => "category_code",
            Axis::Domain => "domain",
            Axis::Input => "input",
            Axis::MeasurementStartDay => "measurement_start_day",
            Axis::ProbeAsn => "probe_asn",
            Axis::ProbeCc => "probe_cc",
            Axis::TestName => "test_name",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Grain {
    pub fn name(self) -> &'static str {
        match self {
            Grain::Hour => "hour",
            Grain::Day => "day",
            Grain::Week => "week",
            Grain::Month => "month",
            Grain::Year => "year",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct AggQuery {
    pub input: Option<String>,
    pub domains: Vec<String>,
    pub category_code: Option<String>,
    pub probe_ccs: Vec<String>,
    pub probe_asns: Vec<i64>,
    pub test_names: Vec<String>,
    pub ooni_run_link_ids: Vec<i64>,
    /// Inclusive.
    pub since: Option<NaiveDateTime>,
    /// Exclusive.
    pub until: Option<NaiveDateTime>,
    pub axes: Vec<Axis>,
    pub grain: Option<Grain>,
    /// Most groups returned; one more tells the caller the answer was cut.
    pub max_groups: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AxisValue {
    Text(String),
    Int(i64),
}

#[derive(Debug, Clone)]
pub struct AggRow {
    pub axes: Vec<AxisValue>,
    pub anomaly_count: i64,
    pub confirmed_count: i64,
    pub failure_count: i64,
    pub ok_count: i64,
    pub measurement_count: i64,
}

const COUNTS: &str = "COALESCE(SUM(CASE WHEN f.anomaly AND NOT f.confirmed AND NOT f.msm_failure THEN 1 ELSE 0 END), 0) AS anomaly_count, \
    COALESCE(SUM(CASE WHEN f.confirmed AND NOT f.msm_failure THEN 1 ELSE 0 END), 0) AS confirmed_count, \
    COALESCE(SUM(CASE WHEN f.msm_failure THEN 1 ELSE 0 END), 0) AS failure_count, \
    COALESCE(SUM(CASE WHEN NOT f.anomaly AND NOT f.confirmed AND NOT f.msm_failure THEN 1 ELSE 0 END), 0) AS ok_count, \
    COUNT(*) AS measurement_count";

/// The SQL of a time bucket, rendered as OONI renders it.
pub(crate) fn bucket(grain: Grain, postgres: bool) -> &'static str {
    match (grain, postgres) {
        (Grain::Hour, false) => "strftime('%Y-%m-%dT%H:00:00Z', f.measurement_start_time)",
        (Grain::Day, false) => "strftime('%Y-%m-%d', f.measurement_start_time)",
        // Weeks start on Sunday, as ClickHouse's toStartOfWeek does by default.
        (Grain::Week, false) => {
            "date(f.measurement_start_time, '-' || strftime('%w', f.measurement_start_time) || ' days')"
        }
        (Grain::Month, false) => "strftime('%Y-%m-01', f.measurement_start_time)",
        (Grain::Year, false) => "strftime('%Y-01-01', f.measurement_start_time)",
        (Grain::Hour, true) => {
            "to_char(date_trunc('hour', f.measurement_start_time), 'YYYY-MM-DD\"T\"HH24:00:00\"Z\"')"
        }
        (Grain::Day, true) => "to_char(f.measurement_start_time, 'YYYY-MM-DD')",
        (Grain::Week, true) => {
            "to_char(f.measurement_start_time - CAST(EXTRACT(DOW FROM f.measurement_start_time) AS INTEGER) * INTERVAL '1 day', 'YYYY-MM-DD')"
        }
        (Grain::Month, true) => "to_char(f.measurement_start_time, 'YYYY-MM-01')",
        (Grain::Year, true) => "to_char(f.measurement_start_time, 'YYYY-01-01')",
    }
}

fn axis_sql(axis: Axis, grain: Grain, postgres: bool) -> String {
    match axis {
        Axis::MeasurementStartDay => bucket(grain, postgres).to_owned(),
        Axis::CategoryCode => CATEGORY.to_owned(),
        other => format!("f.{}", other.name()),
    }
}

macro_rules! push_filters {
    ($qb:expr, $q:expr) => {{
        let q = $q;
        $qb.push(" WHERE 1 = 1");
        if let Some(v) = &q.input {
            $qb.push(" AND f.input = ").push_bind(v.clone());
        }
        for (col, list) in [
            ("domain", &q.domains),
            ("probe_cc", &q.probe_ccs),
            ("test_name", &q.test_names),
        ] {
            push_in_list!($qb, col, list);
        }
        for (col, list) in [
            ("probe_asn", &q.probe_asns),
            ("ooni_run_link_id", &q.ooni_run_link_ids),
        ] {
            push_in_list!($qb, col, list);
        }
        if let Some(v) = q.since {
            $qb.push(" AND f.measurement_start_time >= ").push_bind(v);
        }
        if let Some(v) = q.until {
            $qb.push(" AND f.measurement_start_time < ").push_bind(v);
        }
        // A category (filter or axis) keeps only rows on a test list: the global one,
        // or the list of one of the countries asked for.
        let by_category = q.category_code.is_some() || q.axes.contains(&Axis::CategoryCode);
        if by_category {
            $qb.push(" AND EXISTS (SELECT 1 FROM citizenlab c WHERE c.url = f.input");
            if let Some(v) = &q.category_code {
                $qb.push(" AND c.category_code = ").push_bind(v.clone());
            }
            $qb.push(" AND (c.cc = 'ZZ'");
            if !q.probe_ccs.is_empty() {
                $qb.push(" OR c.cc IN (");
                let mut sep = $qb.separated(", ");
                for v in &q.probe_ccs {
                    sep.push_bind(v.to_lowercase());
                }
                $qb.push(")");
            }
            $qb.push("))");
        }
    }};
}

impl Store {
    pub async fn aggregate(&self, q: &AggQuery) -> Result<Vec<AggRow>, StoreError> {
        let postgres = matches!(self, Store::Postgres(_));
        let grain = q.grain.unwrap_or(Grain::Day);
        let axes: Vec<String> = q
            .axes
            .iter()
            .map(|a| axis_sql(*a, grain, postgres))
            .collect();
        let mut select = String::from("SELECT ");
        for (i, a) in axes.iter().enumerate() {
            select.push_str(&format!("{a} AS axis{i}, "));
        }
        select.push_str(COUNTS);
        select.push_str(" FROM fastpath f");
        let group: Vec<String> = (0..axes.len()).map(|i| format!("axis{i}")).collect();
        macro_rules! run {
            ($pool:expr) => {{
                let mut qb = QueryBuilder::new(&select);
                push_filters!(qb, q);
                if !group.is_empty() {
                    qb.push(format!(
                        " GROUP BY {g} ORDER BY {g} LIMIT ",
                        g = group.join(", ")
                    ))
                    .push_bind(q.max_groups + 1);
                }
                let rows = qb.build().fetch_all($pool).await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    let mut values = Vec::with_capacity(q.axes.len());
                    for (i, a) in q.axes.iter().enumerate() {
                        let col = format!("axis{i}");
                        values.push(if *a == Axis::ProbeAsn {
                            AxisValue::Int(r.try_get::<i64, _>(col.as_str())?)
                        } else {
                            AxisValue::Text(
                                r.try_get::<Option<String>, _>(col.as_str())?
                                    .unwrap_or_default(),
                            )
                        });
                    }
                    out.push(AggRow {
                        axes: values,
                        anomaly_count: r.try_get("anomaly_count")?,
                        confirmed_count: r.try_get("confirmed_count")?,
                        failure_count: r.try_get("failure_count")?,
                        ok_count: r.try_get("ok_count")?,
                        measurement_count: r.try_get("measurement_count")?,
                    });
                }
                out
            }};
        }
        Ok(on_pool!(self, p => run!(p)))
    }
}
