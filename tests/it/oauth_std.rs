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

/// What every discovery document must say alike (OpenID Discovery, RFC 8414, SMART 2.2).
const SHARED: [&str; 14] = [
    "issuer",
    "authorization_endpoint",
    "token_endpoint",
    "jwks_uri",
    "introspection_endpoint",
    "revocation_endpoint",
    "userinfo_endpoint",
    "registration_endpoint",
    "token_endpoint_auth_methods_supported",
    "introspection_endpoint_auth_methods_supported",
    "revocation_endpoint_auth_methods_supported",
    "grant_types_supported",
    "response_types_supported",
    "code_challenge_methods_supported",
];

fn discovery(app: &TestApp) -> Vec<(&'static str, Value)> {
    [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/.well-known/smart-configuration",
        "/fhir/.well-known/smart-configuration",
    ]
    .into_iter()
    .map(|path| {
        let r = app.client_with(None).get(&format!("{}{path}", app.base));
        assert_eq!(r.status, 200, "{path}");
        (path, r.body)
    })
    .collect()
}

/// (status, body) of `method` on `url`, with an optional `Authorization` and a form.
fn call(method: &str, url: &str, authorization: Option<&str>, form: &[(&str, &str)]) -> (u16, Value) {
    let mut req = http().request(method, url);
    if let Some(a) = authorization {
        req = req.set("Authorization", a);
    }
    let sent = if method == "GET" { req.call() } else { req.send_form(form) };
    match sent {
        Ok(r) | Err(ureq::Error::Status(_, r)) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

/// The documents agree, name the registration endpoint exactly when registration is open, and
/// every endpoint they name answers.
#[test]
fn discovery_documents_agree_and_every_endpoint_answers() {
    for (open, app) in [(false, TestApp::sqlite()), (true, TestApp::sqlite_configured(|o| o.open_registration = true))]
    {
        let docs = discovery(&app);
        let (first_path, first) = &docs[0];
        for key in SHARED {
            if key == "registration_endpoint" && !open {
                assert!(docs.iter().all(|(_, d)| d.get(key).is_none()), "closed registration is not advertised");
                continue;
            }
            assert!(!first[key].is_null(), "{first_path} lacks {key}");
            for (path, doc) in &docs {
                assert_eq!(doc[key], first[key], "{key}: {path} and {first_path} disagree");
            }
        }
        for (path, doc) in &docs {
            let urls =
                doc.as_object().expect("object").iter().filter(|(k, _)| k.ends_with("_endpoint") || *k == "jwks_uri");
            for (key, url) in urls {
                let url = url.as_str().expect("a URL");
                let method = match key.as_str() {
                    "token_endpoint" | "introspection_endpoint" | "revocation_endpoint" | "registration_endpoint" => {
                        "POST"
                    }
                    _ => "GET",
                };
                let (status, body) = call(method, url, None, &[]);
                assert!(
                    !matches!(status, 404 | 405) && status < 500,
                    "{path} {key}: {method} {url} gave {status} {body}"
                );
            }
        }
    }
}

/// The clients a method authenticates: a public app, one with a secret, one with keys.
struct Clients {
    public: String,
    secret: (String, String),
    keyed: (String, Vec<u8>),
}

impl Clients {
    fn new(app: &TestApp) -> Clients {
        let (pkcs8, jwks) = backend_keys("k1");
        let keyed = backend_client(app, jwks, "Organization/riverside");
        Clients { public: public_app(app), secret: confidential_app(app), keyed: (keyed, pkcs8) }
    }

    /// The client `method` authenticates, and its `Authorization` header and form fields at `aud`.
    fn credentials(&self, method: &str, aud: &str) -> (String, Option<String>, Vec<(&'static str, String)>) {
        let (id, secret) = &self.secret;
        match method {
            "none" => (self.public.clone(), None, vec![("client_id", self.public.clone())]),
            "client_secret_basic" => (id.clone(), Some(basic(id, secret)), vec![]),
            "client_secret_post" => {
                (id.clone(), None, vec![("client_id", id.clone()), ("client_secret", secret.clone())])
            }
            "private_key_jwt" => {
                let (id, pkcs8) = &self.keyed;
                let key = jsonwebtoken::EncodingKey::from_ec_der(pkcs8);
                let jti = uuid::Uuid::new_v4().to_string();
                let a = assertion_for(aud, id, "k1", jsonwebtoken::Algorithm::ES384, &key, &jti, 200);
                let form = vec![("client_assertion_type", ASSERTION_TYPE.to_string()), ("client_assertion", a)];
                (id.clone(), None, form)
            }
            other => panic!("{other} is advertised but this test does not know it"),
        }
    }
}

fn send(
    url: &str,
    creds: &(String, Option<String>, Vec<(&'static str, String)>),
    form: &[(&str, &str)],
) -> (u16, Value) {
    let mut all: Vec<(&str, &str)> = form.to_vec();
    all.extend(creds.2.iter().map(|(k, v)| (*k, v.as_str())));
    call("POST", url, creds.1.as_deref(), &all)
}

/// Every client authentication method the discovery advertises for introspection and revocation
/// works there, for the client's own tokens; a method not advertised is refused.
fn advertised_auth_methods_work(app: &TestApp) {
    let clients = Clients::new(app);
    let doc = &discovery(app)[1].1;
    let methods = |key: &str| -> Vec<String> {
        doc[key].as_array().expect(key).iter().map(|m| m.as_str().expect("method").to_string()).collect()
    };
    let own_token =
        |client_id: &str| app.hf.issue_token("someone", client_id, "system/*.rs", None, 600).expect("token");
    let introspection = doc["introspection_endpoint"].as_str().expect("introspection_endpoint");
    for method in methods("introspection_endpoint_auth_methods_supported") {
        let creds = clients.credentials(&method, introspection);
        let token = own_token(&creds.0);
        let (status, v) = send(introspection, &creds, &[("token", &token)]);
        assert_eq!(
            (status, &v["active"], &v["client_id"]),
            (200, &Value::Bool(true), &Value::from(creds.0.clone())),
            "{method}: {v}"
        );
    }
    // A public app cannot prove who it is, so it cannot introspect by naming itself.
    let creds = clients.credentials("none", introspection);
    let (status, v) = send(introspection, &creds, &[("token", &own_token(&creds.0))]);
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_client")), "none at introspection: {v}");
    let (id, _) = &clients.secret;
    let wrong = (id.clone(), Some(basic(id, "not-the-secret")), vec![]);
    let (status, v) = send(introspection, &wrong, &[("token", &own_token(id))]);
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_client")), "a wrong secret: {v}");

    let revocation = doc["revocation_endpoint"].as_str().expect("revocation_endpoint");
    for method in methods("revocation_endpoint_auth_methods_supported") {
        let creds = clients.credentials(&method, revocation);
        let token = own_token(&creds.0);
        let api = app.client_with(Some(token.clone()));
        assert_ne!(api.get("Patient").status, 401, "{method}: the token works before");
        let (status, v) = send(revocation, &creds, &[("token", &token)]);
        assert_eq!(status, 200, "{method}: {v}");
        assert_eq!(api.get("Patient").status, 401, "{method}: revoked");
    }
    let (status, v) = send(revocation, &wrong, &[("token", &own_token(id))]);
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_client")), "a wrong secret: {v}");
}

/// Every method advertised for the token endpoint gets a token there.
fn advertised_token_endpoint_methods_work(app: &TestApp) {
    let (_, public, launched) = launch(app, NHS[0], "ada@example.org");
    let mut clients = Clients::new(app);
    clients.public = public;
    let (id, secret) = clients.secret.clone();
    let client = oauth_client(app, &id).set_client_secret(oauth2::ClientSecret::new(secret));
    let (url, verifier, _) = authorize_url(app, &client, APP_SCOPES);
    let (code, _) = sign_in_and_approve(app, &mut Browser::default(), &url, "ada@example.org");
    let mut confidential = exchange(&client, &code, &verifier).refresh_token().expect("refresh").secret().clone();
    let mut public = launched.refresh_token().expect("refresh").secret().clone();
    let doc = &discovery(app)[1].1;
    let token_endpoint = doc["token_endpoint"].as_str().expect("token_endpoint");
    for method in doc["token_endpoint_auth_methods_supported"].as_array().expect("methods") {
        let method = method.as_str().expect("method");
        let creds = clients.credentials(method, token_endpoint);
        let refresh = if method == "none" { &mut public } else { &mut confidential };
        let form = match method {
            "private_key_jwt" => vec![("grant_type", "client_credentials"), ("scope", "system/*.rs")],
            _ => vec![("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())],
        };
        let (status, v) = send(token_endpoint, &creds, &form);
        assert_eq!(status, 200, "{method}: {v}");
        if let Some(r) = v["refresh_token"].as_str() {
            *refresh = r.to_string();
        }
    }
}

both!(
    future_or_overlong_tokens_are_refused,
    public_app_refreshes_without_client_id,
    confidential_app_must_authenticate_to_refresh,
    advertised_auth_methods_work,
    advertised_token_endpoint_methods_work,
);
