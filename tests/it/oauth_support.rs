//! Drives the SMART flows as an app and a browser would: the `oauth2` crate as an independent
//! client, and plain HTTP (no redirects followed) for the sign-in and consent pages.

use crate::support::TestApp;
use healthfolio::auth::accounts;
use healthfolio::auth::clients::{self, ClientKind, NewClient};
use oauth2::basic::BasicTokenType;
use oauth2::{
    AuthUrl, ClientId, CsrfToken, EmptyExtraTokenFields, ExtraTokenFields, PkceCodeChallenge, RedirectUrl, Scope,
    StandardTokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const REDIRECT: &str = "http://127.0.0.1:9/callback";
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
    let mut conn = app.hf.db.conn().expect("conn");
    let new = NewClient {
        name: "Pill Pal".into(),
        kind: Some(ClientKind::Public),
        redirect_uris: vec![REDIRECT.into()],
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
    pub body: String,
}

impl Page {
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
        Page { status, location, body: r.into_string().unwrap_or_default() }
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
    let login = browser.get(url);
    assert_eq!(login.status, 200, "login page: {}", login.body);
    let (csrf, cont) = (login.field("csrf"), login.field("continue"));
    let after = browser.post(
        &format!("{}/oauth/login", app.base),
        &[("email", email), ("password", PASSWORD), ("csrf", &csrf), ("continue", &cont)],
    );
    assert_eq!(after.status, 303, "login: {}", after.body);
    let next = after.location.expect("redirect after login");
    let consent = browser.get(&format!("{}{next}", app.base));
    let redirect = if consent.status == 303 {
        consent.location.expect("location")
    } else {
        assert_eq!(consent.status, 200, "consent page: {}", consent.body);
        let (csrf, request) = (consent.field("csrf"), consent.field("request"));
        let mut form: Vec<(&str, String)> = vec![("csrf", csrf), ("request", request), ("decision", "allow".into())];
        let scopes: Vec<String> = consent
            .body
            .match_indices("name=\"scope\" type=\"checkbox\" value=\"")
            .map(|(i, m)| {
                let start = i + m.len();
                html_unescape(&consent.body[start..start + consent.body[start..].find('"').expect("quote")])
            })
            .collect();
        form.extend(scopes.into_iter().map(|s| ("scope", s)));
        let form_ref: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let done = browser.post(&format!("{}/oauth/consent", app.base), &form_ref);
        assert_eq!(done.status, 303, "consent: {}", done.body);
        done.location.expect("location")
    };
    assert!(redirect.starts_with(REDIRECT), "{redirect}");
    let q: Vec<(String, String)> =
        serde_urlencoded::from_str(redirect.split_once('?').map(|x| x.1).unwrap_or_default()).expect("query");
    let get = |k: &str| {
        q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no {k} in {redirect}"))
    };
    (get("code"), get("state"))
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
    use base64::Engine;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("pair");
    let p = pair.public_key().as_ref();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": kid, "alg": "ES384", "x": b64(&p[1..49]), "y": b64(&p[49..97])}]});
    (pkcs8.as_ref().to_vec(), jwks)
}

pub fn backend_client(app: &TestApp, jwks: Value, organization: &str) -> String {
    let mut conn = app.hf.db.conn().expect("conn");
    let new = NewClient {
        name: "Riverside GP system".into(),
        kind: Some(ClientKind::Backend),
        scope: "system/*.cruds".into(),
        jwks: Some(jwks),
        organization: Some(organization.into()),
        ..NewClient::default()
    };
    clients::register(&mut conn, &new).expect("client").0.client_id
}

/// A signed client assertion (SMART Backend Services).
pub fn assertion(app: &TestApp, client_id: &str, kid: &str, pkcs8: &[u8], jti: &str, exp_in: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": client_id, "sub": client_id, "aud": format!("{}/oauth/token", app.base), "exp": now + exp_in, "jti": jti});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ec_der(pkcs8)).expect("sign")
}

pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A `system/*.rs` access token for a new provider system of `org` (SMART Backend Services: a
/// signed assertion at the token endpoint).
pub fn provider_system_token(app: &TestApp, org: &str) -> String {
    let (pkcs8, jwks) = backend_keys("k1");
    let client_id = backend_client(app, jwks, org);
    let a = assertion(app, &client_id, "k1", &pkcs8, &uuid::Uuid::new_v4().to_string(), 200);
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "system/*.rs"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", a.as_str()),
    ];
    let (status, t) = token_request(app, &form);
    assert_eq!(status, 200, "{t}");
    t["access_token"].as_str().expect("access_token").to_string()
}
