//! Scopes in plain words, for the consent screen and the portal's Sharing page: a patient
//! approves or reviews what a scope is, constraint included, never its syntax.

use super::Scope;

fn noun(rtype: Option<&str>) -> &'static str {
    match rtype {
        None => "your whole record (every kind of entry, including kinds added later)",
        Some("MedicationRequest") => "your prescriptions",
        Some("MedicationStatement") => "the medicines you take",
        Some("MedicationDispense") => "what pharmacies dispensed to you",
        Some("MedicationAdministration") => "medicines given to you",
        Some("AllergyIntolerance") => "your allergies",
        Some("Condition") => "your health problems",
        Some("Patient") => "your personal details",
        Some("Medication") => "medicine details",
        Some("Provenance") => "where entries in your record came from",
        Some("Practitioner" | "PractitionerRole" | "Organization") => "who cares for you",
        Some(_) => "other entries in your record",
    }
}

const CONDITION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/condition-category";

/// Constrained scopes people have a name for (SMART 2.2's and US Core's own examples).
const NAMED: &[(&str, &str, &str, &str)] = &[
    ("Condition", "category", "problem-list-item", "your problem list"),
    ("Condition", "category", "encounter-diagnosis", "the diagnoses made at your appointments"),
];

/// The codes a constraint is likely to name, by (system, code); any other is shown as written.
const CODES: &[(&str, &str, &str)] = &[
    (CONDITION_CATEGORY, "problem-list-item", "Problem list item"),
    (CONDITION_CATEGORY, "encounter-diagnosis", "Encounter diagnosis"),
    ("http://terminology.hl7.org/CodeSystem/medicationrequest-category", "inpatient", "Inpatient"),
    ("http://terminology.hl7.org/CodeSystem/medicationrequest-category", "outpatient", "Outpatient"),
    ("http://terminology.hl7.org/CodeSystem/medicationrequest-category", "community", "Community"),
    ("http://terminology.hl7.org/CodeSystem/medicationrequest-category", "discharge", "Discharge"),
];

const SYSTEMS: &[(&str, &str)] = &[
    ("http://snomed.info/sct", "SNOMED CT"),
    ("http://loinc.org", "LOINC"),
    ("https://dmd.nhs.uk", "dm+d"),
    ("https://fhir.nhs.uk/Id/nhs-number", "NHS number"),
];

/// One token value (`system|code`, `code`, `system|`) in words.
fn token_words(value: &str) -> String {
    let (system, code) = value.split_once('|').map_or((None, value), |(s, c)| (Some(s), c));
    if let Some((_, _, display)) = CODES.iter().find(|(s, c, _)| *c == code && system.is_none_or(|x| x == *s)) {
        return (*display).to_string();
    }
    let system_name =
        system.filter(|s| !s.is_empty()).map(|s| SYSTEMS.iter().find(|(u, _)| *u == s).map_or(s, |(_, n)| n));
    match (system_name, code) {
        (Some(n), "") => format!("any code of {n}"),
        (Some(n), c) => format!("{c} ({n})"),
        (None, c) => c.to_string(),
    }
}

/// One constraint (`category=…`) in words; a comma list is any one of its values.
fn constraint_words(param: &str, value: &str) -> String {
    let values: Vec<String> = value.split(',').map(token_words).collect();
    let values = values.join(" or ");
    match param {
        "category" => format!("in the category {values}"),
        "code" => format!("with the code {values}"),
        p => format!("whose {} is {values}", p.replace('-', " ")),
    }
}

fn verbs(scope: &Scope) -> String {
    let mut verbs = Vec::new();
    if scope.read || scope.search {
        verbs.push("see");
    }
    if scope.create {
        verbs.push("add to");
    }
    if scope.update {
        verbs.push("change");
    }
    if scope.delete {
        verbs.push("remove");
    }
    let s = verbs.join(", ");
    match s.get(..1) {
        Some(first) => first.to_uppercase() + &s[1..],
        None => s,
    }
}

fn named(scope: &Scope) -> Option<&'static str> {
    let [(param, value)] = scope.filter.as_slice() else { return None };
    let code = value.rsplit_once('|').map_or(value.as_str(), |(_, c)| c);
    let system_ok = value.split_once('|').is_none_or(|(s, _)| s == CONDITION_CATEGORY);
    NAMED
        .iter()
        .find(|(t, p, c, _)| scope.resource.as_deref() == Some(*t) && p == param && *c == code && system_ok)
        .map(|(_, _, _, name)| *name)
}

/// A scope in plain words: "See your prescriptions", and for a constrained scope what its query
/// keeps, "See your problem list (health problems in the category Problem list item)".
pub fn describe(scope: &Scope) -> String {
    let verbs = verbs(scope);
    if scope.filter.is_empty() {
        return format!("{verbs} {}", noun(scope.resource.as_deref()));
    }
    let what = match scope.resource.as_deref() {
        None => "entries of every kind in your record",
        t => noun(t),
    };
    let kept: Vec<String> = scope.filter.iter().map(|(p, v)| constraint_words(p, v)).collect();
    let kept = kept.join(" and ");
    match named(scope) {
        Some(name) => format!("{verbs} {name} ({} {kept})", what.trim_start_matches("your ")),
        None => format!("{verbs} {what} {kept}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> String {
        describe(&Scope::parse(s).expect("scope"))
    }

    #[test]
    fn constrained_scopes_say_what_they_keep() {
        assert_eq!(words("patient/MedicationRequest.rs"), "See your prescriptions");
        assert_eq!(
            words("patient/Condition.rs?category=http://terminology.hl7.org/CodeSystem/condition-category|problem-list-item"),
            "See your problem list (health problems in the category Problem list item)"
        );
        assert_eq!(
            words("patient/MedicationRequest.rs?status=active"),
            "See your prescriptions whose status is active"
        );
        assert_eq!(
            words("patient/Condition.cu?code=http://snomed.info/sct|195967001"),
            "Add to, change your health problems with the code 195967001 (SNOMED CT)"
        );
        assert_eq!(
            words("patient/*.rs?category=encounter-diagnosis"),
            "See entries of every kind in your record in the category Encounter diagnosis"
        );
    }
}
