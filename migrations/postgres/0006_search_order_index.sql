-- The search page's order (newest first, then uid) read straight from an index, so
-- that `LIMIT 50` stops after 50 rows instead of sorting the whole window.
CREATE INDEX fastpath_start_uid_idx ON fastpath (measurement_start_time, measurement_uid);
