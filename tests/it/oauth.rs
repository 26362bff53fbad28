//! SMART App Launch and Backend Services, end to end, and every refusal.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::TestApp;
use healthfolio::consent::Grantee;
use oauth2::{RefreshToken, TokenResponse};
use serde_json::Value;

fn standalone_launch_reads_own_record(app: &TestApp) {
    let (patient, _, token) = launch(app, NHS[0], "ada@example.org");
    assert_eq!(token.extra_fields().patient.as_deref(), Some(patient.as_str()));
    assert!(token.refresh_token().is_some(), "offline_access gives a refresh token");
    let id_token = token.extra_fields().id_token.clone().expect("openid fhirUser gives an id_token");
    let header = jsonwebtoken::decode_header(&id_token).expect("jwt");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256, "OpenID Connect's default");
    assert_rs256_key(&published_key(app, &header.kid.expect("kid")));
    let access = jsonwebtoken::decode_header(token.access_token().secret()).expect("jwt");
    assert_eq!(access.alg, jsonwebtoken::Algorithm::ES256, "access tokens are ours alone to verify");
    let (code, display) = PARACETAMOL;
    let mr = app.create(medication_request(&patient, code, display, "active", "2025-02-01"));
    let c = app.client_with(Some(token.access_token().secret().clone()));
    assert_eq!(c.get(&format!("MedicationRequest/{mr}")).status, 200);
    assert_eq!(c.get(&format!("MedicationRequest?patient={patient}")).ids(), vec![mr]);
    // Not granted: conditions; not in scope: writes.
    assert_eq!(c.get("Condition").status, 403);
    assert_eq!(
        c.post("MedicationRequest", &medication_request(&patient, code, display, "active", "2025-02-01")).status,
        403
    );
}

fn another_patients_record_is_absent(app: &TestApp) {
    let (_, _, token) = launch(app, NHS[0], "ada@example.org");
    let other = app.create(patient(NHS[1], "Other", "Olu"));
    let (code, display) = SIMVASTATIN;
    let theirs = app.create(medication_request(&other, code, display, "active", "2025-02-01"));
    let c = app.client_with(Some(token.access_token().secret().clone()));
    assert_eq!(c.get(&format!("MedicationRequest/{theirs}")).status, 404);
    assert!(c.get(&format!("MedicationRequest?patient={other}")).ids().is_empty());
}

fn second_authorization_skips_consent(app: &TestApp) {
    let (_, client_id, _) = launch(app, NHS[0], "ada@example.org");
    let client = oauth_client(app, &client_id);
    let (url, verifier, _) = authorize_url(app, &client, "launch/patient patient/MedicationRequest.rs");
    let mut browser = Browser::default();
    let (code, _) = sign_in_and_approve(app, &mut browser, &url, "ada@example.org");
    let t = exchange(&client, &code, &verifier);
    assert!(t.scopes().is_some_and(|s| s.iter().any(|x| x.as_str() == "patient/MedicationRequest.rs")));
}

fn refresh_rotates_and_reuse_revokes_family(app: &TestApp) {
    let (_, client_id, token) = launch(app, NHS[0], "ada@example.org");
    let client = oauth_client(app, &client_id);
    let first = token.refresh_token().expect("refresh").clone();
    let second = client.exchange_refresh_token(&first).request(&http()).expect("refresh");
    let rotated = second.refresh_token().expect("rotated").clone();
    assert_ne!(rotated.secret(), first.secret());
    let c = app.client_with(Some(second.access_token().secret().clone()));
    assert_eq!(c.get("MedicationRequest").status, 200);
    // The old one again: refused, and everything of that lineage stops working.
    let (status, body) = token_request(
        app,
        &[("grant_type", "refresh_token"), ("refresh_token", first.secret()), ("client_id", &client_id)],
    );
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(c.get("MedicationRequest").status, 401);
    let again = client.exchange_refresh_token(&RefreshToken::new(rotated.secret().clone())).request(&http());
    assert!(again.is_err(), "the rotated token died with its family");
}

fn code_is_single_use_and_reuse_revokes(app: &TestApp) {
    let patient = patient_with_login(app, NHS[0], "ada@example.org");
    let _ = patient;
    let client_id = public_app(app);
    let client = oauth_client(app, &client_id);
    let (url, verifier, _) = authorize_url(app, &client, APP_SCOPES);
    let (code, _) = sign_in_and_approve(app, &mut Browser::default(), &url, "ada@example.org");
    let token = exchange(&client, &code, &verifier);
    let c = app.client_with(Some(token.access_token().secret().clone()));
    assert_eq!(c.get("MedicationRequest").status, 200);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
        ("client_id", client_id.as_str()),
    ];
    let (status, body) = token_request(app, &form);
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(c.get("MedicationRequest").status, 401, "tokens from a reused code are revoked");
}

fn token_refusals(app: &TestApp) {
    patient_with_login(app, NHS[0], "ada@example.org");
    let client_id = public_app(app);
    let client = oauth_client(app, &client_id);
    let (url, verifier, _) = authorize_url(app, &client, APP_SCOPES);
    let (code, _) = sign_in_and_approve(app, &mut Browser::default(), &url, "ada@example.org");
    let base = |code: &str, verifier: &str, redirect: &str| {
        token_request(
            app,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect),
                ("code_verifier", verifier),
                ("client_id", &client_id),
            ],
        )
    };
    let wrong = "x".repeat(50);
    assert_eq!(base(&code, &wrong, REDIRECT).1["error"], "invalid_grant", "wrong verifier");
    assert_eq!(base(&code, &verifier, "http://127.0.0.1:9/other").1["error"], "invalid_grant", "wrong redirect");
    assert_eq!(base(&code, "", REDIRECT).1["error"], "invalid_grant", "missing verifier");
    assert_eq!(base("not-a-code", &verifier, REDIRECT).1["error"], "invalid_grant");
    let (status, body) = token_request(app, &[("grant_type", "password"), ("client_id", &client_id)]);
    assert_eq!((status, body["error"].as_str()), (400, Some("unsupported_grant_type")));
    let (status, body) =
        token_request(app, &[("grant_type", "authorization_code"), ("code", &code), ("client_id", "nobody")]);
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_client")));
}

/// Authorization requests the server must refuse, by redirect or by page.
fn authorize_refusals(app: &TestApp) {
    let client_id = public_app(app);
    let base = format!("{}/oauth/authorize", app.base);
    let q = |pairs: &[(&str, &str)]| format!("{base}?{}", serde_urlencoded::to_string(pairs).expect("query"));
    let good = [
        ("response_type", "code"),
        ("client_id", client_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("scope", "patient/*.rs"),
        ("state", "s1"),
        ("aud", app.fhir.as_str()),
        ("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
        ("code_challenge_method", "S256"),
    ];
    let without = |k: &str| good.iter().filter(|(n, _)| *n != k).cloned().collect::<Vec<_>>();
    let with = |k: &str, v: &'static str| {
        good.iter().map(|(n, x)| if *n == k { (*n, v) } else { (*n, *x) }).collect::<Vec<_>>()
    };
    let mut b = Browser::default();
    for (case, pairs) in [
        ("no PKCE", without("code_challenge")),
        ("plain PKCE", with("code_challenge_method", "plain")),
        ("wrong aud", with("aud", "https://elsewhere.example/fhir")),
        ("no state", without("state")),
    ] {
        let p = b.get(&q(&pairs));
        assert_eq!(p.status, 303, "{case}");
        let loc = p.location.unwrap_or_default();
        assert!(loc.starts_with(REDIRECT) && loc.contains("error="), "{case}: {loc}");
    }
    let p = b.get(&q(&with("redirect_uri", "https://evil.example/cb")));
    assert_eq!(p.status, 400, "an unregistered redirect is never followed");
    assert!(p.location.is_none());
    assert_eq!(b.get(&q(&with("client_id", "unknown"))).status, 400);
    assert_eq!(b.get(&q(&good)).status, 200, "the good request shows the sign-in page");
}

fn wrong_password_and_unknown_user_look_the_same(app: &TestApp) {
    patient_with_login(app, NHS[0], "ada@example.org");
    let client_id = public_app(app);
    let (url, _, _) = authorize_url(app, &oauth_client(app, &client_id), APP_SCOPES);
    let mut b = Browser::default();
    let mut answer = |email: &str| {
        let login = b.get(&url);
        let form = [
            ("email", email),
            ("password", "wrong password!"),
            ("csrf", &login.field("csrf")),
            ("continue", &login.field("continue")),
        ];
        let p = b.post(&format!("{}/oauth/login", app.base), &form);
        (
            p.status,
            p.body.contains("The email address or password is not right")
                || p.body.contains("the email address or password is not right"),
        )
    };
    assert_eq!(answer("ada@example.org"), (401, true));
    assert_eq!(answer("nobody@example.org"), (401, true));
    // Throttling after repeated failures looks the same too (each try from its own address, so
    // only the per-email count applies), and the right password waits like anyone else.
    let mut conn = app.hf.db.conn().expect("conn");
    let mut tries = |email: &str, pw: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                let address = format!("10.9.{}.{i}", email.len());
                match healthfolio::auth::accounts::login(&mut conn, email, pw, &address) {
                    Ok(_) => "ok".to_string(),
                    Err(e) => e.to_string(),
                }
            })
            .collect()
    };
    let known = tries("ada@example.org", "wrong password!", 5);
    let unknown = tries("nobody@example.org", "wrong password!", 5);
    assert_eq!(known, unknown);
    assert_eq!(tries("ada@example.org", PASSWORD, 1), tries("nobody@example.org", PASSWORD, 1));
    assert!(tries("ada@example.org", PASSWORD, 1)[0].contains("too many attempts"));
}

fn backend_services_with_grants(app: &TestApp) {
    let org = "Organization/riverside";
    let (pkcs8, jwks) = backend_keys("k1");
    let client_id = backend_client(app, jwks, org);
    let jti = uuid::Uuid::new_v4().to_string();
    let a = assertion(app, &client_id, "k1", &pkcs8, &jti, 240);
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "system/*.rs"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", a.as_str()),
    ];
    let (status, body) = token_request(app, &form);
    assert_eq!(status, 200, "{body}");
    assert!(body["expires_in"].as_i64().is_some_and(|e| e <= 300));
    let (status, body) = token_request(app, &form);
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "a replayed jti is refused");
    let c = app.client_with(body_token(
        &token_request(
            app,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "system/*.rs"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &assertion(app, &client_id, "k1", &pkcs8, "j2", 240)),
            ],
        )
        .1,
    ));
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let (code, display) = PARACETAMOL;
    let mr = app.create(medication_request(&p, code, display, "active", "2025-02-01"));
    assert_eq!(c.get(&format!("MedicationRequest/{mr}")).status, 404, "no grant: out of reach");
    assert!(c.get("MedicationRequest").ids().is_empty());
    let grant = app.grant(&p, Grantee::Organization(org.into()), "patient/MedicationRequest.rs");
    assert_eq!(c.get(&format!("MedicationRequest/{mr}")).status, 200);
    assert_eq!(c.get("MedicationRequest").ids(), vec![mr.clone()]);
    assert_eq!(c.get(&format!("Patient/{p}")).status, 404, "the grant covers prescriptions only");
    let mut conn = app.hf.db.conn().expect("conn");
    healthfolio::consent::revoke(&mut conn, &grant).expect("revoke");
    assert_eq!(c.get(&format!("MedicationRequest/{mr}")).status, 404, "revocation takes effect on the next request");
}

/// A practitioner signs in to a clinical app with `user/` scopes: no consent screen, a token that
/// reaches only patients who granted the practitioner's organisation, and writes authored by the
/// practitioner on behalf of the organisation.
fn practitioner_writes_as_practitioner(app: &TestApp) {
    let org = app.create(serde_json::json!({"resourceType": "Organization", "name": "Riverside Surgery"}));
    let org_ref = format!("Organization/{org}");
    let doc = app
        .create(serde_json::json!({"resourceType": "Practitioner", "name": [{"family": "Mensah", "given": ["Kofi"]}]}));
    let mut conn = app.hf.db.conn().expect("conn");
    healthfolio::auth::accounts::create(
        &mut conn,
        "practitioner",
        "kofi@riverside.example",
        PASSWORD,
        &format!("Practitioner/{doc}"),
        Some(&org_ref),
    )
    .expect("account");
    let granted = app.create(patient(NHS[0], "Okafor", "Ada"));
    let other = app.create(patient(NHS[1], "Other", "Olu"));
    app.grant(&granted, Grantee::Organization(org_ref.clone()), "patient/MedicationRequest.cruds");

    let client_id = public_app(app);
    let client = oauth_client(app, &client_id);
    let (url, verifier, _) =
        authorize_url(app, &client, "openid fhirUser launch/patient patient/*.rs user/MedicationRequest.cruds");
    let mut browser = Browser::default();
    let (code, _) = sign_in_and_approve(app, &mut browser, &url, "kofi@riverside.example");
    let token = exchange(&client, &code, &verifier);
    assert!(token.extra_fields().patient.is_none(), "a practitioner's token has no patient in context");
    let scopes: Vec<String> = token.scopes().expect("scope").iter().map(|s| s.to_string()).collect();
    assert!(scopes.contains(&"user/MedicationRequest.cruds".to_string()), "{scopes:?}");
    assert!(!scopes.iter().any(|s| s.starts_with("patient/") || s.starts_with("launch")), "{scopes:?}");
    let id_token = token.extra_fields().id_token.clone().expect("id_token");
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            id_token.split('.').nth(1).expect("payload"),
        )
        .expect("b64"),
    )
    .expect("json");
    assert!(claims["fhirUser"].as_str().is_some_and(|u| u.ends_with(&format!("Practitioner/{doc}"))), "{claims}");

    let c = app.client_with(Some(token.access_token().secret().clone()));
    let (code, display) = PARACETAMOL;
    let created = c.post("MedicationRequest", &medication_request(&granted, code, display, "active", "2025-03-01"));
    assert_eq!(created.status, 201, "{}", created.text);
    let mr = created.body["id"].as_str().expect("id").to_string();
    let refused = c.post("MedicationRequest", &medication_request(&other, code, display, "active", "2025-03-01"));
    assert_eq!(refused.status, 403, "no grant from this patient: {}", refused.text);
    assert_eq!(c.get("AllergyIntolerance").status, 403, "not in the app's scopes");

    // The author is the practitioner, on behalf of the organisation, in the Provenance.
    let prov = app.client().get(&format!("Provenance?target=MedicationRequest/{mr}"));
    let agent = &prov.entries()[0]["resource"]["agent"][0];
    assert_eq!(agent["who"]["reference"], format!("Practitioner/{doc}"), "{}", prov.text);
    assert_eq!(agent["onBehalfOf"]["reference"], org_ref);
    // The patient's access log names the person, not only the app.
    let own = healthfolio::auth::AccessContext::patient_self(&granted, "test-account");
    let log = healthfolio::portal::access_log::access_log(&app.hf.store, &own, &Default::default()).expect("log");
    assert!(log.lines.iter().any(|l| l.who.starts_with("Kofi Mensah, ")), "{:?}", log.lines);
}

fn body_token(v: &Value) -> Option<String> {
    v["access_token"].as_str().map(str::to_string)
}

fn assertion_refusals(app: &TestApp) {
    let (pkcs8, jwks) = backend_keys("k1");
    let client_id = backend_client(app, jwks, "Organization/o");
    let (other_key, _) = backend_keys("k1");
    let try_with = |a: &str| {
        token_request(
            app,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "system/*.rs"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", a),
            ],
        )
    };
    for (case, a) in [
        ("exp too far ahead", assertion(app, &client_id, "k1", &pkcs8, "a1", 3600)),
        ("expired", assertion(app, &client_id, "k1", &pkcs8, "a2", -120)),
        ("unknown kid", assertion(app, &client_id, "nope", &pkcs8, "a3", 200)),
        ("wrong key", assertion(app, &client_id, "k1", &other_key, "a4", 200)),
    ] {
        let (status, body) = try_with(&a);
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{case}: {body}");
    }
    let (status, body) = token_request(app, &[("grant_type", "client_credentials"), ("client_id", &client_id)]);
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_client")), "a backend client must sign");
}

fn bad_tokens_are_401(app: &TestApp) {
    let good = app.admin();
    let parts: Vec<&str> = good.split('.').collect();
    let none_header = base64_url(r#"{"alg":"none","typ":"JWT"}"#);
    let tampered_payload = base64_url(
        r#"{"iss":"x","sub":"x","aud":"x","exp":9999999999,"iat":0,"jti":"j","client_id":"c","scope":"system/*.cruds","reach":"all"}"#,
    );
    let unknown_kid = {
        let claims = healthfolio::auth::Claims::new(&app.base, &app.fhir, "s", "c", "system/*.rs", None, 600);
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some("unknown".into());
        let (pkcs8, _) = ec_keys("unknown", jsonwebtoken::Algorithm::ES256);
        jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_ec_der(&pkcs8)).expect("sign")
    };
    let expired = {
        let mut claims = healthfolio::auth::Claims::new(&app.base, &app.fhir, "s", "c", "system/*.rs", None, 600);
        claims.exp = chrono::Utc::now().timestamp() - 120;
        app.hf.keys.sign(&claims).expect("sign")
    };
    let wrong_aud = app
        .hf
        .keys
        .sign(&healthfolio::auth::Claims::new(
            &app.base,
            "https://other.example/fhir",
            "s",
            "c",
            "system/*.rs",
            None,
            600,
        ))
        .expect("sign");
    for (case, t) in [
        ("alg none", format!("{none_header}.{}.", parts[1])),
        ("tampered", format!("{}.{tampered_payload}.{}", parts[0], parts[2])),
        ("unknown kid", unknown_kid),
        ("expired", expired),
        ("wrong aud", wrong_aud),
        ("garbage", "not-a-token".into()),
    ] {
        let r = app.client_with(Some(t)).get("Patient");
        assert_eq!(r.status, 401, "{case}");
        assert!(r.header("www-authenticate").is_some(), "{case}");
    }
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn introspect_and_revoke(app: &TestApp) {
    let (patient, client_id, token) = launch(app, NHS[0], "ada@example.org");
    let access = token.access_token().secret().clone();
    let asking = |path: &str, t: &str, caller: Option<&str>| {
        let mut r = http().post(&format!("{}{path}", app.base));
        if let Some(c) = caller {
            r = r.set("Authorization", &format!("Bearer {c}"));
        }
        match r.send_form(&[("token", t)]) {
            Ok(r) | Err(ureq::Error::Status(_, r)) => (r.status(), r.into_json::<Value>().unwrap_or(Value::Null)),
            Err(e) => panic!("{e}"),
        }
    };
    let post = |path: &str, t: &str| asking(path, t, Some(&access));
    // Introspection wants to know who asks; a client learns only about its own tokens.
    let (status, v) = asking("/oauth/introspect", &access, None);
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_client")));
    let admin = app.admin();
    assert_eq!(asking("/oauth/introspect", &access, Some(&admin)).1["active"], true, "the operator may ask");
    let (_, _, other) = launch(app, NHS[1], "bea@example.org");
    let other = other.access_token().secret().clone();
    assert_eq!(asking("/oauth/introspect", &access, Some(&other)).1, serde_json::json!({"active": false}));
    let (_, v) = post("/oauth/introspect", &access);
    assert_eq!(v["active"], true);
    assert_eq!(v["patient"], patient.as_str());
    assert_eq!(v["client_id"], client_id.as_str());
    assert_eq!(post("/oauth/revoke", &access).0, 200);
    assert_eq!(asking("/oauth/introspect", &access, Some(&admin)).1, serde_json::json!({"active": false}));
    assert_eq!(app.client_with(Some(access.clone())).get("MedicationRequest").status, 401);
    assert_eq!(post("/oauth/revoke", "unknown-token").0, 200, "RFC 7009: unknown tokens are not an error");
}

fn withdrawn_grant_stops_the_app(app: &TestApp) {
    let (patient, client_id, token) = launch(app, NHS[0], "ada@example.org");
    let c = app.client_with(Some(token.access_token().secret().clone()));
    assert_eq!(c.get("MedicationRequest").status, 200);
    let mut conn = app.hf.db.conn().expect("conn");
    let g =
        healthfolio::consent::active_for(&mut conn, &patient, &Grantee::Client(client_id)).expect("q").expect("grant");
    healthfolio::consent::revoke(&mut conn, &g.id).expect("revoke");
    assert_eq!(c.get("MedicationRequest").status, 401);
}

fn discovery_documents(app: &TestApp) {
    let c = app.client_with(None);
    for path in [
        format!("{}/.well-known/smart-configuration", app.base),
        format!("{}/.well-known/smart-configuration", app.fhir),
    ] {
        let r = c.get(&path);
        assert_eq!(r.status, 200);
        assert_eq!(r.body["code_challenge_methods_supported"], serde_json::json!(["S256"]));
        assert!(r.body["capabilities"].as_array().expect("caps").iter().any(|x| x == "launch-standalone"));
        assert!(r.body["revocation_endpoint"].is_string());
    }
    // One current key each: ES256 for access tokens, RS256 (which OpenID Connect requires) for ID tokens.
    let keys = published_keys(app);
    let algs: Vec<&Value> = keys.iter().map(|k| &k["alg"]).collect();
    assert_eq!(algs.len(), 2, "{keys:?}");
    assert!(algs.contains(&&Value::from("ES256")), "{keys:?}");
    let rsa = keys.iter().find(|k| k["kty"] == "RSA").expect("an RSA key");
    assert_rs256_key(rsa);
    assert_ne!(rsa["kid"], keys.iter().find(|k| k["kty"] == "EC").expect("an EC key")["kid"]);
    for path in ["openid-configuration", "oauth-authorization-server", "smart-configuration"] {
        let r = c.get(&format!("{}/.well-known/{path}", app.base));
        assert_eq!(r.status, 200);
        assert_eq!(r.body["id_token_signing_alg_values_supported"], serde_json::json!(["RS256", "ES256"]), "{path}");
    }
    let cs = c.get("metadata");
    assert_eq!(cs.body["rest"][0]["security"]["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
}

both!(
    standalone_launch_reads_own_record,
    another_patients_record_is_absent,
    second_authorization_skips_consent,
    refresh_rotates_and_reuse_revokes_family,
    code_is_single_use_and_reuse_revokes,
    token_refusals,
    authorize_refusals,
    wrong_password_and_unknown_user_look_the_same,
    backend_services_with_grants,
    assertion_refusals,
    bad_tokens_are_401,
    introspect_and_revoke,
    withdrawn_grant_stops_the_app,
    discovery_documents,
    practitioner_writes_as_practitioner,
);

#[test]
fn dynamic_registration_only_when_enabled() {
    let closed = TestApp::sqlite();
    let body = serde_json::json!({"client_name": "Pill Pal", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"});
    let post =
        |app: &TestApp, b: &Value| match http().post(&format!("{}/oauth/register", app.base)).send_json(b.clone()) {
            Ok(r) | Err(ureq::Error::Status(_, r)) => (r.status(), r.into_json::<Value>().unwrap_or(Value::Null)),
            Err(e) => panic!("{e}"),
        };
    assert_eq!(post(&closed, &body).0, 403);
    assert!(closed
        .client_with(None)
        .get(&format!("{}/.well-known/smart-configuration", closed.base))
        .body
        .get("registration_endpoint")
        .is_none());
    let open = TestApp::sqlite_configured(|o| o.open_registration = true);
    let (status, v) = post(&open, &body);
    assert_eq!(status, 201, "{v}");
    let client_id = v["client_id"].as_str().expect("client_id").to_string();
    // The registered app can run the whole launch.
    patient_with_login(&open, NHS[0], "ada@example.org");
    let client = oauth_client(&open, &client_id);
    let (url, verifier, _) = authorize_url(&open, &client, APP_SCOPES);
    let (code, _) = sign_in_and_approve(&open, &mut Browser::default(), &url, "ada@example.org");
    assert!(!exchange(&client, &code, &verifier).access_token().secret().is_empty());
    let (status, v) = post(
        &open,
        &serde_json::json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic"}),
    );
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_client_metadata")));
    let (status, v) =
        post(&open, &serde_json::json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt"}));
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_client_metadata")), "keys are required");
    for inside in
        ["http://127.0.0.1:5432/jwks", "https://localhost/jwks", "https://10.1.2.3/jwks", "https://[::1]/jwks"]
    {
        let asked = serde_json::json!({"token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"], "jwks_uri": inside});
        let (status, v) = post(&open, &asked);
        assert_eq!((status, v["error"].as_str()), (400, Some("invalid_client_metadata")), "{inside} is not fetched");
    }

    // An asymmetric app (SMART client-confidential-asymmetric): signs the patient in, proves itself with its key.
    let (pkcs8, jwks) = backend_keys("app-key");
    let (status, v) = post(
        &open,
        &serde_json::json!({"client_name": "Signed Pal", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt", "jwks": jwks}),
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["grant_types"], serde_json::json!(["authorization_code", "refresh_token"]));
    let app_id = v["client_id"].as_str().expect("client_id").to_string();
    let client = oauth_client(&open, &app_id);
    let (url, verifier, _) = authorize_url(&open, &client, APP_SCOPES);
    let (code, _) = sign_in_and_approve(&open, &mut Browser::default(), &url, "ada@example.org");
    let exchange_form = |extra: &[(&'static str, String)]| {
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.clone()),
            ("redirect_uri", REDIRECT.to_string()),
            ("code_verifier", verifier.clone()),
        ];
        form.extend_from_slice(extra);
        form
    };
    let send = |form: Vec<(&str, String)>| {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        token_request(&open, &pairs)
    };
    let (status, v) = send(exchange_form(&[("client_id", app_id.clone())]));
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_client")), "no assertion, no token: {v}");
    let (other_key, _) = backend_keys("app-key");
    let forged = assertion(&open, &app_id, "app-key", &other_key, "jti-forged", 200);
    let signed = |a: String| [("client_assertion_type", ASSERTION_TYPE.to_string()), ("client_assertion", a)];
    let (status, v) = send(exchange_form(&signed(forged)));
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_client")), "a key it did not register: {v}");
    let (status, v) = send(exchange_form(&signed(assertion(&open, &app_id, "app-key", &pkcs8, "jti-app-1", 200))));
    assert_eq!(status, 200, "{v}");
    assert!(v["patient"].is_string() && v["refresh_token"].is_string(), "{v}");
    let read = open.client_with(v["access_token"].as_str().map(str::to_string)).get("MedicationRequest");
    assert_eq!(read.status, 200);
    let (status, v) = send(vec![
        ("grant_type", "refresh_token".to_string()),
        ("refresh_token", v["refresh_token"].as_str().unwrap_or_default().to_string()),
        ("client_assertion_type", ASSERTION_TYPE.to_string()),
        ("client_assertion", assertion(&open, &app_id, "app-key", &pkcs8, "jti-app-2", 200)),
    ]);
    assert_eq!(status, 200, "refresh, proven by a new assertion: {v}");
    let (status, v) = send(vec![
        ("grant_type", "client_credentials".to_string()),
        ("client_assertion_type", ASSERTION_TYPE.to_string()),
        ("client_assertion", assertion(&open, &app_id, "app-key", &pkcs8, "jti-app-3", 200)),
    ]);
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("unauthorized_client")),
        "an app is not a backend system: {v}"
    );
}
