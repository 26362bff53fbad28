//! The patient portal in a (cookie-keeping, non-redirecting) browser over real HTTP.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::TestApp;

/// Signs `email` in at the portal; returns the browser and the home page.
fn sign_in(app: &TestApp, email: &str) -> (Browser, Page) {
    let mut b = Browser::default();
    let login = b.get(&format!("{}/portal/login", app.base));
    assert_eq!(login.status, 200);
    let form = [("email", email), ("password", PASSWORD), ("csrf", &login.field("csrf")), ("continue", "/portal")];
    let r = b.post(&format!("{}/oauth/login", app.base), &form);
    assert_eq!((r.status, r.location.as_deref()), (303, Some("/portal")));
    let home = b.get(&format!("{}/portal", app.base));
    (b, home)
}

fn patient_sees_medicines_and_adds_one(app: &TestApp) {
    let p = patient_with_login(app, NHS[0], "ada@example.org");
    let (code, display) = SIMVASTATIN;
    app.create(medication_request(&p, code, display, "active", "2024-02-10"));
    app.create(allergy(&p, "high"));
    let (mut b, home) = sign_in(app, "ada@example.org");
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(home.body.contains("943 476 5919"), "NHS number as 3-3-4");
    assert!(home.body.contains("Simvastatin 40mg tablets"));
    assert!(home.body.contains("Criticality: high"));
    let form_page = b.get(&format!("{}/portal/medicines/add", app.base));
    let csrf = form_page.field("csrf");
    let added = b.post(
        &format!("{}/portal/medicines/add", app.base),
        &[("csrf", &csrf), ("medicine", "329653008"), ("dose", "1 tablet when my back hurts"), ("start", "2025-10-01")],
    );
    assert_eq!(added.status, 303, "{}", added.body);
    let api = app.client().get(&format!("MedicationStatement?patient={p}"));
    let st = &api.entries()[0]["resource"];
    assert_eq!(st["informationSource"]["reference"], format!("Patient/{p}"), "patient-reported");
    assert!(b.get(&format!("{}/portal/medicines", app.base)).body.contains("Added by you"));
    // Without the session's CSRF token a form is refused.
    let forged = b.post(
        &format!("{}/portal/medicines/add", app.base),
        &[("csrf", "forged"), ("medicine", "329653008"), ("dose", "x"), ("start", "2025-10-01")],
    );
    assert_eq!(forged.status, 403);
}

fn sharing_with_a_provider_and_stopping(app: &TestApp) {
    let p = patient_with_login(app, NHS[0], "ada@example.org");
    let (code, display) = PARACETAMOL;
    let mr = app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    let org = "Organization/riverside";
    let (pkcs8, jwks) = backend_keys("k1");
    let client_id = backend_client(app, jwks, org);
    let provider_token = |jti: &str| {
        let a = assertion(app, &client_id, "k1", &pkcs8, jti, 200);
        let (_, t) = token_request(
            app,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "system/*.rs"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &a),
            ],
        );
        app.client_with(t["access_token"].as_str().map(str::to_string))
    };
    let provider = provider_token("t1");
    assert_eq!(provider.get(&format!("MedicationRequest/{mr}")).status, 404, "not shared yet");
    let (mut b, _) = sign_in(app, "ada@example.org");
    let page = b.get(&format!("{}/portal/sharing", app.base));
    assert!(page.body.contains("Riverside GP system"));
    let csrf = page.field("csrf");
    let shared = b.post(
        &format!("{}/portal/sharing", app.base),
        &[
            ("csrf", &csrf),
            ("organization", org),
            ("scope", "patient/MedicationRequest.rs patient/MedicationStatement.rs patient/MedicationDispense.rs"),
            ("until", ""),
        ],
    );
    assert_eq!(shared.status, 200, "{}", shared.body);
    assert!(shared.body.contains("See your prescriptions"));
    assert_eq!(provider.get(&format!("MedicationRequest/{mr}")).status, 200, "shared");
    let grant_id = {
        let marker = "/portal/sharing/";
        let i = shared.body.find(marker).expect("revoke form") + marker.len();
        shared.body[i..i + shared.body[i..].find('/').expect("id end")].to_string()
    };
    let stopped = b.post(&format!("{}/portal/sharing/{grant_id}/revoke", app.base), &[("csrf", &csrf)]);
    assert!(stopped.body.contains("Access ended"), "{}", stopped.body);
    assert_eq!(provider.get(&format!("MedicationRequest/{mr}")).status, 404, "refused on the very next call");
    let log = b.get(&format!("{}/portal/access-log", app.base));
    assert!(log.body.contains(&format!("MedicationRequest/{mr}")), "the provider's read is in the log");
    assert!(log.body.contains("refused") && log.body.contains("allowed"));
    let csv = b.get(&format!("{}/portal/access-log.csv", app.base));
    assert!(csv.body.starts_with("when,who,what,outcome"));
}

fn portal_needs_a_session_and_signs_out(app: &TestApp) {
    patient_with_login(app, NHS[0], "ada@example.org");
    let mut anon = Browser::default();
    let r = anon.get(&format!("{}/portal/medicines", app.base));
    assert_eq!((r.status, r.location.as_deref()), (303, Some("/portal/login")));
    let (mut b, home) = sign_in(app, "ada@example.org");
    let out = b.post(&format!("{}/portal/logout", app.base), &[("csrf", &home.field("csrf"))]);
    assert_eq!(out.status, 303);
    assert_eq!(b.get(&format!("{}/portal", app.base)).status, 303, "the session has ended");
}

both!(patient_sees_medicines_and_adds_one, sharing_with_a_provider_and_stopping, portal_needs_a_session_and_signs_out);
