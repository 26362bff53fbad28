//! The medication timeline page: an SVG with a bar per medicine and a table alternative.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::TestApp;

fn timeline_shows_bars_and_a_table(app: &TestApp) {
    let p = patient_with_login(app, NHS[0], "ada@example.org");
    let (code, display) = SIMVASTATIN;
    let simva = app.create(medication_request(&p, code, display, "active", "2024-02-10"));
    for when in ["2024-03-01T10:00:00Z", "2024-06-01T10:00:00Z", "2024-09-01T10:00:00Z"] {
        app.create(serde_json::json!({"resourceType": "MedicationDispense", "status": "completed",
            "subject": {"reference": format!("Patient/{p}")},
            "authorizingPrescription": [{"reference": format!("MedicationRequest/{simva}")}],
            "medicationCodeableConcept": {"coding": [{"system": "https://dmd.nhs.uk", "code": code, "display": display}]},
            "whenHandedOver": when}));
    }
    let (code, display) = PARACETAMOL;
    app.create(medication_request(&p, code, display, "completed", "2023-05-01"));
    let mut b = Browser::default();
    let login = b.get(&format!("{}/portal/login", app.base));
    let form =
        [("email", "ada@example.org"), ("password", PASSWORD), ("csrf", &login.field("csrf")), ("continue", "/portal")];
    assert_eq!(b.post(&format!("{}/oauth/login", app.base), &form).status, 303);
    let page = b.get(&format!("{}/portal/timeline", app.base));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<svg"));
    assert_eq!(page.body.matches("<rect").count(), 2, "a bar per medicine");
    assert_eq!(page.body.matches("<circle").count(), 3, "a mark per dispensing");
    assert!(page.body.contains(">today<"));
    assert!(page.body.contains("<caption id=\"timeline-table-caption\">"), "a table alternative");
    assert!(page.body.contains("Simvastatin 40mg tablets") && page.body.contains("Paracetamol 500mg tablets"));
    assert!(!page.body.contains("<script"), "no script");
}

both!(timeline_shows_bars_and_a_table);
