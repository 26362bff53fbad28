-- One-time invitations to a patient's first sign-in (hashed; valid for 7 days).
CREATE TABLE invitations (
    code_hash TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
