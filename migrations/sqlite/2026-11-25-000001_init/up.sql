-- Current version of every resource. `rid` is the surrogate key the search index joins on and the
-- keyset that search paging walks, so pages stay stable while others write.
CREATE TABLE resources (
    rid INTEGER PRIMARY KEY AUTOINCREMENT,
    res_type TEXT NOT NULL,
    id TEXT NOT NULL,
    version_id BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,
    deleted BIGINT NOT NULL DEFAULT 0,
    patient_id TEXT,
    source TEXT,
    body TEXT NOT NULL,
    UNIQUE (res_type, id)
);
CREATE INDEX resources_compartment ON resources (patient_id, res_type, rid);
CREATE INDEX resources_type_updated ON resources (res_type, last_updated);

CREATE TABLE resource_versions (
    rid BIGINT NOT NULL,
    version_id BIGINT NOT NULL,
    res_type TEXT NOT NULL,
    id TEXT NOT NULL,
    last_updated BIGINT NOT NULL,
    deleted BIGINT NOT NULL DEFAULT 0,
    patient_id TEXT,
    method TEXT NOT NULL,
    author TEXT NOT NULL,
    body TEXT,
    PRIMARY KEY (rid, version_id)
);
CREATE INDEX resource_versions_updated ON resource_versions (last_updated);
CREATE INDEX resource_versions_type_updated ON resource_versions (res_type, last_updated);

CREATE TABLE idx_token (rid BIGINT NOT NULL, param TEXT NOT NULL, system TEXT, code TEXT NOT NULL);
CREATE INDEX idx_token_lookup ON idx_token (param, code, rid);
CREATE INDEX idx_token_rid ON idx_token (rid);

CREATE TABLE idx_string (rid BIGINT NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL, raw TEXT NOT NULL);
CREATE INDEX idx_string_lookup ON idx_string (param, value, rid);
CREATE INDEX idx_string_rid ON idx_string (rid);

CREATE TABLE idx_date (rid BIGINT NOT NULL, param TEXT NOT NULL, lo BIGINT NOT NULL, hi BIGINT NOT NULL);
CREATE INDEX idx_date_lookup ON idx_date (param, lo, hi, rid);
CREATE INDEX idx_date_rid ON idx_date (rid);

CREATE TABLE idx_ref (rid BIGINT NOT NULL, param TEXT NOT NULL, target_type TEXT NOT NULL, target_id TEXT NOT NULL);
CREATE INDEX idx_ref_lookup ON idx_ref (param, target_id, target_type, rid);
CREATE INDEX idx_ref_rid ON idx_ref (rid);

CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    private_key TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);

CREATE TABLE audit_events (
    aid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    recorded BIGINT NOT NULL,
    patient_id TEXT,
    client_id TEXT,
    subject TEXT,
    action TEXT NOT NULL,
    interaction TEXT NOT NULL,
    res_type TEXT,
    res_id TEXT,
    query TEXT,
    outcome BIGINT NOT NULL,
    detail TEXT,
    count BIGINT
);
CREATE INDEX audit_events_patient ON audit_events (patient_id, recorded);
