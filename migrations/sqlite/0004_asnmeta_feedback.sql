-- Network names for `/api/_/asnmeta` and `/api/_/networks` (spec/api.md Appendix A).
CREATE TABLE asnmeta (
    asn      BIGINT NOT NULL,
    org_name TEXT NOT NULL,
    cc       TEXT NOT NULL,
    changed  DATE NOT NULL,
    aut_name TEXT NOT NULL,
    source   TEXT NOT NULL,
    PRIMARY KEY (asn, changed)
);

-- Users' verdicts on measurements (`/api/_/measurement_feedback`); one per account.
CREATE TABLE msmt_feedback (
    measurement_uid TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    status          TEXT NOT NULL,
    update_time     TIMESTAMP NOT NULL,
    PRIMARY KEY (measurement_uid, account_id)
);
