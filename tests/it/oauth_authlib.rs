//! An independent client library, Python's Authlib (pinned in tests/authlib/requirements.txt),
//! through the whole standalone launch against the real server: discovery by RFC 8414, the code
//! flow with PKCE, and a refresh that names no client, as SMART's fhirclient sends it.

use crate::both;
use crate::client_libs::{python, refused, root, Script};
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::TestApp;
use serde_json::Value;

fn authlib_launch_and_refresh_without_client_id(app: &TestApp) {
    let Some(python) = python("tests/authlib/requirements.txt") else { return };
    let email = "ada@example.org";
    let patient = patient_with_login(app, NHS[0], email);
    let (code, display) = PARACETAMOL;
    let mr = app.create(medication_request(&patient, code, display, "active", "2025-02-01"));
    let client_id = public_app(app);
    let script = root().join("tests/authlib/code_flow.py");
    let mut authlib = Script::start(&python, &script, &[&app.base, &client_id, REDIRECT, APP_SCOPES]);
    let url = authlib.line();
    assert!(url.starts_with(&format!("{}/oauth/authorize?", app.base)), "{url}");
    authlib.send(&sign_in_and_return(app, &mut Browser::default(), &url, email));
    let seen = authlib.findings();

    assert_eq!(seen["same_metadata"], true, "RFC 8414 and SMART discovery agree: {seen}");
    assert_eq!(seen["patient"], patient.as_str(), "{seen}");
    // joserfc checked the ID token's RS256 signature against the JWKS, and its iss and aud.
    let id_token = &seen["id_token"];
    assert_eq!(id_token["header"]["alg"], "RS256", "{seen}");
    assert_rs256_key(&published_key(app, id_token["header"]["kid"].as_str().expect("kid")));
    assert_eq!(id_token["claims"]["fhirUser"], format!("{}/Patient/{patient}", app.fhir), "{seen}");
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

/// SMART Backend Services by Authlib's PrivateKeyJWT. Its default assertion has no `kid` and
/// lives an hour: both refused, as the README's Authorization section says, which also names the
/// settings that make it pass (the key's kid in `headers`, an `exp` at most 300 s ahead).
fn authlib_backend_services_with_the_readme_settings(app: &TestApp) {
    use base64::Engine;
    let Some(python) = python("tests/authlib/requirements.txt") else { return };
    let kid = "riverside-2025";
    let (pkcs8, jwks) = backend_keys(kid);
    let client_id = backend_client(app, jwks, "Organization/riverside");
    let key = base64::engine::general_purpose::STANDARD.encode(pkcs8);
    let token_endpoint = format!("{}/oauth/token", app.base);
    let args = [token_endpoint.as_str(), &client_id, kid, &key, "system/*.rs"];
    let seen = Script::start(&python, &root().join("tests/authlib/backend_services.py"), &args).findings();

    refused(&seen, "defaults", "no kid");
    refused(&seen, "with_kid", "more than five minutes ahead");
    assert_eq!(seen["with_kid_and_exp"]["scope"], "system/*.rs", "{seen}");
}

both!(authlib_launch_and_refresh_without_client_id, authlib_backend_services_with_the_readme_settings);
