-- Citizen Lab test lists (spec/api.md Appendix A): one row per (url, list). `cc` is the
-- lower-case country of a country list, or `ZZ` for the global list. The measurement
-- API joins it on `url = fastpath.input` for `category_code`.
CREATE TABLE citizenlab (
    domain        TEXT NOT NULL,
    url           TEXT NOT NULL,
    cc            TEXT NOT NULL,
    category_code TEXT NOT NULL,
    PRIMARY KEY (url, cc)
);

CREATE INDEX citizenlab_category_idx ON citizenlab (category_code);

-- The search page filters by these with a start-time range.
CREATE INDEX fastpath_start_asn_idx ON fastpath (measurement_start_time, probe_asn);
CREATE INDEX fastpath_domain_start_idx ON fastpath (domain, measurement_start_time);
