-- One record per person, kept by the database: the NHS number of every active, live Patient, at
-- most once. Written in the transaction of every Patient version (fhir::patient::claim_nhs_numbers),
-- so of two writers claiming one number, on any replica, only the first commits.
CREATE TABLE patient_nhs_numbers (
    nhs_number TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL
);
CREATE INDEX patient_nhs_numbers_patient ON patient_nhs_numbers (patient_id);
-- Records held before this was a constraint may share a number: the oldest keeps it (the same
-- statement rebuilds the table on restore: fhir::patient::reclaim_nhs_numbers).
INSERT INTO patient_nhs_numbers (nhs_number, patient_id)
SELECT held.code, r.id FROM resources r JOIN (
    SELECT t.code AS code, MIN(t.rid) AS rid FROM idx_token t JOIN resources p ON p.rid = t.rid
    WHERE p.res_type = 'Patient' AND p.deleted = 0 AND t.param = 'identifier'
      AND t.system = 'https://fhir.nhs.uk/Id/nhs-number'
      AND NOT EXISTS (SELECT 1 FROM idx_token a WHERE a.rid = p.rid AND a.param = 'active' AND a.code = 'false')
    GROUP BY t.code
) held ON held.rid = r.rid;
