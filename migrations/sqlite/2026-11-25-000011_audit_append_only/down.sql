DROP TRIGGER audit_events_no_update;
DROP TRIGGER audit_events_no_delete;
