//! The record leaving and arriving: $everything, $summary, $phr-export/$phr-import, archives.

use crate::both;
use crate::fixtures::*;
use crate::support::TestApp;
use healthfolio::audit::AuditEntry;
use healthfolio::auth::AccessContext;
use healthfolio::portability::archive::{self, ImportOptions};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};

/// A record with medicines (one referencing a Medication), an allergy and a Provenance.
fn seed(app: &TestApp, nhs: &str) -> String {
    let p = app.create(patient(nhs, "Okafor", "Ada"));
    let (code, display) = PARACETAMOL;
    app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    let (code, display) = SIMVASTATIN;
    app.create(medication_request(&p, code, display, "stopped", "2023-05-02"));
    let med = app.create(json!({"resourceType": "Medication", "code": {"coding": [{"system": "https://dmd.nhs.uk", "code": "39113611000001102", "display": "Salbutamol 100micrograms/dose inhaler CFC free"}]}}));
    app.create(json!({"resourceType": "MedicationStatement", "status": "active", "subject": {"reference": format!("Patient/{p}")},
        "medicationReference": {"reference": format!("Medication/{med}")}, "effectiveDateTime": "2024-02-01", "dosage": [{"text": "2 puffs when required"}]}));
    app.create(allergy(&p, "high"));
    p
}

/// Clinical content without ids and server metadata, for comparing two copies of a record.
fn content(bundle: &Value) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in bundle["entry"].as_array().cloned().unwrap_or_default() {
        let mut r = e["resource"].clone();
        let t = r["resourceType"].as_str().unwrap_or_default().to_string();
        if matches!(t.as_str(), "Provenance" | "AuditEvent" | "Consent") {
            continue;
        }
        if let Some(o) = r.as_object_mut() {
            o.remove("id");
            o.remove("meta");
        }
        strip_refs(&mut r);
        *out.entry(r.to_string()).or_insert(0) += 1;
    }
    out
}

fn strip_refs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, c) in o.iter_mut() {
                if k == "reference" {
                    *c = Value::String(c.as_str().and_then(|s| s.split('/').next()).unwrap_or_default().to_string());
                } else {
                    strip_refs(c);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_refs),
        _ => {}
    }
}

fn everything_pages_and_includes(app: &TestApp) {
    let p = seed(app, NHS[0]);
    let c = app.client();
    let first = c.get(&format!("Patient/{p}/$everything?_count=2"));
    assert_eq!(first.status, 200, "{}", first.text);
    let mut seen = first.ids();
    let mut next = first.link("next");
    let mut included: Vec<String> = first
        .entries()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| e["resource"]["resourceType"].as_str().unwrap_or_default().to_string())
        .collect();
    while let Some(url) = next {
        let page = c.get(&url);
        seen.extend(page.ids());
        included.extend(
            page.entries()
                .iter()
                .filter(|e| e["search"]["mode"] == "include")
                .map(|e| e["resource"]["resourceType"].as_str().unwrap_or_default().to_string()),
        );
        next = page.link("next");
    }
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no resource twice across pages");
    assert!(seen.contains(&p), "the Patient is in $everything");
    assert!(seen.len() >= 5, "{seen:?}");
    assert!(included.iter().any(|t| t == "Medication"), "referenced Medication included");
    let only = c.get(&format!("Patient/{p}/$everything?_type=AllergyIntolerance"));
    assert!(only
        .entries()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .all(|e| e["resource"]["resourceType"] == "AllergyIntolerance"));
}

/// `_type` names the types returned, and only those: what the record refers to comes with it
/// when its type is named too (FHIR R4 `$everything`), and always without `_type`.
fn everything_type_returns_only_those_types(app: &TestApp) {
    let p = seed(app, NHS[0]);
    let doctor = app.create(json!({"resourceType": "Practitioner", "name": [{"family": "Khan", "given": ["Amir"]}]}));
    let (code, display) = SIMVASTATIN;
    let mut mr = medication_request(&p, code, display, "active", "2025-04-01");
    mr["requester"] = json!({"reference": format!("Practitioner/{doctor}")});
    app.create(mr);
    let c = app.client();
    let types = |query: &str| {
        let r = c.get(&format!("Patient/{p}/$everything{query}"));
        assert_eq!(r.status, 200, "{}", r.text);
        r.entries()
            .iter()
            .map(|e| e["resource"]["resourceType"].as_str().unwrap_or_default().to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let named = types("?_type=MedicationRequest,AllergyIntolerance");
    assert_eq!(named, ["AllergyIntolerance", "MedicationRequest"].map(String::from).into(), "only the types named");
    let with_medicines = types("?_type=MedicationStatement,Medication");
    assert_eq!(with_medicines, ["Medication", "MedicationStatement"].map(String::from).into());
    let whole = types("");
    for t in ["Patient", "MedicationRequest", "Medication", "Practitioner"] {
        assert!(whole.contains(t), "{t} in the whole record: {whole:?}");
    }
    let exported = c.get(&format!("Patient/{p}/$phr-export?outputFormat=ndjson&_type=MedicationRequest"));
    assert_eq!(exported.status, 200, "{}", exported.text);
    let lines: Vec<Value> = exported.text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(lines.len(), 3, "{}", exported.text);
    assert!(lines.iter().all(|l| l["resourceType"] == "MedicationRequest"), "{}", exported.text);
}

/// An access log longer than an export reads at a time (1,000 rows) comes out whole, each row
/// once, in the NDJSON and Bundle exports and in the archive.
fn export_carries_a_long_access_log(app: &TestApp) {
    let p = seed(app, NHS[0]);
    let operator = AccessContext::operator("test");
    for i in 0..2_345 {
        app.hf.store.audit.record(&operator, AuditEntry::operation("$everything", "Patient", &p, Ok(i)));
    }
    app.hf.store.audit.flush();
    #[derive(diesel::QueryableByName)]
    struct Logged {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    let q = healthfolio::db::Sql::with(
        "SELECT id FROM audit_events WHERE patient_id = ?",
        [healthfolio::db::Bind::Text(p.clone())],
    );
    let log = || -> HashSet<String> {
        app.hf.db.conn().expect("conn").load::<Logged>(&q).expect("log").into_iter().map(|l| l.id).collect()
    };
    let logged = log();
    assert!(logged.len() > 2_345, "{}", logged.len());
    // Every row logged before the export, once; and rows logged during it (its own read of the
    // record, earlier exports) may be in it too.
    let check = |ids: Vec<String>, how: &str| {
        let unique: HashSet<String> = ids.iter().cloned().collect();
        assert_eq!(unique.len(), ids.len(), "{how}: each row once");
        assert!(
            unique.is_superset(&logged),
            "{how}: {} of {} rows",
            unique.intersection(&logged).count(),
            logged.len()
        );
        assert!(unique.is_subset(&log()), "{how}: only rows of the log");
    };
    let audit_ids = |resources: Vec<Value>| {
        resources
            .into_iter()
            .filter(|r| r["resourceType"] == "AuditEvent")
            .map(|r| r["id"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    let c = app.client();
    let ndjson = c.get(&format!("Patient/{p}/$phr-export?outputFormat=ndjson"));
    assert_eq!(ndjson.status, 200, "{}", ndjson.text);
    check(audit_ids(ndjson.text.lines().map(|l| serde_json::from_str(l).expect("json line")).collect()), "ndjson");
    let bundle = c.get(&format!("Patient/{p}/$phr-export"));
    assert_eq!(bundle.status, 200, "{}", bundle.text);
    check(audit_ids(bundle.entries().into_iter().map(|e| e["resource"].clone()).collect()), "bundle");
    let mut tar = Vec::new();
    let manifest = archive::export(&app.hf.store, &operator, &p, &mut tar).expect("archive");
    let audit_lines = String::from_utf8(tar).expect("utf-8").matches("{\"resourceType\":\"AuditEvent\"").count();
    assert_eq!(manifest.counts["AuditEvent"], audit_lines);
    assert!(audit_lines >= logged.len(), "archive: {audit_lines} of {} rows", logged.len());
}

fn summary_is_an_ips_document(app: &TestApp) {
    let p = seed(app, NHS[0]);
    let r = app.client().get(&format!("Patient/{p}/$summary"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["type"], "document");
    let comp = &r.body["entry"][0]["resource"];
    assert_eq!(comp["resourceType"], "Composition");
    assert_eq!(comp["type"]["coding"][0]["code"], "60591-5");
    let codes: Vec<&str> = comp["section"]
        .as_array()
        .expect("sections")
        .iter()
        .map(|s| s["code"]["coding"][0]["code"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(codes, vec!["10160-0", "48765-2", "11450-4"]);
    assert!(comp["section"][0]["entry"].as_array().is_some_and(|e| e.len() == 2), "active medicines only");
    // No problems recorded: the section holds an entry saying no information is available (IPS).
    let none = comp["section"][2]["entry"][0]["reference"].as_str().expect("an entry in the empty section");
    let held = r.body["entry"].as_array().and_then(|e| e.iter().find(|e| e["fullUrl"] == none)).expect("in the Bundle");
    assert_eq!(held["resource"]["resourceType"], "Condition");
    assert_eq!(held["resource"]["code"]["coding"][0]["code"], "1287211007");
    assert_eq!(held["resource"]["subject"]["reference"], format!("Patient/{p}"));
    // An app that may not read allergies is told they are withheld, never that none are known.
    let narrow = app.client_with(Some(app.patient_token("patient/Patient.rs patient/MedicationRequest.rs", &p)));
    let r = narrow.get(&format!("Patient/{p}/$summary"));
    assert_eq!(r.status, 200, "{}", r.text);
    let allergies = &r.body["entry"][0]["resource"]["section"][1];
    assert_eq!(allergies["emptyReason"]["coding"][0]["code"], "withheld", "{allergies}");
    assert!(allergies.get("entry").is_none());
    let types: Vec<&str> = r.body["entry"]
        .as_array()
        .map_or(vec![], |e| e.iter().filter_map(|x| x["resource"]["resourceType"].as_str()).collect());
    assert!(!types.contains(&"AllergyIntolerance"), "{types:?}");
}

fn phr_round_trip_between_two_instances(a: &TestApp) {
    let b = TestApp::sqlite();
    let p = seed(a, NHS[0]);
    let export = a.client().get(&format!("Patient/{p}/$phr-export"));
    assert_eq!(export.status, 200, "{}", export.text);
    let imported = b.client().post("$phr-import?strategy=merge", &export.body);
    assert_eq!(imported.status, 200, "{}", imported.text);
    let found = b.client().get(&format!("Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}", NHS[0]));
    let new_p = found.ids().pop().expect("patient arrived");
    let back = b.client().get(&format!("Patient/{new_p}/$phr-export"));
    assert_eq!(content(&export.body), content(&back.body), "same clinical content, ids aside");
    // Every imported resource has a Provenance naming its origin.
    let mrs = b.client().get(&format!("MedicationRequest?patient={new_p}&_revinclude=Provenance:target"));
    let provs = mrs.entries().iter().filter(|e| e["resource"]["resourceType"] == "Provenance").count();
    assert!(provs >= 2, "{}", mrs.text);
    // A second import adds nothing.
    let count = |app: &TestApp| app.client().get("MedicationRequest?_summary=count").body["total"].as_i64();
    let before = count(&b);
    let again = b.client().post("$phr-import?strategy=merge", &export.body);
    assert_eq!(again.status, 200);
    assert!(again.diagnostics().contains("0 created"), "{}", again.text);
    assert_eq!(count(&b), before);
    // `_type` narrows the export (the views included), `outputFormat=ndjson` gives lines.
    let narrow =
        a.client().get(&format!("Patient/{p}/$phr-export?outputFormat=ndjson&_type=Patient,AllergyIntolerance"));
    assert_eq!(narrow.status, 200, "{}", narrow.text);
    let types: std::collections::BTreeSet<String> = narrow
        .text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("a JSON line")["resourceType"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    assert_eq!(types, ["AllergyIntolerance", "Patient"].map(String::from).into(), "{}", narrow.text);
    let types_of = |body: &serde_json::Value| -> std::collections::BTreeSet<String> {
        body["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["resource"]["resourceType"].as_str().map(String::from))
            .collect()
    };
    assert!(types_of(&export.body).contains("AuditEvent"), "the whole export carries the access log");
}

fn archive_round_trip_and_refusals(app: &TestApp) {
    let p = seed(app, NHS[0]);
    let op = AccessContext::operator("test");
    let mut file = Vec::new();
    let m = archive::export(&app.hf.store, &op, &p, &mut file).expect("export");
    assert_eq!(m.counts.get("MedicationRequest"), Some(&2));
    let other = TestApp::sqlite();
    let (manifest, lines) = archive::read_archive(file.as_slice()).expect("read");
    let mut seen = Vec::new();
    let r = archive::import_reporting(
        &other.hf.store,
        &op,
        &manifest.source,
        lines.clone(),
        &ImportOptions::default(),
        &mut |d, t| seen.push((d, t)),
    )
    .expect("import");
    assert!(r.created >= 6, "{r:?}");
    assert_eq!(seen.last(), Some(&(r.created, r.created)), "progress ends at the whole record: {seen:?}");
    let again = archive::import(&other.hf.store, &op, &manifest.source, lines.clone(), &ImportOptions::default())
        .expect("again");
    assert_eq!(again.created, 0, "importing twice creates no duplicates");
    // Tampered: flip a byte of the content.
    let mut tampered = file.clone();
    if let Some(i) = tampered.windows(9).position(|w| w == b"322236009") {
        tampered[i] = b'4';
    }
    assert!(matches!(archive::read_archive(tampered.as_slice()), Err(healthfolio::fhir::FhirError::Unprocessable(_))));
    // Truncated.
    assert!(archive::read_archive(&file[..file.len() / 3]).is_err());
    // A reference outside the record, and a conflicting NHS number elsewhere.
    let mut outside = lines.clone();
    for l in outside.iter_mut().filter(|l| l["resourceType"] == "MedicationRequest") {
        l["requester"] = json!({"reference": "Practitioner/not-in-this-record"});
    }
    let fresh = TestApp::sqlite();
    let err =
        archive::import(&fresh.hf.store, &op, "https://elsewhere.example/fhir", outside, &ImportOptions::default())
            .expect_err("outside");
    assert!(err.to_string().contains("outside the record"), "{err}");
    assert_eq!(fresh.client().get("MedicationRequest?_summary=count").body["total"], 0, "nothing written");
    fresh.create(patient(NHS[0], "Someone", "Else"));
    let conflict = archive::import(&fresh.hf.store, &op, &manifest.source, lines, &ImportOptions::default())
        .expect_err("conflict");
    assert!(matches!(conflict, healthfolio::fhir::FhirError::Conflict(_)), "{conflict}");
}

/// The portal's record file: the patient downloads the archive at one instance and uploads it at
/// another into their own record; a second upload adds nothing; a changed file, or another
/// person's, is refused with a message and nothing written.
fn portal_download_and_upload(app: &TestApp) {
    use crate::oauth_support::{Browser, PASSWORD};
    let sign_in = |app: &TestApp, email: &str| {
        let mut b = Browser::default();
        let login = b.get(&format!("{}/portal/login", app.base));
        let form = [("email", email), ("password", PASSWORD), ("csrf", &login.field("csrf")), ("continue", "/portal")];
        assert_eq!(b.post(&format!("{}/oauth/login", app.base), &form).status, 303);
        b
    };
    let p = seed(app, NHS[0]);
    let mut conn = app.hf.db.conn().expect("conn");
    healthfolio::auth::accounts::create(
        &mut conn,
        "patient",
        "ada@example.org",
        PASSWORD,
        &format!("Patient/{p}"),
        None,
    )
    .expect("account");
    let mut at_a = sign_in(app, "ada@example.org");
    let (status, ct, file) = at_a.get_bytes(&format!("{}/portal/record/download", app.base));
    assert_eq!((status, ct.as_str()), (200, "application/x-tar"));
    let (manifest, _) = archive::read_archive(file.as_slice()).expect("a valid archive");
    assert_eq!(manifest.counts.get("MedicationRequest"), Some(&2));

    // At B the same person (same NHS number) has a login and an empty record.
    let b = TestApp::sqlite();
    let mine = crate::oauth_support::patient_with_login(&b, NHS[0], "ada@example.org");
    let mut at_b = sign_in(&b, "ada@example.org");
    let page = at_b.get(&format!("{}/portal/record", b.base));
    assert_eq!(page.status, 200);
    let csrf = page.field("csrf");
    let url = format!("{}/portal/record/import", b.base);
    let count =
        |b: &TestApp| b.client().get(&format!("MedicationRequest?patient={mine}&_summary=count")).body["total"].clone();
    let done = at_b.post_file(&url, &[("csrf", &csrf)], "archive", &file);
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("was imported"), "{}", done.body);
    assert_eq!(count(&b), 2);
    let again = at_b.post_file(&url, &[("csrf", &csrf)], "archive", &file);
    assert!(again.body.contains("0 new entries"), "{}", again.body);
    assert_eq!(count(&b), 2, "a second upload adds nothing");

    let mut tampered = file.clone();
    if let Some(i) = tampered.windows(9).position(|w| w == b"322236009") {
        tampered[i] = b'4';
    }
    let refused = at_b.post_file(&url, &[("csrf", &csrf)], "archive", &tampered);
    assert_eq!(refused.status, 422);
    assert!(refused.body.contains("Nothing was imported"), "{}", refused.body);
    let forged = at_b.post_file(&url, &[("csrf", "not-the-token")], "archive", &file);
    assert_eq!(forged.status, 403);

    // Someone else's record file is refused on its NHS number.
    let other = seed(app, NHS[1]);
    let mut theirs = Vec::new();
    archive::export(&app.hf.store, &AccessContext::operator("test"), &other, &mut theirs).expect("export");
    let wrong = at_b.post_file(&url, &[("csrf", &csrf)], "archive", &theirs);
    assert_eq!(wrong.status, 422, "{}", wrong.body);
    assert_eq!(count(&b), 2);
    // Signed out: no download.
    assert_eq!(Browser::default().get(&format!("{}/portal/record/download", app.base)).status, 303);
}

fn patient_app_exports_only_own_record(app: &TestApp) {
    let p = seed(app, NHS[0]);
    let q = seed(app, NHS[1]);
    let t = app.patient_token("patient/*.rs", &p);
    let c = app.client_with(Some(t));
    assert_eq!(c.get(&format!("Patient/{p}/$everything")).status, 200);
    assert_eq!(c.get(&format!("Patient/{q}/$everything")).status, 404);
    assert_eq!(c.get(&format!("Patient/{q}/$summary")).status, 404);
}

/// A resource names its patient by an absolute URL whose tail is another patient's id here. Every
/// path that writes resolves it the same way: it is not a patient held here, so it lands nowhere,
/// and nothing of the import is written (issue: an archive once placed it in that other record).
fn absolute_references_never_reach_another_record(app: &TestApp) {
    let p = seed(app, NHS[0]);
    let q = seed(app, NHS[1]);
    let count = |patient: &str| {
        app.client().get(&format!("MedicationRequest?patient={patient}&_summary=count")).body["total"].clone()
    };
    let (before_p, before_q) = (count(&p), count(&q));
    let op = AccessContext::operator("test");
    let mut file = Vec::new();
    archive::export(&app.hf.store, &op, &p, &mut file).expect("export");
    let (_, mut lines) = archive::read_archive(file.as_slice()).expect("read");
    let (code, display) = PARACETAMOL;
    let mut stray = medication_request("x", code, display, "active", "2025-03-01");
    stray["id"] = json!("stray");
    stray["subject"] = json!({"reference": format!("https://elsewhere.example/fhir/Patient/{q}")});
    lines.push(stray.clone());
    let source = "https://elsewhere.example/fhir";

    // The portal's upload (the patient's own context) and the command line (the operator naming P).
    let own = AccessContext::patient_self(&p, &format!("Patient/{p}"));
    let err = archive::import(&app.hf.store, &own, source, lines.clone(), &ImportOptions::default())
        .expect_err("the patient's import");
    assert!(matches!(err, healthfolio::fhir::FhirError::Unprocessable(_)), "{err}");
    let into_p = ImportOptions { into: Some(p.clone()), append: false };
    let err = archive::import(&app.hf.store, &op, source, lines.clone(), &into_p).expect_err("the operator's import");
    assert!(matches!(err, healthfolio::fhir::FhirError::Unprocessable(_)), "{err}");

    // $phr-import with the patient's app.
    let entries: Vec<Value> = lines.iter().map(|r| json!({"resource": r})).collect();
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "meta": {"source": source}, "entry": entries});
    let app_token = app.patient_token("patient/*.cruds", &p);
    let r = app.client_with(Some(app_token.clone())).post("$phr-import?strategy=merge", &bundle);
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!((count(&p), count(&q)), (before_p.clone(), before_q.clone()), "nothing written by any import");

    // The API: even the operator cannot place it by URL; this server's own URL is relative.
    stray.as_object_mut().map(|o| o.remove("id"));
    let r = app.client().post("MedicationRequest", &stray);
    assert_eq!(r.status, 422, "{}", r.text);
    stray["subject"] = json!({"reference": format!("{}/Patient/{p}", app.fhir)});
    let r = app.client_with(Some(app_token)).post("MedicationRequest", &stray);
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["subject"]["reference"], format!("Patient/{p}"));
    assert_eq!(count(&q), before_q, "the other record is untouched");
}

/// `$phr-import` is the patient's (or an operator's): a provider system is refused even with
/// `patient/*.cruds` granted; an operator names the record with `?patient=`. The
/// CapabilityStatement says both.
fn phr_import_is_the_patients(a: &TestApp) {
    let b = TestApp::sqlite();
    let p = seed(a, NHS[0]);
    let export = a.client().get(&format!("Patient/{p}/$phr-export"));
    let here = b.create(patient(NHS[0], "Okafor", "Ada"));
    let org = "Organization/riverside";
    b.grant(&here, healthfolio::consent::Grantee::Organization(org.into()), "patient/*.cruds");
    let provider = b.client_with(Some(crate::oauth_support::provider_system_token_with(&b, org, "system/*.cruds")));
    let refused = provider.post(&format!("$phr-import?patient={here}"), &export.body);
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(refused.diagnostics().contains("only the patient (or an operator)"), "{}", refused.text);
    let operator = b.client().post(&format!("$phr-import?patient={here}"), &export.body);
    assert_eq!(operator.status, 200, "{}", operator.text);
    assert!(operator.diagnostics().starts_with(&format!("Patient/{here}:")), "{}", operator.text);

    let metadata = b.client_with(None).get("metadata");
    let ops = metadata.body["rest"][0]["operation"].as_array().cloned().unwrap_or_default();
    let import = ops.iter().find(|o| o["name"] == "phr-import").expect("$phr-import in the CapabilityStatement");
    let doc = import["documentation"].as_str().unwrap_or_default();
    for said in ["Only the patient or an operator", "refused (403)", "`patient/*.cruds`", "`?patient=ID`"] {
        assert!(doc.contains(said), "the documentation says {said:?}: {doc}");
    }
}

both!(
    phr_import_is_the_patients,
    absolute_references_never_reach_another_record,
    everything_pages_and_includes,
    export_carries_a_long_access_log,
    everything_type_returns_only_those_types,
    summary_is_an_ips_document,
    phr_round_trip_between_two_instances,
    archive_round_trip_and_refusals,
    patient_app_exports_only_own_record,
    portal_download_and_upload,
    group_export_members_with_grants,
);

/// Polls a bulk status URL until the manifest is ready.
pub(crate) fn wait_manifest(c: &crate::support::Client, url: &str) -> serde_json::Value {
    for _ in 0..200 {
        let r = c.get(url);
        match r.status {
            200 => return r.body,
            202 => std::thread::sleep(std::time::Duration::from_millis(50)),
            other => panic!("status {other}: {}", r.text),
        }
    }
    panic!("export did not finish");
}

/// A provider system of `org` with a `system/*.rs` token, asking for async answers.
fn provider(app: &TestApp, org: &str) -> crate::support::Client {
    let token = crate::oauth_support::provider_system_token(app, org);
    app.client_with(Some(token)).with_header("Prefer", "respond-async")
}

/// Group/{id}/$export: the group's members, but only those whose grants cover the provider, and
/// only groups the provider's organisation manages.
fn group_export_members_with_grants(app: &TestApp) {
    let org = app.create(json!({"resourceType": "Organization", "name": "Riverside Surgery"}));
    let org_ref = format!("Organization/{org}");
    let (a, b, c) = (seed(app, NHS[0]), seed(app, NHS[1]), seed(app, NHS[2]));
    let members = |ids: &[&String]| {
        ids.iter().map(|p| json!({"entity": {"reference": format!("Patient/{p}")}})).collect::<Vec<_>>()
    };
    let group = app
        .create(json!({"resourceType": "Group", "type": "person", "actual": true, "name": "Riverside registered list",
        "managingEntity": {"reference": org_ref}, "member": members(&[&a, &b])}));
    let bad = app.client().post("Group", &json!({"resourceType": "Group", "type": "person"}));
    assert_eq!(bad.status, 422, "Group.actual is required: {}", bad.text);
    // a and c granted the organisation; b did not; c is not a member.
    for p in [&a, &c] {
        app.grant(p, healthfolio::consent::Grantee::Organization(org_ref.clone()), "patient/*.rs");
    }
    let riverside = provider(app, &org_ref);
    let kick = riverside.get(&format!("Group/{group}/$export?_type=Patient,MedicationRequest"));
    assert_eq!(kick.status, 202, "{}", kick.text);
    let manifest = wait_manifest(&riverside, kick.header("content-location").expect("location"));
    let counts: BTreeMap<String, i64> = manifest["output"]
        .as_array()
        .expect("output")
        .iter()
        .map(|o| (o["type"].as_str().unwrap_or_default().to_string(), o["count"].as_i64().unwrap_or_default()))
        .collect();
    assert_eq!(counts, BTreeMap::from([("MedicationRequest".to_string(), 2), ("Patient".to_string(), 1)]));
    let url = manifest["output"].as_array().expect("output").iter().find(|o| o["type"] == "Patient").expect("Patient")
        ["url"]
        .clone();
    let patients = riverside.get(url.as_str().expect("url"));
    assert!(
        patients.text.contains(&a) && !patients.text.contains(&b) && !patients.text.contains(&c),
        "{}",
        patients.text
    );

    // Another organisation's system, a patient's app, and an unknown group: not found.
    let other = provider(app, "Organization/elsewhere");
    assert_eq!(other.get(&format!("Group/{group}/$export")).status, 404);
    let app_token = app.patient_token("patient/*.rs", &a);
    assert_eq!(app.client_with(Some(app_token)).get(&format!("Group/{group}/$export")).status, 404);
    assert_eq!(riverside.get("Group/no-such-group/$export").status, 404);
}

fn bulk_export_respects_grants(app: &TestApp) {
    let granted = seed(app, NHS[0]);
    let other = seed(app, NHS[1]);
    let org = "Organization/riverside";
    app.grant(
        &granted,
        healthfolio::consent::Grantee::Organization(org.into()),
        // A constrained scope cannot be held to its query for an organisation: it grants nothing.
        "patient/MedicationRequest.rs patient/Patient.rs patient/AllergyIntolerance.rs?criticality=high",
    );
    let c = provider(app, org);
    let kick = c.get("Patient/$export");
    assert_eq!(kick.status, 202, "{}", kick.text);
    let status_url = kick.header("content-location").expect("Content-Location").to_string();
    let manifest = wait_manifest(&c, &status_url);
    assert_eq!(manifest["requiresAccessToken"], true);
    let outputs = manifest["output"].as_array().expect("output");
    let types: Vec<&str> = outputs.iter().filter_map(|o| o["type"].as_str()).collect();
    assert!(types.contains(&"MedicationRequest") && types.contains(&"Patient"), "{types:?}");
    assert!(!types.contains(&"AllergyIntolerance"), "only granted types: {types:?}");
    let sync = app.client_with(c.token.clone());
    assert!(sync.get(&format!("AllergyIntolerance?patient={granted}")).ids().is_empty());
    let mr = outputs.iter().find(|o| o["type"] == "MedicationRequest").expect("mr");
    assert_eq!(mr["count"], 2, "only the granted patient's prescriptions");
    let file = c.get(mr["url"].as_str().expect("url"));
    assert_eq!(file.status, 200);
    assert_eq!(file.text.lines().count(), 2);
    assert!(file.text.lines().all(|l| l.contains(&granted)));
    assert_eq!(app.client_with(None).get(mr["url"].as_str().expect("url")).status, 401, "files need the token");
    // The export is in the access log of the patient whose record went out, and only theirs.
    let logged = |p: &str| {
        let q = healthfolio::db::Sql::with(
            "SELECT COUNT(*) AS n FROM audit_events WHERE patient_id = ? AND query LIKE '$export exported%'",
            [healthfolio::db::Bind::Text(p.into())],
        );
        app.hf.db.conn().expect("conn").first::<healthfolio::db::Int>(&q).expect("count").map_or(0, |r| r.n)
    };
    assert_eq!((logged(&granted), logged(&other)), (1, 0));
    assert_eq!(app.client().get(&status_url).status, 404, "another client's job is not found");
    assert_eq!(c.delete(&status_url).status, 202);
    assert_eq!(c.get(&status_url).status, 404, "cancelled");
}

/// A grant with an end date stops reaching the record when it ends, on the next request.
#[test]
fn expired_grant_reaches_nothing() {
    let app = TestApp::sqlite();
    let p = seed(&app, NHS[0]);
    let org = "Organization/riverside";
    let g = healthfolio::consent::NewGrant {
        patient_id: p.clone(),
        grantee: healthfolio::consent::Grantee::Organization(org.into()),
        scope: "patient/MedicationRequest.rs".into(),
        expires_at: Some(healthfolio::fhir::now_micros() + 1_500_000),
        created_by: "test".into(),
    };
    healthfolio::consent::grant(&mut app.hf.db.conn().expect("conn"), &g).expect("grant");
    let c = app.client_with(provider(&app, org).token.clone());
    assert_eq!(c.get(&format!("MedicationRequest?patient={p}")).ids().len(), 2, "while the grant runs");
    std::thread::sleep(std::time::Duration::from_millis(1700));
    let after = c.get(&format!("MedicationRequest?patient={p}"));
    assert_eq!(after.status, 200);
    assert!(after.ids().is_empty(), "the grant has ended: {}", after.text);
}

mod bulk {
    #[test]
    fn sqlite() {
        super::bulk_export_respects_grants(&crate::support::TestApp::sqlite());
    }
    #[test]
    fn postgres() {
        if let Some(app) = crate::support::TestApp::postgres() {
            super::bulk_export_respects_grants(&app);
        }
    }
}
