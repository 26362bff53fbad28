//! The access log: one row per read, search or write of a record, shown to the patient and served
//! as FHIR AuditEvent.
//!
//! Writes record their row inside the write's own transaction. Reads have no transaction to carry
//! theirs, and a commit of its own per read would cost more than the read: their rows go through
//! [`Auditor`], which commits the rows of many requests together, each request answered only once
//! its row is committed.

mod view;

pub use view::{
    accesses_since, appears, audit_event_json, last_access_by, search_audit_events, write_audit_event, AuditQuery,
    AuditRow,
};

use crate::access::AccessContext;
use crate::db::{Bind, Conn, Db, DbError, Sql};
use crate::time::now_micros;
use std::sync::mpsc::{self, Receiver, Sender};
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
    /// A row, and who waits for its commit.
    Row(Vec<Bind>, mpsc::SyncSender<Result<(), String>>),
    Flush(Sender<()>),
}

/// A handle to the writer of read audit rows (reads, searches, refused writes: what has no
/// transaction of its own to carry its row).
///
/// A response is sent only after its audit row is committed, yet a read does not pay for a
/// commit of its own: the writer thread takes every row waiting when it is free and commits them
/// together, one multi-row INSERT and one commit for all (group commit, as events are written).
/// While one group commits, the next gathers, so the busier the service the larger the group.
#[derive(Clone)]
pub struct Auditor {
    tx: Sender<Msg>,
}

/// Rows per INSERT: statements of a few fixed shapes, each prepared once per connection.
const ROWS_PER_INSERT: usize = 16;
/// Rows per commit, at most: a group is never held back to fill it.
const GROUP: usize = 1024;

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

    /// Records `entry` and returns once its row is committed, or why it was not.
    pub fn record_durably(&self, ctx: &AccessContext, entry: AuditEntry) -> Result<(), DbError> {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let lost = |why: &str| DbError::Pool(format!("the access log could not record this request: {why}"));
        self.tx.send(Msg::Row(row(ctx, &entry, now_micros()), done_tx)).map_err(|_| lost("its writer has stopped"))?;
        match done_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(lost(&e)),
            Err(_) => Err(lost("its writer did not answer")),
        }
    }

    /// Records `entry` and returns once its row is committed; a row that could not be written is
    /// reported in the service's log. Where the answer can still be refused, use
    /// [`Auditor::record_durably`].
    pub fn record(&self, ctx: &AccessContext, entry: AuditEntry) {
        if let Err(e) = self.record_durably(ctx, entry) {
            tracing::error!("an audit row was lost: {e}");
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
    let mut rows: Vec<Vec<Bind>> = Vec::new();
    let mut waiting: Vec<mpsc::SyncSender<Result<(), String>>> = Vec::new();
    let mut flushes: Vec<Sender<()>> = Vec::new();
    // The writer's own connection, kept between groups (taken again after a failure): requests
    // wait for their rows while holding pooled connections, so the writer must not wait for one.
    let mut conn: Option<Conn> = None;
    // Blocks until there is work, then takes whatever else is already waiting: no timer, so a
    // lone read waits only for its own commit.
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Msg::Row(r, done) => {
                    rows.push(r);
                    waiting.push(done);
                }
                Msg::Flush(w) => flushes.push(w),
            }
            if rows.len() < GROUP {
                next = rx.try_recv().ok();
            }
        }
        let result = commit(&db, &mut conn, &rows).map_err(|e| {
            tracing::error!(rows = rows.len(), "audit rows could not be written: {e}");
            e.to_string()
        });
        rows.clear();
        for w in waiting.drain(..) {
            let _ = w.send(result.clone());
        }
        for w in flushes.drain(..) {
            let _ = w.send(());
        }
    }
}

fn commit(db: &Db, kept: &mut Option<Conn>, rows: &[Vec<Bind>]) -> Result<(), DbError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut conn = match kept.take() {
        Some(c) => c,
        None => db.conn()?,
    };
    db.transaction_on(&mut conn, |conn| {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            conn.insert_rows(INSERT, chunk)?;
        }
        Ok::<_, DbError>(())
    })?;
    // Kept only while it works: after a failure the next group takes a fresh one.
    *kept = Some(conn);
    Ok(())
}
