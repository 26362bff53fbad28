//! Every FHIR route × every kind of caller, with the status each must get. A refused or
//! out-of-reach cell must not carry the patient's data.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::{Client, Response, TestApp};
use healthfolio::consent::Grantee;
use serde_json::json;

struct Record {
    patient: String,
    mr: String,
    nhs: &'static str,
}

fn record(app: &TestApp) -> Record {
    let patient = app.create(patient(NHS[0], "Okafor", "Ada"));
    let med = app.create(json!({"resourceType": "Medication", "code": {"coding": [{"system": "https://dmd.nhs.uk", "code": "322236009", "display": "Paracetamol 500mg tablets"}]}}));
    let mut mr = medication_request(&patient, "322236009", "Paracetamol 500mg tablets", "active", "2025-01-02");
    mr.as_object_mut().map(|o| o.remove("medicationCodeableConcept"));
    mr["medicationReference"] = json!({"reference": format!("Medication/{med}")});
    let mr = app.create(mr);
    Record { patient, mr, nhs: NHS[0] }
}

/// A request a caller makes.
type Call<'a> = Box<dyn Fn(&Client) -> Response + 'a>;

/// (route, request)
fn routes(r: &Record) -> Vec<(&'static str, Call<'_>)> {
    let p = r.patient.clone();
    let (p2, p3, p4, p5, p6) = (p.clone(), p.clone(), p.clone(), p.clone(), p.clone());
    let (m1, m2, m3, m4, m5, m6, m7) =
        (r.mr.clone(), r.mr.clone(), r.mr.clone(), r.mr.clone(), r.mr.clone(), r.mr.clone(), r.mr.clone());
    vec![
        ("read", Box::new(move |c: &Client| c.get(&format!("MedicationRequest/{m1}")))),
        ("vread", Box::new(move |c: &Client| c.get(&format!("MedicationRequest/{m2}/_history/1")))),
        ("search", Box::new(move |c: &Client| c.get(&format!("MedicationRequest?patient={p2}")))),
        ("compartment", Box::new(move |c: &Client| c.get(&format!("Patient/{p3}/MedicationRequest")))),
        ("history", Box::new(move |c: &Client| c.get(&format!("MedicationRequest/{m3}/_history")))),
        (
            "include",
            Box::new(move |c: &Client| {
                c.get(&format!("MedicationRequest?patient={p4}&_include=MedicationRequest:medication&_revinclude=Provenance:target"))
            }),
        ),
        (
            "patch",
            Box::new(move |c: &Client| {
                c.patch(
                    &format!("MedicationRequest/{m4}"),
                    &json!([{"op": "replace", "path": "/status", "value": "on-hold"}]),
                )
            }),
        ),
        (
            "create",
            Box::new(move |c: &Client| {
                c.post(
                    "MedicationRequest",
                    &medication_request(&p5, "322236009", "Paracetamol 500mg tablets", "active", "2025-03-01"),
                )
            }),
        ),
        (
            "batch-get",
            Box::new(move |c: &Client| {
                c.post("", &json!({"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": format!("MedicationRequest/{m5}")}}]}))
            }),
        ),
        ("everything", Box::new(move |c: &Client| c.get(&format!("Patient/{p6}/$everything")))),
        ("delete", Box::new(move |c: &Client| c.delete(&format!("MedicationRequest/{m6}")))),
        ("read-after", Box::new(move |c: &Client| c.get(&format!("MedicationRequest/{m7}")))),
    ]
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

/// Whether an answer leaks the record: its NHS number or any entry of its resources.
fn leaks(r: &Response, rec: &Record) -> bool {
    let batch_ok = r.body["entry"]
        .as_array()
        .is_some_and(|e| e.iter().any(|x| x["response"]["status"].as_str().is_some_and(|s| s.starts_with("200"))));
    r.text.contains(rec.nhs)
        || !r.ids().is_empty()
        || batch_ok
        || (r.status == 200 && r.body["resourceType"] == "MedicationRequest")
}

fn access_matrix(app: &TestApp) {
    let rec = record(app);
    let other = app.create(patient(NHS[1], "Other", "Olu"));
    let own = app.client_with(Some(app.patient_token("patient/*.rs", &rec.patient)));
    let foreign = app.client_with(Some(app.patient_token("patient/*.cruds", &other)));
    app.grant(&rec.patient, Grantee::Organization("Organization/granted".into()), "patient/*.cruds");
    let granted = provider(app, "Organization/granted", "g1");
    let ungranted = provider(app, "Organization/stranger", "s1");
    let mut expired_claims = healthfolio::auth::Claims::new(&app.base, &app.fhir, "x", "c", "system/*.cruds", None, 60);
    expired_claims.exp = chrono::Utc::now().timestamp() - 120;
    let expired = app.client_with(Some(app.hf.keys.sign(&expired_claims).expect("sign")));
    let revoked_token = app.patient_token("patient/*.cruds", &rec.patient);
    let _ = http().post(&format!("{}/oauth/revoke", app.base)).send_form(&[("token", revoked_token.as_str())]);
    let revoked = app.client_with(Some(revoked_token));
    // Expected status per route, in the order of `routes`.
    let own_ok = [200, 200, 200, 200, 200, 200, 403, 403, 200, 200, 403, 200];
    // Out of reach: reads 404, searches 200 and empty, writes refused, delete a no-op.
    let none = [404, 404, 200, 200, 200, 200, 404, 403, 200, 404, 200, 404];
    let unauth = [401; 12];
    let granted_ok = [200, 200, 200, 200, 200, 200, 200, 201, 200, 200, 200, 410];
    let callers: Vec<(&str, &Client, [u16; 12], bool)> = vec![
        ("own app (read-only)", &own, own_ok, false),
        ("another patient's app", &foreign, none, true),
        ("provider without grant", &ungranted, none, true),
        ("expired token", &expired, unauth, true),
        ("revoked token", &revoked, unauth, true),
        ("provider with grant", &granted, granted_ok, false),
    ];
    let mut failures = Vec::new();
    for (who, client, expected, must_not_leak) in callers {
        for ((route, call), want) in routes(&rec).iter().zip(expected) {
            let r = call(client);
            if r.status != want {
                failures.push(format!(
                    "{who} × {route}: got {} want {want}: {}",
                    r.status,
                    r.text.chars().take(160).collect::<String>()
                ));
            }
            if must_not_leak && *route != "create" && leaks(&r, &rec) {
                failures.push(format!(
                    "{who} × {route}: the answer leaks the record: {}",
                    r.text.chars().take(160).collect::<String>()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

both!(access_matrix);
