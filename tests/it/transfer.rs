//! Moving a record between two real instances: the patient, signed in at B, is sent to A to sign
//! in and approve; B pulls the record and imports it; doing it again adds nothing.

use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::TestApp;
use healthfolio::auth::clients::{self, ClientKind, NewClient};
use healthfolio::consent::Grantee;

/// The operators connect B to A in advance: B registered at A, A a partner at B. Returns B's
/// callback.
fn connect(a: &TestApp, b: &TestApp) -> String {
    let callback = format!("{}/portal/transfer/callback", b.base);
    let new = NewClient {
        name: "Healthfolio B".into(),
        kind: Some(ClientKind::Public),
        redirect_uris: vec![callback.clone()],
        ..NewClient::default()
    };
    let client_id = clients::register(&mut a.hf.db.conn().expect("conn"), &new).expect("client").0.client_id;
    healthfolio::portability::transfer::add_partner(&b.hf.db, "Practice A", &a.fhir, &client_id).expect("partner");
    callback
}

fn transfer_between(a: &TestApp, b: &TestApp) {
    // At A: the patient's record and login. At B: the same person (same NHS number), with a login.
    let pa = patient_with_login(a, NHS[0], "ada@example.org");
    let (code, display) = SIMVASTATIN;
    a.create(medication_request(&pa, code, display, "active", "2024-02-10"));
    a.create(allergy(&pa, "high"));
    let pb = patient_with_login(b, NHS[0], "ada@example.org");
    let callback = connect(a, b);

    // Interrupted: the patient says no at A. Nothing is copied, A is untouched, and a retry works.
    let refused = run_deciding(a, b, &callback, "move", "deny");
    assert!(refused.body.contains("Nothing was copied"), "{}", refused.body);
    assert!(b.client().get(&format!("MedicationRequest?patient={pb}")).ids().is_empty());
    assert_eq!(a.client().get(&format!("Patient/{pa}")).body["active"], serde_json::Value::Null);
    let move_once = || run(a, b, &callback, "copy");
    let done = move_once();
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("Your record arrived"), "{}", done.body);
    let c = b.client();
    let mrs = c.get(&format!("MedicationRequest?patient={pb}&_revinclude=Provenance:target"));
    assert_eq!(mrs.ids().len(), 1, "{}", mrs.text);
    assert!(mrs.entries().iter().any(|e| e["resource"]["resourceType"] == "Provenance"), "origin recorded");
    assert_eq!(c.get(&format!("AllergyIntolerance?patient={pb}")).ids().len(), 1);
    // Again: nothing added twice.
    let again = move_once();
    assert!(again.body.contains("arrived: 0 entries copied"), "{}", again.body);
    assert_eq!(c.get(&format!("MedicationRequest?patient={pb}")).ids().len(), 1);
    // A move closes the record at A, pointing to B, and A refuses new writes to it.
    let moved = run(a, b, &callback, "move");
    assert!(moved.body.contains("Your record arrived"), "{}", moved.body);
    let old = a.client().get(&format!("Patient/{pa}"));
    assert_eq!(old.body["active"], false);
    assert_eq!(old.body["link"][0]["type"], "replaced-by");
    assert!(old.body["link"][0]["other"]["reference"].as_str().is_some_and(|r| r.ends_with(&format!("/Patient/{pb}"))));
    let writer = a.client_with(Some(a.patient_token("patient/*.cruds", &pa)));
    let (code, display) = PARACETAMOL;
    let refused = writer.post("MedicationRequest", &medication_request(&pa, code, display, "active", "2025-05-01"));
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert!(refused.diagnostics().contains("moved"));
    // The promise holds for every writer: an operator's token is refused too.
    let by_operator =
        a.client().post("MedicationRequest", &medication_request(&pa, code, display, "active", "2025-05-01"));
    assert_eq!(by_operator.status, 409, "{}", by_operator.text);
    let elsewhere = serde_json::json!({"resourceType": "Parameters", "parameter": [{"name": "replacedBy", "valueUrl": "https://elsewhere.example/fhir/Patient/1"}]});
    let redirected = writer.post(&format!("Patient/{pa}/$close"), &elsewhere);
    assert_eq!(redirected.status, 409, "a moved record is not sent elsewhere later: {}", redirected.text);
    // What stays at A says where the record went: in the patient's searches and on the portal.
    let new_home = old.body["link"][0]["other"]["reference"].as_str().unwrap_or_default().to_string();
    let searched = writer.get(&format!("MedicationRequest?patient={pa}"));
    assert_eq!(searched.ids().len(), 1, "still readable as it was");
    let notice = searched.entries().into_iter().find(|e| e["search"]["mode"] == "outcome").expect("outcome entry");
    assert!(notice.to_string().contains(&new_home), "{notice}");
    let everything = writer.get(&format!("Patient/{pa}/$everything"));
    assert!(everything.text.contains(&format!("this record moved to {new_home}")), "{}", everything.text);
    let stranger = a.client_with(Some(a.patient_token("patient/*.rs", &a.create(patient(NHS[2], "Else", "Someone")))));
    let hidden = stranger.get(&format!("MedicationRequest?patient={pa}"));
    assert!(!hidden.text.contains(&new_home), "only those who reach the record learn where it went: {}", hidden.text);
    let (_, home) = crate::portal::sign_in(a, "ada@example.org");
    assert!(home.body.contains("Your record has moved"), "{}", home.body);
    assert!(home.body.contains(&new_home), "{}", home.body);
}

/// The README's provider set-up: an organisation's system (`client add --organization`) writes
/// to a record the patient shares with that organisation (`grant add --organization`). The
/// Provenance of the write names the organisation (`agent.onBehalfOf`, in no search index), so
/// `$everything` carries the Organization, and the record moves whole.
fn record_written_by_an_organisation_moves(a: &TestApp, b: &TestApp) {
    let pa = patient_with_login(a, NHS[0], "ada@example.org");
    let org = a.create(serde_json::json!({"resourceType": "Organization", "name": "Riverside Medical Practice"}));
    let org_ref = format!("Organization/{org}");
    a.grant(&pa, Grantee::Organization(org_ref.clone()), "patient/*.cruds");
    let gp = a.client_with(Some(provider_system_token_with(a, &org_ref, "system/*.cruds")));
    let (code, display) = SIMVASTATIN;
    let written = gp.post("MedicationRequest", &medication_request(&pa, code, display, "active", "2025-03-01"));
    assert_eq!(written.status, 201, "{}", written.text);
    let everything =
        a.client_with(Some(a.patient_token("patient/*.rs", &pa))).get(&format!("Patient/{pa}/$everything"));
    let held = |t: &str| {
        everything.entries().iter().filter(|e| e["resource"]["resourceType"] == t).cloned().collect::<Vec<_>>()
    };
    let provenance = held("Provenance");
    assert_eq!(provenance[0]["resource"]["agent"][0]["onBehalfOf"]["reference"], org_ref.as_str());
    let orgs = held("Organization");
    assert_eq!(orgs.len(), 1, "{}", everything.text);
    assert_eq!(
        (orgs[0]["resource"]["id"].as_str(), orgs[0]["search"]["mode"].as_str()),
        (Some(org.as_str()), Some("include"))
    );

    let pb = patient_with_login(b, NHS[0], "ada@example.org");
    let callback = connect(a, b);
    let done = run(a, b, &callback, "move");
    assert!(done.body.contains("Your record arrived"), "{}", done.body);
    let c = b.client();
    let arrived = c.get(&format!("MedicationRequest?patient={pb}&_revinclude=Provenance:target"));
    assert_eq!(arrived.ids().len(), 1, "{}", arrived.text);
    let names_org = arrived.entries().iter().any(|e| {
        e["resource"]["agent"][0]["onBehalfOf"]["reference"].as_str().is_some_and(|r| r.starts_with("Organization/"))
    });
    assert!(names_org, "the author's organisation came with the record: {}", arrived.text);
    assert_eq!(c.get("Organization").ids().len(), 1);
    // The Provenance that came with it is in the patient's record, not beside it: their own app
    // sees who wrote the prescription.
    let own = b.client_with(Some(b.patient_token("patient/*.rs", &pb)));
    let seen = own.get(&format!("MedicationRequest?patient={pb}&_revinclude=Provenance:target"));
    let authors = seen.entries().iter().filter(|e| e["resource"]["agent"][0]["onBehalfOf"].is_object()).count();
    assert_eq!(authors, 1, "{}", seen.text);
}

#[test]
fn organisation_record_sqlite_to_postgres() {
    if let Some(b) = TestApp::postgres() {
        record_written_by_an_organisation_moves(&TestApp::sqlite(), &b);
    }
}

#[test]
fn organisation_record_postgres_to_sqlite() {
    if let Some(a) = TestApp::postgres() {
        record_written_by_an_organisation_moves(&a, &TestApp::sqlite());
    }
}

/// Runs one transfer (copy or move) from A to B in two browsers; returns B's result page.
fn run(a: &TestApp, b: &TestApp, callback: &str, mode: &str) -> Page {
    run_deciding(a, b, callback, mode, "allow")
}

/// The same, with the patient's decision at A (`allow` or `deny`).
fn run_deciding(a: &TestApp, b: &TestApp, callback: &str, mode: &str, decision: &str) -> Page {
    run_choosing(a, b, callback, mode, decision, ("partner", "Practice A"))
}

/// The same, choosing A on B's form by `provider`: a partner's name, or A's address.
fn run_choosing(a: &TestApp, b: &TestApp, callback: &str, mode: &str, decision: &str, provider: (&str, &str)) -> Page {
    let go = {
        let mut at_b = Browser::default();
        let login = at_b.get(&format!("{}/portal/login", b.base));
        let form = [
            ("email", "ada@example.org"),
            ("password", PASSWORD),
            ("csrf", &login.field("csrf")),
            ("continue", "/portal"),
        ];
        assert_eq!(at_b.post(&format!("{}/oauth/login", b.base), &form).status, 303);
        let page = at_b.get(&format!("{}/portal/transfer", b.base));
        let go = at_b
            .post(&format!("{}/portal/transfer", b.base), &[("csrf", &page.field("csrf")), provider, ("mode", mode)]);
        assert_eq!(go.status, 303, "{}", go.body);
        let authorize = go.location.expect("to A");
        assert!(authorize.starts_with(&a.base), "{authorize}");
        // At A, in another browser (its own cookies): sign in and approve.
        let mut at_a = Browser::default();
        let login = at_a.get(&authorize);
        let form = [
            ("email", "ada@example.org"),
            ("password", PASSWORD),
            ("csrf", &login.field("csrf")),
            ("continue", &login.field("continue")),
        ];
        let after = at_a.post(&format!("{}/oauth/login", a.base), &form);
        let consent = at_a.get(&format!("{}{}", a.base, after.location.expect("back to authorize")));
        let back = if consent.status == 303 {
            consent.location.expect("location")
        } else {
            let mut scopes: Vec<(&str, String)> = vec![
                ("csrf", consent.field("csrf")),
                ("request", consent.field("request")),
                ("decision", decision.into()),
            ];
            // Approve everything the consent page asks for.
            for part in consent.body.split("name=\"scope\" type=\"checkbox\" value=\"").skip(1) {
                scopes.push(("scope", part[..part.find('"').expect("quote")].to_string()));
            }
            let form: Vec<(&str, &str)> = scopes.iter().map(|(k, v)| (*k, v.as_str())).collect();
            at_a.post(&format!("{}/oauth/consent", a.base), &form).location.expect("location")
        };
        assert!(back.starts_with(callback), "{back}");
        at_b.get(&back)
    };
    go
}

/// The patient names A by its address: B registers itself at A (A allows registration) and the
/// record comes over; a second time B uses the client it registered, and adds nothing.
#[test]
fn transfer_from_an_address_the_patient_types() {
    let a = TestApp::sqlite_configured(|o| o.open_registration = true);
    let b = TestApp::sqlite();
    let pa = patient_with_login(&a, NHS[0], "ada@example.org");
    a.create(allergy(&pa, "high"));
    let pb = patient_with_login(&b, NHS[0], "ada@example.org");
    let callback = format!("{}/portal/transfer/callback", b.base);
    let done = run_choosing(&a, &b, &callback, "copy", "allow", ("address", &a.fhir));
    assert!(done.body.contains("Your record arrived"), "{}", done.body);
    assert_eq!(b.client().get(&format!("AllergyIntolerance?patient={pb}")).ids().len(), 1);
    let again = run_choosing(&a, &b, &callback, "copy", "allow", ("address", &a.fhir));
    assert!(again.body.contains("arrived: 0 entries copied"), "{}", again.body);
    assert_eq!(healthfolio::portability::transfer::partners(&b.hf.db).expect("partners").len(), 1, "registered once");
    // A provider that does not take registrations is explained, not attempted.
    let closed = TestApp::sqlite();
    let refused = run_refused(&b, ("address", &closed.fhir));
    assert!(refused.contains("does not let other services register"), "{refused}");
}

/// A record larger than one `$everything` page comes over by A's Bulk Data export, completed with
/// what it refers to outside the compartment (the Medication, the prescriber).
#[test]
fn large_record_moves_by_bulk_export() {
    let a = TestApp::sqlite_configured(|o| o.open_registration = true);
    let b = TestApp::sqlite();
    let pa = patient_with_login(&a, NHS[0], "ada@example.org");
    let med = a.create(serde_json::json!({"resourceType": "Medication", "code": {"coding": [{"system": "https://dmd.nhs.uk", "code": "322236009", "display": "Paracetamol 500mg tablets"}]}}));
    let doctor =
        a.create(serde_json::json!({"resourceType": "Practitioner", "name": [{"family": "Khan", "given": ["Amir"]}]}));
    let practice = a.create(serde_json::json!({"resourceType": "Organization", "name": "Riverside Medical Practice"}));
    let role = a.create(serde_json::json!({"resourceType": "PractitionerRole",
        "practitioner": {"reference": format!("Practitioner/{doctor}")}, "organization": {"reference": format!("Organization/{practice}")}}));
    let (code, display) = SIMVASTATIN;
    let entries: Vec<serde_json::Value> = (0..1200)
        .map(|i| {
            let mut mr = medication_request(&pa, code, display, "active", &format!("2025-01-{:02}", i % 28 + 1));
            if i == 0 {
                mr.as_object_mut().map(|o| o.remove("medicationCodeableConcept"));
                mr["medicationReference"] = serde_json::json!({"reference": format!("Medication/{med}")});
                mr["requester"] = serde_json::json!({"reference": format!("PractitionerRole/{role}")});
            }
            serde_json::json!({"resource": mr, "request": {"method": "POST", "url": "MedicationRequest"}})
        })
        .collect();
    let tx =
        a.client().post("", &serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}));
    assert_eq!(tx.status, 200, "{}", tx.text);
    let pb = patient_with_login(&b, NHS[0], "ada@example.org");
    let callback = format!("{}/portal/transfer/callback", b.base);
    let done = run_choosing(&a, &b, &callback, "copy", "allow", ("address", &a.fhir));
    assert!(done.body.contains("Your record arrived"), "{}", done.body);
    let count = |path: &str| b.client().get(path).body["total"].as_i64().unwrap_or(-1);
    assert_eq!(count(&format!("MedicationRequest?patient={pb}&_summary=count")), 1200);
    // What the record refers to came too, two levels deep: the prescriber's role, its practice.
    for t in ["Medication", "PractitionerRole", "Practitioner", "Organization"] {
        assert_eq!(b.client().get(t).ids().len(), 1, "{t} completed");
    }
    #[derive(diesel::QueryableByName)]
    struct Job {
        #[diesel(sql_type = diesel::sql_types::Text)]
        status: String,
    }
    let jobs: Vec<Job> =
        a.hf.db
            .conn()
            .expect("conn")
            .load(&healthfolio::db::Sql::new("SELECT status FROM jobs WHERE kind = 'bulk-export'"))
            .expect("jobs");
    assert_eq!(jobs.len(), 1, "one export at A");
    assert_eq!(jobs[0].status, "cancelled", "B deleted the export once read");
}

/// B's answer when the transfer cannot start.
fn run_refused(b: &TestApp, provider: (&str, &str)) -> String {
    let mut at_b = Browser::default();
    let login = at_b.get(&format!("{}/portal/login", b.base));
    let form =
        [("email", "ada@example.org"), ("password", PASSWORD), ("csrf", &login.field("csrf")), ("continue", "/portal")];
    assert_eq!(at_b.post(&format!("{}/oauth/login", b.base), &form).status, 303);
    let page = at_b.get(&format!("{}/portal/transfer", b.base));
    at_b.post(&format!("{}/portal/transfer", b.base), &[("csrf", &page.field("csrf")), provider, ("mode", "copy")]).body
}

#[test]
fn transfer_sqlite_to_sqlite() {
    transfer_between(&TestApp::sqlite(), &TestApp::sqlite());
}

#[test]
fn transfer_sqlite_to_postgres() {
    if let Some(b) = TestApp::postgres() {
        transfer_between(&TestApp::sqlite(), &b);
    }
}
