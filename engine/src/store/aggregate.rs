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

/// The same counts summed from the daily rollup (`fastpath_daily`); PostgreSQL's
/// SUM of BIGINT is NUMERIC, hence the casts.
const ROLLUP_COUNTS: &str = "CAST(COALESCE(SUM(f.anomaly_count), 0) AS BIGINT) AS anomaly_count, \
    CAST(COALESCE(SUM(f.confirmed_count), 0) AS BIGINT) AS confirmed_count, \
    CAST(COALESCE(SUM(f.failure_count), 0) AS BIGINT) AS failure_count, \
    CAST(COALESCE(SUM(f.ok_count), 0) AS BIGINT) AS ok_count, \
    CAST(COALESCE(SUM(f.measurement_count), 0) AS BIGINT) AS measurement_count";

fn is_midnight(t: &Option<NaiveDateTime>) -> bool {
    t.is_none_or(|t| t.time() == chrono::NaiveTime::MIN)
}

impl AggQuery {
    /// Whether the daily rollup answers this exactly: no filter or axis finer than
    /// (day, country, test), buckets of a day or more, and a range of whole days.
    pub fn fits_daily_rollup(&self) -> bool {
        self.input.is_none()
            && self.domains.is_empty()
            && self.category_code.is_none()
            && self.probe_asns.is_empty()
            && self.ooni_run_link_ids.is_empty()
            && self.grain != Some(Grain::Hour)
            && self.axes.iter().all(|a| {
                matches!(
                    a,
                    Axis::MeasurementStartDay | Axis::ProbeCc | Axis::TestName
                )
            })
            && is_midnight(&self.since)
            && is_midnight(&self.until)
    }
}

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
        let rollup = q.fits_daily_rollup();
        if rollup {
            select.push_str(ROLLUP_COUNTS);
            select.push_str(" FROM fastpath_daily f");
        } else {
            select.push_str(COUNTS);
            select.push_str(" FROM fastpath f");
        }
        let group: Vec<String> = (0..axes.len()).map(|i| format!("axis{i}")).collect();
        macro_rules! run {
            ($pool:expr) => {{
                let mut qb = QueryBuilder::new(&select);
                push_filters!(qb, q);
                if !group.is_empty() {
                    qb.push(format!(" GROUP BY {}", group.join(", ")));
                    // Rollup rows whose measurements were all deleted or moved
                    // stay at zero; the row table would have no group for them.
                    if rollup {
                        qb.push(" HAVING SUM(f.measurement_count) > 0");
                    }
                    qb.push(format!(" ORDER BY {} LIMIT ", group.join(", ")))
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
