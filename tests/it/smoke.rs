use crate::both;
use crate::fixtures::*;
use crate::support::TestApp;

fn create_read_and_search(app: &TestApp) {
    let c = app.client();
    let pid = app.create(patient(NHS[0], "Brontë", "Emily"));
    let r = c.get(&format!("Patient/{pid}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some("W/\"1\""));
    let (code, display) = PARACETAMOL;
    app.create(medication_request(&pid, code, display, "active", "2025-01-02"));
    let s = c.get(&format!("MedicationRequest?patient={pid}&status=active"));
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(s.ids().len(), 1);
    let s = c.get("Patient?family=bronte");
    assert_eq!(s.ids(), vec![pid]);
}

fn no_token_is_401(app: &TestApp) {
    let r = app.client_with(None).get("Patient");
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")));
    assert_eq!(r.body["resourceType"], "OperationOutcome");
}

both!(create_read_and_search, no_token_is_401);
