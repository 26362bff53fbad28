//! Moving a record between two real instances: the patient, signed in at B, is sent to A to sign
//! in and approve; B pulls the record and imports it; doing it again adds nothing.

use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::TestApp;
use healthfolio::auth::clients::{self, ClientKind, NewClient};

fn transfer_between(a: &TestApp, b: &TestApp) {
    // At A: the patient's record and login, and a client for B.
    let pa = patient_with_login(a, NHS[0], "ada@example.org");
    let (code, display) = SIMVASTATIN;
    a.create(medication_request(&pa, code, display, "active", "2024-02-10"));
    a.create(allergy(&pa, "high"));
    let callback = format!("{}/portal/transfer/callback", b.base);
    let new = NewClient {
        name: "Healthfolio B".into(),
        kind: Some(ClientKind::Public),
        redirect_uris: vec![callback.clone()],
        ..NewClient::default()
    };
    let client_id = clients::register(&mut a.hf.db.conn().expect("conn"), &new).expect("client").0.client_id;
    // At B: the same person (same NHS number), with a login, and A as a partner.
    let pb = patient_with_login(b, NHS[0], "ada@example.org");
    healthfolio::portability::transfer::add_partner(&b.hf.db, "Practice A", &a.fhir, &client_id).expect("partner");

    let move_once = || {
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
        assert!(page.body.contains("Practice A"), "{}", page.body);
        let go = at_b
            .post(&format!("{}/portal/transfer", b.base), &[("csrf", &page.field("csrf")), ("partner", "Practice A")]);
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
            let scopes: Vec<(&str, String)> = vec![
                ("csrf", consent.field("csrf")),
                ("request", consent.field("request")),
                ("decision", "allow".into()),
                ("scope", "patient/*.rs".into()),
            ];
            let form: Vec<(&str, &str)> = scopes.iter().map(|(k, v)| (*k, v.as_str())).collect();
            at_a.post(&format!("{}/oauth/consent", a.base), &form).location.expect("location")
        };
        assert!(back.starts_with(&callback), "{back}");
        at_b.get(&back)
    };
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
    assert!(again.body.contains("0 entries copied"), "{}", again.body);
    assert_eq!(c.get(&format!("MedicationRequest?patient={pb}")).ids().len(), 1);
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
