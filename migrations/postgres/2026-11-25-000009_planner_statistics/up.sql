-- PostgreSQL keeps its own statistics (autovacuum, and ANALYZE after a bulk load); SQLite's are fixed in this migration.
SELECT 1;
