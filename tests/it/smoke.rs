use crate::both;
use crate::fixtures::*;
use crate::support::TestApp;
use serde_json::json;

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

fn update_patch_and_scopes(app: &TestApp) {
    let c = app.client();
    let pid = app.create(patient(NHS[1], "Seacole", "Mary"));
    let mut body = c.get(&format!("Patient/{pid}")).body;
    body["gender"] = serde_json::json!("other");
    let r = c.put(&format!("Patient/{pid}"), &body);
    assert_eq!((r.status, r.header("etag")), (200, Some("W/\"2\"")));
    let p = c.patch(
        &format!("Patient/{pid}"),
        &serde_json::json!([{"op": "replace", "path": "/gender", "value": "female"}]),
    );
    assert_eq!((p.status, p.body["gender"].as_str()), (200, Some("female")));
    assert_eq!(p.body["meta"]["versionId"], "3");
    // A provider system token without a grant reaches no patient record.
    let other = app.client_with(Some(app.token("system/*.rs")));
    assert_eq!(other.get(&format!("Patient/{pid}")).status, 404);
}

both!(update_patch_and_scopes);

fn query_constrained_scopes(app: &TestApp) {
    let p = app.create(patient(NHS[2], "Sharma", "Priya"));
    let (code, display) = PARACETAMOL;
    let active = app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    let (code, display) = SIMVASTATIN;
    let stopped = app.create(medication_request(&p, code, display, "stopped", "2024-01-02"));
    let c = app.client_with(Some(app.patient_token("patient/MedicationRequest.rs?status=active", &p)));
    assert_eq!(c.get("MedicationRequest").ids(), vec![active.clone()]);
    assert_eq!(c.get(&format!("MedicationRequest/{active}")).status, 200);
    assert_eq!(c.get(&format!("MedicationRequest/{stopped}")).status, 404, "outside the scope's query");
    let (code, display) = PARACETAMOL;
    assert_eq!(
        c.post("MedicationRequest", &medication_request(&p, code, display, "active", "2025-01-02")).status,
        403,
        "a constrained scope only reads"
    );
    // The constraint holds on every way in: history, a batch, $everything and a bulk export.
    let history: Vec<String> = c
        .get("MedicationRequest/_history")
        .entries()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(history, vec![active.clone()]);
    assert!(c.get(&format!("MedicationRequest/{stopped}/_history")).entries().is_empty());
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("MedicationRequest/{active}")}},
        {"request": {"method": "GET", "url": format!("MedicationRequest/{stopped}")}},
        {"request": {"method": "GET", "url": "MedicationRequest?_count=50"}}]});
    let answers = c.post("", &batch);
    let statuses: Vec<&str> = answers.body["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["response"]["status"].as_str())
        .collect();
    assert!(statuses[0].starts_with("200") && statuses[1].starts_with("404"), "{statuses:?}");
    assert_eq!(answers.body["entry"][2]["resource"]["total"], 1);
    let everything = c.get(&format!("Patient/{p}/$everything"));
    assert_eq!(everything.status, 200, "{}", everything.text);
    assert!(everything.text.contains(&active) && !everything.text.contains(&stopped), "{}", everything.text);
    let kick = c.clone().with_header("Prefer", "respond-async").get("Patient/$export?_type=MedicationRequest");
    assert_eq!(kick.status, 202, "{}", kick.text);
    let manifest = crate::portability::wait_manifest(&c, kick.header("content-location").expect("status url"));
    let files: Vec<String> = manifest["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["url"].as_str())
        .map(|u| c.get(u).text)
        .collect();
    let exported = files.join("");
    assert!(exported.contains(&active) && !exported.contains(&stopped), "{exported}");
}

both!(query_constrained_scopes);
