//! SMART's own client libraries, both named fhirclient, through a standalone launch against the
//! real server as a server-side app uses them: the JS one from Node (pinned in
//! tests/node-clients/package-lock.json) and the Python one (tests/fhirclient-py/requirements.txt).
//! Each discovers the endpoints, authorizes with PKCE S256, reads the patient in context, searches
//! their prescriptions, and refreshes once the access token has expired; access tokens here live
//! 12 s so that the wait is short. The sign-in and consent pages are driven from here.

use crate::both;
use crate::client_libs::{node_clients, python, root, Script};
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::TestApp;
use healthfolio::config::Config;
use serde_json::{json, Value};
use std::path::Path;

const EMAIL: &str = "ada@example.org";
/// Without `launch/patient`, which each library adds itself for a standalone launch.
const SCOPES: &str = "openid fhirUser offline_access patient/Patient.rs patient/MedicationRequest.rs";

/// Under the configurable minimum: JS fhirclient refreshes 10 s before `expires_in` runs out, so
/// 12 s leaves it a moment to use the first token and makes the wait for its expiry short.
fn short_tokens(config: &mut Config) {
    config.token_lifetime = 12;
}

/// The patient who signs in, with a prescription, and another patient's prescription that no
/// search of theirs may return: (patient id, their prescription's id).
fn record(app: &TestApp) -> (String, String) {
    let patient = patient_with_login(app, NHS[0], EMAIL);
    let (code, display) = PARACETAMOL;
    let mr = app.create(medication_request(&patient, code, display, "active", "2025-02-01"));
    let other = app.create(crate::fixtures::patient(NHS[1], "Hughes", "Ben"));
    let (code, display) = SIMVASTATIN;
    app.create(medication_request(&other, code, display, "active", "2025-02-01"));
    (patient, mr)
}

/// What both libraries must have seen, and that the refresh token each gave up is spent.
fn check(app: &TestApp, seen: &Value, patient: &str, mr: &str) {
    assert_eq!(seen["patient"], patient, "the patient in context: {seen}");
    assert_eq!(seen["patient_read"], format!("Patient/{patient}"), "{seen}");
    assert_eq!((&seen["first_ids"], &seen["second_ids"]), (&json!([mr]), &json!([mr])), "{seen}");
    assert_eq!((&seen["access_changed"], &seen["refresh_rotated"]), (&Value::Bool(true), &Value::Bool(true)), "{seen}");
    let spent = seen["first_refresh"].as_str().expect("first refresh token");
    let (status, v) = token_request(app, &[("grant_type", "refresh_token"), ("refresh_token", spent)]);
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
}

/// The JS library as a Node web app: the browser opens its launch page, goes through sign-in and
/// consent, and comes back to its callback, which answers with what the app saw.
fn fhirclient_js_launch_and_refresh_after_expiry(app: &TestApp) {
    let Some(dir) = node_clients() else { return };
    let (patient, mr) = record(app);
    let scope = format!("launch/patient {SCOPES}");
    let mut js = Script::start(Path::new("node"), &dir.join("fhirclient.mjs"), &[&app.fhir, &scope]);
    let origin = js.line();
    let client_id = public_app_redirecting_to(app, &format!("{origin}/callback"));

    let mut browser = Browser::default();
    let launch = browser.get(&format!("{origin}/launch?clientId={client_id}"));
    let authorize = launch.location.unwrap_or_else(|| panic!("launch: {} {}", launch.status, launch.body));
    assert!(authorize.starts_with(&format!("{}/oauth/authorize?", app.base)), "{authorize}");
    let back = sign_in_and_return(app, &mut browser, &authorize, EMAIL);
    assert!(back.starts_with(&format!("{origin}/callback?")), "{back}");
    let done = browser.get(&back);
    assert_eq!(done.status, 200, "the app's callback: {}", done.body);
    js.wait();
    let seen: Value = serde_json::from_str(&done.body).unwrap_or_else(|e| panic!("{e}: {}", done.body));
    assert_eq!(seen["scope"].as_str().map(|s| s.contains("offline_access")), Some(true), "{seen}");
    check(app, &seen, &patient, &mr);
}

/// The Python library as its documentation drives it from a server app (authorize URL, then the
/// callback URL handed to a client restored from the saved state).
fn fhirclient_py_launch_and_refresh_after_expiry(app: &TestApp) {
    let Some(python) = python("tests/fhirclient-py/requirements.txt") else { return };
    let (patient, mr) = record(app);
    let client_id = public_app(app);
    let script = root().join("tests/fhirclient-py/standalone.py");
    let mut py = Script::start(&python, &script, &[&app.fhir, &client_id, REDIRECT, SCOPES]);
    let url = py.line();
    assert!(url.starts_with(&format!("{}/oauth/authorize?", app.base)), "{url}");
    py.send(&sign_in_and_return(app, &mut Browser::default(), &url, EMAIL));
    let seen = py.findings();
    assert_eq!((&seen["expired"], &seen["refreshed"]), (&Value::Bool(true), &Value::Bool(true)), "{seen}");
    check(app, &seen, &patient, &mr);
}

both!(fhirclient_js_launch_and_refresh_after_expiry, config = short_tokens);
both!(fhirclient_py_launch_and_refresh_after_expiry, config = short_tokens);
