//! More of the authorization server, end to end over HTTP: confidential apps, userinfo, backend
//! keys published at a URL, every assertion algorithm, signing-key rotation, partial consent, the
//! pages' security headers and cookies, and sign-in throttling.

use crate::both;
use crate::fixtures::*;
use crate::integrity::race_replicas;
use crate::oauth_support::*;
use crate::support::{Client, TestApp};
use healthfolio::auth::keys::SigningAlg;
use healthfolio::consent::Grantee;
use jsonwebtoken::{Algorithm, EncodingKey};
use oauth2::{AuthType, ClientSecret, TokenResponse};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ORG: &str = "Organization/riverside";

// ---- confidential apps ----------------------------------------------------------------------

/// The code exchange of a confidential app, with `client_secret_basic` and with
/// `client_secret_post`; a wrong or missing secret is `invalid_client` and leaves the code usable.
fn confidential_app_authenticates_with_its_secret(app: &TestApp) {
    patient_with_login(app, NHS[0], "ada@example.org");
    let (client_id, secret) = confidential_app(app);
    for (method, auth_type) in
        [("client_secret_basic", AuthType::BasicAuth), ("client_secret_post", AuthType::RequestBody)]
    {
        let client =
            oauth_client(app, &client_id).set_client_secret(ClientSecret::new(secret.clone())).set_auth_type(auth_type);
        let (url, verifier, _) = authorize_url(app, &client, APP_SCOPES);
        let (code, _) = sign_in_and_approve(app, &mut Browser::default(), &url, "ada@example.org");
        let exchange_form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.as_str()),
        ];
        if method == "client_secret_basic" {
            let (status, challenge, body) =
                token_request_authorized(app, &basic(&client_id, "not-the-secret"), &exchange_form);
            assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{method}: {body}");
            assert!(challenge.starts_with("Basic"), "RFC 6749 §5.2: a 401 names the scheme: {challenge}");
        } else {
            let wrong =
                [&exchange_form[..], &[("client_id", &client_id), ("client_secret", "not-the-secret")]].concat();
            let (status, body) = token_request(app, &wrong);
            // RFC 6749 §5.2: 401 is required only when the client used the Authorization header.
            assert_eq!((status, body["error"].as_str()), (400, Some("invalid_client")), "{method}: {body}");
        }
        // Naming itself like a public app, without its secret, is not enough either.
        let (status, body) = token_request(app, &[&exchange_form[..], &[("client_id", &client_id)]].concat());
        assert_eq!(body["error"], "invalid_client", "{method} without a secret: {status} {body}");
        // The refusals did not use up the code: the app with its secret gets its token.
        let token = exchange(&client, &code, &verifier);
        let c = app.client_with(Some(token.access_token().secret().clone()));
        assert_eq!(c.get("MedicationRequest").status, 200, "{method}");
        assert!(token.refresh_token().is_some(), "offline_access was asked");
    }
}

// ---- userinfo -------------------------------------------------------------------------------

fn userinfo_names_the_signed_in_user(app: &TestApp) {
    let (patient, client_id, token) = launch(app, NHS[0], "ada@example.org");
    let url = format!("{}/oauth/userinfo", app.base);
    let access = token.access_token().secret().clone();
    let r = app.client_with(Some(access.clone())).get(&url);
    assert_eq!(r.status, 200, "{}", r.text);
    let id_token = jwt_claims(token.extra_fields().id_token.as_deref().expect("id_token"));
    assert!(r.body["sub"].as_str().is_some_and(|s| !s.is_empty()), "{}", r.text);
    assert_eq!(r.body["sub"], id_token["sub"], "the same subject as the id_token");
    assert_eq!(r.body["fhirUser"], format!("{}/Patient/{patient}", app.fhir));
    assert_eq!(r.body["fhirUser"], id_token["fhirUser"]);

    let refused = |case: &str, token: Option<String>| {
        let r = app.client_with(token).get(&url);
        assert_eq!(r.status, 401, "{case}: {}", r.text);
        assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")), "{case}");
        assert!(r.body.get("sub").is_none() && !r.text.contains("ada@example.org"), "{case}: {}", r.text);
    };
    refused("no token", None);
    refused("garbage", Some("not-a-token".into()));
    // The same claims under the server's kid, signed with another key.
    let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
    header.kid = Some(kid(&access));
    let other_key = EncodingKey::from_ec_der(&ec_keys("x", Algorithm::ES256).0);
    let forged = jsonwebtoken::encode(&header, &jwt_claims(&access), &other_key).expect("sign");
    refused("forged signature", Some(forged));

    // A token of the same user without `openid` is not for userinfo (RFC 6750 §3.1: insufficient_scope).
    let client = oauth_client(app, &client_id);
    let (url2, verifier, _) = authorize_url(app, &client, "launch/patient patient/MedicationRequest.rs");
    let (code, _) = sign_in_and_approve(app, &mut Browser::default(), &url2, "ada@example.org");
    let plain = exchange(&client, &code, &verifier);
    let r = app.client_with(Some(plain.access_token().secret().clone())).get(&url);
    assert_eq!((r.status, r.body["error"].as_str()), (403, Some("insufficient_scope")), "{}", r.text);
    assert!(r.header("www-authenticate").is_some_and(|h| h.contains("insufficient_scope")));

    // A revoked token is refused.
    assert_eq!(
        http().post(&format!("{}/oauth/revoke", app.base)).send_form(&[("token", &access)]).map(|r| r.status()).ok(),
        Some(200)
    );
    refused("revoked", Some(access));
}

// ---- backend keys published at a URL ---------------------------------------------------------

/// A small web server publishing a client's JWKS, counting the requests it answers.
struct KeyHost {
    url: String,
    hits: Arc<AtomicUsize>,
}

fn key_host(jwks: Value) -> KeyHost {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    // A path of its own, so no other test's host (on a reused port) shares a cache entry.
    let url = format!("http://{}/{}/jwks.json", listener.local_addr().expect("addr"), uuid::Uuid::new_v4().simple());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        let body = jwks.to_string();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    KeyHost { url, hits }
}

/// A host that accepts connections and never answers.
fn silent_host() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    url
}

/// An address where nothing listens.
fn closed_host() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}/jwks.json", listener.local_addr().expect("addr"))
}

fn keys_by_url_are_fetched_and_cached(app: &TestApp) {
    let (pkcs8, jwks) = backend_keys("k1");
    let host = key_host(jwks);
    let client_id = backend_client_at(app, &host.url, ORG);
    assert_eq!(host.hits.load(Ordering::SeqCst), 0, "registering does not fetch");
    let (status, body) = client_credentials(app, &assertion(app, &client_id, "k1", &pkcs8, "j1", 200), "system/*.rs");
    assert_eq!(status, 200, "{body}");
    assert_eq!(host.hits.load(Ordering::SeqCst), 1, "the key set was fetched");
    let c = app.client_with(body["access_token"].as_str().map(str::to_string));
    assert_eq!(c.get("Patient").status, 200);
    let (status, body) = client_credentials(app, &assertion(app, &client_id, "k1", &pkcs8, "j2", 200), "system/*.rs");
    assert_eq!(status, 200, "{body}");
    assert_eq!(host.hits.load(Ordering::SeqCst), 1, "within the cache window the key set is not fetched again");
    // The cached set still decides: another key under the same kid is refused.
    let (other, _) = backend_keys("k1");
    let (status, body) = client_credentials(app, &assertion(app, &client_id, "k1", &other, "j3", 200), "system/*.rs");
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
}

fn unreachable_key_url_is_invalid_client_not_a_hang(app: &TestApp) {
    let (pkcs8, _) = backend_keys("k1");
    // The caller gives up long after the server's own fetch timeout (3 s) should have answered.
    let agent = ureq::AgentBuilder::new().redirects(0).timeout(Duration::from_secs(20)).build();
    for (case, url) in [("silent host", silent_host()), ("nothing listening", closed_host())] {
        let client_id = backend_client_at(app, &url, ORG);
        let a = assertion(app, &client_id, "k1", &pkcs8, &uuid::Uuid::new_v4().to_string(), 200);
        let started = Instant::now();
        let res = agent.post(&format!("{}/oauth/token", app.base)).send_form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.rs"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &a),
        ]);
        let (status, body): (u16, Value) = match res {
            Ok(r) | Err(ureq::Error::Status(_, r)) => (r.status(), r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("{case}: the token endpoint did not answer: {e}"),
        };
        let took = started.elapsed();
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{case}: {body}");
        assert!(took < Duration::from_secs(8), "{case}: answered only after {took:?}");
    }
}

/// While a token request waits on a slow key host, the rest of the service goes on writing.
/// (The keys are fetched before the token endpoint's transaction, and a failed host is remembered.)
#[test]
fn slow_key_host_does_not_stall_writes() {
    let app = TestApp::sqlite();
    let (pkcs8, _) = backend_keys("k1");
    let client_id = backend_client_at(&app, &silent_host(), ORG);
    let a = assertion(&app, &client_id, "k1", &pkcs8, "j1", 200);
    std::thread::scope(|s| {
        let waiting = s.spawn(|| client_credentials(&app, &a, "system/*.rs"));
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        app.create(patient(NHS[0], "Okafor", "Ada"));
        let took = started.elapsed();
        assert_eq!(waiting.join().expect("token request").1["error"], "invalid_client");
        assert!(took < Duration::from_secs(1), "a FHIR create waited {took:?} for another client's key host");
    });
}

// ---- assertion algorithms -------------------------------------------------------------------

/// A 2048-bit RSA key for tests only (PKCS#1).
const RSA_TEST_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEAjNGtQzdVhkf7Icg3fkTeCZHYEirWdwurIh6b6DsCwG+wOwh4
YxG7tzKbyhZ3TJl7JI4q9qkJR5miLlhawtsQh2n9nD5hbsi9KLq4d3hY5xzihSDv
9ABwvPlOo5ca3Qoany5do8Bif7sA303DTtgfG+CORyjmlyPA0RAa2ZHK+z99YufA
QugmFaanFYTva/XVMhrwK3oUPWGzjyRZEnQcrJfk7fpAc8xNW/41gOYVcrnjrpd5
G0YyW6TXVEHnNLTCf/G3A/hxAR3hefnee69unKtPw9/5c+4R9JOpkH6jIMlBaw2V
dJO2wETp1WxItGNjjL6blspzKyq9tkceGMYquwIDAQABAoIBAB4ugJrD/N4rhl1e
utoi644UhsGaEd5xD0xgUB0trLDPH2//qEHflqK0w6REPWybBsQ2fmngn/8LJDIX
uNhDuJ61bmhzDFIAz14v6wKcNj3OuJQ9E4DyKTevnZW9eMIAfOU6PFKxFMt4qr6x
vZckBkLk1cnVr9qcDKMidwbD00QXLaO58JUJg2ziLIuXl56LihKaU2CFoH3V+7ga
IzaibYKqFXHtoF1pjbsfYBHvq3zWLhMQjADXOSdJ+rG51GVgJ/VMeb5UO6YoUPjN
v0yeNntnRA1MhjX/uWhyKgyYax5a6x5aJADv36No+1rq2GZMIZTVSsXBQQTSxrS2
bbH/+ekCgYEAwPMG1Pm/xCsfy2oUFykkpDzhMNcEvBjPGQaf8tmI5vBaAFqEt2Ck
HJUOOMwsZ84LwS+jA4wjiSItm4tELArtcSNhHELiTF2V4Ahj05P1+XiXGgJtQabr
oNQENAIw70uVIyUD+EG6HEsIAGQ6WsJV8SfLc9Wxh38jneD1fJfAV4kCgYEAutW/
Lbw2KVHX8XZP2B8vHNEF6lNtt4G9gTU0EOoXoZJwyzcoCWEgNI48qoOKT/vkzYQ8
7i89Tm0ouEJl0m7Z38PNd3ujzs8uY9uEFsNbGp+azcL38aD/NWjGvtD9c/6ATMwr
j6M/N2rK75X87xmnwKdmsSAvznJNpWo5qpvY2yMCgYBgGiuy9FoBWQFTDZjIGGP5
saDv9IiVLz4nVtdf292GOPx65Jrpwya6XbthqsALS+Mq65Ej+S7R5MYWjPz9esvc
6CQ8MUwJgStfFI60GSQQh3GrML4+TudZiYA2b0j0Rw8XHB6oDgSmhvCLUWCHR/gK
TynUngD4Xejdf+iFkAfrEQKBgQC6abwHOOvdTECmNgKyQ2LxYIiDZVxqJPPccCYT
3k1Xs1IBIHY87YCBj41uIDKnXU/L0m4sxEtp7bYcKnuHe3y9K5Lc7SrilIrXrVVc
lOxYYvjE5gwXNSiNtI3gI4tO6ZY/idLIzPutIkt6wu8L7VAYA66NeezZEejw60zA
MiErewKBgQCPWr/X4gwRECWcpeLJZG2hzUurwQTlV9p9TapVklYsWhJtouxlbDPz
grluzm48nd7QaJxiZXFwufHX0oaXP92g2AygF5DgC1yaIiWD7tIVPY83JTwCS0XK
yqa9JdZvfM+sNyGKtdT6TCzjpq9BaPPE7VlLC543dRC6BiIrSHkkqw==
-----END RSA PRIVATE KEY-----";

/// The test RSA key: (signing key, public JWK).
fn rsa_key(kid: &str) -> (EncodingKey, Value) {
    use base64::Engine;
    let b64: String = RSA_TEST_KEY.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).expect("pem");
    let pair = ring::signature::RsaKeyPair::from_der(&der).expect("rsa key");
    let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(ring::signature::KeyPair::public_key(&pair));
    let url = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = json!({"kty": "RSA", "kid": kid, "alg": "RS384", "n": url(&public.n), "e": url(&public.e)});
    (EncodingKey::from_rsa_der(&der), jwk)
}

fn every_offered_assertion_algorithm_and_no_mismatch(app: &TestApp) {
    let (rsa, rsa_jwk) = rsa_key("r1");
    let (p256, p256_jwks) = ec_keys("e256", Algorithm::ES256);
    let (p384, p384_jwks) = ec_keys("e384", Algorithm::ES384);
    let jwks = json!({"keys": [rsa_jwk, p256_jwks["keys"][0], p384_jwks["keys"][0]]});
    let client_id = backend_client(app, jwks.clone(), ORG);
    let (p256, p384) = (EncodingKey::from_ec_der(&p256), EncodingKey::from_ec_der(&p384));
    let signed = |kid: &str, alg: Algorithm, key: &EncodingKey| {
        assertion_signed(app, &client_id, kid, alg, key, &uuid::Uuid::new_v4().to_string(), 200)
    };
    for (case, a) in
        [("RS384", signed("r1", Algorithm::RS384, &rsa)), ("ES256", signed("e256", Algorithm::ES256, &p256))]
    {
        let (status, body) = client_credentials(app, &a, "system/*.rs");
        assert_eq!(status, 200, "{case}: {body}");
        let c = app.client_with(body["access_token"].as_str().map(str::to_string));
        assert_eq!(c.get("Patient").status, 200, "{case}");
    }
    let modulus = jwks["keys"][0]["n"].as_str().expect("n").to_string();
    for (case, a) in [
        ("ES256 under the RSA key's kid", signed("r1", Algorithm::ES256, &p256)),
        ("RS384 under an EC key's kid", signed("e256", Algorithm::RS384, &rsa)),
        ("ES256 claimed for the P-384 key", signed("e384", Algorithm::ES256, &p256)),
        ("ES384 claimed for the P-256 key", signed("e256", Algorithm::ES384, &p384)),
        ("RS256, not offered", signed("r1", Algorithm::RS256, &rsa)),
        (
            "HS256 keyed with the public modulus",
            signed("r1", Algorithm::HS256, &EncodingKey::from_secret(modulus.as_bytes())),
        ),
    ] {
        let (status, body) = client_credentials(app, &a, "system/*.rs");
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{case}: {body}");
    }
}

// ---- signing-key rotation --------------------------------------------------------------------

fn kid(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt).expect("jwt").kid.expect("kid")
}

/// The published keys as (alg, kid), read where the discovery document says.
fn published_kids(app: &TestApp) -> Vec<(String, String)> {
    let c = app.client_with(None);
    let conf = c.get(&format!("{}/.well-known/openid-configuration", app.base));
    let jwks_uri = conf.body["jwks_uri"].as_str().expect("jwks_uri").to_string();
    c.get(&jwks_uri).body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| (k["alg"].as_str().expect("alg").to_string(), k["kid"].as_str().expect("kid").to_string()))
        .collect()
}

fn rotation_keeps_old_tokens_and_signs_new_ones(app: &TestApp) {
    // Issued before the rotation and not used until after it: nothing has verified it yet.
    let before = provider_system_token(app, ORG);
    let old_kid = kid(&before);
    let old = published_kids(app);
    let old_rsa = old.iter().find(|(alg, _)| alg == "RS256").expect("an RS256 key").1.clone();
    assert_eq!(old.len(), 2, "{old:?}");
    assert!(old.contains(&("ES256".into(), old_kid.clone())), "{old:?}");
    let rotated = app.hf.keys.rotate().expect("keys rotate");
    let rotated_kid = |alg: SigningAlg| rotated.iter().find(|(a, _)| *a == alg).expect("rotated").1.clone();
    let (new_kid, new_rsa) = (rotated_kid(SigningAlg::Es256), rotated_kid(SigningAlg::Rs256));
    assert_ne!(new_kid, old_kid);
    assert_ne!(new_rsa, old_rsa);
    // The retired keys stay published until every token they signed has expired.
    let kids = published_kids(app);
    for (alg, kid) in [("ES256", &old_kid), ("ES256", &new_kid), ("RS256", &old_rsa), ("RS256", &new_rsa)] {
        assert!(kids.contains(&(alg.to_string(), kid.clone())), "{alg} {kid} in {kids:?}");
    }
    assert_eq!(kids.len(), 4, "{kids:?}");
    assert_rs256_key(&published_key(app, &old_rsa));
    assert_eq!(app.client_with(Some(before.clone())).get("Patient").status, 200, "the old key still verifies");
    // Another replica, which never saw the old key, verifies it from the published set.
    let replica = app.replica();
    assert_eq!(replica.client_with(Some(before)).get("Patient").status, 200, "on a fresh replica");
    let after = provider_system_token(app, ORG);
    assert_eq!(kid(&after), new_kid, "new tokens are signed with the new key");
    assert_eq!(app.client_with(Some(after.clone())).get("Patient").status, 200);
    assert_eq!(replica.client_with(Some(after)).get("Patient").status, 200);
    let (_, _, token) = launch(app, NHS[0], "ada@example.org");
    assert_eq!(kid(token.access_token().secret()), new_kid);
    assert_eq!(kid(token.extra_fields().id_token.as_deref().expect("id_token")), new_rsa);
}

/// Replicas that first need the RS256 key at the same moment (here to publish it) make one
/// between them, not one each.
fn replicas_make_one_id_token_key_between_them(app: &TestApp) {
    let replica = app.replica();
    let jwks = |c: &Client| c.get(&format!("{}/.well-known/jwks.json", c.base.trim_end_matches("/fhir")));
    let rs = race_replicas(&[app, &replica], 8, |c, _| jwks(c));
    let rsa_kids: Vec<Vec<String>> = rs
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text);
            let keys = r.body["keys"].as_array().expect("keys");
            keys.iter().filter(|k| k["alg"] == "RS256").map(|k| k["kid"].as_str().expect("kid").to_string()).collect()
        })
        .collect();
    assert_eq!(rsa_kids[0].len(), 1, "{rsa_kids:?}");
    assert!(rsa_kids.iter().all(|k| *k == rsa_kids[0]), "every replica published the same one: {rsa_kids:?}");
    let ids: Vec<String> = published_kids(&replica).into_iter().map(|(_, kid)| kid).collect();
    assert_eq!(ids.len(), 2, "one ES256 and one RS256 key: {ids:?}");
}

// ---- partial consent -------------------------------------------------------------------------

fn unticked_scope_is_neither_granted_nor_given(app: &TestApp) {
    let patient = patient_with_login(app, NHS[0], "ada@example.org");
    let client_id = public_app(app);
    let client = oauth_client(app, &client_id);
    let (url, verifier, _) = authorize_url(app, &client, APP_SCOPES);
    let mut offered = Vec::new();
    let (code, _) = sign_in_and_choose(app, &mut Browser::default(), &url, "ada@example.org", |scopes| {
        offered = scopes.clone();
        let mut kept: Vec<String> = scopes.into_iter().filter(|s| s != "patient/AllergyIntolerance.rs").collect();
        // A forged box for something the app never asked for counts for nothing.
        kept.push("patient/Condition.rs".into());
        kept
    });
    assert!(offered.contains(&"patient/AllergyIntolerance.rs".to_string()), "{offered:?}");
    assert!(offered.contains(&"patient/MedicationRequest.rs".to_string()), "{offered:?}");
    let token = exchange(&client, &code, &verifier);
    let scopes: Vec<String> = token.scopes().expect("scope").iter().map(|s| s.to_string()).collect();
    assert!(scopes.contains(&"patient/MedicationRequest.rs".to_string()), "{scopes:?}");
    assert!(!scopes.iter().any(|s| s.contains("AllergyIntolerance") || s.contains("Condition")), "{scopes:?}");
    let mut conn = app.hf.db.conn().expect("conn");
    let grant = healthfolio::consent::active_for(&mut conn, &patient, &Grantee::Client(client_id.clone()))
        .expect("query")
        .expect("grant");
    assert!(grant.scope.contains("patient/MedicationRequest.rs"), "{}", grant.scope);
    assert!(!grant.scope.contains("AllergyIntolerance") && !grant.scope.contains("Condition"), "{}", grant.scope);

    app.create(allergy(&patient, "high"));
    let c = app.client_with(Some(token.access_token().secret().clone()));
    assert_eq!(c.get("MedicationRequest").status, 200);
    assert_eq!(c.get("AllergyIntolerance").status, 403);
    assert_eq!(c.get(&format!("AllergyIntolerance?patient={patient}")).status, 403);
    // Asking again for what was unticked brings the consent page back.
    let mut b = Browser::default();
    let (url, _, _) = authorize_url(app, &client, APP_SCOPES);
    let page = sign_in_for_consent(app, &mut b, &url, "ada@example.org");
    assert_eq!(page.status, 200, "the consent page, not a silent redirect: {:?}", page.location);
    assert!(consent_offers(&page).contains(&"patient/AllergyIntolerance.rs".to_string()));
}

// ---- page security ---------------------------------------------------------------------------

fn assert_page_headers(p: &Page, case: &str) {
    let csp = p.header("content-security-policy").unwrap_or_else(|| panic!("{case}: no CSP"));
    for part in ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"] {
        assert!(csp.contains(part), "{case}: CSP lacks {part}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{case}: {csp}");
    assert_eq!(p.header("x-frame-options"), Some("DENY"), "{case}");
    assert_eq!(p.header("x-content-type-options"), Some("nosniff"), "{case}");
    assert_eq!(p.header("referrer-policy"), Some("no-referrer"), "{case}");
    assert_eq!(p.header("cache-control"), Some("no-store"), "{case}");
}

fn cookie_attributes(line: &str) -> Vec<String> {
    line.split(';').skip(1).map(|a| a.trim().to_ascii_lowercase()).collect()
}

/// Signs in through the portal's sign-in page; returns the sign-in page and the answer to the form.
fn portal_sign_in(app: &TestApp, b: &mut Browser, email: &str, password: &str) -> (Page, Page) {
    let login = b.get(&format!("{}/portal/login", app.base));
    assert_eq!(login.status, 200, "{}", login.body);
    let form = [("email", email), ("password", password), ("csrf", &login.field("csrf")), ("continue", "/portal")];
    let answer = b.post(&format!("{}/oauth/login", app.base), &form);
    (login, answer)
}

fn pages_carry_security_headers_and_cookie_flags(app: &TestApp) {
    patient_with_login(app, NHS[0], "ada@example.org");
    let mut b = Browser::default();
    let (login, signed_in) = portal_sign_in(app, &mut b, "ada@example.org", PASSWORD);
    assert_page_headers(&login, "portal sign-in page");
    let csrf = cookie_attributes(login.set_cookie("hf_login_csrf").expect("sign-in CSRF cookie"));
    assert!(csrf.contains(&"httponly".into()) && csrf.contains(&"samesite=strict".into()), "{csrf:?}");
    assert!(!csrf.contains(&"secure".into()), "plain http here: {csrf:?}");
    assert_eq!((signed_in.status, signed_in.location.as_deref()), (303, Some("/portal")));
    let session = cookie_attributes(signed_in.set_cookie("hf_session").expect("session cookie"));
    for flag in ["httponly", "samesite=lax", "path=/"] {
        assert!(session.contains(&flag.to_string()), "session cookie lacks {flag}: {session:?}");
    }
    assert!(!session.contains(&"secure".into()), "the public URL is http: {session:?}");
    assert!(signed_in.header("strict-transport-security").is_none(), "no HSTS over http");
    for path in ["/portal", "/portal/medicines", "/portal/sharing", "/portal/access-log", "/portal/account"] {
        let p = b.get(&format!("{}{path}", app.base));
        assert_eq!(p.status, 200, "{path}");
        assert_page_headers(&p, path);
    }
    let failed = portal_sign_in(app, &mut Browser::default(), "ada@example.org", "wrong password!").1;
    assert_eq!(failed.status, 401);
    assert_page_headers(&failed, "failed sign-in");
    let client_id = public_app(app);
    let (url, _, _) = authorize_url(app, &oauth_client(app, &client_id), APP_SCOPES);
    assert_page_headers(&Browser::default().get(&url), "an app's sign-in page");
    assert_page_headers(&b.get(&url), "consent page");
    assert_page_headers(&b.get(&format!("{}/no/such/page", app.base)), "not found page");
}

/// Served behind TLS (the public URL is https), the cookies are `Secure` and HSTS is on.
#[test]
fn https_public_url_makes_cookies_secure() {
    let app = TestApp::sqlite_configured(|o| o.base_url = Some("https://healthfolio.example".into()));
    patient_with_login(&app, NHS[0], "ada@example.org");
    let (login, signed_in) = portal_sign_in(&app, &mut Browser::default(), "ada@example.org", PASSWORD);
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    for (name, line) in
        [("hf_login_csrf", login.set_cookie("hf_login_csrf")), ("hf_session", signed_in.set_cookie("hf_session"))]
    {
        let attrs = cookie_attributes(line.unwrap_or_else(|| panic!("no {name} cookie")));
        assert!(attrs.contains(&"secure".into()) && attrs.contains(&"httponly".into()), "{name}: {attrs:?}");
    }
    let hsts = login.header("strict-transport-security").expect("HSTS");
    assert!(hsts.contains("max-age="), "{hsts}");
}

// ---- sign-in throttling ----------------------------------------------------------------------

/// A page with what differs between two people's attempts (the email echoed, the form's CSRF
/// token) blanked out.
fn normalized(p: &Page, email: &str) -> String {
    let csrf = p.field("csrf");
    p.body.replace(email, "EMAIL").replace(&csrf, "CSRF")
}

fn sign_in_is_throttled_alike_for_unknown_accounts(app: &TestApp) {
    patient_with_login(app, NHS[0], "ada@example.org");
    let (known, unknown) = ("ada@example.org", "nobody@example.org");
    // Five wrong passwords for each: each answer the same for both.
    for i in 0..5 {
        let k = portal_sign_in(app, &mut Browser::default(), known, "wrong password!").1;
        let u = portal_sign_in(app, &mut Browser::default(), unknown, "wrong password!").1;
        assert_eq!((k.status, u.status), (401, 401), "try {i}");
        assert!(k.body.contains("email address or password is not right"), "try {i}: {}", k.body);
        assert_eq!(normalized(&k, known), normalized(&u, unknown), "try {i}");
        assert!(k.set_cookie("hf_session").is_none());
    }
    // Now even the right password waits, and the answer says so.
    let k = portal_sign_in(app, &mut Browser::default(), known, PASSWORD).1;
    let u = portal_sign_in(app, &mut Browser::default(), unknown, PASSWORD).1;
    assert_eq!(k.status, 429, "{}", k.body);
    assert!(k.set_cookie("hf_session").is_none() && k.location.is_none(), "throttled means not signed in");
    assert!(k.body.contains("Too many attempts"), "{}", k.body);
    let wait: u64 = k.header("retry-after").expect("Retry-After").parse().expect("seconds");
    assert!((1..=900).contains(&wait), "{wait}");
    assert_page_headers(&k, "throttled sign-in");
    assert_eq!((u.status, u.header("retry-after")), (k.status, k.header("retry-after")));
    assert_eq!(normalized(&k, known), normalized(&u, unknown));
    // Another account is not affected.
    patient_with_login(app, NHS[1], "bea@example.org");
    assert_eq!(portal_sign_in(app, &mut Browser::default(), "bea@example.org", PASSWORD).1.status, 303);
}

both!(
    confidential_app_authenticates_with_its_secret,
    userinfo_names_the_signed_in_user,
    keys_by_url_are_fetched_and_cached,
    unreachable_key_url_is_invalid_client_not_a_hang,
    every_offered_assertion_algorithm_and_no_mismatch,
    rotation_keeps_old_tokens_and_signs_new_ones,
    replicas_make_one_id_token_key_between_them,
    unticked_scope_is_neither_granted_nor_given,
    pages_carry_security_headers_and_cookie_flags,
    sign_in_is_throttled_alike_for_unknown_accounts,
);

// ---- the ID token's algorithm ----------------------------------------------------------------

fn open_registration(c: &mut healthfolio::config::Config) {
    c.open_registration = true;
}

/// OpenID Connect Registration 1.0 §2: a client that registers `id_token_signed_response_alg`
/// ES256 gets ES256 ID tokens; one that registers none, RS256; an algorithm not offered is refused.
fn id_token_alg_as_registered(app: &TestApp) {
    let register = |body: Value| match http().post(&format!("{}/oauth/register", app.base)).send_json(body) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => (r.status(), r.into_json::<Value>().unwrap_or(Value::Null)),
        Err(e) => panic!("{e}"),
    };
    let app_asking = |alg: Option<&str>| {
        let mut body =
            json!({"client_name": "Pill Pal", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"});
        if let Some(a) = alg {
            body["id_token_signed_response_alg"] = json!(a);
        }
        register(body)
    };
    let (status, v) = app_asking(None);
    assert_eq!((status, &v["id_token_signed_response_alg"]), (201, &json!("RS256")), "{v}");
    for refused in ["HS256", "none", "RS384"] {
        let (status, v) = app_asking(Some(refused));
        assert_eq!((status, v["error"].as_str()), (400, Some("invalid_client_metadata")), "{refused}: {v}");
    }
    let (status, v) = app_asking(Some("ES256"));
    assert_eq!((status, &v["id_token_signed_response_alg"]), (201, &json!("ES256")), "{v}");
    let client_id = v["client_id"].as_str().expect("client_id");

    let email = "ada@example.org";
    patient_with_login(app, NHS[0], email);
    let client = oauth_client(app, client_id);
    let (url, verifier, _) = authorize_url(app, &client, APP_SCOPES);
    let (code, _) = sign_in_and_approve(app, &mut Browser::default(), &url, email);
    let id_token = exchange(&client, &code, &verifier).extra_fields().id_token.clone().expect("id_token");
    let header = jsonwebtoken::decode_header(&id_token).expect("jwt");
    assert_eq!(header.alg, Algorithm::ES256);
    let key = published_key(app, &header.kid.expect("kid"));
    assert_eq!((&key["kty"], &key["alg"]), (&json!("EC"), &json!("ES256")), "{key}");
    let public =
        jsonwebtoken::DecodingKey::from_ec_components(key["x"].as_str().expect("x"), key["y"].as_str().expect("y"))
            .expect("key");
    let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
    v.set_audience(&[client_id]);
    v.set_issuer(&[&app.base]);
    jsonwebtoken::decode::<Value>(&id_token, &public, &v).expect("verifies against the published ES256 key");
}

both!(id_token_alg_as_registered, config = open_registration);
