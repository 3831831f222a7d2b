-- OONI's fastpath columns (spec/fastpath.md §5.2) plus provenance of the score.
CREATE TABLE fastpath (
    measurement_uid        TEXT PRIMARY KEY NOT NULL,
    report_id              TEXT NOT NULL,
    input                  TEXT NOT NULL,
    probe_cc               TEXT NOT NULL,
    probe_asn              BIGINT NOT NULL,
    test_name              TEXT NOT NULL,
    test_start_time        TIMESTAMP NOT NULL,
    measurement_start_time TIMESTAMP NOT NULL,
    scores                 TEXT NOT NULL,
    platform               TEXT NOT NULL,
    anomaly                BOOLEAN NOT NULL,
    confirmed              BOOLEAN NOT NULL,
    msm_failure            BOOLEAN NOT NULL,
    blocking_type          TEXT NOT NULL,
    domain                 TEXT NOT NULL,
    software_name          TEXT NOT NULL,
    software_version       TEXT NOT NULL,
    test_version           TEXT NOT NULL,
    test_runtime           DOUBLE PRECISION NOT NULL,
    architecture           TEXT NOT NULL,
    engine_name            TEXT NOT NULL,
    engine_version         TEXT NOT NULL,
    test_helper_address    TEXT NOT NULL,
    test_helper_type       TEXT NOT NULL,
    ooni_run_link_id       BIGINT,
    is_verified            TEXT NOT NULL,
    scorer_name            TEXT NOT NULL,
    scorer_version         TEXT NOT NULL,
    fingerprints_version   TEXT NOT NULL,
    scored_at              TIMESTAMP NOT NULL
);

CREATE INDEX fastpath_start_cc_test_idx ON fastpath (measurement_start_time, probe_cc, test_name);
CREATE INDEX fastpath_report_input_idx ON fastpath (report_id, input);

-- Measurements that were stored but, as in OONI's fastpath, give no row: early
-- discards and rows OONI fails to build. Keeps crash recovery from re-scoring them.
CREATE TABLE fastpath_dropped (
    measurement_uid TEXT PRIMARY KEY NOT NULL,
    kind            TEXT NOT NULL,
    reason          TEXT NOT NULL,
    dropped_at      TIMESTAMP NOT NULL
);
