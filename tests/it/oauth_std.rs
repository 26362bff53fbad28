//! The authorization server against the standards it claims: token lifetimes (RFC 7519 `iat`),
//! refresh by public clients (RFC 6749 §6), and discovery (RFC 8414, OpenID Discovery, SMART).

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::TestApp;
use healthfolio::auth::Claims;
use oauth2::TokenResponse;
use serde_json::Value;

/// Introspection of `token` by `caller`.
fn introspect(app: &TestApp, caller: &str, token: &str) -> Value {
    let r = http().post(&format!("{}/oauth/introspect", app.base)).set("Authorization", &format!("Bearer {caller}"));
    match r.send_form(&[("token", token)]) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r.into_json().unwrap_or(Value::Null),
        Err(e) => panic!("{e}"),
    }
}

/// A token signed with the server's own key, whose `iat` is ahead of the clock or whose life is
/// longer than the configured maximum, is refused by the API, userinfo and introspection.
fn future_or_overlong_tokens_are_refused(app: &TestApp) {
    let (_, _, token) = launch(app, NHS[0], "ada@example.org");
    let genuine = token.access_token().secret().clone();
    let issued: Claims = serde_json::from_value(jwt_claims(&genuine)).expect("claims");
    let max = app.hf.config.token_lifetime;
    let now = chrono::Utc::now().timestamp();
    let resigned = |iat: i64, exp: i64| {
        let claims = Claims { iat, exp, ..issued.clone() };
        app.hf.keys.sign(&claims).expect("sign")
    };
    let seen = |t: &str| {
        let c = app.client_with(Some(t.to_string()));
        let userinfo = c.get(&format!("{}/oauth/userinfo", app.base)).status;
        (c.get("MedicationRequest").status, userinfo, introspect(app, &genuine, t)["active"].clone())
    };
    let accepted = (200, 200, Value::Bool(true));
    let refused = (401, 401, Value::Bool(false));
    for (case, t, want) in [
        ("as issued, re-signed", resigned(issued.iat, issued.exp), &accepted),
        ("iat within the clock skew", resigned(now + 30, now + 30 + max), &accepted),
        ("iat an hour ahead", resigned(now + 3600, now + 3600 + max), &refused),
        ("iat two minutes ahead", resigned(now + 120, now + 120 + max), &refused),
        ("a life longer than the maximum", resigned(now, now + max + 60), &refused),
    ] {
        assert_eq!(&seen(&t), want, "{case}");
    }
}

/// RFC 6749 §6: a public app refreshes with `grant_type` and `refresh_token` alone (as SMART's
/// fhirclient does); rotation and reuse detection hold as with `client_id`.
fn public_app_refreshes_without_client_id(app: &TestApp) {
    let (_, _, token) = launch(app, NHS[0], "ada@example.org");
    let first = token.refresh_token().expect("refresh").secret().clone();
    let refresh = |t: &str| token_request(app, &[("grant_type", "refresh_token"), ("refresh_token", t)]);
    let (status, body) = refresh(&first);
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().expect("access_token").to_string();
    let rotated = body["refresh_token"].as_str().expect("a new refresh token").to_string();
    assert_ne!(rotated, first);
    let c = app.client_with(Some(access));
    assert_eq!(c.get("MedicationRequest").status, 200);
    let (status, body) = refresh(&first);
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "reuse: {body}");
    assert_eq!(c.get("MedicationRequest").status, 401, "reuse revoked the family");
    assert_eq!(refresh(&rotated).1["error"], "invalid_grant", "the rotated token died with its family");
    let (status, body) = refresh("not-a-refresh-token");
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
}

/// A confidential app's refresh token alone is not enough: the app must authenticate.
fn confidential_app_must_authenticate_to_refresh(app: &TestApp) {
    patient_with_login(app, NHS[0], "ada@example.org");
    let (client_id, secret) = confidential_app(app);
    let client = oauth_client(app, &client_id).set_client_secret(oauth2::ClientSecret::new(secret.clone()));
    let (url, verifier, _) = authorize_url(app, &client, APP_SCOPES);
    let (code, _) = sign_in_and_approve(app, &mut Browser::default(), &url, "ada@example.org");
    let refresh_token = exchange(&client, &code, &verifier).refresh_token().expect("refresh").secret().clone();
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token.as_str())];
    for (case, extra) in [("no client_id", &[][..]), ("client_id without its secret", &[("client_id", &*client_id)])] {
        let (status, body) = token_request(app, &[&form[..], extra].concat());
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{case}: {body}");
    }
    let (status, _, body) = token_request_authorized(app, &basic(&client_id, &secret), &form);
    assert_eq!(status, 200, "the refusals left the token usable: {body}");
}

both!(
    future_or_overlong_tokens_are_refused,
    public_app_refreshes_without_client_id,
    confidential_app_must_authenticate_to_refresh,
);
