//! SMART v2 granular scopes (`patient/Condition.rs?category=…|problem-list-item`): what a
//! constrained scope reaches on every route, alone, beside other scopes and under the patient's
//! grant, and how the consent screen offers it.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::{Client, TestApp};
use healthfolio::consent::Grantee;
use oauth2::TokenResponse;
use serde_json::{json, Value};

const CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/condition-category";
const PROBLEMS: &str =
    "patient/Condition.rs?category=http://terminology.hl7.org/CodeSystem/condition-category|problem-list-item";

fn condition(patient: &str, category: &str, code: (&str, &str)) -> Value {
    json!({
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": code.0, "display": code.1}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "recordedDate": "2024-02-01"
    })
}

const ASTHMA: (&str, &str) = ("195967001", "Asthma");
const CHEST_INFECTION: (&str, &str) = ("448739000", "Chest infection");

/// A patient with one problem-list Condition and one encounter diagnosis: (patient, problem, diagnosis).
fn record(app: &TestApp) -> (String, String, String) {
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let problem = app.create(condition(&p, "problem-list-item", ASTHMA));
    let diagnosis = app.create(condition(&p, "encounter-diagnosis", CHEST_INFECTION));
    (p, problem, diagnosis)
}

fn ids_in(text: &str, ids: &[&String]) -> Vec<bool> {
    ids.iter().map(|id| text.contains(id.as_str())).collect()
}

fn history_ids(r: &crate::support::Response) -> Vec<String> {
    r.entries().iter().filter_map(|e| e["resource"]["id"].as_str().map(str::to_string)).collect()
}

/// The files of a finished bulk export, joined.
fn bulk_export(c: &Client, query: &str) -> String {
    let kick = c.clone().with_header("Prefer", "respond-async").get(&format!("Patient/$export{query}"));
    assert_eq!(kick.status, 202, "{}", kick.text);
    let manifest = crate::portability::wait_manifest(c, kick.header("content-location").expect("status url"));
    manifest["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["url"].as_str())
        .map(|u| c.get(u).text)
        .collect()
}

/// Search, includes, read, vread and history of a constrained scope reach only what matches it;
/// the rest is absent (404), not forbidden: its existence is not the app's to learn.
fn constrained_scope_reads_only_matching(app: &TestApp) {
    let (p, problem, diagnosis) = record(app);
    let c = app.client_with(Some(app.patient_token(&format!("{PROBLEMS} patient/Patient.rs"), &p)));
    assert_eq!(c.get(&format!("Condition?patient={p}")).ids(), vec![problem.clone()]);
    assert_eq!(c.get("Condition").ids(), vec![problem.clone()]);
    assert_eq!(c.get(&format!("Condition?patient={p}&category=encounter-diagnosis")).ids(), Vec::<String>::new());
    let r = c.get(&format!("Condition?patient={p}&_total=accurate"));
    assert_eq!(r.body["total"], 1, "{}", r.text);
    // A `_revinclude` from the Patient, and an `_include` back to it, never bring the diagnosis.
    let inc = c.get(&format!("Patient?_id={p}&_revinclude=Condition:patient"));
    assert_eq!(inc.status, 200, "{}", inc.text);
    assert_eq!(ids_in(&inc.text, &[&problem, &diagnosis]), [true, false], "{}", inc.text);
    let inc = c.get(&format!("Condition?_id={problem},{diagnosis}&_include=Condition:subject"));
    assert_eq!(inc.ids(), vec![problem.clone()]);
    assert_eq!(c.get(&format!("Condition/{problem}")).status, 200);
    assert_eq!(c.get(&format!("Condition/{diagnosis}")).status, 404);
    assert_eq!(c.get(&format!("Condition/{problem}/_history/1")).status, 200);
    assert_eq!(c.get(&format!("Condition/{diagnosis}/_history/1")).status, 404);
    assert!(history_ids(&c.get(&format!("Condition/{diagnosis}/_history"))).is_empty());
    assert_eq!(history_ids(&c.get("Condition/_history")), vec![problem.clone()]);
    assert_eq!(history_ids(&c.get(&format!("Patient/{p}/Condition"))), vec![problem.clone()]);
}

/// The whole-record routes leave constrained-out resources out, and keep what other scopes give.
fn constrained_scope_on_record_routes(app: &TestApp) {
    let (p, problem, diagnosis) = record(app);
    let (code, display) = PARACETAMOL;
    let prescription = app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    let scope = format!("{PROBLEMS} patient/MedicationRequest.rs patient/Patient.rs");
    let c = app.client_with(Some(app.patient_token(&scope, &p)));
    assert_eq!(c.get(&format!("MedicationRequest?patient={p}")).ids(), vec![prescription.clone()]);
    let all = [&problem, &diagnosis, &prescription];
    let everything = c.get(&format!("Patient/{p}/$everything"));
    assert_eq!(everything.status, 200, "{}", everything.text);
    assert_eq!(ids_in(&everything.text, &all), [true, false, true], "$everything");
    let summary = c.get(&format!("Patient/{p}/$summary"));
    assert_eq!(summary.status, 200, "{}", summary.text);
    assert_eq!(ids_in(&summary.text, &all), [true, false, true], "$summary");
    let export = c.get(&format!("Patient/{p}/$phr-export"));
    assert_eq!(export.status, 200, "{}", export.text);
    assert_eq!(ids_in(&export.text, &all), [true, false, true], "$phr-export");
    let ndjson = c.get(&format!("Patient/{p}/$phr-export?outputFormat=ndjson&_type=Condition"));
    assert_eq!(ids_in(&ndjson.text, &all), [true, false, false], "$phr-export ndjson");
    assert_eq!(ids_in(&bulk_export(&c, ""), &all), [true, false, true], "bulk Patient/$export");
    assert_eq!(ids_in(&bulk_export(&c, "?_type=Condition"), &all), [true, false, false], "bulk _type");
}

/// A whole-type scope beside a constrained one is the union: every Condition.
fn whole_type_scope_beside_constrained_is_the_union(app: &TestApp) {
    let (p, problem, diagnosis) = record(app);
    let c = app.client_with(Some(app.patient_token(&format!("patient/Condition.rs {PROBLEMS}"), &p)));
    let mut found = c.get(&format!("Condition?patient={p}")).ids();
    found.sort();
    let mut both = vec![problem.clone(), diagnosis.clone()];
    both.sort();
    assert_eq!(found, both);
    assert_eq!(c.get(&format!("Condition/{diagnosis}")).status, 200);
    assert_eq!(ids_in(&c.get(&format!("Patient/{p}/$everything")).text, &[&problem, &diagnosis]), [true, true]);
}

/// What a token reaches is its scopes intersected with the patient's grant as it stands now: a
/// whole-type token under a grant narrowed to the problem list sees the problem list only.
fn token_is_intersected_with_a_constrained_grant(app: &TestApp) {
    let (p, problem, diagnosis) = record(app);
    let token = app.patient_token("patient/Condition.rs patient/Patient.rs", &p);
    let c = app.client_with(Some(token));
    assert_eq!(c.get(&format!("Condition/{diagnosis}")).status, 200, "before the grant narrows");
    // The patient narrows what the app may see (as the Sharing page does): the grant is replaced.
    app.grant(&p, Grantee::Client("test-client".into()), &format!("{PROBLEMS} patient/Patient.rs"));
    assert_eq!(c.get(&format!("Condition?patient={p}")).ids(), vec![problem.clone()]);
    assert_eq!(c.get(&format!("Condition/{diagnosis}")).status, 404);
    assert_eq!(c.get(&format!("Condition/{diagnosis}/_history/1")).status, 404);
    assert_eq!(ids_in(&c.get(&format!("Patient/{p}/$everything")).text, &[&problem, &diagnosis]), [true, false]);
    let inc = c.get(&format!("Patient?_id={p}&_revinclude=Condition:patient"));
    assert_eq!(ids_in(&inc.text, &[&problem, &diagnosis]), [true, false], "{}", inc.text);
    // And the other way round: a constrained token under a whole-type grant stays constrained.
    let c = app.client_with(Some(app.patient_token(PROBLEMS, &p)));
    app.grant(&p, Grantee::Client("test-client".into()), "patient/Condition.rs");
    assert_eq!(c.get(&format!("Condition?patient={p}")).ids(), vec![problem.clone()]);
    assert_eq!(c.get(&format!("Condition/{diagnosis}")).status, 404);
}

/// A constrained write scope creates and updates only what matches its constraint (SMART 2.2:
/// the server must not allow a write outside it); what lies outside it is not found.
fn constrained_write_scope_writes_only_matching(app: &TestApp) {
    let (p, problem, diagnosis) = record(app);
    let scope = format!("{}.cruds?{}", "patient/Condition", PROBLEMS.split_once('?').expect("query").1);
    let c = app.client_with(Some(app.patient_token(&scope, &p)));
    let created = c.post("Condition", &condition(&p, "problem-list-item", ASTHMA));
    assert_eq!(created.status, 201, "{}", created.text);
    let refused = c.post("Condition", &condition(&p, "encounter-diagnosis", CHEST_INFECTION));
    assert_eq!(refused.status, 403, "{}", refused.text);
    let admin = app.client();
    assert_eq!(admin.get(&format!("Condition?patient={p}&_total=accurate")).body["total"], 3, "nothing was written");
    // An update may not move a problem out of the constraint.
    let mut moved = condition(&p, "encounter-diagnosis", ASTHMA);
    moved["id"] = json!(problem);
    assert_eq!(c.put(&format!("Condition/{problem}"), &moved).status, 403);
    let patch = json!([{"op": "replace", "path": "/category/0/coding/0/code", "value": "encounter-diagnosis"}]);
    assert_eq!(c.patch(&format!("Condition/{problem}"), &patch).status, 403);
    assert_eq!(admin.get(&format!("Condition/{problem}")).body["meta"]["versionId"], "1", "unchanged");
    // A change that keeps it in is allowed.
    let mut kept = condition(&p, "problem-list-item", ("195967001", "Asthma, well controlled"));
    kept["id"] = json!(problem);
    assert_eq!(c.put(&format!("Condition/{problem}"), &kept).status, 200);
    // What lies outside is absent, for updates, patches and deletes alike, and stays as it was.
    let mut into = condition(&p, "problem-list-item", CHEST_INFECTION);
    into["id"] = json!(diagnosis);
    assert_eq!(c.put(&format!("Condition/{diagnosis}"), &into).status, 404);
    assert_eq!(c.patch(&format!("Condition/{diagnosis}"), &patch).status, 404);
    let delete = c.delete(&format!("Condition/{diagnosis}"));
    assert!(delete.status == 200 && delete.text.contains("nothing to delete"), "{}", delete.text);
    assert_eq!(admin.get(&format!("Condition/{diagnosis}")).body["meta"]["versionId"], "1", "unchanged");
    let created = created.body["id"].as_str().expect("id").to_string();
    assert!(c.delete(&format!("Condition/{created}")).text.contains("deleted (version 2)"));
    // A batch entry is held to the same rule.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": condition(&p, "encounter-diagnosis", CHEST_INFECTION), "request": {"method": "POST", "url": "Condition"}}]});
    let answer = c.post("", &batch);
    assert!(
        answer.body["entry"][0]["response"]["status"].as_str().unwrap_or_default().starts_with("403"),
        "{}",
        answer.text
    );
    // And so is an import, which writes many resources at once.
    let scope = format!("{scope} patient/Patient.cruds patient/Provenance.cruds");
    let c = app.client_with(Some(app.patient_token(&scope, &p)));
    let import = |category: &str| {
        let mut pat = admin.get(&format!("Patient/{p}")).body;
        pat.as_object_mut().map(|o| o.remove("meta"));
        let mut cond = condition(&p, category, ("38341003", "Hypertension"));
        cond["id"] = json!(format!("imported-{category}"));
        let entries = json!([{"resource": pat}, {"resource": cond}]);
        let bundle = json!({"resourceType": "Bundle", "type": "collection",
            "meta": {"source": "https://elsewhere.example/fhir"}, "entry": entries});
        c.post("$phr-import?strategy=append", &bundle)
    };
    let refused = import("encounter-diagnosis");
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(admin.get(&format!("Condition?patient={p}&_total=accurate")).body["total"], 2, "nothing imported");
    let taken = import("problem-list-item");
    assert_eq!(taken.status, 200, "{}", taken.text);
    assert_eq!(admin.get(&format!("Condition?patient={p}&_total=accurate")).body["total"], 3);
}

/// The consent screen offers a constrained scope in plain words, as what it is, with its own
/// box; the grant and the token hold exactly what was approved; an unsupported constraint is
/// not offered (the app gets less than it asked, and the token's `scope` says so).
fn consent_screen_offers_constrained_scopes(app: &TestApp) {
    let patient = patient_with_login(app, NHS[0], "ada@example.org");
    let problem = app.create(condition(&patient, "problem-list-item", ASTHMA));
    let diagnosis = app.create(condition(&patient, "encounter-diagnosis", CHEST_INFECTION));
    let client_id = public_app(app);
    let client = oauth_client(app, &client_id);
    let unsupported = "patient/Condition.rs?onset-date=ge2020-01-01";
    let asked = format!("launch/patient {PROBLEMS} patient/MedicationRequest.rs {unsupported}");
    let (url, verifier, _) = authorize_url(app, &client, &asked);
    let mut b = Browser::default();
    let page = sign_in_for_consent(app, &mut b, &url, "ada@example.org");
    assert_eq!(page.status, 200, "{}", page.body);
    let offered = consent_offers(&page);
    assert_eq!(offered, vec![PROBLEMS.to_string(), "patient/MedicationRequest.rs".to_string()], "{}", page.body);
    assert!(
        page.body.contains("See your problem list (health problems in the category Problem list item)"),
        "{}",
        page.body
    );
    assert!(page.body.contains("See your prescriptions"), "{}", page.body);
    // The patient approves the problem list only.
    let (code, _) =
        sign_in_and_choose(app, &mut Browser::default(), &url, "ada@example.org", |_| vec![PROBLEMS.to_string()]);
    let token = exchange(&client, &code, &verifier);
    let scopes: Vec<String> = token.scopes().expect("scope").iter().map(|s| s.to_string()).collect();
    assert!(scopes.contains(&PROBLEMS.to_string()), "{scopes:?}");
    assert!(!scopes.iter().any(|s| s.contains("MedicationRequest") || s.contains("onset")), "{scopes:?}");
    let mut conn = app.hf.db.conn().expect("conn");
    let grant = healthfolio::consent::active_for(&mut conn, &patient, &Grantee::Client(client_id))
        .expect("query")
        .expect("grant");
    let granted = grant.scopes().resources;
    assert_eq!(granted, healthfolio::scope::Scopes::parse(PROBLEMS).resources, "{}", grant.scope);
    let c = app.client_with(Some(token.access_token().secret().clone()));
    assert_eq!(c.get(&format!("Condition?patient={patient}")).ids(), vec![problem]);
    assert_eq!(c.get(&format!("Condition/{diagnosis}")).status, 404);
    assert_eq!(c.get("MedicationRequest").status, 403);
}

both!(
    constrained_scope_reads_only_matching,
    constrained_scope_on_record_routes,
    whole_type_scope_beside_constrained_is_the_union,
    token_is_intersected_with_a_constrained_grant,
    constrained_write_scope_writes_only_matching,
    consent_screen_offers_constrained_scopes,
);
