//! Every FHIR route × every kind of caller, with the status each must get. A refused or
//! out-of-reach cell must not carry the patient's data (for an accepted bulk kick-off: nor the
//! files the export produces).

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::{Client, Response, TestApp};
use healthfolio::consent::Grantee;
use serde_json::{json, Value};

/// The patient's record, and what the routes need to reach it.
struct Record {
    patient: String,
    nhs: &'static str,
    mr: String,
    /// Deleted near the end (by the provider with the grant).
    victim: String,
    /// The organisation's grant, read as a Consent.
    consent: String,
    /// A Group managed by the granted organisation, with the patient as its member.
    group: String,
    /// The status URL and one file of an export the patient's own app made.
    job: String,
    job_file: String,
    /// Every id of the record (its resources, grants): an answer naming one leaks the record.
    ids: Vec<String>,
}

/// The callers, in the order of each route's expected statuses. The provider with the grant
/// comes last: its writes change the record.
const CALLERS: [(&str, bool); 7] = [
    // (who, must not leak)
    ("own app (read-only)", false),
    ("another patient's app", true),
    ("provider without grant", true),
    ("expired token", true),
    ("revoked token", true),
    ("provider with grant", false),
    // Last: its writes (a move's $close among them) end the record here.
    ("own app (read-write)", false),
];

/// A request a caller makes.
type Call = fn(&Client, &Record) -> Response;

/// (route, expected status per caller as in `CALLERS`, request). Reads out of reach are 404,
/// searches out of reach 200 and empty, writes without the scope 403, bad tokens 401.
/// Destructive routes come last.
fn routes() -> Vec<(&'static str, [u16; 7], Call)> {
    vec![
        route("read", [200, 404, 404, 401, 401, 200, 200], |c, r| c.get(&format!("MedicationRequest/{}", r.mr))),
        route("vread", [200, 404, 404, 401, 401, 200, 200], |c, r| {
            c.get(&format!("MedicationRequest/{}/_history/1", r.mr))
        }),
        route("read Patient", [200, 404, 404, 401, 401, 200, 200], |c, r| c.get(&format!("Patient/{}", r.patient))),
        route("search", [200, 200, 200, 401, 401, 200, 200], |c, r| {
            c.get(&format!("MedicationRequest?patient={}", r.patient))
        }),
        route("POST _search", [200, 200, 200, 401, 401, 200, 200], |c, r| {
            let form = format!("patient={}", r.patient);
            c.request(
                "POST",
                "MedicationRequest/_search",
                Some("application/x-www-form-urlencoded"),
                Some(form.as_bytes()),
            )
        }),
        route("compartment", [200, 200, 200, 401, 401, 200, 200], |c, r| {
            c.get(&format!("Patient/{}/MedicationRequest", r.patient))
        }),
        route("include", [200, 200, 200, 401, 401, 200, 200], |c, r| {
            c.get(&format!(
                "MedicationRequest?patient={}&_include=MedicationRequest:medication&_revinclude=Provenance:target",
                r.patient
            ))
        }),
        route("instance history", [200, 200, 200, 401, 401, 200, 200], |c, r| {
            c.get(&format!("MedicationRequest/{}/_history", r.mr))
        }),
        route("type history", [200, 200, 200, 401, 401, 200, 200], |c, _| c.get("MedicationRequest/_history")),
        route("system history", [200, 200, 200, 401, 401, 200, 200], |c, _| c.get("_history")),
        route("batch GET", [200, 200, 200, 401, 401, 200, 200], |c, r| {
            c.post(
                "",
                &json!({"resourceType": "Bundle", "type": "batch", "entry": [
                    {"request": {"method": "GET", "url": format!("MedicationRequest/{}", r.mr)}},
                    {"request": {"method": "GET", "url": format!("Patient/{}", r.patient)}},
                    {"request": {"method": "GET", "url": format!("AllergyIntolerance?patient={}", r.patient)}}]}),
            )
        }),
        route("$everything", [200, 404, 404, 401, 401, 200, 200], |c, r| {
            c.get(&format!("Patient/{}/$everything", r.patient))
        }),
        route("$summary", [200, 404, 404, 401, 401, 200, 200], |c, r| {
            c.get(&format!("Patient/{}/$summary", r.patient))
        }),
        route("$phr-export", [200, 404, 404, 401, 401, 200, 200], |c, r| {
            c.get(&format!("Patient/{}/$phr-export", r.patient))
        }),
        route("Bundle/$phr-export", [200, 404, 404, 401, 401, 200, 200], |c, r| {
            c.get(&format!("Bundle/$phr-export?patient={}&outputFormat=ndjson", r.patient))
        }),
        route("Consent search", [200, 200, 200, 401, 401, 200, 200], |c, r| {
            c.get(&format!("Consent?patient={}", r.patient))
        }),
        route("Consent read", [200, 404, 404, 401, 401, 200, 200], |c, r| c.get(&format!("Consent/{}", r.consent))),
        route("AuditEvent search", [200, 200, 200, 401, 401, 200, 200], |c, r| {
            c.get(&format!("AuditEvent?patient={}", r.patient))
        }),
        // An export is each caller's own reach: accepted, and its files are checked for leaks.
        route("Patient/$export", [202, 202, 202, 401, 401, 202, 202], |c, _| async_client(c).get("Patient/$export")),
        route("$export", [202, 202, 202, 401, 401, 202, 202], |c, _| async_client(c).get("$export")),
        route("Group/$export", [404, 404, 404, 401, 401, 202, 404], |c, r| {
            async_client(c).get(&format!("Group/{}/$export", r.group))
        }),
        // The own app's export job: only the caller that started it (same app, same patient).
        route("bulk status", [200, 404, 404, 401, 401, 404, 200], |c, r| c.get(&r.job)),
        route("bulk file", [200, 404, 404, 401, 401, 404, 200], |c, r| c.get(&r.job_file)),
        route("patch", [403, 404, 404, 401, 401, 200, 200], |c, r| {
            c.patch(
                &format!("MedicationRequest/{}", r.mr),
                &json!([{"op": "replace", "path": "/status", "value": "on-hold"}]),
            )
        }),
        route("update", [403, 404, 404, 401, 401, 200, 200], |c, r| {
            c.put(&format!("MedicationRequest/{}", r.mr), &prescription(r, Some(&r.mr), "completed"))
        }),
        route("conditional update", [403, 403, 403, 401, 401, 200, 200], |c, r| {
            let mut p = patient(r.nhs, "Okafor", "Ada");
            p["telecom"] = json!([{"system": "phone", "value": "01632 960001"}]);
            c.put(&format!("Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C{}", r.nhs), &p)
        }),
        route("create", [403, 403, 403, 401, 401, 201, 201], |c, r| {
            c.post("MedicationRequest", &prescription(r, None, "active"))
        }),
        route("transaction", [403, 403, 403, 401, 401, 200, 200], |c, r| {
            c.post(
                "",
                &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                    {"fullUrl": "urn:uuid:5a0e1f6c-0000-4000-8000-000000000001", "resource": prescription(r, None, "active"),
                     "request": {"method": "POST", "url": "MedicationRequest"}},
                    {"resource": prescription(r, Some(&r.mr), "active"),
                     "request": {"method": "PUT", "url": format!("MedicationRequest/{}", r.mr)}}]}),
            )
        }),
        route("$process-message", [403, 403, 403, 401, 401, 200, 200], |c, r| {
            let mut mr = prescription(r, None, "active");
            mr["identifier"] = json!([{"system": "https://eps.example/prescription", "value": "EPS-MATRIX"}]);
            c.post("$process-message", &message("matrix-new", mr))
        }),
        // The grant holder sent this message before: a replay is answered to it alone.
        route("$process-message replay", [403, 403, 403, 401, 401, 200, 200], |c, r| {
            c.post("$process-message", &message("matrix-replay", recorded_allergy(r)))
        }),
        // A newer copy of the record file this record was imported from: only its patient (with
        // write scopes) or an operator may bring it in; another patient's app may not add to it.
        route("$phr-import", [403, 409, 403, 401, 401, 403, 200], |c, _| {
            c.post("$phr-import?strategy=merge", &record_file(true))
        }),
        route("$import", [403, 403, 403, 401, 401, 403, 403], |c, _| {
            c.post(
                "$import",
                &json!({"resourceType": "Parameters", "parameter": [{"name": "input", "valueUrl": "https://elsewhere.example/MedicationRequest.ndjson"}]}),
            )
        }),
        route("$invite", [403, 404, 404, 401, 401, 200, 200], |c, r| {
            c.post(&format!("Patient/{}/$invite", r.patient), &json!({}))
        }),
        // Out of reach, a delete is a no-op (it does not tell whether the resource exists).
        route("delete", [403, 200, 200, 401, 401, 200, 200], |c, r| {
            c.delete(&format!("MedicationRequest/{}", r.victim))
        }),
        route("read after delete", [200, 404, 404, 401, 401, 410, 410], |c, r| {
            c.get(&format!("MedicationRequest/{}", r.victim))
        }),
        route("$close", [403, 404, 404, 401, 401, 403, 200], |c, r| {
            c.post(
                &format!("Patient/{}/$close", r.patient),
                &json!({"resourceType": "Parameters", "parameter": [{"name": "replacedBy", "valueUrl": "https://elsewhere.example/fhir/Patient/1"}]}),
            )
        }),
    ]
}

fn route(name: &'static str, expected: [u16; 7], call: Call) -> (&'static str, [u16; 7], Call) {
    (name, expected, call)
}

fn async_client(c: &Client) -> Client {
    c.clone().with_header("Prefer", "respond-async")
}

/// A prescription in the record (with `id`: a new version of that one).
fn prescription(r: &Record, id: Option<&str>, status: &str) -> Value {
    let mut mr = medication_request(&r.patient, "322236009", "Paracetamol 500mg tablets", status, "2025-03-01");
    if let Some(id) = id {
        mr["id"] = json!(id);
    }
    mr
}

fn recorded_allergy(r: &Record) -> Value {
    let mut a = allergy(&r.patient, "high");
    a["identifier"] = json!([{"system": "https://gp.example/allergy", "value": "A-MATRIX"}]);
    a
}

fn message(id: &str, resource: Value) -> Value {
    json!({"resourceType": "Bundle", "id": id, "type": "message", "entry": [
        {"fullUrl": "urn:uuid:9f1c6b1e-0000-4000-8000-000000000001", "resource": {"resourceType": "MessageHeader", "eventCoding": {"system": "https://fhir.nhs.uk/CodeSystem/message-event", "code": "prescription-order"}, "source": {"endpoint": "https://gp.example"}}},
        {"fullUrl": "urn:uuid:9f1c6b1e-0000-4000-8000-000000000002", "resource": resource}]})
}

/// The patient's record file from another service, which the record here began as (its Patient
/// and an allergy; `newer`: one more allergy).
fn record_file(newer: bool) -> Value {
    let mut p = patient(NHS[0], "Okafor", "Ada");
    p["id"] = json!("src-p");
    let mut a = allergy("src-p", "low");
    a["id"] = json!("src-a");
    let mut entries = vec![json!({"resource": p}), json!({"resource": a})];
    if newer {
        let mut b = allergy("src-p", "high");
        b["id"] = json!("src-b");
        entries.push(json!({"resource": b}));
    }
    json!({"resourceType": "Bundle", "type": "collection", "meta": {"source": "https://elsewhere.example/fhir"}, "entry": entries})
}

/// The rest of the record around `patient`: a prescription of a shared medicine, one to delete,
/// a message from the granted provider, a Group the granted organisation manages, and an export
/// the own app made.
fn record(app: &TestApp, patient: String, consents: Vec<String>, own: &Client, granted: &Client) -> Record {
    let admin = app.client();
    let med = app.create(json!({"resourceType": "Medication", "code": {"coding": [{"system": "https://dmd.nhs.uk", "code": "322236009", "display": "Paracetamol 500mg tablets"}]}}));
    let mut mr = medication_request(&patient, "322236009", "Paracetamol 500mg tablets", "active", "2025-01-02");
    mr.as_object_mut().map(|o| o.remove("medicationCodeableConcept"));
    mr["medicationReference"] = json!({"reference": format!("Medication/{med}")});
    let mr = app.create(mr);
    let victim =
        app.create(medication_request(&patient, "320000009", "Simvastatin 40mg tablets", "active", "2025-01-03"));
    let org = admin.put(
        "Organization/granted",
        &json!({"resourceType": "Organization", "id": "granted", "name": "Granted Surgery"}),
    );
    assert_eq!(org.status, 201, "{}", org.text);
    let group = app.create(json!({"resourceType": "Group", "type": "person", "actual": true, "name": "Granted Surgery list",
        "managingEntity": {"reference": "Organization/granted"}, "member": [{"entity": {"reference": format!("Patient/{patient}")}}]}));
    let mut rec = Record {
        patient,
        nhs: NHS[0],
        mr,
        victim,
        consent: consents[0].clone(),
        group,
        job: String::new(),
        job_file: String::new(),
        ids: Vec::new(),
    };
    let sent = granted.post("$process-message", &message("matrix-replay", recorded_allergy(&rec)));
    assert_eq!(sent.status, 200, "{}", sent.text);
    let kick = async_client(own).get("Patient/$export");
    assert_eq!(kick.status, 202, "{}", kick.text);
    rec.job = kick.header("content-location").expect("Content-Location").to_string();
    let manifest = crate::portability::wait_manifest(own, &rec.job);
    let outputs = manifest["output"].as_array().cloned().unwrap_or_default();
    let file = outputs.iter().find(|o| o["type"] == "MedicationRequest").expect("MedicationRequest file");
    rec.job_file = file["url"].as_str().expect("url").to_string();
    let everything = admin.get(&format!("Patient/{}/$everything?_count=1000", rec.patient));
    rec.ids = everything.ids();
    assert!(rec.ids.len() >= 7, "the record: {:?}", rec.ids);
    rec.ids.extend(consents);
    rec
}

fn provider(app: &TestApp, org: &str, kid: &str) -> Client {
    let (pkcs8, jwks) = backend_keys(kid);
    let client_id = backend_client(app, jwks, org);
    let a = assertion(app, &client_id, kid, &pkcs8, &format!("jti-{kid}"), 200);
    let (_, t) = token_request(
        app,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.cruds"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &a),
        ],
    );
    app.client_with(t["access_token"].as_str().map(str::to_string))
}

/// What of the record an answer carries: its NHS number anywhere, or a resource (other than an
/// OperationOutcome) naming one of its ids, at the top, in a Bundle's entries or NDJSON lines.
fn leak(text: &str, rec: &Record) -> Option<String> {
    if text.contains(rec.nhs) {
        return Some("the NHS number".into());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => leaked_resource(&v, rec),
        Err(_) => text.lines().filter_map(|l| serde_json::from_str(l).ok()).find_map(|v| leaked_resource(&v, rec)),
    }
}

fn leaked_resource(v: &Value, rec: &Record) -> Option<String> {
    match v["resourceType"].as_str()? {
        "OperationOutcome" => None,
        "Bundle" => v["entry"].as_array()?.iter().find_map(|e| leaked_resource(&e["resource"], rec)),
        t => {
            let s = v.to_string();
            rec.ids.iter().find(|id| s.contains(id.as_str())).map(|id| format!("a {t} naming {id}"))
        }
    }
}

/// The files of an accepted bulk kick-off, fetched as the caller that asked.
fn exported(c: &Client, r: &Response) -> Result<String, String> {
    let status = r.header("content-location").ok_or("202 without Content-Location")?;
    for _ in 0..200 {
        let s = c.get(status);
        match s.status {
            202 => std::thread::sleep(std::time::Duration::from_millis(50)),
            200 => {
                let urls = s.body["output"].as_array().cloned().unwrap_or_default();
                return Ok(urls.iter().filter_map(|o| o["url"].as_str()).map(|u| c.get(u).text).collect());
            }
            other => return Err(format!("the export's status answered {other}: {}", s.text)),
        }
    }
    Err("the export did not finish".into())
}

fn access_matrix(app: &TestApp) {
    let imported = app.client().post("$phr-import?strategy=merge", &record_file(false));
    assert_eq!(imported.status, 200, "{}", imported.text);
    let found = app.client().get(&format!("Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C{}", NHS[0]));
    let patient_id = found.ids().pop().expect("the imported Patient");
    let other = app.create(patient(NHS[1], "Other", "Olu"));
    let own = app.client_with(Some(app.patient_token("patient/*.rs", &patient_id)));
    let foreign = app.client_with(Some(app.patient_token("patient/*.cruds", &other)));
    let consent = app.grant(&patient_id, Grantee::Organization("Organization/granted".into()), "patient/*.cruds");
    let granted = provider(app, "Organization/granted", "g1");
    let ungranted = provider(app, "Organization/stranger", "s1");
    let mut expired_claims = healthfolio::auth::Claims::new(&app.base, &app.fhir, "x", "c", "system/*.cruds", None, 60);
    expired_claims.exp = chrono::Utc::now().timestamp() - 120;
    let expired = app.client_with(Some(app.hf.keys.sign(&expired_claims).expect("sign")));
    let revoked_token = app.patient_token("patient/*.cruds", &patient_id);
    let _ = http().post(&format!("{}/oauth/revoke", app.base)).send_form(&[("token", revoked_token.as_str())]);
    let revoked = app.client_with(Some(revoked_token));
    let rec = record(app, patient_id, vec![consent], &own, &granted);
    let own_writer = app.client_with(Some(app.patient_token("patient/*.cruds", &rec.patient)));
    let clients = [&own, &foreign, &ungranted, &expired, &revoked, &granted, &own_writer];
    let routes = routes();
    let mut failures = Vec::new();
    for (i, ((who, must_not_leak), client)) in CALLERS.iter().zip(clients).enumerate() {
        for (route, expected, call) in &routes {
            let want = expected[i];
            let r = call(client, &rec);
            let head = |t: &str| t.chars().take(160).collect::<String>();
            if r.status != want {
                failures.push(format!("{who} × {route}: got {} want {want}: {}", r.status, head(&r.text)));
            }
            if !must_not_leak {
                continue;
            }
            if let Some(what) = leak(&r.text, &rec) {
                failures.push(format!("{who} × {route}: the answer leaks {what}: {}", head(&r.text)));
            }
            if r.status == 202 {
                match exported(client, &r) {
                    Ok(files) => {
                        if let Some(what) = leak(&files, &rec) {
                            failures.push(format!("{who} × {route}: the export leaks {what}: {}", head(&files)));
                        }
                    }
                    Err(e) => failures.push(format!("{who} × {route}: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

both!(access_matrix);
