//! Finding a person's record by NHS number: how records from elsewhere meet the local one.

use super::{FhirError, NHS_NUMBER_SYSTEM};
use crate::db::{Bind, Conn, Sql};
use serde_json::Value;

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
