//! Integrity under concurrent requests: one active Patient per NHS number, and one resource per
//! conditional create, however many requests race for them, on both databases.

use crate::both;
use crate::fixtures::*;
use crate::support::{Client, Response, TestApp};
use serde_json::{json, Value};
use std::sync::Barrier;

const NHS_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";

/// Sends `n` requests at once (released together by a barrier), one client each.
fn race(app: &TestApp, n: usize, send: impl Fn(&Client, usize) -> Response + Sync) -> Vec<Response> {
    race_replicas(&[app], n, send)
}

/// The same, the requests spread over several servers on one database.
pub fn race_replicas(
    replicas: &[&TestApp],
    n: usize,
    send: impl Fn(&Client, usize) -> Response + Sync,
) -> Vec<Response> {
    let start = Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (c, start, send) = (replicas[i % replicas.len()].client(), &start, &send);
                s.spawn(move || {
                    start.wait();
                    send(&c, i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    })
}

fn statuses(rs: &[Response]) -> Vec<u16> {
    rs.iter().map(|r| r.status).collect()
}

fn count(rs: &[Response], status: u16) -> usize {
    rs.iter().filter(|r| r.status == status).count()
}

/// Exactly one winner; every other request is refused with the one-record-per-person conflict.
fn one_created_rest_conflict(rs: &[Response], created: u16) {
    let s = statuses(rs);
    assert_eq!(count(rs, created), 1, "{s:?}");
    assert_eq!(count(rs, 409), rs.len() - 1, "{s:?}");
    for r in rs.iter().filter(|r| r.status == 409) {
        assert_eq!(r.body["resourceType"], "OperationOutcome", "{}", r.text);
        assert!(r.diagnostics().contains("one record per person"), "{}", r.text);
    }
}

fn active_patients_with(c: &Client, nhs: &str) -> usize {
    let found = c.get(&format!("Patient?identifier={NHS_SYSTEM}|{nhs}"));
    assert_eq!(found.status, 200, "{}", found.text);
    found.entries().iter().filter(|e| e["resource"]["active"] != json!(false)).count()
}

fn concurrent_posts_with_one_nhs_number_make_one_patient(app: &TestApp) {
    let body = patient(NHS[0], "Okafor", "Ada");
    let rs = race(app, 8, |c, _| c.post("Patient", &body));
    one_created_rest_conflict(&rs, 201);
    assert_eq!(active_patients_with(&app.client(), NHS[0]), 1);
}

fn concurrent_put_creates_with_one_nhs_number_make_one_patient(app: &TestApp) {
    let rs = race(app, 8, |c, i| {
        let mut body = patient(NHS[1], "Okafor", "Ada");
        body["id"] = json!(format!("ada-{i}"));
        c.put(&format!("Patient/ada-{i}"), &body)
    });
    one_created_rest_conflict(&rs, 201);
    assert_eq!(active_patients_with(&app.client(), NHS[1]), 1);
}

fn concurrent_transactions_with_one_nhs_number_make_one_patient(app: &TestApp) {
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6f1c0e1a-3b1e-4d5e-9c1a-000000000001", "resource": patient(NHS[2], "Sharma", "Priya"),
         "request": {"method": "POST", "url": "Patient"}}]});
    let rs = race(app, 8, |c, _| c.post("", &bundle));
    one_created_rest_conflict(&rs, 200);
    assert_eq!(active_patients_with(&app.client(), NHS[2]), 1);
}

/// One number is one text: written with spaces it would be a second key for the same person, so
/// it is refused (forms strip the spaces people type before they build the resource).
fn an_nhs_number_with_spaces_is_refused(app: &TestApp) {
    let c = app.client();
    app.create(patient(NHS[3], "Mensah", "Kofi"));
    let spaced = format!("{} {} {}", &NHS[3][..3], &NHS[3][3..6], &NHS[3][6..]);
    let r = c.post("Patient", &patient(&spaced, "Mensah", "Kofi"));
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(active_patients_with(&c, NHS[3]), 1);
}

/// The number is held by the one active, live Patient: making it inactive or deleting it frees
/// the number for another record, and taking it back is refused while another holds it.
fn an_inactive_or_deleted_patient_frees_its_nhs_number(app: &TestApp) {
    let c = app.client();
    let first = app.create(patient(NHS[3], "Nowak", "Tomasz"));
    let refused = c.post("Patient", &patient(NHS[3], "Nowak", "Tomasz"));
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert!(refused.diagnostics().contains("one record per person"), "{}", refused.text);

    let deactivate = json!([{"op": "add", "path": "/active", "value": false}]);
    let r = c.patch(&format!("Patient/{first}"), &deactivate);
    assert_eq!(r.status, 200, "{}", r.text);
    let second = c.post("Patient", &patient(NHS[3], "Nowak", "Tomasz"));
    assert_eq!(second.status, 201, "an inactive record frees the number: {}", second.text);
    let second = second.body["id"].as_str().expect("id").to_string();

    let mut back = c.get(&format!("Patient/{first}")).body;
    back["active"] = json!(true);
    let r = c.put(&format!("Patient/{first}"), &back);
    assert_eq!(r.status, 409, "the number is held by the second record now: {}", r.text);

    assert_eq!(c.delete(&format!("Patient/{second}")).status, 200);
    let r = c.put(&format!("Patient/{first}"), &back);
    assert_eq!(r.status, 200, "a deleted record frees the number: {}", r.text);
    assert_eq!(active_patients_with(&c, NHS[3]), 1);

    // Changing the number frees the old one too.
    let mut renumbered = c.get(&format!("Patient/{first}")).body;
    renumbered["identifier"][0]["value"] = json!(NHS[0]);
    assert_eq!(c.put(&format!("Patient/{first}"), &renumbered).status, 200);
    assert_eq!(c.post("Patient", &patient(NHS[3], "Nowak", "Tomasz")).status, 201);
    assert_eq!(c.post("Patient", &patient(NHS[0], "Okafor", "Ada")).status, 409);
}

/// The bulk path (an archive import writes its Patient with the rest of the record, in a few
/// multi-row statements) keeps the rule too: imports of one person racing into an instance that
/// does not hold them yet end with one record.
fn concurrent_imports_of_one_person_make_one_patient(app: &TestApp) {
    let elsewhere = TestApp::sqlite();
    let p = elsewhere.create(patient(NHS[0], "Okafor", "Ada"));
    let (code, display) = PARACETAMOL;
    elsewhere.create(medication_request(&p, code, display, "active", "2025-01-02"));
    let export = elsewhere.client().get(&format!("Patient/{p}/$phr-export"));
    assert_eq!(export.status, 200, "{}", export.text);
    let rs = race(app, 8, |c, _| c.post("$phr-import?strategy=merge", &export.body));
    let s = statuses(&rs);
    assert!(count(&rs, 200) >= 1 && count(&rs, 200) + count(&rs, 409) == rs.len(), "{s:?}");
    let found = app.client().get(&format!("Patient?identifier={NHS_SYSTEM}|{}", NHS[0]));
    assert_eq!(found.ids().len(), 1, "{}", found.text);
}

/// Records that shared a number before the rule was a constraint: the migration that makes it one
/// does not fail on them, and gives the number to the oldest.
fn the_migration_keeps_old_duplicates_and_gives_the_number_to_the_oldest(app: &TestApp) {
    use healthfolio::db::{Bind, Int, Sql};
    let c = app.client();
    let oldest = app.create(patient(NHS[1], "Okafor", "Ada"));
    let mut inactive = patient(NHS[1], "Okafor", "Ada");
    inactive["active"] = json!(false);
    let younger = app.create(inactive);
    // Back to before the migration, with `younger` active again as the old check let happen.
    let mut conn = app.hf.db.conn().expect("conn");
    let rid = conn
        .first::<Int>(&Sql::with("SELECT rid AS n FROM resources WHERE id = ?", [Bind::Text(younger.clone())]))
        .expect("rid")
        .expect("row")
        .n;
    for sql in
        ["DROP TABLE patient_nhs_numbers", "DELETE FROM __diesel_schema_migrations WHERE version = '20261125000013'"]
    {
        conn.execute(&Sql::new(sql)).expect(sql);
    }
    conn.execute(&Sql::with("DELETE FROM idx_token WHERE rid = ? AND param = 'active'", [Bind::Int(rid)]))
        .expect("active");
    drop(conn);
    assert_eq!(app.hf.db.migrate().expect("migrate"), 1);
    assert_eq!(c.post("Patient", &patient(NHS[1], "Okafor", "Ada")).status, 409);
    let deactivate = json!([{"op": "add", "path": "/active", "value": false}]);
    assert_eq!(c.patch(&format!("Patient/{oldest}"), &deactivate).status, 200);
    assert_eq!(c.post("Patient", &patient(NHS[1], "Okafor", "Ada")).status, 201, "the oldest held it");
}

fn pharmacy() -> Value {
    json!({"resourceType": "Organization", "name": "Riverside Pharmacy",
           "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "FA123"}]})
}

const PHARMACY_QUERY: &str = "identifier=https://fhir.nhs.uk/Id/ods-organization-code|FA123";

/// One 201, and every other answer names the same resource with 200.
fn one_created_rest_found(rs: &[Response], id_of: impl Fn(&Response) -> Option<String>) -> String {
    let s = statuses(rs);
    assert_eq!(count(rs, 201), 1, "{s:?}");
    assert_eq!(count(rs, 200), rs.len() - 1, "{s:?}");
    let ids: std::collections::HashSet<Option<String>> = rs.iter().map(id_of).collect();
    assert_eq!(ids.len(), 1, "every answer names the one resource: {ids:?}");
    ids.into_iter().next().flatten().expect("an id")
}

/// Across replicas too: the service runs as several on one database.
fn concurrent_conditional_creates_make_one_resource(app: &TestApp) {
    let replica = app.replica();
    let rs = race_replicas(&[app, &replica], 16, |c, _| {
        c.clone().with_header("If-None-Exist", PHARMACY_QUERY).post("Organization", &pharmacy())
    });
    let id = one_created_rest_found(&rs, |r| r.body["id"].as_str().map(str::to_string));
    assert_eq!(app.client().get(&format!("Organization?{PHARMACY_QUERY}")).ids(), vec![id]);
}

/// A conditional update that finds nothing creates: of concurrent ones, the first creates and
/// the others update what it created, in turn.
fn concurrent_conditional_updates_make_one_resource(app: &TestApp) {
    let replica = app.replica();
    let rs = race_replicas(&[app, &replica], 8, |c, i| {
        let mut body = pharmacy();
        body["name"] = json!(format!("Riverside Pharmacy {i}"));
        c.put(&format!("Organization?{PHARMACY_QUERY}"), &body)
    });
    let id = one_created_rest_found(&rs, |r| r.body["id"].as_str().map(str::to_string));
    let found = app.client().get(&format!("Organization/{id}"));
    assert_eq!(found.body["meta"]["versionId"], "8", "every update applied, one after another");
    assert_eq!(app.client().get(&format!("Organization?{PHARMACY_QUERY}")).ids(), vec![id]);
}

fn concurrent_conditional_creates_in_transactions_make_one_resource(app: &TestApp) {
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6f1c0e1a-3b1e-4d5e-9c1a-000000000002", "resource": pharmacy(),
         "request": {"method": "POST", "url": "Organization", "ifNoneExist": PHARMACY_QUERY}}]});
    let rs = race(app, 16, |c, _| {
        let r = c.post("", &bundle);
        assert_eq!(r.status, 200, "{}", r.text);
        r
    });
    let entry_status = |r: &Response| r.body["entry"][0]["response"]["status"].as_str().unwrap_or_default().to_string();
    let created = rs.iter().filter(|r| entry_status(r).starts_with("201")).count();
    let found = rs.iter().filter(|r| entry_status(r).starts_with("200")).count();
    assert_eq!((created, found), (1, 15), "{:?}", rs.iter().map(entry_status).collect::<Vec<_>>());
    let ids: std::collections::HashSet<String> = rs
        .iter()
        .map(|r| {
            r.body["entry"][0]["response"]["location"]
                .as_str()
                .unwrap_or_default()
                .split('/')
                .nth(1)
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.client().get(&format!("Organization?{PHARMACY_QUERY}")).ids().len(), 1);
}

both!(
    an_nhs_number_with_spaces_is_refused,
    concurrent_posts_with_one_nhs_number_make_one_patient,
    concurrent_put_creates_with_one_nhs_number_make_one_patient,
    concurrent_transactions_with_one_nhs_number_make_one_patient,
    an_inactive_or_deleted_patient_frees_its_nhs_number,
    concurrent_imports_of_one_person_make_one_patient,
    the_migration_keeps_old_duplicates_and_gives_the_number_to_the_oldest,
    concurrent_conditional_creates_make_one_resource,
    concurrent_conditional_creates_in_transactions_make_one_resource,
    concurrent_conditional_updates_make_one_resource,
);
