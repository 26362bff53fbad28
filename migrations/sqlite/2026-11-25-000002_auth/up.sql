-- People who sign in: patients (linked to their Patient), practitioners, operators.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    fhir_user TEXT NOT NULL,
    organization TEXT,
    created_at BIGINT NOT NULL,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT
);

-- Registered OAuth clients: patient apps (public or confidential) and provider systems (backend).
CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    secret_hash TEXT,
    redirect_uris TEXT NOT NULL,
    scope TEXT NOT NULL,
    jwks TEXT,
    jwks_uri TEXT,
    organization TEXT,
    created_at BIGINT NOT NULL,
    removed_at BIGINT
);

-- A patient's consent: this client or organization may do `scope` to the patient's record.
CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    client_id TEXT,
    organization TEXT,
    scope TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT
);
CREATE INDEX grants_patient ON grants (patient_id);
CREATE INDEX grants_client ON grants (client_id, patient_id);
CREATE INDEX grants_organization ON grants (organization, patient_id);

-- What each grant permits per resource type ('*' for all), so search can filter in SQL.
CREATE TABLE grant_permissions (
    grant_id TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    perms TEXT NOT NULL
);
CREATE INDEX grant_permissions_grant ON grant_permissions (grant_id);

CREATE TABLE auth_codes (
    code_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    scope TEXT NOT NULL,
    patient_id TEXT,
    code_challenge TEXT NOT NULL,
    nonce TEXT,
    family TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

-- Opaque refresh tokens, hashed; a family shares one lineage for reuse detection.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    client_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    patient_id TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

-- Revoked access tokens (by jti) and revoked token families, until they would have expired anyway.
CREATE TABLE revocations (
    token_key TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

-- Client assertion ids already seen (replay protection, SMART Backend Services).
CREATE TABLE assertion_jtis (
    issuer TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, jti)
);

CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    user_agent TEXT,
    revoked_at BIGINT
);
CREATE INDEX sessions_account ON sessions (account_id);

CREATE TABLE login_failures (
    address TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX login_failures_address ON login_failures (address, at);

ALTER TABLE audit_events ADD COLUMN organization TEXT;
