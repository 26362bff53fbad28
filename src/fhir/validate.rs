//! Validation before anything is written: FHIR primitive formats, required elements and required
//! code sets per type, NHS numbers (Modulus 11) and dm+d / SNOMED CT concept ids (Verhoeff).

use serde_json::{Map, Value};

/// `Invalid` is answered 400 (structure, syntax, formats); `Unprocessable` 422 (business rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    Invalid(String),
    Unprocessable(String),
}

type Check = Result<(), Violation>;

fn invalid(m: String) -> Violation {
    Violation::Invalid(m)
}
fn rule(m: String) -> Violation {
    Violation::Unprocessable(m)
}

/// PostgreSQL can neither store nor compare text holding U+0000 (SQLite can), and FHIR strings
/// may not hold it anyway (R4 §2.24.0.1: no code point below 32 but tab, CR and LF). Refused
/// wherever text arrives, so both databases answer alike.
pub const NUL_REFUSED: &str = "text must not contain the character U+0000 (NUL)";

/// Whether URL-encoded text decodes to a NUL (`%00`; a raw NUL byte is not valid in a URL).
pub fn encodes_nul(text: &[u8]) -> bool {
    text.windows(3).any(|w| w.eq_ignore_ascii_case(b"%00")) || text.contains(&0)
}

/// Whether any string or key of a JSON value holds a NUL.
pub fn holds_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(holds_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// NHS number Modulus 11 (conformance §8.1); spaces ignored, `0000000000` refused.
pub fn nhs_number_valid(s: &str) -> bool {
    // Ten digits as stored, no spaces: one number is one text, so one record per person holds
    // (a form strips the spaces people type before it builds the resource).
    let d: Option<Vec<u32>> = s.chars().map(|c| c.to_digit(10)).collect();
    let Some(d) = d.filter(|d| d.len() == 10) else { return false };
    if d.iter().all(|x| *x == 0) {
        return false;
    }
    let sum: u32 = d[..9].iter().zip((2..=10).rev()).map(|(x, w)| x * w).sum();
    match 11 - (sum % 11) {
        11 => d[9] == 0,
        10 => false,
        c => d[9] == c,
    }
}

const VERHOEFF_D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];
const VERHOEFF_P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

/// SNOMED CT (and so dm+d) concept id: 6–18 digits, no leading zero, Verhoeff check digit.
pub fn sctid_valid(s: &str) -> bool {
    if !(6..=18).contains(&s.len()) || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let c = s
        .bytes()
        .rev()
        .enumerate()
        .fold(0u8, |c, (i, b)| VERHOEFF_D[c as usize][VERHOEFF_P[i % 8][(b - b'0') as usize] as usize]);
    c == 0
}

fn date_part(s: &str) -> bool {
    match s.len() {
        4 => s.parse::<u16>().is_ok_and(|y| y > 0),
        7 => chrono::NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").is_ok(),
        10 => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        _ => false,
    }
}

pub fn is_fhir_date(s: &str) -> bool {
    date_part(s)
}

/// A dateTime with a time must carry a zone (FHIR R4 `dateTime` regex).
pub fn is_fhir_datetime(s: &str) -> bool {
    date_part(s) || is_fhir_instant(s)
}

pub fn is_fhir_instant(s: &str) -> bool {
    s.len() > 19 && s.as_bytes().get(10) == Some(&b'T') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

const DATETIME_KEYS: &[&str] = &[
    "authoredOn",
    "recordedDate",
    "effectiveDateTime",
    "whenHandedOver",
    "whenPrepared",
    "onsetDateTime",
    "abatementDateTime",
    "dateAsserted",
    "lastOccurrence",
    "occurrenceDateTime",
    "dateTime",
    "date",
    "issued",
];
const INSTANT_KEYS: &[&str] = &["recorded", "lastUpdated"];

/// One pass over the tree: primitive formats, no empty strings or arrays, NHS numbers, codings.
fn walk(rtype: &str, path: &str, v: &Value) -> Check {
    match v {
        Value::String(s) if s.is_empty() => {
            Err(invalid(format!("{rtype}.{path} is an empty string; leave the element out instead")))
        }
        Value::Array(a) if a.is_empty() => {
            Err(invalid(format!("{rtype}.{path} is an empty array; leave the element out instead")))
        }
        Value::Array(a) => a.iter().try_for_each(|x| walk(rtype, path, x)),
        Value::Object(o) => walk_object(rtype, path, o),
        _ => Ok(()),
    }
}

fn walk_object(rtype: &str, path: &str, o: &Map<String, Value>) -> Check {
    let is_period = o.get("start").or(o.get("end")).is_some_and(Value::is_string);
    for (k, child) in o {
        let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        let kind = if k == "birthDate" {
            Some(("date", is_fhir_date as fn(&str) -> bool))
        } else if DATETIME_KEYS.contains(&k.as_str()) || (is_period && (k == "start" || k == "end")) {
            Some(("dateTime", is_fhir_datetime as fn(&str) -> bool))
        } else if INSTANT_KEYS.contains(&k.as_str()) {
            Some(("instant", is_fhir_instant as fn(&str) -> bool))
        } else {
            None
        };
        if let Some((name, ok)) = kind {
            match child.as_str() {
                Some(s) if ok(s) => {}
                _ => return Err(invalid(format!("{rtype}.{here} {child} is not a valid FHIR {name} (e.g. 2025-03-14 or 2025-03-14T09:30:00Z; a time needs a zone)"))),
            }
        }
        if k == "reference" && child.as_str().is_none_or(str::is_empty) {
            return Err(invalid(format!("{rtype}.{here} must be a non-empty string")));
        }
        walk(rtype, &here, child)?;
    }
    identifier_and_coding(rtype, path, o)
}

fn identifier_and_coding(rtype: &str, path: &str, o: &Map<String, Value>) -> Check {
    let system = o.get("system").and_then(Value::as_str);
    if system == Some(crate::fhir::NHS_NUMBER_SYSTEM) {
        let value = o.get("value").and_then(Value::as_str).unwrap_or_default();
        if !nhs_number_valid(value) {
            return Err(rule(format!("{rtype}.{path} '{value}' is not a valid NHS number: 10 digits whose last is the Modulus 11 check digit")));
        }
    }
    if matches!(system, Some("https://dmd.nhs.uk" | "https://dmd.nhs.uk/" | "http://snomed.info/sct")) {
        if let Some(code) = o.get("code") {
            let c = code.as_str().unwrap_or_default();
            if !sctid_valid(c) {
                return Err(rule(format!(
                    "{rtype}.{path} code '{c}' is not a valid dm+d/SNOMED CT concept id (check digit)"
                )));
            }
        }
    }
    Ok(())
}

fn one_of(rtype: &str, body: &Value, key: &str, allowed: &[&str], required: bool) -> Check {
    match body.get(key) {
        None if required => Err(rule(format!("{rtype}.{key} is required (one of {})", allowed.join(", ")))),
        None => Ok(()),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
        Some(Value::String(s)) => Err(rule(format!("{rtype}.{key} '{s}' is not one of {}", allowed.join(", ")))),
        Some(other) => Err(invalid(format!("{rtype}.{key} must be a code string, not {other}"))),
    }
}

fn required(rtype: &str, body: &Value, keys: &[&str]) -> Check {
    for k in keys {
        if body.get(*k).is_none_or(Value::is_null) {
            return Err(rule(format!("{rtype}.{k} is required")));
        }
    }
    Ok(())
}

fn medication(rtype: &str, body: &Value) -> Check {
    match (body.get("medicationCodeableConcept"), body.get("medicationReference")) {
        (Some(_), None) | (None, Some(_)) => Ok(()),
        (Some(_), Some(_)) => {
            Err(rule(format!("{rtype} has both medicationCodeableConcept and medicationReference; give one")))
        }
        (None, None) => {
            Err(rule(format!("{rtype}.medication[x] is required (medicationCodeableConcept or medicationReference)")))
        }
    }
}

fn boolean(rtype: &str, body: &Value, key: &str) -> Check {
    match body.get(key) {
        None | Some(Value::Bool(_)) => Ok(()),
        Some(v) => Err(invalid(format!("{rtype}.{key} must be true or false, not {v}"))),
    }
}

fn codes_in(rtype: &str, body: &Value, key: &str, system: &str, allowed: &[&str]) -> Check {
    for c in body[key]["coding"].as_array().into_iter().flatten() {
        if c["system"] == system && !c["code"].as_str().is_some_and(|x| allowed.contains(&x)) {
            return Err(rule(format!("{rtype}.{key} code {} is not one of {}", c["code"], allowed.join(", "))));
        }
    }
    Ok(())
}

fn per_type(rtype: &str, b: &Value) -> Check {
    match rtype {
        "Patient" => {
            one_of(rtype, b, "gender", &["male", "female", "other", "unknown"], false).and(boolean(rtype, b, "active"))
        }
        "Practitioner" | "Organization" | "PractitionerRole" => boolean(rtype, b, "active"),
        "Group" => {
            one_of(rtype, b, "type", &["person", "animal", "practitioner", "device", "medication", "substance"], true)
                .and(match b.get("actual") {
                    Some(Value::Bool(_)) => Ok(()),
                    None => Err(rule("Group.actual is required (true or false)".into())),
                    Some(v) => Err(invalid(format!("Group.actual must be true or false, not {v}"))),
                })
        }
        "MedicationRequest" => one_of(
            rtype,
            b,
            "status",
            &["active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"],
            true,
        )
        .and(one_of(
            rtype,
            b,
            "intent",
            &[
                "proposal",
                "plan",
                "order",
                "original-order",
                "reflex-order",
                "filler-order",
                "instance-order",
                "option",
            ],
            true,
        ))
        .and(medication(rtype, b))
        .and(required(rtype, b, &["subject"])),
        "MedicationStatement" => one_of(
            rtype,
            b,
            "status",
            &["active", "completed", "entered-in-error", "intended", "stopped", "on-hold", "unknown", "not-taken"],
            true,
        )
        .and(medication(rtype, b))
        .and(required(rtype, b, &["subject"])),
        "MedicationDispense" => one_of(
            rtype,
            b,
            "status",
            &[
                "preparation",
                "in-progress",
                "cancelled",
                "on-hold",
                "completed",
                "entered-in-error",
                "stopped",
                "declined",
                "unknown",
            ],
            true,
        )
        .and(medication(rtype, b)),
        "MedicationAdministration" => one_of(
            rtype,
            b,
            "status",
            &["in-progress", "not-done", "on-hold", "completed", "entered-in-error", "stopped", "unknown"],
            true,
        )
        .and(medication(rtype, b))
        .and(required(rtype, b, &["subject"]))
        .and(if b.get("effectiveDateTime").is_some() || b.get("effectivePeriod").is_some() {
            Ok(())
        } else {
            Err(rule("MedicationAdministration.effective[x] is required".into()))
        }),
        "AllergyIntolerance" => allergy(b),
        "Condition" => required(rtype, b, &["subject"]),
        "Provenance" => required(rtype, b, &["target", "recorded", "agent"]).and(agents(b)),
        _ => Ok(()),
    }
}

fn allergy(b: &Value) -> Check {
    let t = "AllergyIntolerance";
    required(t, b, &["patient", "code"])?;
    one_of(t, b, "criticality", &["low", "high", "unable-to-assess"], false)?;
    one_of(t, b, "type", &["allergy", "intolerance"], false)?;
    for c in b["category"].as_array().into_iter().flatten() {
        if !c.as_str().is_some_and(|x| ["food", "medication", "environment", "biologic"].contains(&x)) {
            return Err(rule(format!("{t}.category {c} is not one of food, medication, environment, biologic")));
        }
    }
    codes_in(
        t,
        b,
        "clinicalStatus",
        "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
        &["active", "inactive", "resolved"],
    )?;
    codes_in(
        t,
        b,
        "verificationStatus",
        "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
        &["unconfirmed", "confirmed", "refuted", "entered-in-error"],
    )
}

fn agents(b: &Value) -> Check {
    let all_have_who = b["agent"].as_array().is_some_and(|a| a.iter().all(|x| x.get("who").is_some()));
    if all_have_who {
        Ok(())
    } else {
        Err(rule("every Provenance.agent needs a who".into()))
    }
}

/// Validates a resource of a supported type (its `resourceType` is checked by the caller).
pub fn validate(rtype: &str, body: &Value) -> Result<(), Violation> {
    let Value::Object(o) = body else { return Err(invalid(format!("a {rtype} must be a JSON object"))) };
    if holds_nul(body) {
        return Err(invalid(format!("{rtype}: {NUL_REFUSED}")));
    }
    if let Some(id) = o.get("id") {
        if !id.as_str().is_some_and(crate::fhir::valid_id) {
            return Err(invalid(format!("{rtype}.id {id} is not a valid FHIR id ([A-Za-z0-9-.], at most 64)")));
        }
    }
    for ident in o.get("identifier").and_then(Value::as_array).into_iter().flatten() {
        if ident.get("system").is_some() && ident.get("value").is_none() {
            return Err(invalid(format!("{rtype}.identifier has a system but no value")));
        }
    }
    walk_object(rtype, "", o)?;
    per_type(rtype, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nhs_numbers() {
        for ok in ["9434765919", "9000000009", "9999999999", "9912003888", "9449307539", "4010232137", "9434765870"] {
            assert!(nhs_number_valid(ok), "{ok}");
        }
        for bad in [
            "9434765918",
            "1234567890",
            "9876544321",
            "9912003890",
            "8449303649",
            "4857773456",
            "12345",
            "94347659A9",
            "0000000000",
            "943 476 5919",
        ] {
            assert!(!nhs_number_valid(bad), "{bad}");
        }
    }

    #[test]
    fn snomed_check_digits() {
        for ok in [
            "322236009",
            "322237000",
            "558911000001105",
            "777067000",
            "39732311000001104",
            "39113611000001102",
            "320000009",
            "329653008",
            "317297007",
            "322341003",
            "764146007",
            "409137002",
            "716186003",
            "26643006",
            "385055001",
        ] {
            assert!(sctid_valid(ok), "{ok}");
        }
        for bad in ["123", "322236008", "0322236009", "32223600X"] {
            assert!(!sctid_valid(bad), "{bad}");
        }
    }

    #[test]
    fn dates() {
        assert!(is_fhir_date("2025") && is_fhir_date("2025-02") && is_fhir_date("2025-02-28"));
        assert!(!is_fhir_date("2025-02-30") && !is_fhir_date("2025-13"));
        assert!(is_fhir_datetime("2025-03-14T09:30:00Z") && is_fhir_datetime("2025-03-14T09:30:00.5+01:00"));
        assert!(!is_fhir_datetime("2025-03-14T09:30:00"), "a time needs a zone");
        assert!(!is_fhir_instant("2025-03-14"));
    }

    #[test]
    fn medication_request_rules() {
        let ok = json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": {"reference": "Patient/1"},
            "medicationCodeableConcept": {"coding": [{"system": "https://dmd.nhs.uk", "code": "322236009"}]}, "authoredOn": "2025-01-02"});
        assert_eq!(validate("MedicationRequest", &ok), Ok(()));
        let mut no_intent = ok.clone();
        no_intent.as_object_mut().map(|o| o.remove("intent"));
        assert!(
            matches!(validate("MedicationRequest", &no_intent), Err(Violation::Unprocessable(m)) if m.contains("intent"))
        );
        let mut bogus = ok.clone();
        bogus["status"] = json!("bogus");
        assert!(matches!(validate("MedicationRequest", &bogus), Err(Violation::Unprocessable(_))));
        let mut bad_date = ok.clone();
        bad_date["authoredOn"] = json!("2025-13-45");
        assert!(matches!(validate("MedicationRequest", &bad_date), Err(Violation::Invalid(_))));
        let mut bad_code = ok;
        bad_code["medicationCodeableConcept"]["coding"][0]["code"] = json!("123");
        assert!(matches!(validate("MedicationRequest", &bad_code), Err(Violation::Unprocessable(_))));
    }

    #[test]
    fn patients_and_allergies() {
        let p = json!({"identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765918"}]});
        assert!(matches!(validate("Patient", &p), Err(Violation::Unprocessable(m)) if m.contains("NHS number")));
        assert!(matches!(validate("Patient", &json!({"name": []})), Err(Violation::Invalid(_))));
        assert!(matches!(validate("Patient", &json!({"gender": ""})), Err(Violation::Invalid(_))));
        let a = json!({"patient": {"reference": "Patient/1"}, "code": {"text": "penicillin"}, "criticality": "severe"});
        assert!(matches!(validate("AllergyIntolerance", &a), Err(Violation::Unprocessable(_))));
    }
}
