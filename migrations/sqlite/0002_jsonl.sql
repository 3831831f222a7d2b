-- Where each measurement's body is in object storage (spec/api.md §4.4): one row per
-- measurement, keyed by uid so that a re-run of the uploader cannot duplicate it.
-- spool_dir and can_number say which can of which spool hour holds it, so the
-- uploader can number the next can of an hour after a crash.
CREATE TABLE jsonl (
    measurement_uid TEXT PRIMARY KEY NOT NULL,
    report_id       TEXT NOT NULL,
    input           TEXT NOT NULL,
    s3path          TEXT NOT NULL,
    linenum         INTEGER NOT NULL,
    spool_dir       TEXT NOT NULL,
    can_number      INTEGER NOT NULL,
    indexed_at      TIMESTAMP NOT NULL
);

CREATE INDEX jsonl_report_input_idx ON jsonl (report_id, input);
CREATE INDEX jsonl_spool_dir_idx ON jsonl (spool_dir, can_number);
