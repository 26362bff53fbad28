//! Medicine safety: an entry that meets a recorded allergy or repeats a current medicine is
//! written with a warning (API: an OperationOutcome `warning` issue), and the portal asks the
//! patient before it saves anything.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::portal::sign_in;
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
    // Worked out only for a client that asks to hear them: they read the whole current record.
    let quiet = app.client().post("", &bundle);
    assert_eq!(quiet.status, 200, "{}", quiet.text);
    assert!(quiet.entries()[0]["response"].get("outcome").is_none(), "{}", quiet.text);
    let r = asks.post("", &bundle);
    assert_eq!(r.status, 200, "{}", r.text);
    let entries = r.entries();
    assert!(warnings(&entries[0]["response"]["outcome"])[0].1.contains("Amoxicillin is a penicillin."), "{}", r.text);
    assert!(entries[1]["response"].get("outcome").is_none(), "{}", r.text);
    // An app that may write prescriptions but not read allergies is still warned, without being
    // told what the allergy record says.
    let writer = app
        .client_with(Some(app.patient_token("patient/MedicationRequest.c", &p)))
        .with_header("Prefer", "return=OperationOutcome");
    let r = writer.post("MedicationRequest", &medication_request(&p, code, display, "active", "2025-10-04"));
    assert_eq!(r.status, 201, "{}", r.text);
    let found = warnings(&r.body);
    assert!(
        found.iter().any(|(code, text)| code == "business-rule" && text.contains("may meet an allergy")),
        "{}",
        r.text
    );
    assert!(!r.text.contains("penicillin") && !r.text.contains("AllergyIntolerance/"), "{}", r.text);
}

fn portal_asks_before_it_saves(app: &TestApp) {
    let (p, _) = allergic_patient(app, Some("amara@example.org"));
    let (mut b, _) = sign_in(app, "amara@example.org");
    let url = format!("{}/portal/medicines/add", app.base);
    let form = b.get(&url);
    assert_eq!(form.status, 200);
    assert!(form.body.contains(r#"<option value="" selected>Choose a medicine</option>"#), "{}", form.body);
    assert_eq!(form.body.matches(" selected>").count(), 1, "no medicine is chosen for the patient: {}", form.body);
    let csrf = form.field("csrf");
    let statements = || app.client().get(&format!("MedicationStatement?patient={p}")).ids();
    // Sent untouched: refused, with what to do.
    let untouched = b.post(
        &url,
        &[
            ("csrf", &csrf),
            ("medicine", ""),
            ("other", ""),
            ("dose", "1 a day"),
            ("start-day", "1"),
            ("start-month", "10"),
            ("start-year", "2025"),
        ],
    );
    assert_eq!(untouched.status, 400);
    assert!(untouched.body.contains("Choose a medicine from the list"), "{}", untouched.body);
    // Amoxicillin for a patient allergic to penicillin: a warning page, nothing saved.
    let amoxicillin = [
        ("csrf", csrf.as_str()),
        ("medicine", AMOXICILLIN.0),
        ("other", ""),
        ("dose", "1 capsule 3 times a day"),
        ("start-day", "1"),
        ("start-month", "10"),
        ("start-year", "2025"),
    ];
    let check = b.post(&url, &amoxicillin);
    assert_eq!(check.status, 200, "{}", check.body);
    assert!(
        check.body.contains("You have a recorded allergy to penicillin (high risk). Amoxicillin is a penicillin."),
        "{}",
        check.body
    );
    assert!(check.body.contains("Save anyway") && check.body.contains("Go back"), "{}", check.body);
    assert_eq!(check.field("dose"), "1 capsule 3 times a day", "the values travel on");
    assert!(statements().is_empty(), "nothing saved before the patient confirms");
    // Go back: the form again, as filled in; still nothing saved.
    let mut back = amoxicillin.to_vec();
    back.push(("back", "yes"));
    let again = b.post(&url, &back);
    assert_eq!(again.status, 200);
    assert!(again.body.contains(&format!(r#"<option value="{}" selected>"#, AMOXICILLIN.0)), "{}", again.body);
    assert!(again.body.contains("1 capsule 3 times a day"));
    assert!(statements().is_empty());
    // Save anyway: saved, marked for a clinician to review.
    let mut confirmed = amoxicillin.to_vec();
    confirmed.push(("confirm", "yes"));
    let saved = b.post(&url, &confirmed);
    assert_eq!(saved.status, 303, "{}", saved.body);
    let ids = statements();
    assert_eq!(ids.len(), 1);
    let st = app.client().get(&format!("MedicationStatement/{}", ids[0])).body;
    assert_eq!(st["informationSource"]["reference"], format!("Patient/{p}"));
    assert_eq!(st["meta"]["tag"][0]["code"], "unreviewed", "{st}");
    let list = b.get(&format!("{}/portal/medicines", app.base));
    assert!(list.body.contains("You said you take it \u{2013} not yet reviewed by a clinician"), "{}", list.body);
    // The medicine she is already prescribed: a duplicate warning.
    let simvastatin = [
        ("csrf", csrf.as_str()),
        ("medicine", SIMVASTATIN.0),
        ("dose", "1 at night"),
        ("start-day", "1"),
        ("start-month", "10"),
        ("start-year", "2025"),
    ];
    let dup = b.post(&url, &simvastatin);
    assert_eq!(dup.status, 200);
    assert!(dup.body.contains("Simvastatin 40mg tablets is already on your list of current medicines"), "{}", dup.body);
    assert_eq!(statements().len(), 1);
    // Nothing to check: saved at once.
    let omeprazole = [
        ("csrf", csrf.as_str()),
        ("medicine", OMEPRAZOLE.0),
        ("dose", "1 a day"),
        ("start-day", "1"),
        ("start-month", "10"),
        ("start-year", "2025"),
    ];
    assert_eq!(b.post(&url, &omeprazole).status, 303);
    assert_eq!(statements().len(), 2);
}

both!(api_writes_carry_the_warning, portal_asks_before_it_saves);
