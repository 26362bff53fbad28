DROP INDEX audit_events_patient_client;
DROP INDEX audit_events_patient_aid;
ALTER TABLE invitations DROP COLUMN account_id;
ALTER TABLE invitations DROP COLUMN purpose;
ALTER TABLE accounts DROP COLUMN previous_login_at;
ALTER TABLE accounts DROP COLUMN last_login_at;
