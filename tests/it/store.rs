//! The record store's guarantees over HTTP: history, conditional operations, paging under
//! concurrent writes, all-or-nothing transactions, version conflicts, and every bad-input class.

use crate::both;
use crate::fixtures::*;
use crate::support::{Client, TestApp};
use serde_json::{json, Value};

fn meds(app: &TestApp, p: &str, n: usize) -> Vec<String> {
    let (code, display) = PARACETAMOL;
    (0..n)
        .map(|i| app.create(medication_request(p, code, display, "active", &format!("2025-01-{:02}", i % 28 + 1))))
        .collect()
}

/// Follows `next` links from `first`, collecting match ids.
fn all_pages(c: &Client, first: &str, between: &mut dyn FnMut()) -> Vec<String> {
    let mut ids = Vec::new();
    let mut url = Some(first.to_string());
    while let Some(u) = url {
        let r = c.get(&u);
        assert_eq!(r.status, 200, "{}", r.text);
        ids.extend(r.ids());
        url = r.link("next");
        between();
    }
    ids
}

fn paging_is_stable_while_others_write(app: &TestApp) {
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let original = meds(app, &p, 30);
    let c = app.client();
    let mut writes = 0;
    let seen = all_pages(&c, &format!("MedicationRequest?patient={p}&_count=10"), &mut || {
        if writes < 2 {
            meds(app, &p, 5);
            writes += 1;
        }
    });
    for id in &original {
        assert_eq!(seen.iter().filter(|s| *s == id).count(), 1, "{id} appears exactly once");
    }
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates across pages");
}

fn concurrent_if_match_updates_one_wins(app: &TestApp) {
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let body = app.client().get(&format!("Patient/{p}")).body;
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (c, mut b, p) = (app.client().with_header("If-Match", "W/\"1\""), body.clone(), p.clone());
                s.spawn(move || {
                    b["birthDate"] = json!(format!("1972-03-{:02}", i + 1));
                    c.put(&format!("Patient/{p}"), &b).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 412).count(), 7, "{statuses:?}");
    assert_eq!(app.client().get(&format!("Patient/{p}")).header("etag"), Some("W/\"2\""));
}

fn transaction_is_all_or_nothing(app: &TestApp) {
    let c = app.client();
    let (code, display) = PARACETAMOL;
    let mut bad =
        medication_request("urn:uuid:00000000-0000-4000-8000-000000000001", code, display, "bogus", "2025-01-02");
    bad["subject"]["reference"] = json!("urn:uuid:00000000-0000-4000-8000-000000000001");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000001", "resource": patient(NHS[2], "Sharma", "Priya"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": bad, "request": {"method": "POST", "url": "MedicationRequest"}}]});
    let r = c.post("", &bundle);
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["resourceType"], "OperationOutcome");
    assert_eq!(c.get("Patient?_summary=count").body["total"], 0, "nothing from the failed transaction exists");
    // The same with a valid status goes through, urn:uuid references rewritten.
    let mut ok = bundle.clone();
    ok["entry"][1]["resource"]["status"] = json!("active");
    let r = c.post("", &ok);
    assert_eq!(r.status, 200, "{}", r.text);
    let pid = r.body["entry"][0]["response"]["location"]
        .as_str()
        .expect("location")
        .split('/')
        .nth(1)
        .expect("id")
        .to_string();
    let mr = c.get(&format!("MedicationRequest?patient={pid}"));
    assert_eq!(mr.entries()[0]["resource"]["subject"]["reference"], format!("Patient/{pid}"));
}

fn history_conditional_and_delete(app: &TestApp) {
    let c = app.client();
    let create = |nhs: &str| {
        c.clone()
            .with_header("If-None-Exist", &format!("identifier=https://fhir.nhs.uk/Id/nhs-number|{nhs}"))
            .post("Patient", &patient(nhs, "Nowak", "Tomasz"))
    };
    let first = create(NHS[3]);
    assert_eq!(first.status, 201);
    assert!(first.header("location").is_some_and(|l| l.ends_with("/_history/1")));
    let again = create(NHS[3]);
    assert_eq!((again.status, again.body["id"].clone()), (200, first.body["id"].clone()), "conditional create matched");
    let id = first.body["id"].as_str().expect("id").to_string();
    let mut b = first.body.clone();
    b["gender"] = json!("male");
    assert_eq!(c.put(&format!("Patient/{id}"), &b).status, 200);
    assert_eq!(c.clone().with_header("If-Match", "W/\"1\"").put(&format!("Patient/{id}"), &b).status, 412);
    assert_eq!(c.get(&format!("Patient/{id}/_history/1")).body["meta"]["versionId"], "1");
    assert_eq!(c.delete(&format!("Patient/{id}")).status, 200);
    assert_eq!(c.get(&format!("Patient/{id}")).status, 410);
    assert_eq!(c.delete(&format!("Patient/{id}")).status, 200, "deleting twice is fine");
    let h = c.get(&format!("Patient/{id}/_history"));
    let methods: Vec<&str> = h.body["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["request"]["method"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(methods, vec!["DELETE", "PUT", "POST"], "newest first, with the delete");
    assert!(c.get("Patient?family=nowak").ids().is_empty());
    let since = c.get("_history?_count=1");
    assert!(since.link("next").is_some(), "system history pages");
}

fn search_parameter_kinds(app: &TestApp) {
    let c = app.client();
    let p = app.create(patient(NHS[0], "Brontë", "Émily"));
    let (code, display) = PARACETAMOL;
    let a = app.create(medication_request(&p, code, display, "active", "2025-01-15"));
    let (code2, display2) = SIMVASTATIN;
    let b = app.create(medication_request(&p, code2, display2, "stopped", "2024-06-01"));
    let ids = |q: &str| {
        let mut v = c.get(&format!("MedicationRequest?{q}")).ids();
        v.sort();
        v
    };
    let mut both_ids = vec![a.clone(), b.clone()];
    both_ids.sort();
    assert_eq!(ids("code=https://dmd.nhs.uk|322236009"), vec![a.clone()]);
    assert_eq!(ids("code=322236009"), vec![a.clone()]);
    assert_eq!(ids("status:not=active"), vec![b.clone()]);
    assert_eq!(ids("status=active,stopped"), both_ids);
    assert_eq!(ids("authoredon=ge2025-01-01&authoredon=lt2025-02-01"), vec![a.clone()]);
    assert_eq!(ids("authoredon=2024-06"), vec![b.clone()]);
    assert_eq!(ids("authoredon=lt2025"), vec![b.clone()]);
    assert_eq!(ids("authoredon=sa2024-12-31"), vec![a.clone()]);
    assert_eq!(ids("authoredon=eb2025"), vec![b.clone()]);
    assert_eq!(ids(&format!("patient=Patient/{p}&status=active")), vec![a.clone()]);
    assert_eq!(ids(&format!("subject:Patient={p}&status=active")), vec![a.clone()]);
    assert_eq!(ids(&format!("patient={}/Patient/{p}&status=active", app.fhir)), vec![a.clone()]);
    assert_eq!(ids(&format!("patient.identifier=https://fhir.nhs.uk/Id/nhs-number|{}", NHS[0])), both_ids);
    assert_eq!(ids(&format!("patient:identifier=https://fhir.nhs.uk/Id/nhs-number|{}", NHS[0])), both_ids);
    assert_eq!(ids("encounter:missing=true&status=stopped"), vec![b.clone()]);
    assert_eq!(c.get("Patient?family=bronte&given=emily").ids(), vec![p.clone()], "case and accent insensitive");
    assert_eq!(c.get("Patient?family:exact=Brontë").ids(), vec![p.clone()]);
    assert!(c.get("Patient?family:exact=bronte").ids().is_empty());
    assert_eq!(c.get("Patient?name:contains=ront").ids(), vec![p.clone()]);
    let sorted = c.get("MedicationRequest?_sort=-authoredon").ids();
    assert_eq!(sorted, vec![a.clone(), b.clone()]);
    let count = c.get("MedicationRequest?_summary=count");
    assert_eq!((count.body["total"].as_i64(), count.body.get("entry").is_none()), (Some(2), true));
    let elements = c.get(&format!("MedicationRequest?_id={a}&_elements=status"));
    let res = &elements.entries()[0]["resource"];
    assert!(res.get("medicationCodeableConcept").is_none() && res["status"] == "active");
    let lenient = c.get("MedicationRequest?colour=blue");
    assert_eq!(lenient.status, 200);
    assert!(lenient.entries().iter().any(|e| e["search"]["mode"] == "outcome"));
    assert_eq!(c.clone().with_header("Prefer", "handling=strict").get("MedicationRequest?colour=blue").status, 400);
    let form = c.request(
        "POST",
        "MedicationRequest/_search",
        Some("application/x-www-form-urlencoded"),
        Some(b"status=stopped"),
    );
    assert_eq!(form.ids(), vec![b]);
}

fn bad_input_never_crashes(app: &TestApp) {
    let c = app.client();
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let raw = |method: &str, path: &str, ct: &str, body: &[u8]| c.request(method, path, Some(ct), Some(body));
    let (code, display) = PARACETAMOL;
    let mr = medication_request(&p, code, display, "active", "2025-01-02");
    let with = |k: &str, v: Value| {
        let mut m = mr.clone();
        m[k] = v;
        m
    };
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let mut no_intent = mr.clone();
    no_intent.as_object_mut().map(|o| o.remove("intent"));
    let cases: Vec<(&str, u16, crate::support::Response)> = vec![
        ("malformed JSON", 400, raw("POST", "MedicationRequest", "application/fhir+json", b"{\"resourceType\":")),
        ("array body", 400, raw("POST", "MedicationRequest", "application/fhir+json", b"[]")),
        ("type mismatch", 400, c.post("MedicationRequest", &patient(NHS[1], "A", "B"))),
        ("unknown type", 404, c.get("Spaceship/1")),
        ("bad id", 400, c.put("Patient/bad_id!", &json!({"resourceType": "Patient", "id": "bad_id!"}))),
        ("id mismatch", 400, c.put(&format!("Patient/{p}"), &json!({"resourceType": "Patient", "id": "other"}))),
        ("missing intent", 422, c.post("MedicationRequest", &no_intent)),
        ("bad status", 422, c.post("MedicationRequest", &with("status", json!("bogus")))),
        ("bad NHS number", 422, c.post("Patient", &patient("9434765918", "X", "Y"))),
        ("duplicate NHS number", 409, c.post("Patient", &patient(NHS[0], "Twin", "Other"))),
        ("bad date", 400, c.post("MedicationRequest", &with("authoredOn", json!("2025-13-45")))),
        (
            "dangling reference",
            422,
            c.post("MedicationRequest", &with("subject", json!({"reference": "Patient/nope"}))),
        ),
        ("too large", 413, raw("POST", "Patient", "application/fhir+json", &vec![b' '; 1_600_000])),
        ("deep nesting", 400, raw("POST", "Patient", "application/fhir+json", deep.as_bytes())),
        (
            "bad dm+d code",
            422,
            c.post(
                "MedicationRequest",
                &with(
                    "medicationCodeableConcept",
                    json!({"coding": [{"system": "https://dmd.nhs.uk", "code": "123"}]}),
                ),
            ),
        ),
        ("bad date search", 400, c.get("MedicationRequest?authoredon=yesterday")),
        ("bad _count", 400, c.get("MedicationRequest?_count=lots")),
        ("unsupported media", 415, raw("POST", "Patient", "text/plain", b"hello")),
        ("xml wanted", 406, c.get("Patient?_format=xml")),
        ("read-only type", 405, c.post("AuditEvent", &json!({"resourceType": "AuditEvent"}))),
    ];
    for (name, want, r) in cases {
        assert_eq!(r.status, want, "{name}: {}", r.text);
        assert_eq!(r.body["resourceType"], "OperationOutcome", "{name}");
        assert!(!r.diagnostics().is_empty(), "{name}: a diagnostics text");
        assert!(!r.text.to_lowercase().contains("sql"), "{name}: no SQL in the answer");
    }
    assert_eq!(c.get("MedicationRequest?_summary=count").body["total"], 0, "no failed write left anything");
}

/// `healthfolio load` of NDJSON files: more than one write group per file, an id repeated later in
/// the file (the later line wins), Patients and Provenance, a reload that changes nothing, and a
/// bad line deep in a file that leaves nothing of that file behind and is named by its line.
fn load_files_whole_or_not_at_all(app: &TestApp) {
    let dir = std::env::temp_dir().join(format!("hf-load-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut p = patient(NHS[1], "Okafor", "Ada");
    p["id"] = json!("load-p");
    std::fs::write(dir.join("Patient.ndjson"), format!("{p}\n")).expect("write");
    let (code, display) = PARACETAMOL;
    // `n` active prescriptions for load-p, one NDJSON line each, with ids `{prefix}{i}`.
    let prescriptions = |prefix: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                let mut mr = medication_request("load-p", code, display, "active", "2025-01-02");
                mr["id"] = json!(format!("{prefix}{i}"));
                mr.to_string()
            })
            .collect()
    };
    let mut lines = prescriptions("load-mr-", 2500);
    let mut again = medication_request("load-p", code, display, "stopped", "2025-01-02");
    again["id"] = json!("load-mr-3");
    lines.push(again.to_string());
    let prov = json!({"resourceType": "Provenance", "id": "load-prov", "target": [{"reference": "MedicationRequest/load-mr-1"}],
        "recorded": "2025-01-02T10:00:00Z", "agent": [{"who": {"display": "GP system"}}]});
    lines.push(prov.to_string());
    std::fs::write(dir.join("MedicationRequest.ndjson"), lines.join("\n")).expect("write");
    let load = |dir: &std::path::Path| healthfolio::cli::load::load_paths(&app.hf, &[dir.to_path_buf()], None);
    load(&dir).expect("load");
    let c = app.client();
    assert_eq!(c.get("MedicationRequest?patient=load-p&_summary=count").body["total"], 2500);
    let mr3 = c.get("MedicationRequest/load-mr-3");
    assert_eq!(mr3.body["status"], "stopped", "the later line wins");
    assert_eq!(mr3.body["meta"]["versionId"], "2");
    let provs = c.get("Patient/load-p/$everything?_type=Provenance");
    assert_eq!(provs.ids(), vec!["load-prov".to_string()], "Provenance in its target's record: {}", provs.text);
    // Loading the same files again writes no new versions, except where the file itself changes
    // a resource (its lines apply in order, so the later line wins again).
    load(&dir).expect("reload");
    let mr3 = c.get("MedicationRequest/load-mr-3");
    assert_eq!((&mr3.body["status"], &mr3.body["meta"]["versionId"]), (&json!("stopped"), &json!("4")));
    assert_eq!(c.get("MedicationRequest/load-mr-0").body["meta"]["versionId"], "1");
    // A bad line (an invalid status) deep in a new file: nothing of that file is written.
    let bad_dir = std::env::temp_dir().join(format!("hf-load-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&bad_dir).expect("dir");
    let mut bad = prescriptions("load-new-", 1500);
    let mut wrong = medication_request("load-p", code, display, "made-up", "2025-01-02");
    wrong["id"] = json!("load-wrong");
    bad[1200] = wrong.to_string();
    std::fs::write(bad_dir.join("MedicationRequest.ndjson"), bad.join("\n")).expect("write");
    let err = load(&bad_dir).expect_err("a bad line");
    assert!(err.to_string().contains("line 1201"), "{err}");
    assert_eq!(c.get("MedicationRequest?patient=load-p&_summary=count").body["total"], 2500, "nothing written");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&bad_dir);
}

/// A write inside a transaction is attributed like a single write: a Provenance naming the writer.
fn transaction_writes_record_their_author(app: &TestApp) {
    let p = app.create(patient(NHS[3], "Jones", "Cerys"));
    let c = app.client_with(Some(app.patient_token("patient/*.cruds", &p)));
    let (code, display) = PARACETAMOL;
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": medication_request(&p, code, display, "active", "2025-01-02"), "request": {"method": "POST", "url": "MedicationRequest"}}]});
    let r = c.post("", &bundle);
    assert_eq!(r.status, 200, "{}", r.text);
    let location = r.body["entry"][0]["response"]["location"].as_str().expect("location").to_string();
    let id = location.split('/').nth(1).expect("id").to_string();
    let found = app.client().get(&format!("MedicationRequest?_id={id}&_revinclude=Provenance:target"));
    let prov: Vec<Value> = found
        .entries()
        .into_iter()
        .filter(|e| e["resource"]["resourceType"] == "Provenance")
        .map(|e| e["resource"].clone())
        .collect();
    assert_eq!(prov.len(), 1, "{}", found.text);
    assert_eq!(prov[0]["agent"][0]["who"]["reference"], format!("Patient/{p}"), "{}", prov[0]);
}

both!(
    transaction_writes_record_their_author,
    load_files_whole_or_not_at_all,
    paging_is_stable_while_others_write,
    concurrent_if_match_updates_one_wins,
    transaction_is_all_or_nothing,
    history_conditional_and_delete,
    search_parameter_kinds,
    bad_input_never_crashes,
);
