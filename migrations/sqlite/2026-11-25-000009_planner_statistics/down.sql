DELETE FROM sqlite_stat1 WHERE tbl IN ('resources', 'resource_versions', 'idx_token', 'idx_string', 'idx_date', 'idx_ref');
