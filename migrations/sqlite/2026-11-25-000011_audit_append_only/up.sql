-- Audit rows are evidence: the database itself refuses to change or remove one, so no code path
-- (or operator with a SQL prompt and a typo) can rewrite who read a record.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
  SELECT RAISE(ABORT, 'audit rows are append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
  SELECT RAISE(ABORT, 'audit rows are append-only');
END;
