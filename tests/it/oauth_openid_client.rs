//! An independent OpenID Connect client, Node's openid-client (pinned in
//! tests/node-clients/package-lock.json), signs a patient in against the real server: discovery,
//! the code flow with PKCE S256, the ID token checked by the library (signature against the JWKS,
//! iss, aud, nonce), userinfo, a refresh and a revocation. The sign-in and consent pages are
//! driven from here; the library does every OAuth step itself.

use crate::both;
use crate::client_libs::{node_clients, refused, Script};
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::TestApp;
use serde_json::Value;
use std::path::Path;

fn openid_client_sign_in_refresh_and_revoke(app: &TestApp) {
    let Some(dir) = node_clients() else { return };
    let email = "ada@example.org";
    let patient = patient_with_login(app, NHS[0], email);
    let client_id = public_app(app);
    let mut oidc = Script::start(
        Path::new("node"),
        &dir.join("openid_client.mjs"),
        &[&app.base, &client_id, REDIRECT, APP_SCOPES],
    );
    let url = oidc.line();
    assert!(url.starts_with(&format!("{}/oauth/authorize?", app.base)), "{url}");
    oidc.send(&sign_in_and_return(app, &mut Browser::default(), &url, email));
    let seen = oidc.findings();

    let claims = &seen["claims"];
    assert_eq!((&seen["issuer"], &claims["iss"]), (&Value::from(app.base.as_str()), &Value::from(app.base.as_str())));
    assert_eq!(claims["aud"], client_id.as_str(), "{claims}");
    assert!(claims["nonce"].is_string(), "the library matched the nonce it sent: {claims}");
    assert_eq!(claims["fhirUser"], format!("{}/Patient/{patient}", app.fhir), "{claims}");
    assert_eq!(seen["patient"], patient.as_str(), "{seen}");
    // RS256, which the library expects unless told otherwise; it checked the signature with the
    // JWKS's RSA key.
    let header = &seen["id_token_header"];
    assert_eq!(header["alg"], "RS256", "{seen}");
    assert_rs256_key(&published_key(app, header["kid"].as_str().expect("kid")));
    assert_eq!(seen["userinfo"]["sub"], claims["sub"], "userinfo names the ID token's subject: {seen}");
    assert_eq!(seen["userinfo"]["fhirUser"], claims["fhirUser"], "{seen}");
    assert_eq!((&seen["access_changed"], &seen["refresh_rotated"]), (&Value::Bool(true), &Value::Bool(true)), "{seen}");
    assert_eq!(seen["after_revocation"], "invalid_grant", "the revoked refresh token is refused: {seen}");

    // What the library asked, in order: it fetched the JWKS, so it checked the ID token's signature.
    let sent: Vec<String> = seen["sent"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| format!("{} {}", r["method"].as_str().unwrap_or("GET"), r["url"].as_str().unwrap_or_default()))
        .collect();
    let b = &app.base;
    let expected = [
        format!("GET {b}/.well-known/openid-configuration"),
        format!("POST {b}/oauth/token"),
        format!("GET {b}/.well-known/jwks.json"),
        format!("GET {b}/oauth/userinfo"),
        format!("POST {b}/oauth/token"),
        format!("POST {b}/oauth/revoke"),
        format!("POST {b}/oauth/token"),
    ];
    assert_eq!(sent, expected, "{seen}");
}

/// SMART Backend Services by the same library. Its default assertion has no `kid` and is
/// addressed to the issuer: both refused, as the README's Authorization section says, which also
/// names the settings that make it pass (the key's kid, and `aud` set to the token endpoint).
fn openid_client_backend_services_with_the_readme_settings(app: &TestApp) {
    use base64::Engine;
    let Some(dir) = node_clients() else { return };
    let kid = "riverside-2025";
    let (pkcs8, jwks) = backend_keys(kid);
    let client_id = backend_client(app, jwks, "Organization/riverside");
    let key = base64::engine::general_purpose::STANDARD.encode(pkcs8);
    let args = [app.base.as_str(), &client_id, kid, &key, "system/*.rs"];
    let seen = Script::start(Path::new("node"), &dir.join("backend_services.mjs"), &args).findings();

    refused(&seen, "defaults", "no kid");
    refused(&seen, "with_kid", "InvalidAudience");
    assert_eq!(seen["with_kid_and_aud"]["scope"], "system/*.rs", "{seen}");
}

both!(openid_client_sign_in_refresh_and_revoke, openid_client_backend_services_with_the_readme_settings);
