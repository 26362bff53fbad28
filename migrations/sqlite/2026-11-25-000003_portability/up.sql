-- Where an imported resource came from: importing the same archive twice maps to the same rows.
CREATE TABLE imported_origins (
    origin TEXT PRIMARY KEY,
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    imported_at BIGINT NOT NULL
);

-- Background work (bulk export, import, transfer), leased by whichever replica is free.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    client_id TEXT NOT NULL,
    request TEXT NOT NULL,
    params TEXT NOT NULL,
    progress TEXT,
    result TEXT,
    error TEXT,
    created_at BIGINT NOT NULL,
    lease_until BIGINT,
    leased_by TEXT,
    finished_at BIGINT
);
CREATE INDEX jobs_status ON jobs (status, created_at);
