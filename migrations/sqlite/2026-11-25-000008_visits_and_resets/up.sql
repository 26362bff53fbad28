-- "New since your last visit": when the account signed in, and the time before that.
ALTER TABLE accounts ADD COLUMN last_login_at BIGINT;
ALTER TABLE accounts ADD COLUMN previous_login_at BIGINT;
-- One-time links are invitations (first sign-in) or operator-issued password resets.
ALTER TABLE invitations ADD COLUMN purpose TEXT NOT NULL DEFAULT 'invite';
-- For a reset: the account whose password it sets.
ALTER TABLE invitations ADD COLUMN account_id TEXT;
-- The access log pages newest first and filters by who, for one patient.
CREATE INDEX audit_events_patient_aid ON audit_events (patient_id, aid);
CREATE INDEX audit_events_patient_client ON audit_events (patient_id, client_id);
