//! The roadmap stages: federated (never), hybrid (on-read), adopting a source, a dead source,
//! and events from provider systems.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::TestApp;
use healthfolio::consent::Grantee;
use healthfolio::federation::sources::{self, NewSource, Policy};
use serde_json::json;

/// Another Healthfolio playing a provider's FHIR API, holding a prescription for NHS[0], with a
/// backend client for us; returns (source app, the credentials to register with it).
fn provider(nhs: &str) -> (TestApp, (String, String, Vec<u8>)) {
    let src = TestApp::sqlite();
    let p = src.create(patient(nhs, "Okafor", "Ada"));
    let (code, display) = SIMVASTATIN;
    let mut mr = medication_request(&p, code, display, "active", "2024-06-01");
    mr["identifier"] = json!([{"system": "https://gp.example/prescription", "value": "rx-1"}]);
    src.create(mr);
    let org = "Organization/provider-a";
    src.grant(&p, Grantee::Organization(org.into()), "patient/*.rs");
    let (pkcs8, jwks) = backend_keys("fed-1");
    let client_id = backend_client(&src, jwks, org);
    (src, (client_id, "fed-1".into(), pkcs8))
}

fn add_source(
    app: &TestApp,
    name: &str,
    base: &str,
    policy: Policy,
    creds: Option<(String, String, Vec<u8>)>,
    timeout_ms: i64,
) {
    let mut conn = app.hf.db.conn().expect("conn");
    let s = NewSource {
        name: name.into(),
        fhir_base: base.into(),
        policy,
        max_age_secs: 600,
        timeout_ms,
        types: None,
        credentials: creds,
    };
    sources::add(&mut conn, &app.hf.keys, &s).expect("source");
}

fn federated_search_merges_and_marks_origin(app: &TestApp) {
    let (src, creds) = provider(NHS[0]);
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let (code, display) = PARACETAMOL;
    app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    add_source(app, "gp-a", &src.fhir, Policy::Never, Some(creds), 3000);
    let r = app.client().get(&format!("MedicationRequest?patient={p}"));
    assert_eq!(r.status, 200, "{}", r.text);
    let matches: Vec<_> = r.entries().into_iter().filter(|e| e["search"]["mode"] == "match").collect();
    assert_eq!(matches.len(), 2, "local + federated: {}", r.text);
    let remote =
        matches.iter().find(|e| e["resource"]["meta"]["tag"][0]["code"] == "gp-a").expect("marked with its origin");
    assert!(remote["resource"]["meta"]["source"].as_str().is_some_and(|s| s.starts_with(&src.fhir)));
    assert_eq!(remote["resource"]["subject"]["reference"], format!("Patient/{p}"));
    // Federated only: nothing was stored.
    assert_eq!(app.client().get("MedicationRequest?_summary=count").body["total"], 1);
    // A patient's own app sees federated results within its grant; another's does not.
    let own = app.client_with(Some(app.patient_token("patient/MedicationRequest.rs", &p)));
    assert_eq!(own.get("MedicationRequest").entries().iter().filter(|e| e["search"]["mode"] == "match").count(), 2);
}

fn on_read_keeps_copies_owned_by_the_source(app: &TestApp) {
    let (src, creds) = provider(NHS[0]);
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    add_source(app, "gp-b", &src.fhir, Policy::OnRead, Some(creds), 3000);
    let first = app.client().get(&format!("MedicationRequest?patient={p}"));
    assert_eq!(first.ids().len(), 1, "{}", first.text);
    let copy = first.ids()[0].clone();
    assert!(copy.starts_with("gp-b-"), "a persisted copy: {copy}");
    // Served locally now, even with the source gone.
    drop(src);
    let again = app.client().get(&format!("MedicationRequest?patient={p}"));
    assert_eq!(again.ids(), vec![copy.clone()]);
    assert!(again.entries().iter().all(|e| e["search"]["mode"] != "outcome"), "fresh copy: the source is not asked");
    // Another provider, granted write access by the patient, may not change a copy the source owns.
    app.grant(&p, Grantee::Organization("Organization/other".into()), "patient/*.cruds");
    let mut claims =
        healthfolio::auth::Claims::new(&app.base, &app.fhir, "x", "other-system", "system/*.cruds", None, 300);
    claims.org = Some("Organization/other".into());
    let other = app.client_with(Some(app.hf.keys.sign(&claims).expect("sign")));
    let body = app.client().get(&format!("MedicationRequest/{copy}")).body;
    let r = other.put(&format!("MedicationRequest/{copy}"), &body);
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.diagnostics().contains("gp-b"));
    // Adopting the source makes the copies ours: single-and-only.
    let mut conn = app.hf.db.conn().expect("conn");
    assert_eq!(sources::adopt(&mut conn, "gp-b").expect("adopt"), 1);
    assert_eq!(other.put(&format!("MedicationRequest/{copy}"), &body).status, 200);
}

fn dead_source_never_fails_the_search(app: &TestApp) {
    // A port that accepts and never answers: the source times out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}/fhir", silent.local_addr().expect("addr"));
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let (code, display) = PARACETAMOL;
    app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    add_source(app, "slow", &base, Policy::Never, None, 300);
    add_source(app, "gone", "http://127.0.0.1:9/fhir", Policy::Never, None, 300);
    let r = app.client().get(&format!("MedicationRequest?patient={p}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.ids().len(), 1, "local results still served");
    let outcome = r.entries().into_iter().find(|e| e["search"]["mode"] == "outcome").expect("outcome entry");
    let text = outcome["resource"].to_string();
    assert!(text.contains("slow") && text.contains("gone"), "{text}");
    drop(silent);
}

fn messages_are_idempotent(app: &TestApp) {
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let (code, display) = PARACETAMOL;
    let mut mr = medication_request(&p, code, display, "active", "2025-01-02");
    mr["identifier"] = json!([{"system": "https://eps.example/prescription", "value": "EPS-1"}]);
    let msg = json!({"resourceType": "Bundle", "id": "msg-1", "type": "message", "entry": [
        {"fullUrl": "urn:uuid:9f1c6b1e-0000-4000-8000-000000000001", "resource": {"resourceType": "MessageHeader", "eventCoding": {"system": "https://fhir.nhs.uk/CodeSystem/message-event", "code": "prescription-order"}, "source": {"endpoint": "https://gp.example"}}},
        {"fullUrl": "urn:uuid:9f1c6b1e-0000-4000-8000-000000000002", "resource": mr}]});
    let c = app.client();
    let first = c.post("$process-message", &msg);
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["entry"][0]["resource"]["response"]["code"], "ok");
    let second = c.post("$process-message", &msg);
    assert_eq!(second.body, first.body, "a replay gets the first answer");
    assert_eq!(c.get("MedicationRequest?identifier=https://eps.example/prescription|EPS-1").ids().len(), 1);
    // A change to the same prescription (new message id) lands on the same resource.
    let mut changed = msg.clone();
    changed["id"] = json!("msg-2");
    changed["entry"][1]["resource"]["status"] = json!("cancelled");
    assert_eq!(c.post("$process-message", &changed).status, 200);
    let found = c.get("MedicationRequest?identifier=https://eps.example/prescription|EPS-1");
    assert_eq!(found.ids().len(), 1);
    assert_eq!(found.entries()[0]["resource"]["status"], "cancelled");
}

both!(
    federated_search_merges_and_marks_origin,
    on_read_keeps_copies_owned_by_the_source,
    dead_source_never_fails_the_search,
    messages_are_idempotent
);
