//! Allergies and health problems (AllergyIntolerance and Condition), in words.

use super::words::{clinical_status, concept_name, criticality, verification_status};
use super::{concept_text, date_part, search, PortalError};
use crate::access::AccessContext;
use crate::fhir::Store;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct AllergyLine {
    pub name: String,
    /// The FHIR code (high, low, unable-to-assess), empty when absent.
    pub criticality: String,
    /// In words: "Current", "Resolved (not confirmed)".
    pub status: String,
    /// What happens: "Urticarial rash (moderate)".
    pub reactions: Vec<String>,
    pub recorded: String,
}

#[derive(Debug, Clone)]
pub struct ProblemLine {
    pub name: String,
    /// In words: "Current", "Resolved".
    pub status: String,
    pub current: bool,
    /// The FHIR date it began (YYYY-MM-DD), or empty.
    pub since: String,
}

impl AllergyLine {
    pub fn high_risk(&self) -> bool {
        self.criticality == "high"
    }

    /// "High risk", "Low risk", "Risk not known", "Risk not recorded".
    pub fn criticality_words(&self) -> &'static str {
        criticality(&self.criticality)
    }
}

fn code(v: &Value) -> &str {
    v["coding"][0]["code"].as_str().unwrap_or_default()
}

/// The clinical status in words, with the verification status when it is not plain confirmed:
/// "Current (not confirmed)".
fn status_words(r: &Value) -> String {
    let clinical = clinical_status(code(&r["clinicalStatus"]));
    match verification_status(code(&r["verificationStatus"])) {
        Some(v) => format!("{clinical} ({})", v.to_lowercase()),
        None => clinical.to_string(),
    }
}

fn reactions(a: &Value) -> Vec<String> {
    let list = a["reaction"].as_array().cloned().unwrap_or_default();
    list.iter()
        .flat_map(|r| {
            let severity = r["severity"].as_str().map(|s| format!(" ({s})")).unwrap_or_default();
            let found = r["manifestation"].as_array().cloned().unwrap_or_default();
            found.iter().filter_map(concept_text).map(|m| format!("{m}{severity}")).collect::<Vec<_>>()
        })
        .collect()
}

/// Allergies, the most critical first.
pub fn allergies(store: &Store, ctx: &AccessContext) -> Result<Vec<AllergyLine>, PortalError> {
    let mut out: Vec<AllergyLine> = search(store, ctx, "AllergyIntolerance", &[])?
        .iter()
        .map(|a| AllergyLine {
            name: concept_name(&a["code"]).unwrap_or_else(|| "Unnamed allergy".into()),
            criticality: a["criticality"].as_str().unwrap_or_default().to_string(),
            status: status_words(a),
            reactions: reactions(a),
            recorded: date_part(&a["recordedDate"]),
        })
        .collect();
    let rank = |c: &str| match c {
        "high" => 0,
        "unable-to-assess" => 1,
        "low" => 2,
        _ => 3,
    };
    out.sort_by_key(|a| rank(&a.criticality));
    Ok(out)
}

/// Health problems (Conditions), current first.
pub fn problems(store: &Store, ctx: &AccessContext) -> Result<Vec<ProblemLine>, PortalError> {
    let mut out: Vec<ProblemLine> = search(store, ctx, "Condition", &[])?
        .iter()
        .map(|c| ProblemLine {
            name: concept_name(&c["code"]).unwrap_or_else(|| "Unnamed problem".into()),
            status: status_words(c),
            current: matches!(code(&c["clinicalStatus"]), "active" | "recurrence" | "relapse"),
            since: date_part(c.get("onsetDateTime").unwrap_or(&c["onsetPeriod"]["start"])),
        })
        .collect();
    out.sort_by(|a, b| (!a.current).cmp(&!b.current).then(b.since.cmp(&a.since)));
    Ok(out)
}
