//! The portal in UK style: dates in words ("14 March 1972") that never break across lines,
//! statuses and risks in words, plain names for coded problems and allergy substances.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::portal::sign_in;
use crate::support::TestApp;
use serde_json::json;

/// The text of a page a reader sees: tags (and so attribute values) left out.
fn visible_text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// An ISO date (`2024-05-01`) anywhere in `text`.
fn iso_date(text: &str) -> Option<String> {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(9)).find_map(|i| {
        let w = &b[i..i + 10];
        let digits = |r: std::ops::Range<usize>| w[r].iter().all(u8::is_ascii_digit);
        (digits(0..4) && w[4] == b'-' && digits(5..7) && w[7] == b'-' && digits(8..10))
            .then(|| String::from_utf8_lossy(w).into_owned())
    })
}

fn portal_speaks_plain_uk_english(app: &TestApp) {
    let p = patient_with_login(app, NHS[0], "ada@example.org");
    let subject = json!({"reference": format!("Patient/{p}")});
    app.create(allergy(&p, "high"));
    let (code, display) = SIMVASTATIN;
    let mr = app.create(medication_request(&p, code, display, "stopped", "2024-02-10"));
    app.create(json!({"resourceType": "MedicationDispense", "status": "completed", "subject": subject,
        "medicationCodeableConcept": {"coding": [{"system": "https://dmd.nhs.uk", "code": code, "display": display}]},
        "authorizingPrescription": [{"reference": format!("MedicationRequest/{mr}")}],
        "whenHandedOver": "2024-06-30T23:30:00Z"}));
    let (code, display) = PARACETAMOL;
    app.create(medication_request(&p, code, display, "on-hold", "2025-01-05"));
    // Coded with SNOMED CT: the plain name. Uncoded: the record's own words.
    app.create(json!({"resourceType": "Condition", "subject": subject,
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "resolved"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "unconfirmed"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "13644009", "display": "Hypercholesterolaemia"}]},
        "onsetDateTime": "2019-04-12"}));
    app.create(json!({"resourceType": "Condition", "subject": subject,
        "clinicalStatus": {"coding": [{"code": "active"}]}, "code": {"text": "Bunion"}, "onsetDateTime": "2021-11-02"}));
    let (mut b, home) = sign_in(app, "ada@example.org");
    assert!(home.body.contains("born <span class=\"date\">14 March 1972</span>"), "{}", home.body);
    assert!(home.body.contains("<strong>Penicillin</strong>"), "the substance's plain name: {}", home.body);
    assert!(home.body.contains("High risk \u{b7} Current"), "{}", home.body);

    let allergies = b.get(&format!("{}/portal/allergies", app.base));
    let text = allergies.body.as_str();
    assert!(text.contains("<th scope=\"row\">Penicillin</th>") && !text.contains("penicillin structure"), "{text}");
    assert!(text.contains("<strong>High risk</strong>"), "{text}");
    assert!(text.contains("<span class=\"date\">1 May 2024</span>"), "recorded, in words: {text}");
    assert!(
        text.contains("<th scope=\"row\">High cholesterol</th>") && !text.contains("Hypercholesterolaemia"),
        "{text}"
    );
    assert!(text.contains(">Resolved (not confirmed)<"), "clinical and verification status in words: {text}");
    assert!(text.contains("<th scope=\"row\">Bunion</th><td data-label=\"Status\">Current</td>"), "{text}");
    assert!(text.contains("<span class=\"date\">12 April 2019</span>"), "{text}");

    let list = b.get(&format!("{}/portal/medicines", app.base));
    assert!(list.body.contains("<td data-label=\"Status\">Stopped</td>"), "{}", list.body);
    assert!(list.body.contains("<td data-label=\"Status\">Paused</td>"), "{}", list.body);
    // Handed over at 23:30 UTC on 30 June: 00:30 on 1 July in England.
    assert!(list.body.contains("Last dispensed <span class=\"date\">1 July 2024</span>"), "{}", list.body);
    assert!(list.body.contains("(now stopped)"), "{}", list.body);

    let pages = [
        "/portal",
        "/portal/medicines",
        "/portal/allergies",
        "/portal/timeline",
        "/portal/print",
        "/portal/account",
        "/portal/sharing",
        "/portal/access-log",
    ];
    for page in pages {
        let body = b.get(&format!("{}{page}", app.base)).body;
        assert_eq!(iso_date(&visible_text(&body)), None, "an ISO date shown on {page}: {body}");
        assert!(!body.contains("(UTC)") && !body.contains("Criticality"), "{page}: {body}");
    }
    let print = b.get(&format!("{}/portal/print", app.base)).body;
    assert!(print.contains("printed <span class=\"date\">"), "{print}");
    assert!(print.contains("Penicillin (high risk)"), "{print}");
}

both!(portal_speaks_plain_uk_english);
