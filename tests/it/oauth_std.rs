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

both!(future_or_overlong_tokens_are_refused);
