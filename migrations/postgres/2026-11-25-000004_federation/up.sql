-- External FHIR servers that hold part of a patient's record, and how their data is kept here.
CREATE TABLE federated_sources (
    name TEXT PRIMARY KEY,
    fhir_base TEXT NOT NULL,
    auth TEXT NOT NULL,
    client_id TEXT,
    key_sealed TEXT,
    policy TEXT NOT NULL,
    max_age_secs BIGINT NOT NULL,
    timeout_ms BIGINT NOT NULL,
    types TEXT,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);

-- A local patient found at a source (by NHS number), cached.
CREATE TABLE source_links (
    source TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    linked_at BIGINT NOT NULL,
    PRIMARY KEY (source, patient_id)
);

-- When a source was last asked for a patient's resources of a type (on-read freshness).
CREATE TABLE source_fetches (
    source TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    res_type TEXT NOT NULL,
    fetched_at BIGINT NOT NULL,
    PRIMARY KEY (source, patient_id, res_type)
);

-- Messages already processed ($process-message is idempotent on the message id).
CREATE TABLE processed_messages (
    message_id TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    processed_at BIGINT NOT NULL
);
