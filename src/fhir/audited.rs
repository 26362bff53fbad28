//! The access-log entries of the record store's interactions: what a read, search or write of
//! a resource, and its failure, says in the log. The log itself (`crate::audit`) knows nothing
//! of resources.

use super::{FhirError, Stored};
use crate::audit::AuditEntry;

impl AuditEntry {
    pub fn read(interaction: &str, rtype: &str, id: Option<&str>, result: &Result<Stored, FhirError>) -> Self {
        let (patient_id, outcome, detail) = match result {
            Ok(s) => (s.patient_id.clone(), 0, None),
            Err(e) => (None, outcome_of(e), Some(e.to_string())),
        };
        AuditEntry {
            action: "R",
            interaction: interaction.to_string(),
            res_type: Some(rtype.to_string()),
            res_id: id.map(str::to_string),
            patient_id,
            query: None,
            outcome,
            detail,
            count: None,
        }
    }

    pub fn write(method: &str, s: &Stored) -> Self {
        let (action, interaction) = match (method, s.deleted, s.version_id) {
            (_, true, _) => ("D", "delete"),
            ("POST", _, _) => ("C", "create"),
            (_, _, 1) => ("C", "update"),
            _ => ("U", "update"),
        };
        AuditEntry {
            action,
            interaction: interaction.to_string(),
            res_type: Some(s.rtype.clone()),
            res_id: Some(s.id.clone()),
            patient_id: s.patient_id.clone(),
            query: None,
            outcome: 0,
            detail: None,
            count: None,
        }
    }

    pub fn failed_write(interaction: &str, rtype: &str, id: Option<&str>, e: &FhirError) -> Self {
        AuditEntry {
            action: "U",
            interaction: interaction.to_string(),
            res_type: (!rtype.is_empty()).then(|| rtype.to_string()),
            res_id: id.map(str::to_string),
            patient_id: None,
            query: None,
            outcome: outcome_of(e),
            detail: Some(e.to_string()),
            count: None,
        }
    }

    pub fn search(rtype: Option<&str>, query: &str, patient: Option<&str>, result: Result<usize, &FhirError>) -> Self {
        let (outcome, detail, count) = match result {
            Ok(n) => (0, None, Some(n as i64)),
            Err(e) => (outcome_of(e), Some(e.to_string()), None),
        };
        AuditEntry {
            action: "E",
            interaction: if rtype.is_some() { "search-type" } else { "search-system" }.to_string(),
            res_type: rtype.map(str::to_string),
            res_id: None,
            patient_id: patient.map(str::to_string),
            query: Some(query.to_string()),
            outcome,
            detail,
            count,
        }
    }
}

/// The one patient a search names by its `patient` or `subject` parameter (`123`, `Patient/123`
/// or an absolute reference), so that the search shows in that patient's access log even when
/// the caller's token has no patient in context (a provider system). None when it names none,
/// several, or names them another way (a chain, an identifier).
pub(crate) fn searched_patient(params: &[(String, String)]) -> Option<String> {
    let mut named = params
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "patient" | "subject" | "patient:Patient" | "subject:Patient"))
        .map(|(_, v)| v.rsplit_once("Patient/").map_or(v.as_str(), |(_, id)| id));
    let id = named.next()?;
    let plain = !id.is_empty() && !id.contains([',', '/', '|', '?']);
    (plain && named.all(|other| other == id)).then(|| id.to_string())
}

fn outcome_of(e: &FhirError) -> i64 {
    match e {
        FhirError::Db(_) => 8,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::searched_patient;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_search_names_its_one_patient() {
        assert_eq!(searched_patient(&p(&[("patient", "123")])).as_deref(), Some("123"));
        assert_eq!(searched_patient(&p(&[("subject", "Patient/123"), ("status", "active")])).as_deref(), Some("123"));
        assert_eq!(searched_patient(&p(&[("patient", "https://x.example/fhir/Patient/9")])).as_deref(), Some("9"));
        assert_eq!(searched_patient(&p(&[("patient", "1,2")])), None);
        assert_eq!(searched_patient(&p(&[("patient", "1"), ("subject", "2")])), None);
        assert_eq!(searched_patient(&p(&[("patient.identifier", "x|1")])), None);
        assert_eq!(searched_patient(&p(&[("status", "active")])), None);
    }
}
