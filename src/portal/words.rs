//! Codes in the words a patient uses: statuses ("Current", "Stopped"), criticality ("High
//! risk"), and plain names for problems and allergy substances ("High cholesterol" rather than
//! "Hypercholesterolaemia") from `data/plain_names.json`, where the coding has one.

use crate::fhir::SNOMED_SYSTEM;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::LazyLock;

#[derive(Deserialize)]
struct PlainNames {
    snomed: HashMap<String, String>,
}

static PLAIN: LazyLock<PlainNames> = LazyLock::new(|| {
    // Compiled-in data, checked by the unit test below: a failure here is a build mistake.
    serde_json::from_str(include_str!("../../data/plain_names.json"))
        .expect("data/plain_names.json is valid (see its unit test)")
});

/// The plain name of a coded problem or substance: the first SNOMED CT coding that has one.
pub(crate) fn plain_name(concept: &Value) -> Option<String> {
    let codings = concept["coding"].as_array()?;
    codings.iter().filter(|c| c["system"] == SNOMED_SYSTEM).find_map(|c| PLAIN.snomed.get(c["code"].as_str()?)).cloned()
}

/// A problem or allergy's name: its plain name, else the record's own words.
pub(crate) fn concept_name(concept: &Value) -> Option<String> {
    plain_name(concept).or_else(|| super::concept_text(concept))
}

/// A MedicationRequest or MedicationStatement status (FHIR R4 value sets) in words.
pub fn medicine_status(code: &str) -> &'static str {
    match code {
        "active" => "Current",
        "completed" => "Finished",
        "stopped" => "Stopped",
        "on-hold" => "Paused",
        "cancelled" => "Cancelled",
        "entered-in-error" => "Recorded in error",
        "intended" => "Planned",
        "not-taken" => "Not taken",
        "draft" => "Not yet issued",
        "removed" => "Removed",
        _ => "Not known",
    }
}

/// A Condition's or AllergyIntolerance's clinicalStatus code in words.
pub fn clinical_status(code: &str) -> &'static str {
    match code {
        "active" => "Current",
        "recurrence" => "Come back",
        "relapse" => "Come back",
        "inactive" => "Not current",
        "remission" => "In remission",
        "resolved" => "Resolved",
        _ => "Not known",
    }
}

/// A verificationStatus code in words; `None` for a confirmed one (nothing to add).
pub fn verification_status(code: &str) -> Option<&'static str> {
    match code {
        "unconfirmed" => Some("Not confirmed"),
        "provisional" => Some("Provisional"),
        "differential" => Some("Possible"),
        "refuted" => Some("Ruled out"),
        "entered-in-error" => Some("Recorded in error"),
        _ => None,
    }
}

/// An allergy's criticality in words.
pub fn criticality(code: &str) -> &'static str {
    match code {
        "high" => "High risk",
        "low" => "Low risk",
        "unable-to-assess" => "Risk not known",
        _ => "Risk not recorded",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_data_file_loads_and_names_are_plain() {
        assert!(PLAIN.snomed.len() > 20);
        for (code, name) in &PLAIN.snomed {
            assert!(code.chars().all(|c| c.is_ascii_digit()), "{code}");
            assert!(!name.trim().is_empty() && name.len() < 60, "{code}: {name}");
        }
    }

    #[test]
    fn plain_names_when_the_coding_has_one() {
        let c = json!({"coding": [{"system": "http://snomed.info/sct", "code": "13644009", "display": "Hypercholesterolaemia"}]});
        assert_eq!(concept_name(&c).as_deref(), Some("High cholesterol"));
        let c = json!({"coding": [{"system": "http://snomed.info/sct", "code": "764146007", "display": "Substance with penicillin structure"}]});
        assert_eq!(concept_name(&c).as_deref(), Some("Penicillin"));
        // Not a SNOMED CT coding, or a code not listed: the record's own words.
        let c = json!({"coding": [{"system": "urn:other", "code": "13644009", "display": "Other"}]});
        assert_eq!(concept_name(&c).as_deref(), Some("Other"));
        let c =
            json!({"text": "Bunion", "coding": [{"system": "http://snomed.info/sct", "code": "1", "display": "x"}]});
        assert_eq!(concept_name(&c).as_deref(), Some("Bunion"));
    }

    #[test]
    fn statuses_in_words() {
        assert_eq!(medicine_status("active"), "Current");
        assert_eq!(medicine_status("stopped"), "Stopped");
        assert_eq!(medicine_status("on-hold"), "Paused");
        assert_eq!(medicine_status("entered-in-error"), "Recorded in error");
        assert_eq!(medicine_status("whatever"), "Not known");
        assert_eq!(clinical_status("resolved"), "Resolved");
        assert_eq!(criticality("high"), "High risk");
        assert_eq!(criticality("unable-to-assess"), "Risk not known");
        assert_eq!(verification_status("confirmed"), None);
        assert_eq!(verification_status("unconfirmed"), Some("Not confirmed"));
    }
}
