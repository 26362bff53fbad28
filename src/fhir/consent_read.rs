//! Reading grants as FHIR Consent, as a caller: scope, and only records the caller can reach.

use super::{FhirError, Interaction};
use crate::access::AccessContext;
use crate::consent::{consent_json, get, list};
use crate::db::Db;
use crate::time::now_micros;
use serde_json::Value;

/// `Consent/{id}` (when `id` is given) or `Consent?patient=…&status=…`.
pub fn read_consents(
    db: &Db,
    ctx: &AccessContext,
    id: Option<&str>,
    params: &[(String, String)],
    what: Interaction,
) -> Result<Vec<Value>, FhirError> {
    ctx.require("Consent", what)?;
    let mut patient =
        params.iter().find(|(k, _)| k == "patient").map(|(_, v)| v.trim_start_matches("Patient/").to_string());
    let status = params.iter().find(|(k, _)| k == "status").map(|(_, v)| v.clone());
    if let Some(p) = ctx.compartment() {
        if patient.as_deref().is_some_and(|asked| asked != p) {
            return Ok(Vec::new());
        }
        patient = Some(p.to_string());
    }
    let mut conn = db.conn()?;
    let grants = match id {
        // An unknown grant is no match; a database failure stays one (never an empty answer).
        Some(id) => match get(&mut conn, id) {
            Ok(g) => vec![g],
            Err(crate::consent::ConsentError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        },
        None => list(&mut conn, patient.as_deref())?,
    };
    let now = now_micros();
    let mut out = Vec::new();
    for g in grants {
        if !ctx.may_touch(&mut conn, "Consent", Some(&g.patient_id), what)? {
            continue;
        }
        let c = consent_json(&g, now);
        if status.as_deref().is_none_or(|s| c["status"] == s) {
            out.push(c);
        }
    }
    Ok(out)
}
