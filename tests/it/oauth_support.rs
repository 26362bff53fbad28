//! Drives the SMART flows as an app and a browser would: the `oauth2` crate as an independent
//! client, and plain HTTP (no redirects followed) for the sign-in and consent pages.

use crate::support::TestApp;
use healthfolio::auth::accounts;
use healthfolio::auth::clients::{self, ClientKind, NewClient};
use oauth2::basic::BasicTokenType;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, EmptyExtraTokenFields, ExtraTokenFields, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, StandardTokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const REDIRECT: &str = "http://127.0.0.1:9/callback";
pub const APP_SCOPES: &str =
    "launch/patient openid fhirUser offline_access patient/MedicationRequest.rs patient/AllergyIntolerance.rs";
pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmartFields {
    pub patient: Option<String>,
    pub id_token: Option<String>,
}
impl ExtraTokenFields for SmartFields {}

pub type SmartToken = StandardTokenResponse<SmartFields, BasicTokenType>;
pub type SmartClient = oauth2::Client<
    oauth2::StandardErrorResponse<oauth2::basic::BasicErrorResponseType>,
    SmartToken,
    oauth2::StandardTokenIntrospectionResponse<EmptyExtraTokenFields, BasicTokenType>,
    oauth2::StandardRevocableToken,
    oauth2::StandardErrorResponse<oauth2::RevocationErrorResponseType>,
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

/// A patient with a login, and the patient's id.
pub fn patient_with_login(app: &TestApp, nhs: &str, email: &str) -> String {
    let id = app.create(crate::fixtures::patient(nhs, "Okafor", "Ada"));
    let mut conn = app.hf.db.conn().expect("conn");
    accounts::create(&mut conn, "patient", email, PASSWORD, &format!("Patient/{id}"), None).expect("account");
    id
}

pub fn public_app(app: &TestApp) -> String {
    public_app_redirecting_to(app, REDIRECT)
}

/// A public app whose one redirect URI is `redirect`.
pub fn public_app_redirecting_to(app: &TestApp, redirect: &str) -> String {
    let mut conn = app.hf.db.conn().expect("conn");
    let new = NewClient {
        name: "Pill Pal".into(),
        kind: Some(ClientKind::Public),
        redirect_uris: vec![redirect.into()],
        ..NewClient::default()
    };
    clients::register(&mut conn, &new).expect("client").0.client_id
}

pub fn oauth_client(app: &TestApp, client_id: &str) -> SmartClient {
    oauth2::Client::new(ClientId::new(client_id.to_string()))
        .set_auth_uri(AuthUrl::new(format!("{}/oauth/authorize", app.base)).expect("url"))
        .set_token_uri(TokenUrl::new(format!("{}/oauth/token", app.base)).expect("url"))
        .set_redirect_uri(RedirectUrl::new(REDIRECT.to_string()).expect("url"))
}

pub fn http() -> ureq::Agent {
    ureq::AgentBuilder::new().redirects(0).build()
}

/// A browser: keeps cookies, follows nothing.
pub struct Browser {
    agent: ureq::Agent,
    cookies: Vec<(String, String)>,
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    /// Every header line as sent (names lower case; `set-cookie` may repeat).
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Page {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The whole `Set-Cookie` line (with its attributes) that sets cookie `name`.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .map(|(_, v)| v.as_str())
            .find(|v| v.split_once('=').is_some_and(|(n, _)| n.trim() == name))
    }

    /// The value of a hidden form field.
    pub fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .map(|i| i + marker.len())
            .unwrap_or_else(|| panic!("no field {name} in {}", self.body));
        let end = self.body[start..].find('"').expect("end quote") + start;
        html_unescape(&self.body[start..end])
    }
}

fn html_unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

impl Default for Browser {
    fn default() -> Self {
        Browser { agent: http(), cookies: Vec::new() }
    }
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn absorb(&mut self, r: ureq::Response) -> Page {
        for c in r.all("set-cookie") {
            if let Some((kv, _)) = c.split_once(';').or(Some((c, ""))) {
                if let Some((k, v)) = kv.split_once('=') {
                    self.cookies.retain(|(n, _)| n != k);
                    self.cookies.push((k.to_string(), v.to_string()));
                }
            }
        }
        let status = r.status();
        let location = r.header("location").map(str::to_string);
        let mut names = r.headers_names();
        names.dedup();
        let headers =
            names.iter().flat_map(|n| r.all(n).into_iter().map(move |v| (n.to_lowercase(), v.to_string()))).collect();
        Page { status, location, headers, body: r.into_string().unwrap_or_default() }
    }

    fn send(&mut self, req: ureq::Request, form: Option<&[(&str, &str)]>) -> Page {
        let req = req.set("Cookie", &self.cookie_header());
        let res = match form {
            Some(f) => req.send_form(f),
            None => req.call(),
        };
        match res {
            Ok(r) | Err(ureq::Error::Status(_, r)) => self.absorb(r),
            Err(e) => panic!("transport: {e}"),
        }
    }

    pub fn get(&mut self, url: &str) -> Page {
        let req = self.agent.get(url);
        self.send(req, None)
    }

    pub fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let req = self.agent.post(url);
        self.send(req, Some(form))
    }

    /// A download: (status, headers' content-type, bytes).
    pub fn get_bytes(&mut self, url: &str) -> (u16, String, Vec<u8>) {
        let res = self.agent.get(url).set("Cookie", &self.cookie_header()).call();
        match res {
            Ok(r) | Err(ureq::Error::Status(_, r)) => {
                let (status, ct) = (r.status(), r.content_type().to_string());
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut r.into_reader(), &mut bytes).expect("body");
                (status, ct, bytes)
            }
            Err(e) => panic!("transport: {e}"),
        }
    }

    /// A multipart/form-data form with text fields and one file, as a browser sends an upload.
    pub fn post_file(&mut self, url: &str, fields: &[(&str, &str)], file_field: &str, file: &[u8]) -> Page {
        let boundary = format!("----hf{}", uuid::Uuid::new_v4().simple());
        let mut body = Vec::new();
        for (k, v) in fields {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes(),
            );
        }
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; filename=\"record.tar\"\r\nContent-Type: application/x-tar\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let req = self
            .agent
            .post(url)
            .set("Cookie", &self.cookie_header())
            .set("Content-Type", &format!("multipart/form-data; boundary={boundary}"));
        match req.send_bytes(&body) {
            Ok(r) | Err(ureq::Error::Status(_, r)) => self.absorb(r),
            Err(e) => panic!("transport: {e}"),
        }
    }
}

/// The authorize URL an app would open, with PKCE S256; returns (url, verifier, state).
pub fn authorize_url(app: &TestApp, client: &SmartClient, scopes: &str) -> (String, String, String) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge)
        .add_extra_param("aud", app.fhir.clone());
    for s in scopes.split_whitespace() {
        req = req.add_scope(Scope::new(s.to_string()));
    }
    let (url, state) = req.url();
    (url.to_string(), verifier.secret().clone(), state.secret().clone())
}

/// Signs in and approves everything; returns the code from the redirect.
pub fn sign_in_and_approve(app: &TestApp, browser: &mut Browser, url: &str, email: &str) -> (String, String) {
    sign_in_and_choose(app, browser, url, email, |offered| offered)
}

/// Signs in and approves everything; returns the URL the browser is sent back to, as it is.
pub fn sign_in_and_return(app: &TestApp, browser: &mut Browser, url: &str, email: &str) -> String {
    sign_in_and_consent(app, browser, url, email, |offered| offered)
}

/// Signs in and, on the consent page, sends the scopes `choose` makes of the ticked boxes (untick
/// some, or add some the page never offered); returns (code, state) from the redirect.
pub fn sign_in_and_choose(
    app: &TestApp,
    browser: &mut Browser,
    url: &str,
    email: &str,
    choose: impl FnOnce(Vec<String>) -> Vec<String>,
) -> (String, String) {
    let redirect = sign_in_and_consent(app, browser, url, email, choose);
    assert!(redirect.starts_with(REDIRECT), "{redirect}");
    let q: Vec<(String, String)> =
        serde_urlencoded::from_str(redirect.split_once('?').map(|x| x.1).unwrap_or_default()).expect("query");
    let get = |k: &str| {
        q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no {k} in {redirect}"))
    };
    (get("code"), get("state"))
}

/// Signs in on the page `url` opens and sends the consent form with the scopes `choose` makes of
/// the ticked boxes; returns the URL the browser is sent back to, whichever app's it is.
/// Signs in at an authorize URL; returns what comes next: the consent page (200), or a redirect
/// when there is nothing to ask.
pub fn sign_in_for_consent(app: &TestApp, browser: &mut Browser, url: &str, email: &str) -> Page {
    let login = browser.get(url);
    assert_eq!(login.status, 200, "login page: {} {:?}", login.body, login.location);
    let (csrf, cont) = (login.field("csrf"), login.field("continue"));
    let after = browser.post(
        &format!("{}/oauth/login", app.base),
        &[("email", email), ("password", PASSWORD), ("csrf", &csrf), ("continue", &cont)],
    );
    assert_eq!(after.status, 303, "login: {}", after.body);
    let next = after.location.expect("redirect after login");
    browser.get(&format!("{}{next}", app.base))
}

pub fn sign_in_and_consent(
    app: &TestApp,
    browser: &mut Browser,
    url: &str,
    email: &str,
    choose: impl FnOnce(Vec<String>) -> Vec<String>,
) -> String {
    let consent = sign_in_for_consent(app, browser, url, email);
    if consent.status == 303 {
        consent.location.expect("location")
    } else {
        assert_eq!(consent.status, 200, "consent page: {}", consent.body);
        let (csrf, request) = (consent.field("csrf"), consent.field("request"));
        let mut form: Vec<(&str, String)> = vec![("csrf", csrf), ("request", request), ("decision", "allow".into())];
        form.extend(choose(consent_offers(&consent)).into_iter().map(|s| ("scope", s)));
        let form_ref: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let done = browser.post(&format!("{}/oauth/consent", app.base), &form_ref);
        assert_eq!(done.status, 303, "consent: {}", done.body);
        done.location.expect("location")
    }
}

/// The scopes a consent page offers, as checkbox values.
pub fn consent_offers(consent: &Page) -> Vec<String> {
    consent
        .body
        .match_indices("name=\"scope\" type=\"checkbox\" value=\"")
        .map(|(i, m)| {
            let start = i + m.len();
            html_unescape(&consent.body[start..start + consent.body[start..].find('"').expect("quote")])
        })
        .collect()
}

/// The app's side of the code exchange, through the `oauth2` crate.
pub fn exchange(client: &SmartClient, code: &str, verifier: &str) -> SmartToken {
    client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
        .request(&http())
        .expect("token exchange")
}

/// A patient's app gets a token through sign-in and consent; returns (patient id, client id, token).
pub fn launch(app: &TestApp, nhs: &str, email: &str) -> (String, String, SmartToken) {
    let patient = patient_with_login(app, nhs, email);
    let client_id = public_app(app);
    let client = oauth_client(app, &client_id);
    let (url, verifier, state) = authorize_url(app, &client, APP_SCOPES);
    let mut browser = Browser::default();
    let (code, returned_state) = sign_in_and_approve(app, &mut browser, &url, email);
    assert_eq!(returned_state, state, "state is echoed");
    (patient, client_id, exchange(&client, &code, &verifier))
}

/// A confidential app (`clients add --kind confidential`): (client id, its secret).
pub fn confidential_app(app: &TestApp) -> (String, String) {
    let mut conn = app.hf.db.conn().expect("conn");
    let new = NewClient {
        name: "Clinic Companion".into(),
        kind: Some(ClientKind::Confidential),
        redirect_uris: vec![REDIRECT.into()],
        ..NewClient::default()
    };
    let (client, secret) = clients::register(&mut conn, &new).expect("client");
    (client.client_id, secret.expect("a confidential client is given a secret"))
}

pub fn basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

/// A token request with an `Authorization` header: (status, WWW-Authenticate, body).
pub fn token_request_authorized(app: &TestApp, authorization: &str, form: &[(&str, &str)]) -> (u16, String, Value) {
    let req = http().post(&format!("{}/oauth/token", app.base)).set("Authorization", authorization);
    match req.send_form(form) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => (
            r.status(),
            r.header("www-authenticate").unwrap_or_default().to_string(),
            r.into_json().unwrap_or(Value::Null),
        ),
        Err(e) => panic!("transport: {e}"),
    }
}

/// The claims of a JWT, unverified.
pub fn jwt_claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).expect("payload");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("b64"))
        .expect("json")
}

/// The keys `/.well-known/jwks.json` publishes.
pub fn published_keys(app: &TestApp) -> Vec<Value> {
    let jwks = app.client_with(None).get(&format!("{}/.well-known/jwks.json", app.base));
    assert_eq!(jwks.status, 200, "{}", jwks.text);
    jwks.body["keys"].as_array().expect("keys").clone()
}

/// The published key named `kid`, which must be there.
pub fn published_key(app: &TestApp, kid: &str) -> Value {
    let keys = published_keys(app);
    keys.iter().find(|k| k["kid"] == kid).cloned().unwrap_or_else(|| panic!("{kid} is not in {keys:?}"))
}

/// That `key` is an RSA key published for RS256 signatures.
pub fn assert_rs256_key(key: &Value) {
    assert_eq!((&key["kty"], &key["alg"], &key["use"]), (&json!("RSA"), &json!("RS256"), &json!("sig")), "{key}");
    assert_eq!(key["e"], "AQAB", "{key}");
    assert!(key["n"].as_str().is_some_and(|n| n.len() == 342), "a 2048-bit modulus: {key}");
}

/// A raw token request (for the refusals the oauth2 crate would not even send).
pub fn token_request(app: &TestApp, form: &[(&str, &str)]) -> (u16, Value) {
    match http().post(&format!("{}/oauth/token", app.base)).send_form(form) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("transport: {e}"),
    }
}

/// An EC P-384 key pair for a backend client: (pkcs8 DER, public JWKS).
pub fn backend_keys(kid: &str) -> (Vec<u8>, Value) {
    ec_keys(kid, jsonwebtoken::Algorithm::ES384)
}

/// An EC key pair for `alg` (ES256: P-256, ES384: P-384): (pkcs8 DER, public JWKS).
pub fn ec_keys(kid: &str, alg: jsonwebtoken::Algorithm) -> (Vec<u8>, Value) {
    use base64::Engine;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING};
    let (signing, crv, name, len) = match alg {
        jsonwebtoken::Algorithm::ES256 => (&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", "ES256", 32),
        jsonwebtoken::Algorithm::ES384 => (&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", "ES384", 48),
        other => panic!("no EC curve for {other:?}"),
    };
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).expect("pair");
    let p = pair.public_key().as_ref();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = json!({"keys": [{"kty": "EC", "crv": crv, "kid": kid, "alg": name, "x": b64(&p[1..1 + len]), "y": b64(&p[1 + len..1 + 2 * len])}]});
    (pkcs8.as_ref().to_vec(), jwks)
}

/// A backend client whose keys are registered by value.
pub fn backend_client(app: &TestApp, jwks: Value, organization: &str) -> String {
    register_backend(app, Some(jwks), None, organization)
}

/// A backend client whose keys are published at `jwks_uri` (`clients add --jwks-uri`).
pub fn backend_client_at(app: &TestApp, jwks_uri: &str, organization: &str) -> String {
    register_backend(app, None, Some(jwks_uri.to_string()), organization)
}

fn register_backend(app: &TestApp, jwks: Option<Value>, jwks_uri: Option<String>, organization: &str) -> String {
    let mut conn = app.hf.db.conn().expect("conn");
    let new = NewClient {
        name: "Riverside GP system".into(),
        kind: Some(ClientKind::Backend),
        scope: "system/*.cruds".into(),
        jwks,
        jwks_uri,
        organization: Some(organization.into()),
        ..NewClient::default()
    };
    clients::register(&mut conn, &new).expect("client").0.client_id
}

/// A signed client assertion (SMART Backend Services), ES384 with a P-384 key from [`backend_keys`].
pub fn assertion(app: &TestApp, client_id: &str, kid: &str, pkcs8: &[u8], jti: &str, exp_in: i64) -> String {
    let key = jsonwebtoken::EncodingKey::from_ec_der(pkcs8);
    assertion_signed(app, client_id, kid, jsonwebtoken::Algorithm::ES384, &key, jti, exp_in)
}

/// A client assertion with whatever `alg` and key the caller chooses (they need not match).
pub fn assertion_signed(
    app: &TestApp,
    client_id: &str,
    kid: &str,
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
    jti: &str,
    exp_in: i64,
) -> String {
    let aud = format!("{}/oauth/token", app.base);
    assertion_for(&aud, client_id, kid, alg, key, jti, exp_in)
}

/// A client assertion addressed to `aud` (an endpoint other than the token endpoint).
pub fn assertion_for(
    aud: &str,
    client_id: &str,
    kid: &str,
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
    jti: &str,
    exp_in: i64,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": client_id, "sub": client_id, "aud": aud, "exp": now + exp_in, "jti": jti});
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, &claims, key).expect("sign")
}

/// A client-credentials token request authenticated by `assertion`.
pub fn client_credentials(app: &TestApp, assertion: &str, scope: &str) -> (u16, Value) {
    token_request(
        app,
        &[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion),
        ],
    )
}

pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A `system/*.rs` access token for a new provider system of `org` (SMART Backend Services: a
/// signed assertion at the token endpoint).
pub fn provider_system_token(app: &TestApp, org: &str) -> String {
    provider_system_token_with(app, org, "system/*.rs")
}

/// The same, asking for `scope` (the client may have up to `system/*.cruds`).
pub fn provider_system_token_with(app: &TestApp, org: &str, scope: &str) -> String {
    let (pkcs8, jwks) = backend_keys("k1");
    let client_id = backend_client(app, jwks, org);
    let a = assertion(app, &client_id, "k1", &pkcs8, &uuid::Uuid::new_v4().to_string(), 200);
    let (status, t) = client_credentials(app, &a, scope);
    assert_eq!(status, 200, "{t}");
    t["access_token"].as_str().expect("access_token").to_string()
}
