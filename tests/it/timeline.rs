//! The medication timeline page: an SVG with a bar per medicine and a table alternative.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::TestApp;

const LONG: &str = "Amoxicillin 500mg capsules (a three-day course, as the practice nurse advised)";

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
    // A three-day course with a name too long for one line.
    let mut course = medication_request(&p, "323509004", LONG, "completed", "2025-03-01");
    course["dispenseRequest"] = serde_json::json!({"validityPeriod": {"start": "2025-03-01", "end": "2025-03-04"}});
    app.create(course);
    let mut b = Browser::default();
    let login = b.get(&format!("{}/portal/login", app.base));
    let form =
        [("email", "ada@example.org"), ("password", PASSWORD), ("csrf", &login.field("csrf")), ("continue", "/portal")];
    assert_eq!(b.post(&format!("{}/oauth/login", app.base), &form).status, 303);
    let page = b.get(&format!("{}/portal/timeline", app.base));
    assert_eq!(page.status, 200, "{}", page.body);
    // Two drawings of one picture (wide, and narrow for phones), each whole.
    let drawings: Vec<&str> = page.body.split("<svg").skip(1).filter_map(|s| s.split("</svg>").next()).collect();
    assert_eq!(drawings.len(), 2, "{}", page.body);
    for svg in &drawings {
        assert_eq!(svg.matches("<rect").count(), 3, "a bar per medicine: {svg}");
        assert_eq!(svg.matches("<circle").count(), 3, "a mark per dispensing: {svg}");
        assert!(svg.contains(">2024</text>"), "a year on the date axis: {svg}");
        assert!(svg.contains("<title>Dispensed 1 March 2024</title>"), "dates in words: {svg}");
        let names: String = svg
            .split("<tspan")
            .skip(1)
            .filter_map(|t| t.split('>').nth(1)?.split('<').next())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(names.contains(LONG), "the long name whole, wrapped: {names}");
        // The 3-day course: a bar at least 6 units wide.
        let course = svg.split("<rect").find(|r| r.contains("Amoxicillin")).expect("the course's bar");
        let width: f64 = course
            .split(" width=\"")
            .nth(1)
            .and_then(|w| w.split('"').next())
            .and_then(|w| w.parse().ok())
            .unwrap_or(0.0);
        assert!(width >= 6.0, "a course of days is visible: {course}");
    }
    assert!(page.body.contains("class=\"timeline wide\"") && page.body.contains("class=\"timeline narrow\""));
    // The legend names what is drawn: current and past bars, dispensings, today.
    for key in ["A medicine you take now", "A medicine you took in the past", "A pharmacy gave it to you", "Today"] {
        assert!(page.body.contains(key), "{key} in the legend: {}", page.body);
    }
    assert!(page.body.contains("<caption id=\"timeline-table-caption\">"), "a table alternative");
    assert!(page.body.contains("Simvastatin 40mg tablets") && page.body.contains("Paracetamol 500mg tablets"));
    assert!(page.body.contains("<td data-label=\"From\"><span class=\"date\">10 February 2024</span></td>"));
    assert!(!page.body.contains("<script"), "no script");
}

both!(timeline_shows_bars_and_a_table);
