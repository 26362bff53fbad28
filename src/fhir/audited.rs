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

fn outcome_of(e: &FhirError) -> i64 {
    match e {
        FhirError::Db(_) => 8,
        _ => 4,
    }
}
