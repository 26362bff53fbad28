-- Records moved to another provider: the old record keeps a pointer and takes no new writes.
CREATE TABLE closed_records (
    patient_id TEXT PRIMARY KEY,
    replaced_by TEXT NOT NULL,
    closed_at BIGINT NOT NULL
);
