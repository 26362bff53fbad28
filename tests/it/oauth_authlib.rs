//! An independent client library, Python's Authlib (pinned in tests/authlib/requirements.txt),
//! through the whole standalone launch against the real server: discovery by RFC 8414, the code
//! flow with PKCE, and a refresh that names no client, as SMART's fhirclient sends it.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::TestApp;
use crate::tools;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn python() -> Option<PathBuf> {
    tools::venv_python(&tools::root().join("tests/authlib/requirements.txt"))
}

fn authlib_launch_and_refresh_without_client_id(app: &TestApp) {
    let Some(python) = python() else { return };
    let email = "ada@example.org";
    let patient = patient_with_login(app, NHS[0], email);
    let (code, display) = PARACETAMOL;
    let mr = app.create(medication_request(&patient, code, display, "active", "2025-02-01"));
    let client_id = public_app(app);
    let mut child = Command::new(python)
        .arg(tools::root().join("tests/authlib/code_flow.py"))
        .args([&app.base, &client_id, REDIRECT, APP_SCOPES])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut url = String::new();
    out.read_line(&mut url).expect("the authorization URL");
    assert!(url.starts_with(&format!("{}/oauth/authorize?", app.base)), "{url}");
    let (code, state) = sign_in_and_approve(app, &mut Browser::default(), url.trim(), email);
    let callback =
        format!("{REDIRECT}?{}", serde_urlencoded::to_string([("code", &code), ("state", &state)]).expect("query"));
    writeln!(child.stdin.take().expect("stdin"), "{callback}").expect("send the redirect");
    let mut line = String::new();
    out.read_line(&mut line).expect("the result");
    assert!(child.wait().expect("python").success(), "code_flow.py failed (its error is above)");
    let seen: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));

    assert_eq!(seen["same_metadata"], true, "RFC 8414 and SMART discovery agree: {seen}");
    assert_eq!(seen["patient"], patient.as_str(), "{seen}");
    assert_eq!((&seen["first_read"], &seen["second_read"]), (&Value::from(200), &Value::from(200)), "{seen}");
    assert_eq!(seen["ids"], serde_json::json!([mr]), "the patient's prescription, read after the refresh");
    let body = seen["refresh_body"].as_str().expect("the refresh request's body");
    let fields: Vec<(String, String)> = serde_urlencoded::from_str(body).expect("form");
    assert!(fields.iter().any(|(k, v)| k == "grant_type" && v == "refresh_token"), "{body}");
    assert!(fields.iter().all(|(k, _)| k != "client_id"), "the refresh named no client: {body}");
    assert_eq!((&seen["refresh_rotated"], &seen["access_changed"]), (&Value::Bool(true), &Value::Bool(true)), "{seen}");
    // The refresh token Authlib used up is spent: presented again, it ends its family.
    let spent = seen["first_refresh"].as_str().expect("first refresh token");
    let (status, v) = token_request(app, &[("grant_type", "refresh_token"), ("refresh_token", spent)]);
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
}

both!(authlib_launch_and_refresh_without_client_id);
