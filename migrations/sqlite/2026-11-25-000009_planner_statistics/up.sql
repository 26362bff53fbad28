-- Fixed planner statistics (SQLite's documented "fixed results" approach): they describe the
-- shape of a large record store (few resource types, many patients, token codes that mostly
-- pick out a handful of rows), so SQLite plans a search the same way on a new, small or fast
-- growing database as on a big one. Measured statistics were worse: taken while tables were
-- small they made a search by identifier walk every resource of the type. Nothing here runs
-- ANALYZE again (see Db::analyze).
ANALYZE sqlite_schema;
DELETE FROM sqlite_stat1 WHERE tbl IN ('resources', 'resource_versions', 'idx_token', 'idx_string', 'idx_date', 'idx_ref');
INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES
  ('resources', 'sqlite_autoindex_resources_1', '1000000 50000 1'),
  ('resources', 'resources_type_updated', '1000000 50000 1'),
  ('resources', 'resources_compartment', '1000000 100 10 1'),
  ('resource_versions', 'resource_versions_updated', '1200000 1'),
  ('resource_versions', 'resource_versions_type_updated', '1200000 60000 1'),
  ('idx_token', 'idx_token_lookup', '4000000 200000 10 1'),
  ('idx_token', 'idx_token_rid', '4000000 4'),
  ('idx_string', 'idx_string_lookup', '2000000 200000 10 1'),
  ('idx_string', 'idx_string_rid', '2000000 2'),
  ('idx_date', 'idx_date_lookup', '1500000 150000 5 5 1'),
  ('idx_date', 'idx_date_rid', '1500000 2'),
  ('idx_ref', 'idx_ref_lookup', '3000000 300000 20 20 1'),
  ('idx_ref', 'idx_ref_rid', '3000000 3');
-- Read them now (other connections read them when they next load the schema).
ANALYZE sqlite_schema;
