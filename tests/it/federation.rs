//! The roadmap stages: federated (never), hybrid (on-read), adopting a source, a dead source,
//! and events from provider systems.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::*;
use crate::support::TestApp;
use healthfolio::consent::Grantee;
use healthfolio::federation::sources::{self, NewSource, Policy};
use serde_json::json;

/// Another Healthfolio playing a provider's FHIR API, holding a prescription for NHS[0], with a
/// backend client for us; returns (source app, the credentials to register with it).
fn provider(nhs: &str) -> (TestApp, (String, String, Vec<u8>)) {
    let src = TestApp::sqlite();
    let p = src.create(patient(nhs, "Okafor", "Ada"));
    let (code, display) = SIMVASTATIN;
    let mut mr = medication_request(&p, code, display, "active", "2024-06-01");
    mr["identifier"] = json!([{"system": "https://gp.example/prescription", "value": "rx-1"}]);
    src.create(mr);
    let org = "Organization/provider-a";
    src.grant(&p, Grantee::Organization(org.into()), "patient/*.rs");
    let (pkcs8, jwks) = backend_keys("fed-1");
    let client_id = backend_client(&src, jwks, org);
    (src, (client_id, "fed-1".into(), pkcs8))
}

fn add_source(
    app: &TestApp,
    name: &str,
    base: &str,
    policy: Policy,
    creds: Option<(String, String, Vec<u8>)>,
    timeout_ms: i64,
) {
    let mut conn = app.hf.db.conn().expect("conn");
    let s = NewSource {
        name: name.into(),
        fhir_base: base.into(),
        policy,
        max_age_secs: 600,
        timeout_ms,
        types: None,
        credentials: creds,
        events_client: None,
        bulk_sync: false,
    };
    sources::add(&mut conn, &app.hf.keys, &s).expect("source");
}

fn federated_search_merges_and_marks_origin(app: &TestApp) {
    let (src, creds) = provider(NHS[0]);
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let (code, display) = PARACETAMOL;
    app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    add_source(app, "gp-a", &src.fhir, Policy::Never, Some(creds), 3000);
    let r = app.client().get(&format!("MedicationRequest?patient={p}"));
    assert_eq!(r.status, 200, "{}", r.text);
    let matches: Vec<_> = r.entries().into_iter().filter(|e| e["search"]["mode"] == "match").collect();
    assert_eq!(matches.len(), 2, "local + federated: {}", r.text);
    let remote =
        matches.iter().find(|e| e["resource"]["meta"]["tag"][0]["code"] == "gp-a").expect("marked with its origin");
    assert!(remote["resource"]["meta"]["source"].as_str().is_some_and(|s| s.starts_with(&src.fhir)));
    assert_eq!(remote["resource"]["subject"]["reference"], format!("Patient/{p}"));
    // Federated only: nothing was stored.
    assert_eq!(app.client().get("MedicationRequest?_summary=count").body["total"], 1);
    // A patient's own app sees federated results within its grant; another's does not.
    let own = app.client_with(Some(app.patient_token("patient/MedicationRequest.rs", &p)));
    assert_eq!(own.get("MedicationRequest").entries().iter().filter(|e| e["search"]["mode"] == "match").count(), 2);
}

fn on_read_keeps_copies_owned_by_the_source(app: &TestApp) {
    let (src, creds) = provider(NHS[0]);
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    add_source(app, "gp-b", &src.fhir, Policy::OnRead, Some(creds), 3000);
    let first = app.client().get(&format!("MedicationRequest?patient={p}"));
    assert_eq!(first.ids().len(), 1, "{}", first.text);
    let copy = first.ids()[0].clone();
    assert!(copy.starts_with("gp-b-"), "a persisted copy: {copy}");
    assert_eq!(
        copy_provenance(app, &copy),
        vec![format!("{}/MedicationRequest/{}", src.fhir, copy.trim_start_matches("gp-b-"))]
    );
    // Served locally now, even with the source gone.
    drop(src);
    let again = app.client().get(&format!("MedicationRequest?patient={p}"));
    assert_eq!(again.ids(), vec![copy.clone()]);
    assert!(again.entries().iter().all(|e| e["search"]["mode"] != "outcome"), "fresh copy: the source is not asked");
    // Another provider, granted write access by the patient, may not change a copy the source owns.
    let other = granted_provider(app, &p);
    let body = app.client().get(&format!("MedicationRequest/{copy}")).body;
    let r = other.put(&format!("MedicationRequest/{copy}"), &body);
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.diagnostics().contains("gp-b"));
    // So may an operator's token: only the source's own sync and feeds change its copies.
    let r = app.client().put(&format!("MedicationRequest/{copy}"), &body);
    assert_eq!(r.status, 409, "{}", r.text);
    // Adopting the source makes the copies ours: single-and-only.
    let mut conn = app.hf.db.conn().expect("conn");
    assert_eq!(sources::adopt(&mut conn, "gp-b").expect("adopt"), 1);
    assert_eq!(other.put(&format!("MedicationRequest/{copy}"), &body).status, 200);
}

/// A provider system the patient `p` granted full access to.
fn granted_provider(app: &TestApp, p: &str) -> crate::support::Client {
    app.grant(p, Grantee::Organization("Organization/other".into()), "patient/*.cruds");
    let mut claims =
        healthfolio::auth::Claims::new(&app.base, &app.fhir, "x", "other-system", "system/*.cruds", None, 300);
    claims.org = Some("Organization/other".into());
    app.client_with(Some(app.hf.keys.sign(&claims).expect("sign")))
}

/// Where the Provenance of a persisted copy says it came from (one per version written).
fn copy_provenance(app: &TestApp, copy: &str) -> Vec<String> {
    let found = app.client().get(&format!("MedicationRequest?_id={copy}&_revinclude=Provenance:target"));
    found
        .entries()
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "Provenance")
        .filter_map(|e| e["resource"]["entity"][0]["what"]["display"].as_str().map(str::to_string))
        .collect()
}

fn dead_source_never_fails_the_search(app: &TestApp) {
    // A port that accepts and never answers: the source times out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}/fhir", silent.local_addr().expect("addr"));
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let (code, display) = PARACETAMOL;
    app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    add_source(app, "slow", &base, Policy::Never, None, 300);
    add_source(app, "gone", "http://127.0.0.1:9/fhir", Policy::Never, None, 300);
    let r = app.client().get(&format!("MedicationRequest?patient={p}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.ids().len(), 1, "local results still served");
    let outcome = r.entries().into_iter().find(|e| e["search"]["mode"] == "outcome").expect("outcome entry");
    let text = outcome["resource"].to_string();
    assert!(text.contains("slow") && text.contains("gone"), "{text}");
    drop(silent);
}

fn messages_are_idempotent(app: &TestApp) {
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let (code, display) = PARACETAMOL;
    let mut mr = medication_request(&p, code, display, "active", "2025-01-02");
    mr["identifier"] = json!([{"system": "https://eps.example/prescription", "value": "EPS-1"}]);
    let msg = json!({"resourceType": "Bundle", "id": "msg-1", "type": "message", "entry": [
        {"fullUrl": "urn:uuid:9f1c6b1e-0000-4000-8000-000000000001", "resource": {"resourceType": "MessageHeader", "eventCoding": {"system": "https://fhir.nhs.uk/CodeSystem/message-event", "code": "prescription-order"}, "source": {"endpoint": "https://gp.example"}}},
        {"fullUrl": "urn:uuid:9f1c6b1e-0000-4000-8000-000000000002", "resource": mr}]});
    let c = app.client();
    let first = c.post("$process-message", &msg);
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["entry"][0]["resource"]["response"]["code"], "ok");
    let second = c.post("$process-message", &msg);
    assert_eq!(second.body, first.body, "a replay gets the first answer");
    assert_eq!(c.get("MedicationRequest?identifier=https://eps.example/prescription|EPS-1").ids().len(), 1);
    // A change to the same prescription (new message id) lands on the same resource.
    let mut changed = msg.clone();
    changed["id"] = json!("msg-2");
    changed["entry"][1]["resource"]["status"] = json!("cancelled");
    assert_eq!(c.post("$process-message", &changed).status, 200);
    let found = c.get("MedicationRequest?identifier=https://eps.example/prescription|EPS-1");
    assert_eq!(found.ids().len(), 1);
    assert_eq!(found.entries()[0]["resource"]["status"], "cancelled");
}

/// PostgreSQL takes concurrent writers: when a message's twin commits first, the loser's writes
/// roll back and it answers with the twin's response, written once. The twin is held open here
/// so the race happens every time, not by luck.
#[test]
fn postgres_message_race_answers_with_the_first() {
    let Some(app) = TestApp::postgres() else { return };
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let (code, display) = PARACETAMOL;
    let mut mr = medication_request(&p, code, display, "active", "2025-01-02");
    mr["identifier"] = json!([{"system": "https://eps.example/prescription", "value": "EPS-RACE"}]);
    let msg = json!({"resourceType": "Bundle", "id": "race-1", "type": "message", "entry": [
        {"fullUrl": "urn:uuid:9f1c6b1e-0000-4000-8000-0000000000b1", "resource": {"resourceType": "MessageHeader", "eventCoding": {"system": "https://fhir.nhs.uk/CodeSystem/message-event", "code": "prescription-order"}, "source": {"endpoint": "https://gp.example"}}},
        {"fullUrl": "urn:uuid:9f1c6b1e-0000-4000-8000-0000000000b2", "resource": mr}]});
    let first_answer = json!({"resourceType": "Bundle", "id": "the-twin's-answer", "type": "message"});
    // Message ids are kept per sender: a probe shows how this sender's are written down.
    let mut probe = msg.clone();
    probe["id"] = json!("probe-1");
    probe["entry"][1]["resource"]["identifier"][0]["value"] = json!("EPS-PROBE");
    assert_eq!(app.client().post("$process-message", &probe).status, 200);
    #[derive(diesel::QueryableByName)]
    struct Key {
        #[diesel(sql_type = diesel::sql_types::Text)]
        message_id: String,
    }
    let probe_key = app
        .hf
        .db
        .conn()
        .expect("conn")
        .first::<Key>(&healthfolio::db::Sql::new("SELECT message_id FROM processed_messages"))
        .expect("key")
        .expect("the probe was kept")
        .message_id;
    let twin_key = probe_key.replace("probe-1", "race-1");
    let mut twin = app.hf.db.conn().expect("conn");
    twin.batch("BEGIN").expect("begin");
    twin.execute(&healthfolio::db::Sql::with(
        "INSERT INTO processed_messages (message_id, response, processed_at) VALUES (?, ?, 0)",
        [healthfolio::db::Bind::Text(twin_key), healthfolio::db::Bind::Text(first_answer.to_string())],
    ))
    .expect("twin's row");
    let client = app.client();
    let answer = std::thread::scope(|s| {
        let loser = s.spawn(|| client.post("$process-message", &msg));
        // The loser has written its prescription and now waits on the twin's row.
        std::thread::sleep(std::time::Duration::from_millis(500));
        twin.batch("COMMIT").expect("commit");
        loser.join().expect("thread")
    });
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body, first_answer, "the first to commit answers for both");
    let found = app.client().get("MedicationRequest?identifier=https://eps.example/prescription|EPS-RACE");
    assert!(found.ids().is_empty(), "the loser's writes rolled back: {}", found.text);
}

/// Persisted copy fed by events: the provider system the operator named as a source's event sender
/// writes into that source's copy (the source's ids, owned by it, with the copy's Provenance), not
/// as its own records; replays change nothing, a change lands on the same copy.
fn events_feed_the_sources_copy(app: &TestApp) {
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let (pkcs8, jwks) = backend_keys("ev1");
    let sender = backend_client(app, jwks, "Organization/gp-a");
    let token = |jti: &str, scope: &str| {
        let a = assertion(app, &sender, "ev1", &pkcs8, jti, 200);
        let form = [
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", a.as_str()),
        ];
        let (status, t) = token_request(app, &form);
        assert_eq!(status, 200, "{t}");
        app.client_with(t["access_token"].as_str().map(str::to_string))
    };
    add_source(app, "gp-a", "http://127.0.0.1:9/fhir", Policy::Always, None, 500);
    let unknown = sources::Change { events_client: Some("no-such-system".into()), ..Default::default() };
    assert!(sources::update(&mut app.hf.db.conn().expect("conn"), "gp-a", &unknown).is_err(), "not a provider system");
    let bind = sources::Change { events_client: Some(sender.clone()), ..Default::default() };
    assert!(sources::update(&mut app.hf.db.conn().expect("conn"), "gp-a", &bind).expect("update"));
    let (code, display) = PARACETAMOL;
    let mut mr = medication_request("gp-p1", code, display, "active", "2025-01-02");
    mr["id"] = json!("rx-1");
    let msg = json!({"resourceType": "Bundle", "id": "gp-a-msg-1", "type": "message", "entry": [
        {"fullUrl": "urn:uuid:9f1c6b1e-0000-4000-8000-0000000000a1", "resource": {"resourceType": "MessageHeader", "eventCoding": {"system": "https://fhir.nhs.uk/CodeSystem/message-event", "code": "prescription-order"}, "source": {"endpoint": "https://gp-a.example"}}},
        {"fullUrl": "http://127.0.0.1:9/fhir/Patient/gp-p1", "resource": {"resourceType": "Patient", "id": "gp-p1", "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS[0]}]}},
        {"fullUrl": "http://127.0.0.1:9/fhir/MedicationRequest/rx-1", "resource": mr}]});
    let read_only = token("jti-ev-ro", "system/*.rs");
    let refused = read_only.post("$process-message", &msg);
    assert_eq!(refused.status, 403, "writing the copy still needs write scopes: {}", refused.text);
    let gp = token("jti-ev-rw", "system/*.cruds");
    let first = gp.post("$process-message", &msg);
    assert_eq!(first.status, 200, "{}", first.text);
    let focus: Vec<&str> = first.body["entry"][0]["resource"]["focus"]
        .as_array()
        .map(|f| f.iter().filter_map(|r| r["reference"].as_str()).collect())
        .unwrap_or_default();
    let copy = "MedicationRequest/gp-a-rx-1";
    assert_eq!(focus, vec!["Patient/gp-p1", "MedicationRequest/rx-1"], "named by the sender's ids, not ours");
    let held = app.client().get(copy);
    assert_eq!(held.status, 200);
    assert_eq!(held.body["subject"]["reference"], format!("Patient/{p}"), "the person's record is linked, not copied");
    assert_eq!(held.body["meta"]["source"], "http://127.0.0.1:9/fhir/MedicationRequest/rx-1");
    assert_eq!(copy_provenance(app, "gp-a-rx-1"), vec!["http://127.0.0.1:9/fhir/MedicationRequest/rx-1".to_string()]);
    assert_eq!(gp.post("$process-message", &msg).body, first.body, "a replay gets the first answer");
    let mut changed = msg.clone();
    changed["id"] = json!("gp-a-msg-2");
    changed["entry"][2]["resource"]["status"] = json!("cancelled");
    assert_eq!(gp.post("$process-message", &changed).status, 200);
    let history = app.client().get(&format!("{copy}/_history"));
    assert_eq!(history.entries().len(), 2, "one version per change, none for the replay");
    assert_eq!(app.client().get(copy).body["status"], "cancelled");
    // The copy belongs to the source: a write through the API is refused, naming it.
    let mut body = app.client().get(copy).body;
    body["status"] = json!("active");
    let r = granted_provider(app, &p).put(copy, &body);
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.diagnostics().contains("gp-a"), "{}", r.text);
}

/// Many messages at once (on SQLite they are committed in groups): each gets its own answer, a bad
/// one among them changes nothing and fails alone, and one message sent twice at once is written once.
fn concurrent_messages_are_written_once_each(app: &TestApp) {
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let (code, display) = PARACETAMOL;
    let message = |n: usize, subject: &str| {
        let mut mr = medication_request(subject, code, display, "active", "2025-01-02");
        mr["identifier"] = json!([{"system": "https://eps.example/prescription", "value": format!("EPS-{n}")}]);
        json!({"resourceType": "Bundle", "id": format!("msg-{n}"), "type": "message", "entry": [
            {"fullUrl": "urn:uuid:9f1c6b1e-0000-4000-8000-000000000001", "resource": {"resourceType": "MessageHeader", "eventCoding": {"system": "https://fhir.nhs.uk/CodeSystem/message-event", "code": "prescription-order"}, "source": {"endpoint": "https://gp.example"}}},
            {"fullUrl": "urn:uuid:9f1c6b1e-0000-4000-8000-000000000002", "resource": mr}]})
    };
    // 0..30 are good, 30 names a patient that is not here, 31 is message 7 again.
    let mut messages: Vec<serde_json::Value> = (0..30).map(|n| message(n, &p)).collect();
    messages.push(message(30, "no-such-patient"));
    messages.push(message(7, &p));
    // 32..40: message 8 sent eight more times at once.
    messages.extend((0..8).map(|_| message(8, &p)));
    let answers: Vec<(usize, u16, serde_json::Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let c = app.client();
                s.spawn(move || {
                    let r = c.post("$process-message", m);
                    (i, r.status, r.body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    for (i, status, body) in &answers {
        match i {
            30 => assert_eq!(*status, 422, "{body}"),
            _ => {
                assert_eq!(*status, 200, "message {i}: {body}");
                let n = match i {
                    31 => 7,
                    32.. => 8,
                    _ => *i,
                };
                assert_eq!(body["entry"][0]["resource"]["response"]["identifier"], format!("msg-{n}"));
            }
        }
    }
    let (first, again) = (&answers[7].2, &answers[31].2);
    assert_eq!(first, again, "the same message twice gets the same answer");
    assert!(answers[32..].iter().all(|(_, _, b)| *b == answers[8].2), "one answer for a message sent at once");
    let c = app.client();
    assert_eq!(c.get(&format!("MedicationRequest?patient={p}&_summary=count")).body["total"], 30);
    assert_eq!(c.get("MedicationRequest?identifier=https://eps.example/prescription|EPS-30").ids().len(), 0);
}

/// `$everything` for a linked patient also asks each source's `$everything`: merged, marked with
/// their origin, within the caller's scopes and grant; a dead source is an outcome entry.
fn everything_is_federated(app: &TestApp) {
    let (src, creds) = provider(NHS[0]);
    let remote_patient =
        src.client().get(&format!("Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}", NHS[0])).ids()[0].clone();
    src.create(allergy(&remote_patient, "high"));
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let (code, display) = PARACETAMOL;
    app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    add_source(app, "gp-a", &src.fhir, Policy::Never, Some(creds), 3000);
    add_source(app, "gone", "http://127.0.0.1:9/fhir", Policy::Never, None, 300);
    let r = app.client().get(&format!("Patient/{p}/$everything"));
    assert_eq!(r.status, 200, "{}", r.text);
    let from = |src: Option<&str>| {
        r.entries()
            .iter()
            .filter(|e| e["search"]["mode"] == "match" && e["resource"]["meta"]["tag"][0]["code"].as_str() == src)
            .map(|e| e["resource"]["resourceType"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    let mut remote = from(Some("gp-a"));
    remote.sort();
    assert_eq!(remote, vec!["AllergyIntolerance", "MedicationRequest"], "{}", r.text);
    assert!(from(None).contains(&"MedicationRequest".to_string()));
    assert!(r.text.contains("gone"), "the dead source is reported: {}", r.text);
    assert_eq!(app.client().get("AllergyIntolerance?_summary=count").body["total"], 0, "federated: nothing stored");
    // The patient's app granted prescriptions only sees no remote allergy.
    let own = app.client_with(Some(app.patient_token("patient/MedicationRequest.rs patient/Patient.rs", &p)));
    let mine = own.get(&format!("Patient/{p}/$everything"));
    assert_eq!(mine.status, 200, "{}", mine.text);
    assert!(!mine.text.contains("AllergyIntolerance"), "{}", mine.text);
    assert!(mine.text.contains("gp-a"));
}

/// Polls `path` until its search has `n` matches.
fn wait_for(app: &TestApp, path: &str, n: usize) -> crate::support::Response {
    for _ in 0..150 {
        let r = app.client().get(path);
        if r.ids().len() == n {
            return r;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{path} never reached {n} matches: {}", app.client().get(path).text);
}

/// `always`: the copy is kept in step in the background (link by NHS number, then pulls of what changed),
/// owned by the source, and searches are answered from it without asking the source.
fn always_source_syncs_in_the_background(app: &TestApp) {
    let (src, creds) = provider(NHS[0]);
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    add_source(app, "gp-a", &src.fhir, Policy::Always, Some(creds), 3000);
    let path = format!("MedicationRequest?patient={p}");
    let r = wait_for(app, &path, 1);
    let copy = &r.entries()[0]["resource"];
    assert!(copy["id"].as_str().is_some_and(|id| id.starts_with("gp-a-")), "{copy}");
    assert_eq!(copy["meta"]["tag"][0]["code"], "gp-a");
    assert_eq!(copy["subject"]["reference"], format!("Patient/{p}"), "linked to the local record");
    // A new prescription at the source arrives in a later round.
    let remote_patient =
        src.client().get(&format!("Patient?identifier={}|{}", "https://fhir.nhs.uk/Id/nhs-number", NHS[0])).ids()[0]
            .clone();
    let (code, display) = PARACETAMOL;
    src.create(medication_request(&remote_patient, code, display, "active", "2025-03-01"));
    wait_for(app, &path, 2);
    // Later rounds ask only for what changed, and read every page of it (1,100 new ones here,
    // more than one page of 1,000).
    let entries: Vec<serde_json::Value> = (0..1100)
        .map(|i| {
            let mr =
                medication_request(&remote_patient, code, display, "active", &format!("2025-04-{:02}", i % 28 + 1));
            json!({"resource": mr, "request": {"method": "POST", "url": "MedicationRequest"}})
        })
        .collect();
    let links = sources::linked(&mut app.hf.db.conn().expect("conn"), "gp-a").expect("links");
    assert_eq!(links, vec![(p.clone(), remote_patient.clone())], "the link is kept and can be listed");
    let tx = src.client().post("", &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}));
    assert_eq!(tx.status, 200, "{}", tx.text);
    let count = || app.client().get(&format!("{path}&_summary=count")).body["total"].as_i64().unwrap_or(0);
    let mut n = 0;
    for _ in 0..150 {
        n = count();
        if n == 1102 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(n, 1102, "every page of the change arrived");
    let asked = healthfolio::db::Sql::new(
        "SELECT COUNT(*) AS n FROM audit_events WHERE res_type = 'MedicationRequest' AND query LIKE '%_lastUpdated=gt%'",
    );
    src.hf.store.audit.flush();
    let incremental =
        src.hf.db.conn().expect("conn").first::<healthfolio::db::Int>(&asked).expect("q").map_or(0, |r| r.n);
    assert!(incremental > 0, "later rounds ask for changes only");
    let r = app.client().get(&path);
    // The copy belongs to the source.
    let id = r.ids()[0].clone();
    let mut body = r.entries()[0]["resource"].clone();
    body["status"] = json!("stopped");
    let t = app.patient_token("patient/*.cruds", &p);
    let refused = app.client_with(Some(t)).put(&format!("MedicationRequest/{id}"), &body);
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert!(refused.text.contains("gp-a"), "{}", refused.text);
    // Served locally: the source being gone changes nothing.
    drop(src);
    assert_eq!(count(), 1102);
}

/// An `always` source kept in step by its own Bulk Data export (`--sync bulk`): one
/// `Patient/$export` a round, only what it shares with us, then only what changed (`_since`).
fn always_source_syncs_by_bulk_export(app: &TestApp) {
    let (src, creds) = provider(NHS[0]);
    src.create(patient(NHS[1], "Not", "Shared")); // no grant to us: never exported
                                                  // Shared with us, but not a person held here: exported, and left at the source.
    let elsewhere = src.create(patient(NHS[2], "Held", "Elsewhere"));
    src.grant(&elsewhere, Grantee::Organization("Organization/provider-a".into()), "patient/*.rs");
    let (code, display) = SIMVASTATIN;
    src.create(medication_request(&elsewhere, code, display, "active", "2024-07-01"));
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    add_source(app, "gp-bulk", &src.fhir, Policy::Never, Some(creds), 3000);
    let bulk = sources::Change { bulk_sync: Some(true), policy: Some(Policy::Always), ..Default::default() };
    assert!(sources::update(&mut app.hf.db.conn().expect("conn"), "gp-bulk", &bulk).expect("update"));
    let path = format!("MedicationRequest?patient={p}");
    let r = wait_for(app, &path, 1);
    let copy = &r.entries()[0]["resource"];
    assert!(copy["id"].as_str().is_some_and(|id| id.starts_with("gp-bulk-")), "{copy}");
    assert_eq!(copy["subject"]["reference"], format!("Patient/{p}"), "linked to the local record by NHS number");
    let copied_patients =
        app.client().get("Patient?_count=100").ids().into_iter().filter(|id| id.starts_with("gp-bulk-")).count();
    assert_eq!(copied_patients, 0, "the shared patient is linked; the others never came");
    let all = app.client().get("MedicationRequest?_summary=count").body["total"].as_i64();
    assert_eq!(all, Some(1), "nothing of a person not held here was copied");
    let remote_patient =
        src.client().get(&format!("Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}", NHS[0])).ids()[0].clone();
    let (code, display) = PARACETAMOL;
    src.create(medication_request(&remote_patient, code, display, "active", "2025-03-01"));
    wait_for(app, &path, 2);
    #[derive(diesel::QueryableByName)]
    struct Job {
        #[diesel(sql_type = diesel::sql_types::Text)]
        request: String,
    }
    let jobs: Vec<Job> = src
        .hf
        .db
        .conn()
        .expect("conn")
        .load(&healthfolio::db::Sql::new("SELECT request FROM jobs WHERE kind = 'bulk-export' ORDER BY created_at"))
        .expect("jobs");
    assert!(jobs.len() >= 2, "one export a round");
    assert!(!jobs[0].request.contains("_since"), "{}", jobs[0].request);
    assert!(jobs[1..].iter().all(|j| j.request.contains("_since")), "later rounds ask for changes only");
    assert_eq!(app.client().get(&path).ids().len(), 2, "nothing duplicated by the repeated rounds");
}

/// Bulk extracts into a persisted copy: `$import` of an uploaded file and of files fetched from the
/// source's own Bulk Data export, and `load --source`; each idempotent and all-or-nothing per file.
fn bulk_extracts_feed_the_copy(app: &TestApp) {
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    add_source(app, "lab", "https://lab.example/fhir", Policy::Always, None, 3000);
    let (code, display) = SIMVASTATIN;
    let mut mr1 = medication_request("x1", code, display, "active", "2025-01-02");
    mr1["id"] = json!("rx-1");
    mr1["requester"] = json!({"reference": "Practitioner/doc-9"});
    let mut mr2 = mr1.clone();
    mr2["id"] = json!("rx-2");
    let mut remote_patient = patient(NHS[0], "Okafor", "Ada");
    remote_patient["id"] = json!("x1");
    let file = [remote_patient.to_string(), mr1.to_string(), mr2.to_string()].join("\n");
    let c = app.client();
    let upload =
        |body: &str| c.request("POST", "$import?source=lab", Some("application/fhir+ndjson"), Some(body.as_bytes()));
    let r = upload(&file);
    assert_eq!(r.status, 200, "{}", r.text);
    let path = format!("MedicationRequest?patient={p}");
    let found = c.get(&path);
    assert_eq!(found.ids().len(), 2, "{}", found.text);
    let first = found.entries()[0]["resource"].clone();
    assert_eq!(
        first["requester"]["reference"], "https://lab.example/fhir/Practitioner/doc-9",
        "a target not sent stays at the source"
    );
    assert_eq!(
        c.get(&format!("Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}", NHS[0])).ids(),
        vec![p.clone()],
        "no second Patient"
    );
    // Again: nothing new (no new versions).
    assert_eq!(upload(&file).status, 200);
    let again = c.get(&format!("MedicationRequest/{}", first["id"].as_str().expect("id")));
    assert_eq!(again.body["meta"]["versionId"], "1");
    // A file with one bad line: nothing from it, and the line is named.
    let mut mr3 = mr1.clone();
    mr3["id"] = json!("rx-3");
    let bad = [mr3.to_string(), "{not json".to_string()].join("\n");
    let refused = upload(&bad);
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(refused.text.contains("line 2"), "{}", refused.text);
    assert_eq!(c.get(&path).ids().len(), 2, "nothing from the bad file");
    // Operators only.
    let t = app.patient_token("patient/*.cruds", &p);
    assert_eq!(
        app.client_with(Some(t))
            .request("POST", "$import?source=lab", Some("application/fhir+ndjson"), Some(file.as_bytes()))
            .status,
        403
    );

    // The same through the command line's loader, from a folder.
    let dir = std::env::temp_dir().join(format!("hf-extract-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut mr4 = mr1.clone();
    mr4["id"] = json!("rx-4");
    std::fs::write(dir.join("MedicationRequest.ndjson"), mr4.to_string()).expect("write");
    let feed = healthfolio::federation::ingest::Feed { name: "lab", fhir_base: "https://lab.example/fhir" };
    healthfolio::cli::load::load_paths(&app.hf, std::slice::from_ref(&dir), Some(&feed)).expect("load --source");
    healthfolio::cli::load::load_paths(&app.hf, std::slice::from_ref(&dir), Some(&feed)).expect("again");
    assert_eq!(c.get(&path).ids().len(), 3);
    assert_eq!(copy_provenance(app, "lab-rx-4").len(), 1, "the same extract twice: one version, one Provenance");
    std::fs::write(dir.join("MedicationRequest.ndjson"), format!("{}\n{{\"resourceType\": \"Nope\"}}", mr3))
        .expect("write");
    let err =
        healthfolio::cli::load::load_paths(&app.hf, std::slice::from_ref(&dir), Some(&feed)).expect_err("bad line");
    assert!(err.to_string().contains("line 2"), "{err}");
    assert_eq!(c.get(&path).ids().len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `$import` with Parameters: files named by URL, fetched from the source's own Bulk Data export
/// with our credentials there; a URL elsewhere is refused.
fn import_fetches_files_from_the_source(app: &TestApp) {
    let (src, creds) = provider(NHS[0]);
    let (client_id, kid, pkcs8) = creds.clone();
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    add_source(app, "gp-a", &src.fhir, Policy::Always, Some(creds), 3000);
    // The export, as our client at the source.
    let a = assertion(&src, &client_id, &kid, &pkcs8, &uuid::Uuid::new_v4().to_string(), 200);
    let (_, tok) = token_request(
        &src,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.rs"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &a),
        ],
    );
    let at_src =
        src.client_with(tok["access_token"].as_str().map(str::to_string)).with_header("Prefer", "respond-async");
    let kick = at_src.get("Patient/$export?_type=Patient,MedicationRequest");
    assert_eq!(kick.status, 202, "{}", kick.text);
    let status = kick.header("content-location").expect("location").to_string();
    let manifest = (0..200)
        .find_map(|_| {
            let r = at_src.get(&status);
            (r.status == 200).then_some(r.body).or_else(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                None
            })
        })
        .expect("export finished");
    let inputs: Vec<serde_json::Value> = manifest["output"].as_array().expect("output").iter()
        .map(|o| json!({"name": "input", "part": [{"name": "type", "valueCode": o["type"]}, {"name": "url", "valueUri": o["url"]}]}))
        .collect();
    let mut params =
        json!({"resourceType": "Parameters", "parameter": [{"name": "inputSource", "valueUri": src.fhir}]});
    params["parameter"].as_array_mut().expect("array").extend(inputs);
    let r = app.client().post("$import", &params);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.client().get(&format!("MedicationRequest?patient={p}")).ids().len(), 1);
    let elsewhere = json!({"resourceType": "Parameters", "parameter": [{"name": "inputSource", "valueUri": src.fhir},
        {"name": "input", "part": [{"name": "type", "valueCode": "Patient"}, {"name": "url", "valueUri": "http://127.0.0.1:9/steal.ndjson"}]}]});
    let refused = app.client().post("$import", &elsewhere);
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(refused.text.contains("is not at the source"), "{}", refused.text);
}

both!(
    everything_is_federated,
    always_source_syncs_in_the_background,
    always_source_syncs_by_bulk_export,
    bulk_extracts_feed_the_copy,
    import_fetches_files_from_the_source,
    federated_search_merges_and_marks_origin,
    on_read_keeps_copies_owned_by_the_source,
    dead_source_never_fails_the_search,
    messages_are_idempotent,
    events_feed_the_sources_copy,
    concurrent_messages_are_written_once_each
);
