-- The search page's order (newest first, then uid) read straight from an index, so
-- that `LIMIT 50` stops after 50 rows. Without it SQLite's planner, at about a million
-- rows, chose a skip-scan over the test-name index and sorted the whole 30-day window
-- (0.2-0.7 s); with it the plan is a backward index scan.
CREATE INDEX fastpath_start_uid_idx ON fastpath (measurement_start_time, measurement_uid);
