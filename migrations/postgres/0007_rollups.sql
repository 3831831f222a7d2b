-- Per day, country and test: the four exclusive outcome counts of `/api/v1/aggregation`.
-- Charts that filter and group by nothing finer (MAT's default, a country's calendar
-- and app charts, the thematic pages) read this instead of every row. A trigger keeps
-- it exact in the transaction that writes the rows, re-scores and deletes included.
-- The day column keeps fastpath's name (it holds the day's midnight) so the same
-- bucket and range SQL runs on both tables.
-- Every row written updates a rollup row, so the counts are in no index (an update
-- that changes no indexed column is HOT: the new version stays on its page and no
-- index grows) and pages keep half their room for those versions. Vacuum runs after
-- every 20,000 dead versions whatever the table's size. (With the counts INCLUDEd in
-- the indexes, a 10M-row load left 10M dead versions, no HOT update, and a 276 ms
-- `country_overview`; without, a 1M-row load updated HOT every time and left 3.8k.)
CREATE TABLE fastpath_daily (
    measurement_start_time TIMESTAMP NOT NULL,
    probe_cc               TEXT NOT NULL,
    test_name              TEXT NOT NULL,
    anomaly_count          BIGINT NOT NULL,
    confirmed_count        BIGINT NOT NULL,
    failure_count          BIGINT NOT NULL,
    ok_count               BIGINT NOT NULL,
    measurement_count      BIGINT NOT NULL,
    PRIMARY KEY (test_name, measurement_start_time, probe_cc)
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000);
CREATE INDEX fastpath_daily_cc_idx ON fastpath_daily (probe_cc, measurement_start_time);

INSERT INTO fastpath_daily
SELECT date_trunc('day', measurement_start_time), probe_cc, test_name,
       COUNT(*) FILTER (WHERE anomaly AND NOT confirmed AND NOT msm_failure),
       COUNT(*) FILTER (WHERE confirmed AND NOT msm_failure),
       COUNT(*) FILTER (WHERE msm_failure),
       COUNT(*) FILTER (WHERE NOT anomaly AND NOT confirmed AND NOT msm_failure),
       COUNT(*)
FROM fastpath GROUP BY 1, 2, 3;

-- Per month, country and network: measurements. Answers the distinct-network and
-- per-country counts of the overview routes (`/api/_/global_overview`,
-- `global_overview_by_month`, `country_overview`, `countries`, `networks`) without a
-- scan of every row. A network rarely spans countries, so it stays small.
CREATE TABLE fastpath_networks (
    month             TIMESTAMP NOT NULL,
    probe_cc          TEXT NOT NULL,
    probe_asn         BIGINT NOT NULL,
    measurement_count BIGINT NOT NULL,
    PRIMARY KEY (month, probe_cc, probe_asn)
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000);
CREATE INDEX fastpath_networks_cc_idx ON fastpath_networks (probe_cc, probe_asn);
CREATE INDEX fastpath_networks_asn_idx ON fastpath_networks (probe_asn);

INSERT INTO fastpath_networks
SELECT date_trunc('month', measurement_start_time), probe_cc, probe_asn, COUNT(*)
FROM fastpath GROUP BY 1, 2, 3;

CREATE FUNCTION fastpath_rollups_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE fastpath_daily SET
            anomaly_count = anomaly_count - (OLD.anomaly AND NOT OLD.confirmed AND NOT OLD.msm_failure)::int,
            confirmed_count = confirmed_count - (OLD.confirmed AND NOT OLD.msm_failure)::int,
            failure_count = failure_count - OLD.msm_failure::int,
            ok_count = ok_count - (NOT OLD.anomaly AND NOT OLD.confirmed AND NOT OLD.msm_failure)::int,
            measurement_count = measurement_count - 1
        WHERE test_name = OLD.test_name
          AND measurement_start_time = date_trunc('day', OLD.measurement_start_time)
          AND probe_cc = OLD.probe_cc;
        UPDATE fastpath_networks SET measurement_count = measurement_count - 1
        WHERE month = date_trunc('month', OLD.measurement_start_time)
          AND probe_cc = OLD.probe_cc AND probe_asn = OLD.probe_asn;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO fastpath_daily VALUES (
            date_trunc('day', NEW.measurement_start_time), NEW.probe_cc, NEW.test_name,
            (NEW.anomaly AND NOT NEW.confirmed AND NOT NEW.msm_failure)::int,
            (NEW.confirmed AND NOT NEW.msm_failure)::int,
            NEW.msm_failure::int,
            (NOT NEW.anomaly AND NOT NEW.confirmed AND NOT NEW.msm_failure)::int,
            1)
        ON CONFLICT (test_name, measurement_start_time, probe_cc) DO UPDATE SET
            anomaly_count = fastpath_daily.anomaly_count + excluded.anomaly_count,
            confirmed_count = fastpath_daily.confirmed_count + excluded.confirmed_count,
            failure_count = fastpath_daily.failure_count + excluded.failure_count,
            ok_count = fastpath_daily.ok_count + excluded.ok_count,
            measurement_count = fastpath_daily.measurement_count + 1;
        INSERT INTO fastpath_networks VALUES (
            date_trunc('month', NEW.measurement_start_time), NEW.probe_cc, NEW.probe_asn, 1)
        ON CONFLICT (month, probe_cc, probe_asn) DO UPDATE SET
            measurement_count = fastpath_networks.measurement_count + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER fastpath_rollups_insert_delete AFTER INSERT OR DELETE ON fastpath
    FOR EACH ROW EXECUTE FUNCTION fastpath_rollups_apply();
-- A re-score (the row upsert's DO UPDATE) moves one count from the old outcome to
-- the new one.
CREATE TRIGGER fastpath_rollups_update
    AFTER UPDATE OF measurement_start_time, probe_cc, probe_asn, test_name, anomaly, confirmed, msm_failure ON fastpath
    FOR EACH ROW EXECUTE FUNCTION fastpath_rollups_apply();

-- A network's pages (`/as/{asn}`) aggregate by ASN over all time.
CREATE INDEX fastpath_asn_start_flags_idx
    ON fastpath (probe_asn, measurement_start_time, probe_cc, test_name, anomaly, confirmed, msm_failure);
