//! The access log: one row per read, search or write of a record, shown to the patient and served
//! as FHIR AuditEvent.
//!
//! Writes record their row inside the write's own transaction. Reads would otherwise turn every
//! GET into a database write, so their rows go through [`Auditor`], which commits them in batches
//! a few milliseconds later (and on shutdown).

mod view;

pub use view::{
    accesses_since, appears, audit_event_json, last_access_by, search_audit_events, write_audit_event, AuditQuery,
    AuditRow,
};

use crate::access::AccessContext;
use crate::db::{Bind, Conn, Db, DbError, Sql};
use crate::time::now_micros;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// What happened, before the caller is attached.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    /// FHIR AuditEvent.action: C, R, U, D or E.
    pub action: &'static str,
    /// The REST interaction (read, vread, search-type, create, update, delete, …).
    pub interaction: String,
    pub res_type: Option<String>,
    pub res_id: Option<String>,
    pub patient_id: Option<String>,
    pub query: Option<String>,
    /// 0 success, 4 minor failure (refused), 8 serious failure.
    pub outcome: i64,
    pub detail: Option<String>,
    pub count: Option<i64>,
}

impl AuditEntry {
    /// An authorization event (token issued, refreshed, revoked; grant changed).
    pub fn event(interaction: &str, what: &str, failure: Option<String>) -> Self {
        AuditEntry {
            action: "E",
            interaction: interaction.to_string(),
            res_type: None,
            res_id: None,
            patient_id: None,
            query: Some(what.to_string()),
            outcome: if failure.is_some() { 4 } else { 0 },
            detail: failure,
            count: None,
        }
    }

    /// A FHIR operation on a record (`$everything`, `$summary`, export, import).
    pub fn operation(name: &str, rtype: &str, id: &str, result: Result<usize, String>) -> Self {
        let (outcome, detail, count) = match result {
            Ok(n) => (0, None, Some(n as i64)),
            Err(e) => (4, Some(e), None),
        };
        AuditEntry {
            action: "E",
            interaction: "operation".to_string(),
            res_type: Some(rtype.to_string()),
            res_id: Some(id.to_string()),
            patient_id: (rtype == "Patient").then(|| id.to_string()),
            query: Some(name.to_string()),
            outcome,
            detail,
            count,
        }
    }

    /// A step of a Bulk Data export: `kick-off` and `file` (no patient: the job spans many), and
    /// `exported`, one per patient whose resources went into the files, so the export shows in
    /// that patient's access log.
    pub fn bulk_export(step: &str, job: &str, patient: Option<&str>, count: Option<usize>) -> Self {
        AuditEntry {
            action: "E",
            interaction: "operation".to_string(),
            res_type: patient.map(|_| "Patient".to_string()),
            res_id: patient.map(str::to_string),
            patient_id: patient.map(str::to_string),
            query: Some(format!("$export {step} {job}")),
            outcome: 0,
            detail: None,
            count: count.map(|n| n as i64),
        }
    }
}

const INSERT: &str = "INSERT INTO audit_events (id, recorded, patient_id, client_id, subject, action, interaction, \
     res_type, res_id, query, outcome, detail, count) VALUES ";

fn row(ctx: &AccessContext, e: &AuditEntry, recorded: i64) -> Vec<Bind> {
    vec![
        Bind::Text(uuid::Uuid::new_v4().to_string()),
        Bind::Int(recorded),
        Bind::OptText(e.patient_id.clone()),
        Bind::Text(ctx.client_id.clone()),
        Bind::Text(ctx.subject.clone()),
        Bind::Text(e.action.to_string()),
        Bind::Text(e.interaction.clone()),
        Bind::OptText(e.res_type.clone()),
        Bind::OptText(e.res_id.clone()),
        Bind::OptText(e.query.clone()),
        Bind::Int(e.outcome),
        Bind::OptText(e.detail.clone()),
        Bind::OptInt(e.count),
    ]
}

fn insert(conn: &mut Conn, ctx: &AccessContext, e: &AuditEntry, recorded: i64) -> Result<(), DbError> {
    let mut q = Sql::new(INSERT);
    q.list(row(ctx, e, recorded));
    conn.execute(&q.reused()).map(|_| ())
}

/// Records many entries inside the caller's transaction (a batch write), in few statements.
pub fn record_many_in(conn: &mut Conn, ctx: &AccessContext, entries: &[AuditEntry]) -> Result<(), DbError> {
    let now = now_micros();
    let rows: Vec<Vec<Bind>> = entries.iter().map(|e| row(ctx, e, now)).collect();
    conn.insert_rows(INSERT, &rows)
}

/// Records `entry` inside the caller's transaction.
pub fn record_in(conn: &mut Conn, ctx: &AccessContext, entry: &AuditEntry) -> Result<(), DbError> {
    insert(conn, ctx, entry, now_micros())
}

enum Msg {
    Entry(Box<(AccessContext, AuditEntry, i64)>),
    Flush(Sender<()>),
}

/// A handle to the background writer of read audit rows.
#[derive(Clone)]
pub struct Auditor {
    tx: Sender<Msg>,
}

impl Auditor {
    pub fn start(db: Db) -> Auditor {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || run(db, rx))
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("audit writer did not start: {e}"));
        Auditor { tx }
    }

    pub fn record(&self, ctx: &AccessContext, entry: AuditEntry) {
        let msg = Msg::Entry(Box::new((ctx.clone(), entry, now_micros())));
        if self.tx.send(msg).is_err() {
            tracing::error!("audit writer has stopped; an audit row was lost");
        }
    }

    /// Waits until every row recorded so far is committed.
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::channel();
        if self.tx.send(Msg::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(Duration::from_secs(10));
        }
    }
}

fn run(db: Db, rx: Receiver<Msg>) {
    let mut batch: Vec<(AccessContext, AuditEntry, i64)> = Vec::new();
    loop {
        let msg = rx.recv_timeout(Duration::from_millis(50));
        let mut waiters = Vec::new();
        match msg {
            Ok(Msg::Entry(e)) => batch.push(*e),
            Ok(Msg::Flush(w)) => waiters.push(w),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                commit(&db, &mut batch);
                return;
            }
        }
        while let Ok(m) = rx.try_recv() {
            match m {
                Msg::Entry(e) => batch.push(*e),
                Msg::Flush(w) => waiters.push(w),
            }
            if batch.len() >= 1000 {
                break;
            }
        }
        commit(&db, &mut batch);
        for w in waiters {
            let _ = w.send(());
        }
    }
}

fn commit(db: &Db, batch: &mut Vec<(AccessContext, AuditEntry, i64)>) {
    if batch.is_empty() {
        return;
    }
    let result = db.transaction(|conn| {
        for (ctx, e, at) in batch.iter() {
            insert(conn, ctx, e, *at)?;
        }
        Ok::<_, DbError>(())
    });
    if let Err(e) = result {
        tracing::error!(rows = batch.len(), "audit rows could not be written: {e}");
    }
    batch.clear();
}
