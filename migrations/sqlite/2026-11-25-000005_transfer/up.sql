-- Other Healthfolio instances (or SMART servers) a patient can bring their record from, with
-- the client id this instance holds there.
CREATE TABLE transfer_partners (
    name TEXT PRIMARY KEY,
    fhir_base TEXT NOT NULL,
    client_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- A transfer between sending the patient to the partner and their return (PKCE verifier kept here,
-- so any replica can finish it).
CREATE TABLE transfers (
    state TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    partner TEXT NOT NULL,
    verifier TEXT NOT NULL,
    mode TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    finished_at BIGINT,
    result TEXT
);
