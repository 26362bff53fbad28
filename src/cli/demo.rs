//! `healthfolio demo`: the demo record set, demo logins, a demo app and a demo provider system,
//! all idempotent (a second run adds nothing).

use super::demo_data;
use crate::access::AccessContext;
use crate::auth::accounts;
use crate::auth::clients::{self, ClientKind, NewClient};
use crate::consent::{self, Grantee, NewGrant};
use crate::fhir::search::{self, SearchRequest};
use crate::Healthfolio;
use serde_json::json;

type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

pub const DEMO_PASSWORD: &str = "healthfolio-demo";
const DEMO_APP: &str = "Healthfolio demo app";
const DEMO_PROVIDER: &str = "Riverside Medical Practice clinical system";

fn patient_id(hf: &Healthfolio, nhs: &str) -> CliResult<Option<String>> {
    let ctx = AccessContext::operator("demo");
    let req = SearchRequest {
        rtype: "Patient".into(),
        params: vec![("identifier".into(), format!("{}|{nhs}", crate::fhir::NHS_NUMBER_SYSTEM))],
        compartment: None,
        strict: true,
    };
    let mut conn = hf.db.conn()?;
    Ok(search::run(&mut conn, &ctx, &req)?.matches.into_iter().next().map(|s| s.id))
}

fn organization_id(hf: &Healthfolio, ods: &str) -> CliResult<Option<String>> {
    let ctx = AccessContext::operator("demo");
    let req = SearchRequest {
        rtype: "Organization".into(),
        params: vec![("identifier".into(), ods.into())],
        compartment: None,
        strict: true,
    };
    let mut conn = hf.db.conn()?;
    Ok(search::run(&mut conn, &ctx, &req)?.matches.into_iter().next().map(|s| s.id))
}

fn client_named(hf: &Healthfolio, name: &str) -> CliResult<Option<clients::Client>> {
    let mut conn = hf.db.conn()?;
    Ok(clients::list(&mut conn)?.into_iter().find(|c| c.name == name))
}

pub fn run(hf: &Healthfolio) -> CliResult<()> {
    let ctx = AccessContext::operator("demo");
    let out = hf.store.process_bundle(&ctx, demo_data::demo_bundle(), false)?;
    let created = out["entry"].as_array().map_or(0, |e| {
        e.iter().filter(|x| x["response"]["status"].as_str().is_some_and(|s| s.starts_with("201"))).count()
    });
    let mut logins = Vec::new();
    for p in demo_data::demo_patients() {
        let Some(id) = patient_id(hf, p.nhs_number)? else { continue };
        let mut conn = hf.db.conn()?;
        if accounts::by_email(&mut conn, p.email)?.is_none() {
            accounts::create(&mut conn, "patient", p.email, DEMO_PASSWORD, &format!("Patient/{id}"), None)?;
        }
        logins.push((p, id));
    }
    let app = match client_named(hf, DEMO_APP)? {
        Some(c) => c,
        None => {
            let mut conn = hf.db.conn()?;
            let new = NewClient {
                name: DEMO_APP.into(),
                kind: Some(ClientKind::Public),
                redirect_uris: vec![
                    format!("{}/demo-app/callback", hf.config.base_url),
                    "http://127.0.0.1:9000/callback".into(),
                ],
                ..NewClient::default()
            };
            clients::register(&mut conn, &new)?.0
        }
    };
    let provider = demo_provider(hf, logins.first().map(|(_, id)| id.as_str()))?;
    hf.store.audit.flush();
    print_summary(hf, created, &logins, &app.client_id, &provider);
    Ok(())
}

/// A backend client for the demo GP practice, with a key written to the data dir and a grant
/// from the first demo patient.
fn demo_provider(hf: &Healthfolio, first_patient: Option<&str>) -> CliResult<String> {
    let org = organization_id(hf, "Y12345")?.map(|id| format!("Organization/{id}"));
    let client_id = match client_named(hf, DEMO_PROVIDER)? {
        Some(c) => c.client_id,
        None => {
            let (jwks, key_path) = demo_key(hf)?;
            let mut conn = hf.db.conn()?;
            let new = NewClient {
                name: DEMO_PROVIDER.into(),
                kind: Some(ClientKind::Backend),
                scope: "system/*.cruds".into(),
                jwks: Some(jwks),
                organization: org.clone(),
                ..NewClient::default()
            };
            let c = clients::register(&mut conn, &new)?.0;
            println!("  demo provider signing key (ES384, PKCS#8 DER): {}", key_path.display());
            c.client_id
        }
    };
    if let (Some(p), Some(o)) = (first_patient, org) {
        let mut conn = hf.db.conn()?;
        if consent::active_for(&mut conn, p, &Grantee::Organization(o.clone()))?.is_none() {
            let g = NewGrant {
                patient_id: p.into(),
                grantee: Grantee::Organization(o),
                scope: "patient/*.cruds".into(),
                expires_at: None,
                created_by: "demo".into(),
            };
            hf.db.transaction(|c| consent::grant(c, &g))?;
        }
    }
    Ok(client_id)
}

fn demo_key(hf: &Healthfolio) -> CliResult<(serde_json::Value, std::path::PathBuf)> {
    use base64::Engine;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).map_err(|_| "key generation failed")?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| "key unreadable")?;
    let p = pair.public_key().as_ref();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": "demo-provider-1", "alg": "ES384", "x": b64(&p[1..49]), "y": b64(&p[49..97])}]});
    let path = hf.config.data_dir.join("demo-provider-es384.der");
    std::fs::write(&path, pkcs8.as_ref())?;
    Ok((jwks, path))
}

fn print_summary(
    hf: &Healthfolio,
    created: usize,
    logins: &[(demo_data::DemoPatient, String)],
    app: &str,
    provider: &str,
) {
    println!("Healthfolio demo");
    println!("  base URL:   {}", hf.config.base_url);
    println!("  FHIR base:  {}", hf.config.fhir_base());
    println!("  demo data:  {created} resource(s) created (0 means it was already loaded)");
    for (p, id) in logins {
        println!(
            "  login:      {} / {DEMO_PASSWORD}  ({} {}, NHS {}, Patient/{id})",
            p.email, p.given, p.family, p.nhs_number
        );
    }
    println!("  demo app:   client_id {app} (public, PKCE)");
    println!("  provider:   client_id {provider} (backend, private_key_jwt)");
    let minutes = hf.config.token_lifetime / 60;
    if let Ok(token) = hf.issue_operator_token("system/*.rs", hf.config.token_lifetime) {
        println!(
            "  try:        curl -H 'Authorization: Bearer {token}' '{}/MedicationRequest?status=active'",
            hf.config.fhir_base()
        );
        println!("  (a read-only operator token valid for {minutes} minutes; `healthfolio token --help` makes others)");
    }
}
