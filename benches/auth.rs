//! What authorization costs per request, in process (no HTTP, no load generator sharing the cores):
//!
//! - a read by id with no token at all (the operator context): the ceiling;
//! - the same read with the token's claims taken as verified: the revocation and grant checks that
//!   every request makes, without the signature check (the issue's "without verification");
//! - the same read behind a 15-minute token, as every FHIR request does it: verify (cached after
//!   the first use), revocation check, the patient's live grant, then the read;
//! - the same with a token never seen before (full ES256 verification every time);
//! - `client_credentials` at the token endpoint (ES384 assertion check, jti record, ES256 signing,
//!   audit), one request after another.
//!
//!   cargo bench --bench auth            # N=20000 by default; N=... to change
//!   DATABASE_URL=postgres://postgres@127.0.0.1:5432/hf_bench cargo bench --bench auth

use healthfolio::auth::oauth::{self, TokenRequest};
use healthfolio::auth::{AccessContext, Reach};
use healthfolio::config::{Config, Overrides};
use healthfolio::consent::{Grantee, NewGrant};
use healthfolio::Healthfolio;
use serde_json::json;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let dir = std::env::temp_dir().join(format!("hf-bench-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| dir.join("bench.db").to_string_lossy().into_owned());
    let config = Config::resolve(&Overrides {
        data_dir: Some(dir.clone()),
        database_url: Some(url.clone()),
        ..Overrides::default()
    })?;
    let hf = Healthfolio::open(config)?;
    let op = AccessContext::operator("bench");
    let opts = healthfolio::fhir::store::WriteOptions::default();
    let patient = hf.store.create(
        &op,
        "Patient",
        json!({"resourceType": "Patient", "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"}],
               "name": [{"family": "Bench", "given": ["Ada"]}], "birthDate": "1980-01-01"}),
        &opts,
    )?
    .stored;
    let mr = hf.store.create(
        &op,
        "MedicationRequest",
        json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
               "subject": {"reference": format!("Patient/{}", patient.id)},
               "medicationCodeableConcept": {"coding": [{"system": "https://dmd.nhs.uk", "code": "322236009", "display": "Paracetamol 500mg tablets"}]},
               "authoredOn": "2025-01-01"}),
        &opts,
    )?
    .stored;
    {
        let mut conn = hf.db.conn()?;
        healthfolio::consent::grant(
            &mut conn,
            &NewGrant {
                patient_id: patient.id.clone(),
                grantee: Grantee::Client("bench-app".into()),
                scope: "patient/*.rs".into(),
                expires_at: None,
                created_by: "bench".into(),
            },
        )?;
    }
    let ep = hf.endpoints();
    let token = hf.issue_token("bench-user", "bench-app", "patient/*.rs", Some(patient.id.clone()), 900)?;

    let read = |ctx: &AccessContext| hf.store.read(ctx, "MedicationRequest", &mr.id).map(|_| ());
    let authenticate = |t: &str| -> Result<AccessContext, Box<dyn std::error::Error>> {
        let claims = hf.keys.verify(t, &ep)?;
        let mut conn = hf.db.conn()?;
        Ok(healthfolio::auth::live::check(&mut conn, claims)?)
    };
    println!("{n} iterations each, {}", if url.starts_with("postgres") { "PostgreSQL" } else { "SQLite" });

    let plain = time("read, no token (ceiling)", n, || read(&op).map_err(Into::into))?;
    // The issue's baseline: the same request with its token taken as already verified (claims
    // decoded once), so only the signature verification differs from the next line.
    let decoded = hf.keys.verify(&token, &ep)?;
    let unverified = time("read, token not verified (live checks)", n, || {
        let ctx = healthfolio::auth::live::check(&mut hf.db.conn()?, decoded.clone())?;
        read(&ctx).map_err(Into::into)
    })?;
    let cached = time("read with a 15-minute token", n, || {
        let ctx = authenticate(&token)?;
        assert!(matches!(ctx.reach, Reach::Patient(_)));
        read(&ctx).map_err(Into::into)
    })?;
    let fresh: Vec<String> = (0..n.min(5_000))
        .map(|_| hf.issue_token("bench-user", "bench-app", "patient/*.rs", Some(patient.id.clone()), 900))
        .collect::<Result<_, _>>()?;
    let mut it = fresh.iter().cycle();
    let uncached = time("read, token never seen before", fresh.len(), || {
        let t = it.next().ok_or("no token")?; // cycles: the warm-up verifies the first 200
        read(&authenticate(t)?).map_err(Into::into)
    })?;
    println!(
        "authenticated / unverified throughput: {:.1}% (cached verification), {:.1}% (full ES256 verification)",
        100.0 * cached / unverified,
        100.0 * uncached / unverified
    );
    println!("authenticated / no token at all: {:.1}% (cached verification)", 100.0 * cached / plain);

    // client_credentials, one after another, each with its own signed assertion (jti).
    let (pkcs8, jwks) = es384_key();
    let client_id = {
        let mut conn = hf.db.conn()?;
        let new = healthfolio::auth::clients::NewClient {
            name: "Bench GP system".into(),
            kind: Some(healthfolio::auth::clients::ClientKind::Backend),
            scope: "system/*.rs".into(),
            jwks: Some(jwks),
            organization: Some("Organization/bench".into()),
            ..Default::default()
        };
        healthfolio::auth::clients::register(&mut conn, &new)?.0.client_id
    };
    let ep = hf.endpoints();
    let m = (n / 10).max(100);
    let assertions: Vec<String> = (0..m + 200).map(|i| assertion(&client_id, &ep.token_endpoint, &pkcs8, i)).collect();
    let mut a = assertions.iter();
    time("token endpoint, client_credentials", m, || {
        let req = TokenRequest {
            grant_type: Some("client_credentials".into()),
            scope: Some("system/*.rs".into()),
            client: healthfolio::auth::client_auth::ClientCredentials {
                client_assertion_type: Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()),
                client_assertion: a.next().cloned(),
                client_id: Some(client_id.clone()),
                ..Default::default()
            },
            ..TokenRequest::default()
        };
        let issued = hf.db.transaction(|c| {
            Ok::<_, healthfolio::db::DbError>(oauth::token(c, &hf.keys, &ep, &req, None, &Default::default()))
        })?;
        issued.map(|_| ()).map_err(|e| e.description.into())
    })?;
    hf.store.audit.flush();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Runs `f` `n` times; prints and returns operations per second.
fn time(
    name: &str,
    n: usize,
    mut f: impl FnMut() -> Result<(), Box<dyn std::error::Error>>,
) -> Result<f64, Box<dyn std::error::Error>> {
    for _ in 0..n.min(200) {
        f()?;
    }
    let start = Instant::now();
    for _ in 0..n {
        f()?;
    }
    let secs = start.elapsed().as_secs_f64();
    let per_sec = n as f64 / secs;
    println!("  {name:<40} {per_sec:>10.0}/s   {:>8.1} µs each", 1e6 * secs / n as f64);
    Ok(per_sec)
}

fn es384_key() -> (Vec<u8>, serde_json::Value) {
    use base64::Engine;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("pair");
    let p = pair.public_key().as_ref();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": "b1", "alg": "ES384", "x": b64(&p[1..49]), "y": b64(&p[49..97])}]});
    (pkcs8.as_ref().to_vec(), jwks)
}

fn assertion(client_id: &str, aud: &str, pkcs8: &[u8], i: usize) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": client_id, "sub": client_id, "aud": aud, "exp": now + 240, "jti": format!("bench-{i}-{}", uuid::Uuid::new_v4())});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
    header.kid = Some("b1".into());
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ec_der(pkcs8)).expect("sign")
}
