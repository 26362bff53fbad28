//! A person's record by NHS number: how records from elsewhere meet the local one, and how one
//! number stays with one active record.

use super::{FhirError, NHS_NUMBER_SYSTEM};
use crate::db::{Bind, Conn, DbError, Sql};
use serde_json::Value;
use std::collections::BTreeSet;

/// The NHS number a Patient resource carries, if any.
pub fn nhs_number(patient: &Value) -> Option<String> {
    patient["identifier"].as_array()?.iter().find(|i| i["system"] == NHS_NUMBER_SYSTEM)?["value"]
        .as_str()
        .map(str::to_string)
}

/// The local, live Patient that holds this NHS number, if any.
pub fn by_nhs_number(conn: &mut Conn, nhs: &str) -> Result<Option<String>, FhirError> {
    let q = Sql::with(
        "SELECT r.id AS id FROM resources r JOIN idx_token t ON t.rid = r.rid WHERE r.res_type = 'Patient' AND r.deleted = 0 \
         AND t.param = 'identifier' AND t.system = ? AND t.code = ?",
        [Bind::Text(NHS_NUMBER_SYSTEM.into()), Bind::Text(nhs.into())],
    );
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    Ok(conn.first::<Id>(&q)?.map(|i| i.id))
}

/// The NHS numbers a Patient version claims under one record per person: those of an active,
/// live record (`None`: deleted).
fn claimed(patient: Option<&Value>) -> BTreeSet<&str> {
    let Some(p) = patient.filter(|p| p["active"] != Value::Bool(false)) else { return BTreeSet::new() };
    let ids = p["identifier"].as_array().map(Vec::as_slice).unwrap_or_default();
    ids.iter().filter(|i| i["system"] == NHS_NUMBER_SYSTEM).filter_map(|i| i["value"].as_str()).collect()
}

/// One record per person, kept by the database: `patient_nhs_numbers` is keyed by the number, so
/// of two transactions claiming one (on any replica) the second waits for the first and, once it
/// has committed, finds the number taken. Run with every new version of `patient_id` (`None`
/// when it is deleted), which gives up the numbers it no longer claims. `ON CONFLICT DO NOTHING`
/// rather than a failing insert, which would abort the whole PostgreSQL transaction: the refusal
/// is then an ordinary error, like any other check's.
pub(crate) fn claim_nhs_numbers(conn: &mut Conn, patient_id: &str, patient: Option<&Value>) -> Result<(), FhirError> {
    let release = Sql::with("DELETE FROM patient_nhs_numbers WHERE patient_id = ?", [Bind::Text(patient_id.into())]);
    conn.execute(&release.reused())?;
    for nhs in claimed(patient) {
        let claim = Sql::with(
            "INSERT INTO patient_nhs_numbers (nhs_number, patient_id) VALUES (?, ?) ON CONFLICT (nhs_number) DO NOTHING",
            [Bind::Text(nhs.into()), Bind::Text(patient_id.into())],
        );
        if conn.execute(&claim.reused())? == 0 {
            return Err(FhirError::Conflict(format!(
                "NHS number {nhs} already belongs to another active Patient: one record per person"
            )));
        }
    }
    Ok(())
}

/// Rebuilds every claim from the Patients held, as the migration that made the table did: a
/// restore carries the Patients, and the claims follow from them (whatever the backup's age).
/// Records that share a number from before it was a constraint: the oldest keeps it.
pub fn reclaim_nhs_numbers(conn: &mut Conn) -> Result<usize, DbError> {
    conn.execute(&Sql::new("DELETE FROM patient_nhs_numbers"))?;
    let q = Sql::with(
        "INSERT INTO patient_nhs_numbers (nhs_number, patient_id) \
         SELECT held.code, r.id FROM resources r JOIN ( \
             SELECT t.code AS code, MIN(t.rid) AS rid FROM idx_token t JOIN resources p ON p.rid = t.rid \
             WHERE p.res_type = 'Patient' AND p.deleted = 0 AND t.param = 'identifier' AND t.system = ? \
             AND NOT EXISTS (SELECT 1 FROM idx_token a WHERE a.rid = p.rid AND a.param = 'active' AND a.code = 'false') \
             GROUP BY t.code \
         ) held ON held.rid = r.rid",
        [Bind::Text(NHS_NUMBER_SYSTEM.into())],
    );
    conn.execute(&q)
}
