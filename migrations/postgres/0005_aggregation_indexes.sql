-- Covering indexes for the aggregations Explorer runs most: a country's days (country
-- page, calendar) and a test's days (MAT charts). They hold the three flags, so the
-- counts come from the index alone.
CREATE INDEX fastpath_cc_start_flags_idx
    ON fastpath (probe_cc, measurement_start_time, test_name, anomaly, confirmed, msm_failure);
CREATE INDEX fastpath_test_start_flags_idx
    ON fastpath (test_name, measurement_start_time, probe_cc, anomaly, confirmed, msm_failure);
