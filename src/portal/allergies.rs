//! Allergies and health problems (AllergyIntolerance and Condition), in words.

use super::{concept_text, date_part, search, PortalError};
use crate::access::AccessContext;
use crate::fhir::Store;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct AllergyLine {
    pub name: String,
    /// high, low or "unable to assess"; "not recorded" when absent.
    pub criticality: String,
    pub status: String,
    /// What happens: "Urticarial rash (moderate)".
    pub reactions: Vec<String>,
    pub recorded: String,
}

#[derive(Debug, Clone)]
pub struct ProblemLine {
    pub name: String,
    pub status: String,
    pub since: String,
}

fn coded_status(v: &Value) -> String {
    v["coding"][0]["code"].as_str().unwrap_or("unknown").to_string()
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
            name: concept_text(&a["code"]).unwrap_or_else(|| "Unnamed allergy".into()),
            criticality: a["criticality"].as_str().unwrap_or("not recorded").replace('-', " "),
            status: coded_status(&a["clinicalStatus"]),
            reactions: reactions(a),
            recorded: date_part(&a["recordedDate"]),
        })
        .collect();
    let rank = |c: &str| match c {
        "high" => 0,
        "unable to assess" => 1,
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
            name: concept_text(&c["code"]).unwrap_or_else(|| "Unnamed problem".into()),
            status: coded_status(&c["clinicalStatus"]),
            since: date_part(c.get("onsetDateTime").unwrap_or(&c["onsetPeriod"]["start"])),
        })
        .collect();
    out.sort_by(|a, b| (a.status != "active").cmp(&(b.status != "active")).then(b.since.cmp(&a.since)));
    Ok(out)
}
