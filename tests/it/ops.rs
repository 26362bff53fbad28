//! Operations: backup and restore across backends, several replicas on one database, health and metrics.

use crate::both;
use crate::fixtures::*;
use crate::oauth_support::published_keys;
use crate::support::TestApp;
use healthfolio::auth::keys::SigningAlg;
use healthfolio::consent::Grantee;
use serde_json::json;

fn backup_restore_keeps_record_versions_and_audit(app: &TestApp) {
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let (code, display) = PARACETAMOL;
    let mr = app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    let mut changed = app.client().get(&format!("MedicationRequest/{mr}")).body;
    changed["status"] = json!("stopped");
    assert_eq!(app.client().put(&format!("MedicationRequest/{mr}"), &changed).status, 200);
    app.client().get(&format!("Patient/{p}"));
    // A record that moved away, a federated source and a processed event come along too.
    let moved = app.create(patient(NHS[1], "Moved", "Away"));
    let op = healthfolio::auth::AccessContext::operator("test");
    healthfolio::fhir::store::close_record(&app.hf.store, &op, &moved, "https://b.example/fhir/Patient/1")
        .expect("close");
    let source = healthfolio::federation::sources::NewSource {
        name: "gp-x".into(),
        fhir_base: "https://gp-x.example/fhir".into(),
        policy: healthfolio::federation::sources::Policy::OnRead,
        max_age_secs: 600,
        timeout_ms: 500,
        types: None,
        credentials: None,
        events_client: None,
        bulk_sync: false,
    };
    healthfolio::federation::sources::add(&mut app.hf.db.conn().expect("conn"), &app.hf.keys, &source).expect("source");
    let msg = json!({"resourceType": "Bundle", "id": "backup-msg", "type": "message", "entry": [
        {"fullUrl": "urn:uuid:9f1c6b1e-0000-4000-8000-000000000001", "resource": {"resourceType": "MessageHeader", "eventCoding": {"system": "https://fhir.nhs.uk/CodeSystem/message-event", "code": "prescription-order"}, "source": {"endpoint": "https://gp.example"}}},
        {"fullUrl": "urn:uuid:9f1c6b1e-0000-4000-8000-000000000002", "resource": medication_request(&p, code, display, "active", "2025-02-02")}]});
    let answered = app.client().post("$process-message", &msg);
    assert_eq!(answered.status, 200, "{}", answered.text);
    // The JWKS's first reader made the RS256 key for ID tokens.
    let rsa = published_keys(app).into_iter().find(|k| k["alg"] == "RS256").expect("an RS256 key");
    app.hf.store.audit.flush();
    let mut file = Vec::new();
    healthfolio::db::backup::backup(&app.hf.db, &mut file).expect("backup");

    // Restore into a fresh SQLite database, whatever the source, then serve it as the same service.
    let empty = TestApp::sqlite();
    empty.hf.restore(file.as_slice()).expect("restore");
    let restored = empty.replica_of_service(app);
    let before = app.client().get(&format!("MedicationRequest/{mr}"));
    let after = restored.client_with(Some(app.admin())).get(&format!("MedicationRequest/{mr}"));
    assert_eq!(after.status, 200, "a token of the source verifies: its keys came along");
    assert!(published_keys(&restored).contains(&rsa), "the RS256 key came along: {rsa}");
    let id_token = restored.hf.keys.sign_with(&json!({"sub": "x"}), SigningAlg::Rs256).expect("sign");
    let header = jsonwebtoken::decode_header(&id_token).expect("jwt");
    assert_eq!(header.kid.as_deref(), rsa["kid"].as_str(), "its private half too: the restored service signs with it");
    assert_eq!(after.header("etag"), Some("W/\"2\""));
    assert_eq!(before.body, after.body);
    let history = restored.client_with(Some(app.admin())).get(&format!("MedicationRequest/{mr}/_history"));
    assert_eq!(history.entries().len(), 2);
    let audit_a = app.client().get(&format!("AuditEvent?patient={p}&_count=1000")).entries().len();
    let audit_b =
        restored.client_with(Some(app.admin())).get(&format!("AuditEvent?patient={p}&_count=1000")).entries().len();
    assert!(audit_b >= audit_a.saturating_sub(1) && audit_a > 0, "{audit_a} vs {audit_b}");
    let admin = restored.client_with(Some(app.admin()));
    assert_eq!(admin.post("$process-message", &msg).body, answered.body, "a replayed event is still known");
    let names: Vec<String> =
        healthfolio::federation::sources::active(&mut restored.hf.db.conn().expect("conn"), &restored.hf.keys)
            .expect("sources")
            .into_iter()
            .map(|s| s.name)
            .collect();
    assert_eq!(names, vec!["gp-x".to_string()]);
    let closed: i64 = restored
        .hf
        .db
        .conn()
        .expect("conn")
        .first::<healthfolio::db::Int>(&healthfolio::db::Sql::new("SELECT COUNT(*) AS n FROM closed_records"))
        .expect("count")
        .map_or(0, |r| r.n);
    assert_eq!(closed, 1, "the moved record stays closed");
    let again = admin.post("Patient", &patient(NHS[0], "Okafor", "Ada"));
    assert_eq!(again.status, 409, "the restored record still holds its NHS number: {}", again.text);
    assert_eq!(admin.post("Patient", &patient(NHS[1], "Moved", "Away")).status, 201, "a closed record holds none");
    use healthfolio::db::backup::BackupError;
    let refused = restored.hf.restore(file.as_slice());
    assert!(matches!(refused, Err(BackupError::NotEmpty(_))), "restore refuses a non-empty database: {refused:?}");
    // A file that is no backup is the file's fault, never "database unavailable".
    let garbage = TestApp::sqlite().hf.restore(&b"not a backup at all"[..]);
    assert!(matches!(garbage, Err(BackupError::File(_))), "{garbage:?}");
}

/// Audit rows are evidence: the database refuses to change or remove one, whoever asks.
fn audit_rows_are_append_only(app: &TestApp) {
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    app.client().get(&format!("Patient/{p}"));
    app.hf.store.audit.flush();
    let mut conn = app.hf.db.conn().expect("conn");
    let count = |conn: &mut healthfolio::db::Conn| {
        conn.first::<healthfolio::db::Int>(&healthfolio::db::Sql::new("SELECT COUNT(*) AS n FROM audit_events"))
            .expect("count")
            .map_or(0, |r| r.n)
    };
    let before = count(&mut conn);
    assert!(before > 0);
    let mut changes = vec!["UPDATE audit_events SET action = 'R', outcome = 0", "DELETE FROM audit_events"];
    if conn.backend() == healthfolio::db::Backend::Postgres {
        changes.push("TRUNCATE audit_events");
    }
    for change in changes {
        let refused = conn.execute(&healthfolio::db::Sql::new(change));
        assert!(refused.is_err(), "{change} must be refused");
        assert!(format!("{:?}", refused).contains("append-only"), "{refused:?}");
    }
    assert_eq!(count(&mut conn), before);
    let appended = app.client().get(&format!("Patient/{p}"));
    assert_eq!(appended.status, 200);
    app.hf.store.audit.flush();
    assert_eq!(count(&mut conn), before + 1, "appending still works");
}

/// Reading the access log is itself logged, as a search without parameters: its AuditEvent names
/// no query rather than an empty one (FHIR strings and base64Binary values may not be empty).
fn parameterless_search_logs_no_empty_query(app: &TestApp) {
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let c = app.client();
    assert_eq!(c.get(&format!("AuditEvent?patient={p}")).status, 200);
    app.hf.store.audit.flush();
    let log = c.get(&format!("AuditEvent?patient={p}"));
    let searches: Vec<serde_json::Value> = log
        .entries()
        .into_iter()
        .map(|e| e["resource"].clone())
        .filter(|r| r["subtype"][0]["code"] == "search-type")
        .collect();
    assert!(!searches.is_empty(), "the first read of the log is in it: {}", log.text);
    for event in searches {
        for entity in event["entity"].as_array().expect("entity") {
            assert!(entity["query"] != "" && entity["description"] != "", "empty strings in {event}");
        }
    }
}

fn health_and_metrics(app: &TestApp) {
    let c = app.client_with(None);
    assert_eq!(c.get(&format!("{}/healthz", app.base)).status, 200);
    assert_eq!(c.get(&format!("{}/readyz", app.base)).body["status"], "ready");
    let r = app.client().get("Patient");
    assert!(r.header("x-request-id").is_some_and(|id| id.len() >= 16));
    let m = c.get(&format!("{}/metrics", app.base));
    assert!(
        m.text.contains(
            "healthfolio_http_request_duration_seconds_count{method=\"GET\",route=\"/fhir/{type}\",status=\"200\"}"
        ),
        "{}",
        m.text
    );
    assert!(m.text.contains("healthfolio_db_pool_connections"));
    assert!(m.text.contains("\nhealthfolio_http_requests_in_flight 1\n"), "only the metrics request is in flight");
}

both!(
    backup_restore_keeps_record_versions_and_audit,
    audit_rows_are_append_only,
    parameterless_search_logs_no_empty_query,
    health_and_metrics
);

/// Two servers on one PostgreSQL database behave as one service.
#[test]
fn replicas_share_keys_grants_and_jobs() {
    let Some(a) = TestApp::postgres() else { return };
    let b = a.replica();
    let p = a.create(patient(NHS[0], "Okafor", "Ada"));
    let (code, display) = PARACETAMOL;
    let mr = a.create(medication_request(&p, code, display, "active", "2025-01-02"));
    // A token signed by one replica is accepted by the other.
    assert_eq!(b.client_with(Some(a.admin())).get(&format!("MedicationRequest/{mr}")).status, 200);
    // A grant revoked through one replica is refused by the other on the next request.
    let token = a.patient_token("patient/*.rs", &p);
    assert_eq!(b.client_with(Some(token.clone())).get(&format!("MedicationRequest/{mr}")).status, 200);
    let mut conn = a.hf.db.conn().expect("conn");
    let g = healthfolio::consent::active_for(&mut conn, &p, &Grantee::Client("test-client".into()))
        .expect("q")
        .expect("grant");
    healthfolio::consent::revoke(&mut conn, &g.id).expect("revoke");
    assert_eq!(b.client_with(Some(token)).get(&format!("MedicationRequest/{mr}")).status, 401);
    // A job whose worker died (lease expired mid-run) is finished by another replica.
    let admin = a.client_with(Some(a.admin()));
    let kick = admin.get("$export?_type=MedicationRequest");
    assert_eq!(kick.status, 202, "{}", kick.text);
    let status = kick.header("content-location").expect("location").to_string();
    let id = status.rsplit('/').next().expect("id").to_string();
    use healthfolio::db::{Bind, Sql};
    conn.execute(&Sql::with(
        "UPDATE jobs SET status = 'running', leased_by = 'dead-worker', lease_until = 0 WHERE id = ?",
        [Bind::Text(id)],
    ))
    .expect("simulate");
    let done = (0..200).find_map(|_| {
        let r = b.client_with(Some(a.admin())).get(&status);
        (r.status == 200).then_some(r.body).or_else(|| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            None
        })
    });
    let manifest = done.expect("another replica finished the job");
    assert_eq!(manifest["output"][0]["count"], 1);
}

/// The OpenAPI document parses, its page renders, and every path it lists is served.
#[test]
fn openapi_describes_what_is_served() {
    let app = TestApp::sqlite();
    let c = app.client_with(None);
    let spec = c.get(&format!("{}/openapi.json", app.base));
    assert_eq!(spec.status, 200);
    assert_eq!(spec.body["openapi"], "3.0.3");
    let page = c.get(&format!("{}/openapi", app.base));
    assert_eq!(page.status, 200);
    assert!(page.text.contains("/oauth/token"));
    for (path, ops) in spec.body["paths"].as_object().expect("paths") {
        let concrete = path.replace("{id}", "x").replace("{name}", "x.ndjson");
        for method in ops.as_object().expect("ops").keys() {
            let r = c.request(
                &method.to_uppercase(),
                &format!("{}{concrete}", app.base),
                Some("application/x-www-form-urlencoded"),
                Some(b""),
            );
            let routed = r.status != 404 || r.body["resourceType"] == "OperationOutcome";
            assert!(routed && r.status != 405, "{method} {path} is not served: {}", r.status);
        }
    }
}

/// SQLite plans from the fixed statistics of the `planner_statistics` migration: a search by
/// identifier starts from the token index on a new database, not from every resource of the type.
#[test]
fn sqlite_plans_a_search_by_identifier_from_the_token_index() {
    #[derive(diesel::QueryableByName)]
    struct Step {
        #[diesel(sql_type = diesel::sql_types::Text)]
        detail: String,
    }
    let app = TestApp::sqlite();
    let q = healthfolio::db::Sql::new(
        "EXPLAIN QUERY PLAN SELECT r.rid FROM resources r WHERE r.res_type = 'MedicationRequest' AND r.deleted = 0 \
         AND r.rid IN (SELECT rid FROM idx_token WHERE param = 'identifier' AND code = 'x' AND system = 'y') \
         ORDER BY r.rid LIMIT 3",
    );
    let plan: Vec<String> =
        app.hf.db.conn().expect("conn").load::<Step>(&q).expect("plan").into_iter().map(|s| s.detail).collect();
    assert!(plan.iter().any(|s| s.contains("SEARCH r USING INTEGER PRIMARY KEY")), "{plan:?}");
    assert!(plan.iter().any(|s| s.contains("idx_token_lookup")), "{plan:?}");
}

/// Replicas starting together on a new PostgreSQL database: each runs the migrations at start,
/// and they take turns instead of tripping over each other's tables.
#[test]
fn replicas_starting_together_migrate_once() {
    let Some(db) = crate::support::PgDatabase::create() else { return };
    let results: Vec<Result<usize, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let url = db.url.clone();
                s.spawn(move || {
                    let pool = healthfolio::db::Db::open(&url, 1).map_err(|e| e.to_string())?;
                    pool.migrate().map_err(|e| e.to_string())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let ran: Vec<usize> = results.iter().map(|r| *r.as_ref().expect("migrations")).collect();
    assert_eq!(ran.iter().filter(|n| **n > 0).count(), 1, "one replica migrated: {ran:?}");
}

/// Addresses nothing serves, and forms that cannot be read, get a clear answer in the caller's
/// language: a page for people, an OperationOutcome for FHIR clients.
#[test]
fn unknown_addresses_and_unreadable_forms() {
    let app = TestApp::sqlite();
    let c = app.client_with(None);
    let page = c.get(&format!("{}/portal/no-such-page", app.base));
    assert_eq!(page.status, 404);
    assert!(page.text.contains("Page not found"), "{}", page.text);
    let api = c.get(&format!("{}/fhir/Patient/x/_history/1/extra/parts", app.base));
    assert_eq!(api.status, 404);
    assert_eq!(api.body["resourceType"], "OperationOutcome", "{}", api.text);
    let form = c.request(
        "POST",
        &format!("{}/oauth/login", app.base),
        Some("application/x-www-form-urlencoded"),
        Some(b"email=x"),
    );
    assert_eq!(form.status, 400);
    assert!(form.text.contains("This form could not be read"), "{}", form.text);
}
