//! Medicine safety: an entry that meets a recorded allergy or repeats a current medicine is
//! written with a warning: an OperationOutcome `warning` issue.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::TestApp;
use serde_json::{json, Value};

const AMOXICILLIN: (&str, &str) = ("39732311000001104", "Amoxicillin 250mg capsules");
const OMEPRAZOLE: (&str, &str) = ("317297007", "Omeprazole 10mg gastro-resistant capsules");

/// A patient with a high-risk penicillin allergy who is prescribed simvastatin; returns the
/// patient's id and the prescription's.
fn allergic_patient(app: &TestApp, email: Option<&str>) -> (String, String) {
    let p = match email {
        Some(e) => patient_with_login(app, NHS[0], e),
        None => app.create(patient(NHS[0], "Okafor", "Amara")),
    };
    app.create(allergy(&p, "high"));
    let (code, display) = SIMVASTATIN;
    let rx = app.create(medication_request(&p, code, display, "active", "2024-02-10"));
    (p, rx)
}

fn warnings(outcome: &Value) -> Vec<(String, String)> {
    let issues = outcome["issue"].as_array().cloned().unwrap_or_default();
    issues
        .iter()
        .filter(|i| i["severity"] == "warning")
        .map(|i| (i["code"].as_str().unwrap_or_default().into(), i["diagnostics"].as_str().unwrap_or_default().into()))
        .collect()
}

fn api_writes_carry_the_warning(app: &TestApp) {
    let (p, rx) = allergic_patient(app, None);
    let asks = app.client().with_header("Prefer", "return=OperationOutcome");
    // An allergy match: still written (201), and the outcome says why it is a concern.
    let (code, display) = AMOXICILLIN;
    let r = asks.post("MedicationRequest", &medication_request(&p, code, display, "active", "2025-10-01"));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["resourceType"], "OperationOutcome");
    assert_eq!(r.body["issue"][0]["severity"], "information", "the write itself: {}", r.text);
    let found = warnings(&r.body);
    assert_eq!(found.len(), 1, "{}", r.text);
    assert_eq!(found[0].0, "business-rule");
    assert!(
        found[0].1.contains("recorded allergy to penicillin (high risk")
            && found[0].1.contains("Amoxicillin is a penicillin."),
        "{}",
        found[0].1
    );
    let location = r.header("Location").expect("Location").to_string();
    assert_eq!(app.client().get(&location).status, 200, "it was stored: {location}");
    // Without asking for the outcome the resource is the body, as before.
    let plain = app.client().post("MedicationRequest", &medication_request(&p, code, display, "active", "2025-10-02"));
    assert_eq!((plain.status, plain.body["resourceType"].as_str()), (201, Some("MedicationRequest")));
    // A duplicate, by update: a statement of the same medicine as the prescription.
    let (code, display) = SIMVASTATIN;
    let mut st = json!({"resourceType": "MedicationStatement", "status": "intended", "subject": {"reference": format!("Patient/{p}")},
        "medicationCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]},
        "effectiveDateTime": "2025-10-01"});
    let id = app.create(st.clone());
    st["id"] = json!(id);
    st["status"] = json!("active");
    let r = asks.put(&format!("MedicationStatement/{id}"), &st);
    assert_eq!(r.status, 200, "{}", r.text);
    let found = warnings(&r.body);
    assert_eq!(found.len(), 1, "{}", r.text);
    assert_eq!(found[0].0, "duplicate");
    assert!(found[0].1.contains(&format!("MedicationRequest/{rx}")), "{}", found[0].1);
    // Nothing to say about an unrelated medicine.
    let (code, display) = OMEPRAZOLE;
    let r = asks.post("MedicationRequest", &medication_request(&p, code, display, "active", "2025-10-01"));
    assert_eq!(r.status, 201);
    assert!(warnings(&r.body).is_empty(), "{}", r.text);
    // In a transaction, each entry's response carries its own outcome.
    let (code, display) = AMOXICILLIN;
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": medication_request(&p, code, display, "active", "2025-10-03"), "request": {"method": "POST", "url": "MedicationRequest"}},
        {"resource": medication_request(&p, OMEPRAZOLE.0, OMEPRAZOLE.1, "completed", "2025-10-03"), "request": {"method": "POST", "url": "MedicationRequest"}}]});
    let r = app.client().post("", &bundle);
    assert_eq!(r.status, 200, "{}", r.text);
    let entries = r.entries();
    assert!(warnings(&entries[0]["response"]["outcome"])[0].1.contains("Amoxicillin is a penicillin."), "{}", r.text);
    assert!(entries[1]["response"].get("outcome").is_none(), "{}", r.text);
}

both!(api_writes_carry_the_warning);
