//! Bad input that once got a 5xx or no answer at all: each is refused with the right 4xx, as an
//! OperationOutcome on the API and a page on the portal, the same on both databases.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::TestApp;
use serde_json::json;

/// A body that is JSON but not an object is no resource: every write refuses it with 400, before
/// anything indexes into it.
fn non_object_bodies_are_refused(app: &TestApp) {
    let c = app.client();
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let a = app.create(allergy(&p, "high"));
    for body in [&b"[]"[..], b"\"x\"", b"1", b"null"] {
        let shown = String::from_utf8_lossy(body);
        for (method, path) in [
            ("PUT", format!("AllergyIntolerance?_id={a}")),
            ("PUT", format!("AllergyIntolerance/{a}")),
            ("POST", "AllergyIntolerance".to_string()),
            ("POST", String::new()),
        ] {
            let r = c.request(method, &path, Some("application/fhir+json"), Some(body));
            assert_eq!(r.status, 400, "{method} {path} with {shown}: {}", r.text);
            assert_eq!(r.body["resourceType"], "OperationOutcome", "{method} {path} with {shown}");
        }
        // The same body as a Bundle entry's resource, in a batch and in a transaction.
        let resource: serde_json::Value = serde_json::from_slice(body).expect("json");
        for kind in ["batch", "transaction"] {
            let bundle = json!({"resourceType": "Bundle", "type": kind, "entry": [
                {"resource": resource, "request": {"method": "PUT", "url": format!("AllergyIntolerance?_id={a}")}}]});
            let r = c.post("", &bundle);
            assert_eq!(r.status, 400, "{kind} entry with {shown}: {}", r.text);
            assert_eq!(r.body["resourceType"], "OperationOutcome", "{kind} entry with {shown}");
        }
    }
    assert_eq!(c.get(&format!("AllergyIntolerance/{a}")).body["meta"]["versionId"], "1", "nothing was written");
}

/// A NUL (U+0000) is text PostgreSQL cannot store or compare (SQLite can): wherever one arrives
/// (a JSON string, a search value, a path, a header, a Bundle entry, a form field), both
/// databases answer 400 alike.
fn nul_characters_are_refused_alike(app: &TestApp) {
    let c = app.client();
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let (code, display) = PARACETAMOL;
    let mut named = patient(NHS[1], "a\u{0}b", "Ben");
    let with_nul = |mut v: serde_json::Value| {
        v["note"] = json!([{"text": "take\u{0}with food"}]);
        v
    };
    let entry_search = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?name=a%00b"}}]});
    let conditional_ref = {
        let mut mr = medication_request(&p, code, display, "active", "2025-01-02");
        mr["subject"] = json!({"reference": "Patient?name=%00"});
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": mr, "request": {"method": "POST", "url": "MedicationRequest"}}]})
    };
    let mut imported = patient(NHS[2], "Nowak", "Ola");
    imported["id"] = json!("imported");
    let mut imported_mr = with_nul(medication_request("imported", code, display, "active", "2025-01-02"));
    imported_mr["id"] = json!("imported-mr");
    let ndjson = format!("{imported}\n{imported_mr}\n");
    let cases = vec![
        ("a string in a body", c.post("Patient", &named)),
        (
            "a key in a body",
            c.post("Patient", &{
                named["name"][0] = json!({"family": "Brown", "x\u{0}": 1});
                named
            }),
        ),
        ("a note in an update", c.put(&format!("Patient/{p}"), &with_nul(json!({"resourceType": "Patient", "id": p})))),
        ("a token search", c.get("MedicationRequest?status=%00")),
        ("a string search", c.get("Patient?name=a%00b")),
        ("a search parameter name", c.get("Patient?na%00me=x")),
        ("an id in the path", c.get("Patient/a%00b")),
        ("a history path", c.get("Patient/a%00b/_history")),
        (
            "a form search",
            c.request("POST", "Patient/_search", Some("application/x-www-form-urlencoded"), Some(b"name=a%00b")),
        ),
        (
            "If-None-Exist",
            c.clone().with_header("If-None-Exist", "identifier=%00").post("Patient", &patient(NHS[2], "C", "D")),
        ),
        ("a conditional update", c.put("Patient?name=%00", &patient(NHS[2], "C", "D"))),
        ("a Bundle entry's search", c.post("", &entry_search)),
        ("a conditional reference", c.post("", &conditional_ref)),
        (
            "an NDJSON import",
            c.request("POST", "$phr-import", Some("application/fhir+ndjson"), Some(ndjson.as_bytes())),
        ),
    ];
    for (name, r) in cases {
        let status = match r.body["type"].as_str() {
            Some("batch-response") => r.body["entry"][0]["response"]["status"].as_str().unwrap_or_default().to_string(),
            _ => r.status.to_string(),
        };
        assert!(status.starts_with("400"), "{name}: {status} {}", r.text);
        assert!(r.text.contains("U+0000"), "{name}: the answer says what is wrong: {}", r.text);
    }
    // A form on the portal: a page, not a database error.
    patient_with_login(app, NHS[3], "ada@example.org");
    let (mut b, _) = crate::portal::sign_in(app, "ada@example.org");
    let csrf = b.get(&format!("{}/portal/medicines/add", app.base)).field("csrf");
    let form = [
        ("csrf", csrf.as_str()),
        ("medicine", "329653008"),
        ("dose", "1 tablet\u{0}"),
        ("start-day", "1"),
        ("start-month", "10"),
        ("start-year", "2025"),
    ];
    let r = b.post(&format!("{}/portal/medicines/add", app.base), &form);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("<html") && r.body.contains("U+0000"), "{}", r.body);
    assert_eq!(c.get("MedicationStatement?_summary=count").body["total"], 0, "nothing was written");
    assert_eq!(c.get("Patient?_summary=count").body["total"], 2, "no other Patient was written");
}

/// A batch creates, updates, patches and deletes like a transaction, each entry on its own: one
/// entry's failure, such as a reference to another entry (batch entries must not depend on each
/// other), leaves the others written.
fn batch_entries_write_independently(app: &TestApp) {
    let c = app.client();
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let (code, display) = PARACETAMOL;
    let allergy_id = app.create(allergy(&p, "high"));
    let mut changed = c.get(&format!("AllergyIntolerance/{allergy_id}")).body;
    changed["criticality"] = json!("low");
    let stopped = app.create(medication_request(&p, code, display, "active", "2025-01-01"));
    let gone = app.create(medication_request(&p, code, display, "active", "2025-01-03"));
    let patch = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        json!([{"op": "replace", "path": "/status", "value": "stopped"}]).to_string(),
    );
    let mut dependent = medication_request(&p, code, display, "active", "2025-01-04");
    dependent["subject"] = json!({"reference": "urn:uuid:5b0a3c52-7a1f-4f0e-9d3e-1c2b3a4d5e6f"});
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"fullUrl": "urn:uuid:5b0a3c52-7a1f-4f0e-9d3e-1c2b3a4d5e6f", "resource": patient(NHS[1], "Brown", "Ben"),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": medication_request(&p, code, display, "active", "2025-01-02"), "request": {"method": "POST", "url": "MedicationRequest"}},
        {"resource": dependent, "request": {"method": "POST", "url": "MedicationRequest"}},
        {"resource": changed, "request": {"method": "PUT", "url": format!("AllergyIntolerance/{allergy_id}")}},
        {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": patch},
         "request": {"method": "PATCH", "url": format!("MedicationRequest/{stopped}")}},
        {"request": {"method": "DELETE", "url": format!("MedicationRequest/{gone}")}},
        {"resource": patient(NHS[0], "Twin", "Ada"), "request": {"method": "POST", "url": "Patient"}}]});
    let r = c.post("", &bundle);
    assert_eq!((r.status, &r.body["type"]), (200, &json!("batch-response")), "{}", r.text);
    let responses: Vec<serde_json::Value> = r.entries().iter().map(|e| e["response"].clone()).collect();
    let status = |i: usize| responses[i]["status"].as_str().unwrap_or_default().to_string();
    let statuses: Vec<String> = (0..responses.len()).map(status).collect();
    assert!(statuses[0].starts_with("201") && statuses[1].starts_with("201"), "{statuses:?}");
    assert!(statuses[2].starts_with("4"), "a reference to another entry is refused: {statuses:?}");
    assert!(
        responses[2]["outcome"]["issue"][0]["diagnostics"].as_str().is_some_and(|d| d.contains("batch")),
        "{}",
        responses[2]
    );
    assert!(
        statuses[3].starts_with("200") && statuses[4].starts_with("200") && statuses[5].starts_with("204"),
        "{statuses:?}"
    );
    assert!(statuses[6].starts_with("409"), "one record per person, for this entry only: {statuses:?}");
    for (i, rtype) in [(0, "Patient"), (1, "MedicationRequest")] {
        let location = responses[i]["location"].as_str().expect("location");
        assert!(location.starts_with(&format!("{rtype}/")) && location.ends_with("/_history/1"), "{location}");
        assert_eq!(responses[i]["etag"], "W/\"1\"");
        let id = location.split('/').nth(1).expect("id");
        assert_eq!(c.get(&format!("{rtype}/{id}")).status, 200, "{rtype}/{id} was written");
    }
    assert_eq!(c.get(&format!("AllergyIntolerance/{allergy_id}")).body["criticality"], "low");
    assert_eq!(c.get(&format!("MedicationRequest/{stopped}")).body["status"], "stopped");
    assert_eq!(c.get(&format!("MedicationRequest/{gone}")).status, 410);
    assert_eq!(
        c.get(&format!("MedicationRequest?patient={p}&_summary=count")).body["total"],
        2,
        "the dependent entry wrote nothing"
    );
}

/// A Patient with a portal login is not deleted from under it: the operator closes the account
/// first. And a portal whose patient's record is absent anyway (a restore, an old deletion) says
/// so on a page, keeping sign-out, rather than failing.
fn a_record_with_a_login_is_kept_and_its_absence_is_a_page(app: &TestApp) {
    let c = app.client();
    let p = patient_with_login(app, NHS[0], "ada@example.org");
    let r = c.delete(&format!("Patient/{p}"));
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.diagnostics().contains("account"), "{}", r.text);
    let in_batch = c.post(
        "",
        &json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "DELETE", "url": format!("Patient/{p}")}}]}),
    );
    assert_eq!(in_batch.body["entry"][0]["response"]["status"], "409", "{}", in_batch.text);
    assert_eq!(c.get(&format!("Patient/{p}")).status, 200, "the record is still there");
    // The database keeps the rule whatever the path: even a statement at a SQL prompt is refused.
    let mut conn = app.hf.db.conn().expect("conn");
    let gone = healthfolio::db::Sql::with(
        "UPDATE resources SET deleted = 1 WHERE res_type = 'Patient' AND id = ?",
        [healthfolio::db::Bind::Text(p.clone())],
    );
    assert!(conn.execute(&gone).is_err_and(|e| e.is_refusal()), "the database refuses it too");
    // A login to a deleted record (as a restore of an older deletion leaves it), and to one never
    // held here.
    let q = app.create(patient(NHS[1], "Gone", "Carl"));
    assert_eq!(c.delete(&format!("Patient/{q}")).status / 100, 2);
    let accounts = [("carl@example.org", format!("Patient/{q}")), ("ben@example.org", "Patient/nowhere".into())];
    for (email, who) in &accounts {
        healthfolio::auth::accounts::create(&mut conn, "patient", email, PASSWORD, who, None).expect("account");
    }
    drop(conn);
    for email in ["carl@example.org", "ben@example.org"] {
        let (mut b, home) = crate::portal::sign_in(app, email);
        for (path, page) in [
            ("/portal", Some(home)),
            ("/portal/print", None),
            ("/portal/record/download", None),
            ("/portal/medicines", None),
            ("/portal/record", None),
            ("/portal/transfer", None),
        ] {
            let page = page.unwrap_or_else(|| b.get(&format!("{}{path}", app.base)));
            assert_eq!(page.status, 404, "{email} {path}: {}", page.body);
            assert!(page.body.contains("not available here"), "{email} {path}: {}", page.body);
            assert!(page.body.contains("action=\"/portal/logout\""), "{email} {path}: sign-out kept");
        }
        let csrf = b.get(&format!("{}/portal", app.base)).field("csrf");
        let out = b.post(&format!("{}/portal/logout", app.base), &[("csrf", &csrf)]);
        assert_eq!(out.status, 303, "{email}: signed out");
        assert_eq!(b.get(&format!("{}/portal", app.base)).status, 303, "{email}: the session has ended");
    }
}

/// What a patient types as their other provider's address is theirs to correct: a 400 page with
/// the message next to the field, not a 502 blaming the other side.
fn a_bad_transfer_address_is_the_patients_to_fix(app: &TestApp) {
    patient_with_login(app, NHS[0], "ada@example.org");
    let (mut b, _) = crate::portal::sign_in(app, "ada@example.org");
    let csrf = b.get(&format!("{}/portal/transfer", app.base)).field("csrf");
    for address in ["", "   ", "not an address", "ftp://records.example/fhir", "https://"] {
        let r = b
            .post(&format!("{}/portal/transfer", app.base), &[("csrf", &csrf), ("address", address), ("mode", "copy")]);
        assert_eq!(r.status, 400, "'{address}': {}", r.body);
        assert!(
            r.body.contains("id=\"address-error\"") && r.body.contains("aria-invalid=\"true\""),
            "'{address}': {}",
            r.body
        );
    }
}

/// Sends `head` and `body` on a raw connection, then waits at most 20 s for the answer's status
/// line: a body that never completes must still be answered.
fn raw_status(app: &TestApp, head: &str, body: &[u8]) -> Option<String> {
    use std::io::{Read, Write};
    let addr = app.base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).expect("timeout");
    s.write_all(head.as_bytes()).and_then(|_| s.write_all(body)).expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().filter(|l| l.starts_with("HTTP/")).map(str::to_string)
}

/// A body cut short (a multipart without its closing boundary, or fewer bytes than announced) is
/// answered within bounded time: 400, a page on the portal and an OperationOutcome on the API.
/// The database plays no part: SQLite, with the pause allowed shortened to 2 s.
#[test]
fn truncated_bodies_are_answered() {
    let app = &TestApp::sqlite_configured(|o| o.body_timeout = Some(2));
    patient_with_login(app, NHS[0], "ada@example.org");
    let mut b = Browser::default();
    let login = b.get(&format!("{}/portal/login", app.base));
    let form =
        [("email", "ada@example.org"), ("password", PASSWORD), ("csrf", &login.field("csrf")), ("continue", "/portal")];
    let signed = b.post(&format!("{}/oauth/login", app.base), &form);
    let cookie = signed.set_cookie(healthfolio::auth::session::COOKIE).expect("session cookie");
    let cookie = cookie.split(';').next().expect("name=value");
    let csrf = b.get(&format!("{}/portal/record", app.base)).field("csrf");
    let started = std::time::Instant::now();
    // The multipart's bytes all arrive (Content-Length matches), but its closing boundary never does.
    let multipart = format!(
        "--XYZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--XYZ\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"r.tar\"\r\nContent-Type: application/x-tar\r\n\r\nabc"
    );
    let head = format!(
        "POST /portal/record/import HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Type: multipart/form-data; boundary=XYZ\r\nContent-Length: {}\r\n\r\n",
        multipart.len()
    );
    let status = raw_status(app, &head, multipart.as_bytes());
    assert!(status.as_deref().is_some_and(|l| l.contains(" 400 ")), "truncated multipart: {status:?}");
    // Fewer bytes than announced, on the portal and on the API.
    let head = format!(
        "POST /portal/record/import HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Type: multipart/form-data; boundary=XYZ\r\nContent-Length: {}\r\n\r\n",
        multipart.len() + 100
    );
    let status = raw_status(app, &head, multipart.as_bytes());
    assert!(status.as_deref().is_some_and(|l| l.contains(" 400 ")), "short multipart: {status:?}");
    let token = app.admin();
    let json = br#"{"resourceType": "Patient", "name": [{"family": "Okafor"#;
    let head = format!(
        "POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\n\r\n",
        json.len() + 100
    );
    let status = raw_status(app, &head, json);
    assert!(status.as_deref().is_some_and(|l| l.contains(" 400 ") || l.contains(" 408 ")), "short JSON: {status:?}");
    let form = b"email=ada%40example.org&pass";
    let head = format!(
        "POST /oauth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        form.len() + 100
    );
    let status = raw_status(app, &head, form);
    assert!(status.as_deref().is_some_and(|l| l.contains(" 400 ")), "short form: {status:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "answered in bounded time: {:?}",
        started.elapsed()
    );
}

/// The operator closes the login first (`patient close-account`): its sessions end, the apps it
/// authorised lose access at once, it cannot sign in again, and the record can then be deleted.
fn closing_the_login_lets_the_record_go(app: &TestApp) {
    use oauth2::TokenResponse;
    let (p, _, token) = launch(app, NHS[0], "ada@example.org");
    let by_app = app.client_with(Some(token.access_token().secret().clone()));
    let reads = format!("MedicationRequest?patient={p}");
    assert_eq!(by_app.get(&reads).status, 200);
    let (mut browser, home) = crate::portal::sign_in(app, "ada@example.org");
    assert_eq!(home.status, 200);
    assert_eq!(app.client().delete(&format!("Patient/{p}")).status, 409);

    let op = healthfolio::access::AccessContext::operator("patient close-account");
    let closed = app.hf.db.transaction(|c| healthfolio::auth::accounts::close(c, &op, "ada@example.org"));
    assert!(closed.expect("close").is_some());
    assert_eq!(by_app.get(&reads).status, 401, "the app's token stopped at once");
    assert_eq!(browser.get(&format!("{}/portal", app.base)).status, 303, "the session ended");
    let mut again = Browser::default();
    let login = again.get(&format!("{}/portal/login", app.base));
    let form =
        [("email", "ada@example.org"), ("password", PASSWORD), ("csrf", &login.field("csrf")), ("continue", "/portal")];
    let r = again.post(&format!("{}/oauth/login", app.base), &form);
    assert_ne!(r.location.as_deref(), Some("/portal"), "no sign-in with a closed login");
    assert_eq!(app.client().delete(&format!("Patient/{p}")).status / 100, 2, "now the record may go");
}

both!(
    closing_the_login_lets_the_record_go,
    a_bad_transfer_address_is_the_patients_to_fix,
    non_object_bodies_are_refused,
    nul_characters_are_refused_alike,
    batch_entries_write_independently,
    a_record_with_a_login_is_kept_and_its_absence_is_a_page,
);
