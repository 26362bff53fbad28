//! The promises the fast paths keep: a read is answered only once its access-log row is
//! committed (rows of many reads share a commit), and a revocation through one replica stops the
//! very next request at another.

use crate::both;
use crate::fixtures::*;
use crate::support::TestApp;
use healthfolio::db::{Backend, Bind, Int, Sql};
use std::sync::mpsc;
use std::time::Duration;

fn logged_reads(app: &TestApp, id: &str) -> i64 {
    let mut conn = app.hf.db.conn().expect("conn");
    let q = Sql::with(
        "SELECT COUNT(*) AS n FROM audit_events WHERE interaction = 'read' AND res_id = ?",
        [Bind::Text(id.into())],
    );
    conn.first::<Int>(&q).expect("count").map_or(0, |r| r.n)
}

/// While the access log cannot be written, reads are held back; once it can, each is answered
/// with its row already committed.
fn reads_are_answered_only_once_logged(app: &TestApp) {
    let p = app.create(patient(NHS[0], "Okafor", "Ada"));
    let (code, display) = PARACETAMOL;
    let mr = app.create(medication_request(&p, code, display, "active", "2025-01-02"));
    // Another session holds the lock an audit row's INSERT needs (reads of the table go on).
    let mut blocker = app.hf.db.conn().expect("conn");
    match blocker.backend() {
        Backend::Sqlite => blocker.batch("BEGIN IMMEDIATE").expect("write lock"),
        Backend::Postgres => blocker.batch("BEGIN; LOCK TABLE audit_events IN EXCLUSIVE MODE").expect("lock"),
    }
    let (tx, rx) = mpsc::channel();
    let readers: Vec<_> = (0..6)
        .map(|_| {
            let (c, path, tx) = (app.client(), format!("MedicationRequest/{mr}"), tx.clone());
            std::thread::spawn(move || tx.send(c.get(&path).status).expect("send"))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    assert!(rx.try_recv().is_err(), "a read was answered before its audit row could be written");
    assert_eq!(logged_reads(app, &mr), 0);
    blocker.batch("ROLLBACK").expect("release");
    for _ in 0..6 {
        let status = rx.recv_timeout(Duration::from_secs(20)).expect("answered once the log is writable");
        assert_eq!(status, 200);
    }
    readers.into_iter().for_each(|r| r.join().expect("reader"));
    // No flush: every answer came after its commit.
    assert_eq!(logged_reads(app, &mr), 6);
    let one = app.client().get(&format!("MedicationRequest/{mr}"));
    assert_eq!(one.status, 200);
    assert_eq!(logged_reads(app, &mr), 7, "a lone read is logged before its answer too");
}

both!(reads_are_answered_only_once_logged);

/// An access token revoked at one replica (RFC 7009) is refused by another on the next request.
#[test]
fn token_revoked_at_one_replica_is_refused_by_the_other_at_once() {
    let Some(a) = TestApp::postgres() else { return };
    let b = a.replica();
    let p = a.create(patient(NHS[0], "Okafor", "Ada"));
    let token = a.patient_token("patient/*.rs", &p);
    let at_b = b.client_with(Some(token.clone()));
    assert_eq!(at_b.get(&format!("Patient/{p}")).status, 200, "verified and remembered at b");
    let revoked = ureq::post(&format!("{}/oauth/revoke", a.base)).send_form(&[("token", token.as_str())]);
    assert_eq!(revoked.map(|r| r.status()).unwrap_or_else(|e| panic!("{e}")), 200);
    assert_eq!(at_b.get(&format!("Patient/{p}")).status, 401, "refused at b on the very next request");
    assert_eq!(a.client_with(Some(token)).get(&format!("Patient/{p}")).status, 401);
}
