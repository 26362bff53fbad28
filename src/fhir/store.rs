//! Reads and writes of resources: every version kept, index rows and audit rows written in the
//! same transaction as the resource, access checked against the caller's [`AccessContext`].

use super::index;
use super::reference::{self, Target};
use super::{now_micros, params, time, valid_id, FhirError, Interaction};
use crate::access::{AccessContext, Reach};
use crate::audit::{AuditEntry, Auditor};
use crate::db::{Bind, Conn, Db, Int, Sql};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// One stored version of a resource. `body` is the JSON text as served, with `id` and `meta` set.
#[derive(Clone, Debug)]
pub struct Stored {
    pub rtype: String,
    pub id: String,
    pub version_id: i64,
    pub last_updated: i64,
    pub deleted: bool,
    pub patient_id: Option<String>,
    pub body: String,
}

impl Stored {
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version_id)
    }
    pub fn location(&self, base: &str) -> String {
        format!("{base}/{}/{}/_history/{}", self.rtype, self.id, self.version_id)
    }
}

#[derive(Debug)]
pub struct WriteOutcome {
    pub stored: Stored,
    /// 201 rather than 200.
    pub created: bool,
    /// A new version was written (an update with the same content writes none).
    pub changed: bool,
    /// What the medicine safety checks found in what was written ([`super::safety`]).
    pub warnings: Vec<super::safety::Warning>,
}

impl WriteOutcome {
    pub fn new(stored: Stored, created: bool, changed: bool) -> WriteOutcome {
        WriteOutcome { stored, created, changed, warnings: Vec::new() }
    }
}

#[derive(QueryableByName, Debug)]
pub(crate) struct Row {
    #[diesel(sql_type = BigInt)]
    pub rid: i64,
    #[diesel(sql_type = Text)]
    pub res_type: String,
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = BigInt)]
    pub version_id: i64,
    #[diesel(sql_type = BigInt)]
    pub last_updated: i64,
    #[diesel(sql_type = BigInt)]
    pub deleted: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub patient_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub body: Option<String>,
}

pub(crate) const ROW_COLUMNS: &str =
    "r.rid, r.res_type, r.id, r.version_id, r.last_updated, r.deleted, r.patient_id, CAST(r.body AS TEXT) AS body";

impl From<Row> for Stored {
    fn from(r: Row) -> Stored {
        Stored {
            rtype: r.res_type,
            id: r.id,
            version_id: r.version_id,
            last_updated: r.last_updated,
            deleted: r.deleted != 0,
            patient_id: r.patient_id,
            body: r.body.unwrap_or_default(),
        }
    }
}

/// Options a write may carry from its request.
#[derive(Default, Debug, Clone)]
pub struct WriteOptions {
    /// `If-Match`: the version the client last saw.
    pub if_match: Option<i64>,
    /// `X-Provenance`: a Provenance to store with the write, targeting the new version.
    pub provenance: Option<Value>,
    /// The client hears the medicine safety warnings (`Prefer: return=OperationOutcome`): only
    /// then are they worked out for a single write (a Bundle's are always, in its response).
    pub warnings_heard: bool,
}

#[derive(Clone)]
pub struct Store {
    pub db: Db,
    pub base: String,
    pub audit: Auditor,
}

impl Store {
    pub fn new(db: Db, base: String, audit: Auditor) -> Store {
        Store { db, base, audit }
    }

    pub fn read(&self, ctx: &AccessContext, rtype: &str, id: &str) -> Result<Stored, FhirError> {
        let result = self.read_checked(ctx, rtype, id, Interaction::Read);
        let mut entry = AuditEntry::read("read", rtype, Some(id), &result);
        if result.is_err() {
            // A refused attempt belongs in the log of the patient whose record it aimed at.
            entry.patient_id = self.owner_of(rtype, id);
        }
        self.audit.record_durably(ctx, entry)?;
        result
    }

    /// A connection for a read by `ctx`: a replica current enough for it when there is one
    /// ([`Db::read_conn`]).
    pub fn read_conn(&self, ctx: &AccessContext) -> Result<Conn, crate::db::DbError> {
        read_conn(&self.db, ctx)
    }

    /// Notes that `ctx` committed a write, so its next reads see it.
    pub(crate) fn wrote<T, E>(&self, ctx: &AccessContext, result: &Result<T, E>) {
        if result.is_ok() {
            self.db.wrote(&caller(ctx));
        }
    }

    fn owner_of(&self, rtype: &str, id: &str) -> Option<String> {
        let mut conn = self.db.conn().ok()?;
        current(&mut conn, rtype, id).ok().flatten().and_then(|r| r.patient_id)
    }

    fn read_checked(&self, ctx: &AccessContext, rtype: &str, id: &str, what: Interaction) -> Result<Stored, FhirError> {
        read_in(&mut self.read_conn(ctx)?, ctx, rtype, id, what)
    }

    pub fn vread(&self, ctx: &AccessContext, rtype: &str, id: &str, vid: i64) -> Result<Stored, FhirError> {
        let result = (|| {
            ctx.require(rtype, Interaction::Read)?;
            let mut conn = self.read_conn(ctx)?;
            let q = Sql::with(
                "SELECT v.rid, v.res_type, v.id, v.version_id, v.last_updated, v.deleted, v.patient_id, \
                 CAST(v.body AS TEXT) AS body FROM resource_versions v \
                 WHERE v.res_type = ? AND v.id = ? AND v.version_id = ?",
                [Bind::Text(rtype.into()), Bind::Text(id.into()), Bind::Int(vid)],
            );
            let row: Row =
                conn.first(&q)?.ok_or_else(|| FhirError::NotFound(format!("{rtype}/{id}/_history/{vid}")))?;
            let rid = row.rid;
            let stored = Stored::from(row);
            if !ctx.may_touch(&mut conn, rtype, stored.patient_id.as_deref(), Interaction::Read)?
                || !super::search::within_constraints(&mut conn, ctx, rtype, rid, Interaction::Read)?
            {
                return Err(FhirError::not_found(rtype, id));
            }
            if stored.deleted {
                return Err(FhirError::Gone(format!("{rtype}/{id}/_history/{vid}")));
            }
            Ok(stored)
        })();
        self.audit.record_durably(ctx, AuditEntry::read("vread", rtype, Some(id), &result))?;
        result
    }

    /// Create with a server-assigned id.
    pub fn create(
        &self,
        ctx: &AccessContext,
        rtype: &str,
        mut body: Value,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome, FhirError> {
        reference::relativise(&mut body, &self.base);
        self.write(
            ctx,
            |conn, refs| {
                let stored = create_in(conn, ctx, refs, rtype, body, new_id(), "POST")?;
                Ok(WriteOutcome::new(stored, true, true))
            },
            opts,
        )
    }

    /// Update, or create with the client's id when the resource does not exist.
    pub fn update(
        &self,
        ctx: &AccessContext,
        rtype: &str,
        id: &str,
        mut body: Value,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome, FhirError> {
        reference::relativise(&mut body, &self.base);
        self.write(ctx, |conn, refs| update_in(conn, ctx, refs, rtype, id, body, opts.if_match), opts)
    }

    /// JSON Patch (RFC 6902) applied to the current version.
    pub fn patch(
        &self,
        ctx: &AccessContext,
        rtype: &str,
        id: &str,
        mut patch: Value,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome, FhirError> {
        reference::relativise(&mut patch, &self.base);
        self.write(ctx, |conn, refs| patch_in(conn, ctx, refs, rtype, id, &patch, opts.if_match), opts)
    }

    /// Delete; deleting what is absent or already deleted is not an error (returns `None`).
    pub fn delete(&self, ctx: &AccessContext, rtype: &str, id: &str) -> Result<Option<Stored>, FhirError> {
        let result = self.db.transaction(|conn| delete_in(conn, ctx, rtype, id));
        self.wrote(ctx, &result);
        if let Err(e) = &result {
            self.audit.record(ctx, AuditEntry::failed_write("delete", rtype, Some(id), e));
        }
        result
    }

    /// Runs a single write in its own transaction, with the Provenance the request carried.
    pub(super) fn write(
        &self,
        ctx: &AccessContext,
        f: impl FnOnce(&mut Conn, &mut Refs) -> Result<WriteOutcome, FhirError>,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome, FhirError> {
        let result = self.db.transaction(|conn| {
            let mut refs = Refs::default();
            let mut out = f(conn, &mut refs)?;
            attribute(conn, ctx, &mut refs, opts, &out.stored)?;
            check_refs(conn, &refs)?;
            if out.changed && opts.warnings_heard {
                let found = super::safety::check_written(conn, &out.stored)?;
                out.warnings = super::safety::as_seen_by(conn, ctx, out.stored.patient_id.as_deref(), found)?;
            }
            Ok(out)
        });
        self.wrote(ctx, &result);
        self.audit_failed_write(ctx, &result);
        result
    }

    pub(crate) fn audit_failed_write<T>(&self, ctx: &AccessContext, result: &Result<T, FhirError>) {
        if let Err(e) = result {
            self.audit.record(ctx, AuditEntry::failed_write("write", "", None, e));
        }
    }
}

/// Who is reading or writing, for read-your-writes: the same person through the same app.
fn caller(ctx: &AccessContext) -> String {
    format!("{}|{}", ctx.client_id, ctx.subject)
}

/// A connection for a read by `ctx`: a replica when one is current enough for it. A provider's
/// reach is its patients' grants, read inside the query: that read is the primary's, so a
/// revocation applies at once. A patient app's grant was checked on the primary with its token.
pub fn read_conn(db: &Db, ctx: &AccessContext) -> Result<Conn, crate::db::DbError> {
    match ctx.reach {
        Reach::Granted { .. } => db.conn(),
        Reach::All | Reach::Patient(_) => db.read_conn(&caller(ctx)),
    }
}

/// The Provenance of a single write: the one the request carried (`X-Provenance`), or one naming
/// its author.
pub(crate) fn attribute(
    conn: &mut Conn,
    ctx: &AccessContext,
    refs: &mut Refs,
    opts: &WriteOptions,
    written: &Stored,
) -> Result<(), FhirError> {
    match &opts.provenance {
        Some(prov) => {
            let prov = provenance_for(prov.clone(), written)?;
            create_in(conn, ctx, refs, "Provenance", prov, new_id(), "POST").map(|_| ())
        }
        None => record_author(conn, ctx, refs, written),
    }
}

/// Records who wrote `written` as a Provenance, when the writer is a provider system or a
/// patient's app (operators' loads carry their own). Written by the service itself: the writer
/// needs no Provenance scope for it.
pub(crate) fn record_author(
    conn: &mut Conn,
    ctx: &AccessContext,
    refs: &mut Refs,
    written: &Stored,
) -> Result<(), FhirError> {
    if let Some(prov) = author_provenance(conn, ctx)? {
        let service = AccessContext::service("provenance");
        create_in(conn, &service, refs, "Provenance", provenance_for(prov, written)?, new_id(), "POST")?;
    }
    Ok(())
}

/// The current version of `rtype/id` if the caller may `what` it: scope, reach and any
/// query-constrained scope. A resource out of reach is reported as absent: its existence is not
/// ours to reveal.
pub(crate) fn read_in(
    conn: &mut Conn,
    ctx: &AccessContext,
    rtype: &str,
    id: &str,
    what: Interaction,
) -> Result<Stored, FhirError> {
    ctx.require(rtype, what)?;
    let row = current(conn, rtype, id)?.ok_or_else(|| FhirError::not_found(rtype, id))?;
    let rid = row.rid;
    let stored = Stored::from(row);
    if !ctx.may_touch(conn, rtype, stored.patient_id.as_deref(), what)?
        || !super::search::within_constraints(conn, ctx, rtype, rid, what)?
    {
        return Err(FhirError::not_found(rtype, id));
    }
    if stored.deleted {
        return Err(FhirError::Gone(format!("{rtype}/{id}")));
    }
    Ok(stored)
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn current(conn: &mut Conn, rtype: &str, id: &str) -> Result<Option<Row>, FhirError> {
    let q = Sql::with(
        &format!("SELECT {ROW_COLUMNS} FROM resources r WHERE r.res_type = ? AND r.id = ?"),
        [Bind::Text(rtype.into()), Bind::Text(id.into())],
    )
    .reused();
    Ok(conn.first(&q)?)
}

/// Sets `id` and the server-owned parts of `meta`, keeping the client's profile, tags and source.
fn stamp(body: &mut Value, id: &str, version: i64, now: i64) -> Result<(), FhirError> {
    let obj = body.as_object_mut().ok_or_else(|| FhirError::invalid("the resource must be a JSON object"))?;
    obj.insert("id".into(), Value::String(id.to_string()));
    let meta = obj.entry("meta").or_insert_with(|| json!({}));
    let meta = meta.as_object_mut().ok_or_else(|| FhirError::invalid("meta must be an object"))?;
    meta.insert("versionId".into(), Value::String(version.to_string()));
    meta.insert("lastUpdated".into(), Value::String(time::format_instant(now)));
    Ok(())
}

/// Checks the body and the caller's right to write it; returns its compartment (worked out here
/// unless the caller already knows it: `known`).
pub(super) fn admit(
    conn: &mut Conn,
    ctx: &AccessContext,
    rtype: &str,
    id: &str,
    body: &Value,
    what: Interaction,
    known: Option<Option<String>>,
) -> Result<Option<String>, FhirError> {
    if super::READ_ONLY_TYPES.contains(&rtype) {
        return Err(FhirError::NotSupported(format!("{rtype} is read-only here: it is written by the service itself")));
    }
    ctx.require(rtype, what)?;
    match body.get("resourceType").and_then(Value::as_str) {
        Some(t) if t == rtype => {}
        Some(t) => return Err(FhirError::invalid(format!("resourceType '{t}' does not match the URL type '{rtype}'"))),
        None => return Err(FhirError::invalid("the resource has no resourceType")),
    }
    super::validate::validate(rtype, body).map_err(|v| match v {
        super::validate::Violation::Invalid(m) => FhirError::Invalid(m),
        super::validate::Violation::Unprocessable(m) => FhirError::Unprocessable(m),
    })?;
    let patient = match known {
        Some(p) => p,
        None => compartment(conn, rtype, id, body)?,
    };
    if !ctx.may_touch(conn, rtype, patient.as_deref(), what)? {
        return Err(FhirError::forbidden(match patient {
            Some(p) => {
                format!("no grant from Patient/{p} lets this client {} {rtype}", crate::access::interaction_name(what))
            }
            None => format!("{rtype} must belong to a patient record this client can reach"),
        }));
    }
    Ok(patient)
}

/// A record that moved to another provider takes no new writes, from anyone but the service
/// closing it: one person, one live record.
fn refuse_moved(conn: &mut Conn, ctx: &AccessContext, patient: &str) -> Result<(), FhirError> {
    if ctx.service {
        return Ok(());
    }
    match moved_to(conn, patient)? {
        Some(to) => Err(FhirError::Conflict(format!("this record has moved to {to}: write there"))),
        None => Ok(()),
    }
}

/// Where a closed record moved to, if it did.
pub fn moved_to(conn: &mut Conn, patient: &str) -> Result<Option<String>, crate::db::DbError> {
    #[derive(QueryableByName)]
    struct Moved {
        #[diesel(sql_type = Text)]
        replaced_by: String,
    }
    let q =
        Sql::with("SELECT replaced_by FROM closed_records WHERE patient_id = ?", [Bind::Text(patient.into())]).reused();
    Ok(conn.first::<Moved>(&q)?.map(|m| m.replaced_by))
}

/// Closes a patient's record after it moved: the Patient points to its new home
/// (`link.type = replaced-by`), stays readable, and refuses new writes. Idempotent.
pub fn close_record(store: &Store, ctx: &AccessContext, patient: &str, replaced_by: &str) -> Result<Stored, FhirError> {
    if !(replaced_by.starts_with("https://") || replaced_by.starts_with("http://")) {
        return Err(FhirError::invalid("replacedBy must be the absolute URL of the record's new home"));
    }
    ctx.require("Patient", Interaction::Update)?;
    store.db.transaction(|conn| {
        let row = current(conn, "Patient", patient)?
            .filter(|r| r.deleted == 0)
            .ok_or_else(|| FhirError::not_found("Patient", patient))?;
        if !ctx.may_touch(conn, "Patient", Some(patient), Interaction::Update)? {
            return Err(FhirError::not_found("Patient", patient));
        }
        // A record moves with its patient: a provider may change it, never close it.
        if matches!(ctx.reach, Reach::Granted { .. }) {
            return Err(FhirError::forbidden(
                "only the patient (through their app) or the operator can close a record",
            ));
        }
        // Closed once, to one new home: a retried move is answered again; another home is
        // refused (nothing redirects a moved record elsewhere later).
        if let Some(to) = moved_to(conn, patient)?.filter(|to| to != replaced_by) {
            return Err(FhirError::Conflict(format!("this record already moved to {to}")));
        }
        let mut body: Value =
            serde_json::from_str(row.body.as_deref().unwrap_or("{}")).map_err(|e| FhirError::invalid(e.to_string()))?;
        body["active"] = Value::Bool(false);
        body["link"] = json!([{"other": {"reference": replaced_by}, "type": "replaced-by"}]);
        // The service itself records the closure: the patient's write scope reached the decision.
        let service = AccessContext::service("record-moved");
        let out = update_in(conn, &service, &mut Refs::default(), "Patient", patient, body, None)?;
        conn.execute(&Sql::with("DELETE FROM closed_records WHERE patient_id = ?", [Bind::Text(patient.into())]))?;
        conn.execute(&Sql::with(
            "INSERT INTO closed_records (patient_id, replaced_by, closed_at) VALUES (?, ?, ?)",
            [Bind::Text(patient.into()), Bind::Text(replaced_by.into()), Bind::Int(now_micros())],
        ))?;
        Ok(out.stored)
    })
}

/// The patient compartment a resource belongs to, from its subject/patient reference.
fn compartment(conn: &mut Conn, rtype: &str, id: &str, body: &Value) -> Result<Option<String>, FhirError> {
    if rtype == "Patient" {
        return Ok(Some(id.to_string()));
    }
    if let Some(path) = params::compartment_path(rtype) {
        let Some(text) = body.get(path).and_then(|r| r.get("reference")).and_then(Value::as_str) else {
            return Ok(None);
        };
        // Only a patient held here can own it: an absolute URL never names one of ours.
        return match reference::target(text) {
            Target::Local("Patient", id) => Ok(Some(id.to_string())),
            _ => Err(FhirError::unprocessable(format!(
                "{rtype}.{path} must refer to a patient held here as Patient/id, not '{text}'"
            ))),
        };
    }
    if rtype == "Provenance" {
        // A Provenance belongs to the compartment of what it describes.
        let targets = body.get("target").and_then(Value::as_array).cloned().unwrap_or_default();
        for t in targets {
            let Some((tt, tid)) = t.get("reference").and_then(Value::as_str).and_then(reference::local) else {
                continue;
            };
            if tt == "Patient" {
                return Ok(Some(tid.to_string()));
            }
            if let Some(row) = current(conn, tt, tid)? {
                if row.patient_id.is_some() {
                    return Ok(row.patient_id);
                }
            }
        }
    }
    Ok(None)
}

/// A persisted copy belongs to its source: only the service itself (its sync and feeds) may change
/// it; anyone else, an operator's token included, is told which source owns it (adopting the
/// source makes its copies ordinary resources).
fn refuse_copy(conn: &mut Conn, ctx: &AccessContext, rid: i64, rtype: &str, id: &str) -> Result<(), FhirError> {
    if ctx.service {
        return Ok(());
    }
    #[derive(QueryableByName)]
    struct Owner {
        #[diesel(sql_type = Nullable<Text>)]
        source: Option<String>,
    }
    let owner =
        conn.first::<Owner>(&Sql::with("SELECT source FROM resources WHERE rid = ?", [Bind::Int(rid)]).reused())?;
    match owner.and_then(|o| o.source) {
        Some(s) => Err(FhirError::Conflict(format!(
            "{rtype}/{id} is a persisted copy owned by the federated source '{s}': change it there (or an operator adopts the source)"
        ))),
        None => Ok(()),
    }
}

pub(crate) fn create_in(
    conn: &mut Conn,
    ctx: &AccessContext,
    refs: &mut Refs,
    rtype: &str,
    mut body: Value,
    id: String,
    method: &str,
) -> Result<Stored, FhirError> {
    if !valid_id(&id) {
        return Err(FhirError::invalid(format!("'{id}' is not a valid FHIR id")));
    }
    let patient = admit(conn, ctx, rtype, &id, &body, Interaction::Create, None)?;
    collect_refs(&body, refs);
    let now = now_micros();
    stamp(&mut body, &id, 1, now)?;
    let text = body.to_string();
    let mut q =
        Sql::new("INSERT INTO resources (res_type, id, version_id, last_updated, deleted, patient_id, body) SELECT ");
    q.text(rtype).push(", ").text(id.clone()).push(", 1, ").int(now).push(", 0, ");
    q.bind(Bind::OptText(patient.clone())).push(", ").bind(Bind::Json(text.clone()));
    // A moved record takes no new writes: asked in the insert itself, not a round trip before it.
    let guarded = match &patient {
        Some(p) if !ctx.service => {
            q.push(" WHERE NOT EXISTS (SELECT 1 FROM closed_records WHERE patient_id = ").text(p.clone()).push(")");
            Some(p)
        }
        _ => None,
    };
    q.push(" RETURNING rid AS n");
    let rid = match conn.first::<Int>(&q.reused()) {
        Ok(Some(r)) => r.n,
        Ok(None) => {
            let to = match guarded {
                Some(p) => moved_to(conn, p)?,
                None => None,
            };
            return Err(FhirError::Conflict(format!(
                "this record has moved to {}: write there",
                to.as_deref().unwrap_or("another provider")
            )));
        }
        Err(e) if e.is_unique_violation() => return Err(FhirError::Conflict(format!("{rtype}/{id} already exists"))),
        Err(e) => return Err(e.into()),
    };
    let stored = Stored {
        rtype: rtype.to_string(),
        id,
        version_id: 1,
        last_updated: now,
        deleted: false,
        patient_id: patient,
        body: text,
    };
    finish_write(conn, ctx, rid, &stored, Some(&body), method)?;
    hold_to_constraints(conn, ctx, rid, rtype, Interaction::Create)?;
    Ok(stored)
}

/// A query-constrained write scope (`patient/Condition.cu?category=…`) writes only what matches
/// its query (SMART 2.2): the version just written, with its index rows, is held to the query
/// before the transaction commits, so the search layer's one reading of a constraint decides
/// writes as it decides reads.
fn hold_to_constraints(
    conn: &mut Conn,
    ctx: &AccessContext,
    rid: i64,
    rtype: &str,
    what: Interaction,
) -> Result<(), FhirError> {
    if super::search::within_constraints(conn, ctx, rtype, rid, what)? {
        return Ok(());
    }
    Err(FhirError::forbidden(format!(
        "the access token's scopes (and the patient's grant) allow {} on {rtype} only for resources matching their query, and this one would not",
        crate::access::interaction_name(what)
    )))
}

const INSERT_VERSION: &str = "INSERT INTO resource_versions \
     (rid, version_id, res_type, id, last_updated, deleted, patient_id, method, author, body) VALUES ";

fn version_row(rid: i64, s: &Stored, method: &str, author: &str) -> Vec<Bind> {
    vec![
        Bind::Int(rid),
        Bind::Int(s.version_id),
        Bind::Text(s.rtype.clone()),
        Bind::Text(s.id.clone()),
        Bind::Int(s.last_updated),
        Bind::Int(i64::from(s.deleted)),
        Bind::OptText(s.patient_id.clone()),
        Bind::Text(method.into()),
        Bind::Text(author.into()),
        if s.deleted { Bind::OptJson(None) } else { Bind::Json(s.body.clone()) },
    ]
}

/// Writes the version row, the index rows and the audit row of a new version.
fn finish_write(
    conn: &mut Conn,
    ctx: &AccessContext,
    rid: i64,
    s: &Stored,
    body: Option<&Value>,
    method: &str,
) -> Result<(), FhirError> {
    let mut q = Sql::new(INSERT_VERSION);
    q.list(version_row(rid, s, method, &ctx.author()));
    conn.execute(&q.reused())?;
    if s.version_id > 1 {
        for table in ["idx_token", "idx_string", "idx_date", "idx_ref"] {
            conn.execute(&Sql::with(&format!("DELETE FROM {table} WHERE rid = ?"), [Bind::Int(rid)]).reused())?;
        }
    }
    if let Some(body) = body {
        let mut rows = IndexTables::default();
        rows.add(rid, &index::extract(&s.rtype, body));
        rows.write(conn)?;
    }
    if s.rtype == "Patient" {
        super::patient::claim_nhs_numbers(conn, &s.id, body)?;
    }
    let entry = AuditEntry::write(method, s);
    crate::audit::record_in(conn, ctx, &entry)?;
    Ok(())
}

/// Index rows bound for the four index tables, from one resource or many.
#[derive(Default)]
struct IndexTables {
    tokens: Vec<Vec<Bind>>,
    strings: Vec<Vec<Bind>>,
    dates: Vec<Vec<Bind>>,
    refs: Vec<Vec<Bind>>,
}

impl IndexTables {
    fn add(&mut self, rid: i64, rows: &index::IndexRows) {
        let r = Bind::Int(rid);
        for (p, sys, code) in &rows.tokens {
            self.tokens.push(vec![
                r.clone(),
                Bind::Text((*p).into()),
                Bind::OptText(sys.clone()),
                Bind::Text(code.clone()),
            ]);
        }
        for (p, v, raw) in &rows.strings {
            self.strings.push(vec![r.clone(), Bind::Text((*p).into()), Bind::Text(v.clone()), Bind::Text(raw.clone())]);
        }
        for (p, range) in &rows.dates {
            self.dates.push(vec![r.clone(), Bind::Text((*p).into()), Bind::Int(range.lo), Bind::Int(range.hi)]);
        }
        for (p, t, id) in &rows.refs {
            self.refs.push(vec![r.clone(), Bind::Text((*p).into()), Bind::Text(t.clone()), Bind::Text(id.clone())]);
        }
    }

    /// One multi-row INSERT per table keeps a write to a handful of statements.
    fn write(&self, conn: &mut Conn) -> Result<(), FhirError> {
        for (head, rows) in [
            ("INSERT INTO idx_token (rid, param, system, code) VALUES", &self.tokens),
            ("INSERT INTO idx_string (rid, param, value, raw) VALUES", &self.strings),
            ("INSERT INTO idx_date (rid, param, lo, hi) VALUES", &self.dates),
            ("INSERT INTO idx_ref (rid, param, target_type, target_id) VALUES", &self.refs),
        ] {
            conn.insert_rows(head, rows)?;
        }
        Ok(())
    }
}

/// Creates many new resources with the checks of [`create_in`], but one multi-row statement per
/// table instead of several round trips per resource: imports and loads use it. The checks see
/// the database, not each other (one record per person is the database's own: it holds here
/// too): callers keep Provenance (found through its target) to [`create_in`] unless, as in an
/// import, there is one per target.
/// A refused item is named by its index.
pub(crate) fn create_many_in(
    conn: &mut Conn,
    ctx: &AccessContext,
    refs: &mut Refs,
    items: Vec<(&'static str, Value, String)>,
    method: &str,
) -> Result<Vec<Stored>, (Option<usize>, FhirError)> {
    let now = now_micros();
    let owners = provenance_owners(conn, &items).map_err(|e| (None, e))?;
    let mut admitted = Vec::with_capacity(items.len());
    let mut checked = std::collections::HashSet::new();
    for (i, (rtype, mut body, id)) in items.into_iter().enumerate() {
        let at = |e: FhirError| (Some(i), e);
        if !valid_id(&id) {
            return Err(at(FhirError::invalid(format!("'{id}' is not a valid FHIR id"))));
        }
        // Found in the batch lookup: use it; otherwise the usual per-target search decides.
        let known = (rtype == "Provenance")
            .then(|| first_target(&body).and_then(|t| owners.get(&t).cloned().flatten()))
            .flatten()
            .map(Some);
        let patient = admit(conn, ctx, rtype, &id, &body, Interaction::Create, known).map_err(at)?;
        // Once per record, not per resource: an import writes thousands into one.
        if let Some(p) = patient.as_ref().filter(|p| checked.insert((*p).clone())) {
            refuse_moved(conn, ctx, p).map_err(at)?;
        }
        collect_refs(&body, refs);
        stamp(&mut body, &id, 1, now).map_err(at)?;
        let text = body.to_string();
        let stored = Stored {
            rtype: rtype.into(),
            id,
            version_id: 1,
            last_updated: now,
            deleted: false,
            patient_id: patient,
            body: text,
        };
        admitted.push((stored, body));
    }
    write_many(conn, ctx, &admitted, now, method).map_err(|e| (None, e))?;
    Ok(admitted.into_iter().map(|(s, _)| s).collect())
}

/// Which of `keys` (type, id) are held here, deleted or not: a few queries for many keys.
pub(crate) fn existing(
    conn: &mut Conn,
    keys: &[(&str, &str)],
) -> Result<std::collections::HashSet<(String, String)>, FhirError> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Text)]
        res_type: String,
        #[diesel(sql_type = Text)]
        id: String,
    }
    let mut by_type: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for (t, id) in keys {
        by_type.entry(t).or_default().push(id);
    }
    let mut out = std::collections::HashSet::new();
    for (t, ids) in by_type {
        for chunk in ids.chunks(500) {
            let mut q = Sql::new("SELECT res_type, id FROM resources WHERE res_type = ");
            q.text(t).push(" AND id IN ").list(chunk.iter().map(|id| Bind::Text((*id).into())));
            out.extend(conn.load::<Found>(&q)?.into_iter().map(|f| (f.res_type, f.id)));
        }
    }
    Ok(out)
}

/// A Provenance's first target as `Type/id` (a version suffix dropped).
fn first_target(body: &Value) -> Option<String> {
    let r = body["target"][0]["reference"].as_str()?;
    let (t, id) = reference::local(r)?;
    Some(format!("{t}/{id}"))
}

/// The patient each Provenance target of `items` belongs to, in a few queries rather than one
/// per Provenance (an import writes one per resource).
fn provenance_owners(
    conn: &mut Conn,
    items: &[(&'static str, Value, String)],
) -> Result<std::collections::HashMap<String, Option<String>>, FhirError> {
    #[derive(QueryableByName)]
    struct Owner {
        #[diesel(sql_type = Text)]
        id: String,
        #[diesel(sql_type = Nullable<Text>)]
        patient_id: Option<String>,
    }
    let mut by_type: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for (_, body, _) in items.iter().filter(|(t, _, _)| *t == "Provenance") {
        if let Some((t, id)) = first_target(body).as_deref().and_then(reference::local) {
            by_type.entry(t.to_string()).or_default().push(id.to_string());
        }
    }
    let mut out = std::collections::HashMap::new();
    // A target among these very items is not stored yet: its compartment comes from its body (one
    // whose reference is refused is refused on its own when admitted).
    for (t, body, id) in items.iter().filter(|(t, _, _)| *t != "Provenance") {
        let key = format!("{t}/{id}");
        if by_type.get(*t).is_some_and(|ids| ids.contains(id)) {
            if let Ok(patient) = compartment(conn, t, id, body) {
                out.insert(key, patient);
            }
        }
    }
    for (t, ids) in by_type {
        let ids: Vec<String> = ids.into_iter().filter(|id| !out.contains_key(&format!("{t}/{id}"))).collect();
        if t == "Patient" {
            out.extend(ids.into_iter().map(|id| (format!("Patient/{id}"), Some(id))));
            continue;
        }
        for chunk in ids.chunks(500) {
            let mut q = Sql::new("SELECT id, patient_id FROM resources WHERE res_type = ");
            q.text(t.clone()).push(" AND id IN ").list(chunk.iter().map(|id| Bind::Text(id.clone())));
            for o in conn.load::<Owner>(&q)? {
                out.insert(format!("{t}/{}", o.id), o.patient_id);
            }
        }
    }
    Ok(out)
}

/// The rows of admitted new resources: resources, versions, index rows and audit, in few statements.
fn write_many(
    conn: &mut Conn,
    ctx: &AccessContext,
    admitted: &[(Stored, Value)],
    now: i64,
    method: &str,
) -> Result<(), FhirError> {
    #[derive(QueryableByName)]
    struct Inserted {
        #[diesel(sql_type = BigInt)]
        rid: i64,
        #[diesel(sql_type = Text)]
        res_type: String,
        #[diesel(sql_type = Text)]
        id: String,
    }
    let mut rids = std::collections::HashMap::with_capacity(admitted.len());
    for chunk in admitted.chunks(1000) {
        let mut q = Sql::new(
            "INSERT INTO resources (res_type, id, version_id, last_updated, deleted, patient_id, body) VALUES",
        );
        for (i, (s, _)) in chunk.iter().enumerate() {
            q.push(if i == 0 { " " } else { ", " });
            q.list([
                Bind::Text(s.rtype.clone()),
                Bind::Text(s.id.clone()),
                Bind::Int(1),
                Bind::Int(now),
                Bind::Int(0),
                Bind::OptText(s.patient_id.clone()),
                Bind::Json(s.body.clone()),
            ]);
        }
        q.push(" RETURNING rid, res_type, id");
        let inserted = match conn.load::<Inserted>(&q) {
            Ok(rows) => rows,
            Err(e) if e.is_unique_violation() => {
                return Err(FhirError::Conflict("a resource with one of these ids already exists".into()))
            }
            Err(e) => return Err(e.into()),
        };
        rids.extend(inserted.into_iter().map(|r| ((r.res_type, r.id), r.rid)));
    }
    let author = ctx.author();
    let (mut versions, mut index_rows, mut audits) = (Vec::new(), IndexTables::default(), Vec::new());
    for (s, body) in admitted {
        let rid = *rids
            .get(&(s.rtype.clone(), s.id.clone()))
            .ok_or_else(|| FhirError::invalid(format!("{}/{} was not stored", s.rtype, s.id)))?;
        versions.push(version_row(rid, s, method, &author));
        index_rows.add(rid, &index::extract(&s.rtype, body));
        audits.push(AuditEntry::write(method, s));
    }
    conn.insert_rows(INSERT_VERSION, &versions)?;
    index_rows.write(conn)?;
    for (s, _) in admitted {
        if let Some(rid) = rids.get(&(s.rtype.clone(), s.id.clone())) {
            hold_to_constraints(conn, ctx, *rid, &s.rtype, Interaction::Create)?;
        }
    }
    for (s, body) in admitted.iter().filter(|(s, _)| s.rtype == "Patient") {
        super::patient::claim_nhs_numbers(conn, &s.id, Some(body))?;
    }
    crate::audit::record_many_in(conn, ctx, &audits)?;
    Ok(())
}

pub(crate) fn update_in(
    conn: &mut Conn,
    ctx: &AccessContext,
    refs: &mut Refs,
    rtype: &str,
    id: &str,
    mut body: Value,
    if_match: Option<i64>,
) -> Result<WriteOutcome, FhirError> {
    match body.get("id").and_then(Value::as_str) {
        Some(bid) if bid == id => {}
        Some(bid) => {
            return Err(FhirError::invalid(format!("the resource id '{bid}' does not match the URL id '{id}'")))
        }
        None => return Err(FhirError::invalid("an update must carry the resource id in its body")),
    }
    ctx.require(rtype, Interaction::Update)?;
    let Some(row) = current(conn, rtype, id)? else {
        if let Some(v) = if_match {
            return Err(FhirError::PreconditionFailed(format!(
                "If-Match W/\"{v}\" given but {rtype}/{id} does not exist"
            )));
        }
        let stored = create_in(conn, ctx, refs, rtype, body, id.to_string(), "PUT")?;
        return Ok(WriteOutcome::new(stored, true, true));
    };
    // Outside a constrained scope's query is out of reach: absent, like another patient's record.
    // A deleted resource has no index rows to match; what replaces it is held to the query below.
    if !ctx.may_touch(conn, rtype, row.patient_id.as_deref(), Interaction::Update)?
        || (row.deleted == 0 && !super::search::within_constraints(conn, ctx, rtype, row.rid, Interaction::Update)?)
    {
        return Err(FhirError::not_found(rtype, id));
    }
    refuse_copy(conn, ctx, row.rid, rtype, id)?;
    if let Some(v) = if_match {
        if v != row.version_id {
            return Err(FhirError::PreconditionFailed(format!(
                "If-Match W/\"{v}\" does not match the current version W/\"{}\"",
                row.version_id
            )));
        }
    }
    let patient = admit(conn, ctx, rtype, id, &body, Interaction::Update, None)?;
    if let Some(p) = &patient {
        refuse_moved(conn, ctx, p)?;
    }
    collect_refs(&body, refs);
    if row.deleted == 0 && same_content(row.body.as_deref(), &body) {
        // Nothing changed: no new version (reloading the same data is idempotent).
        return Ok(WriteOutcome::new(Stored::from(row), false, false));
    }
    let version = row.version_id + 1;
    let now = now_micros().max(row.last_updated + 1);
    stamp(&mut body, id, version, now)?;
    let text = body.to_string();
    let q = Sql::with(
        "UPDATE resources SET version_id = ?, last_updated = ?, deleted = 0, patient_id = ?, body = ? \
         WHERE rid = ? AND version_id = ?",
        [
            Bind::Int(version),
            Bind::Int(now),
            Bind::OptText(patient.clone()),
            Bind::Json(text.clone()),
            Bind::Int(row.rid),
            Bind::Int(row.version_id),
        ],
    )
    .reused();
    if conn.execute(&q)? != 1 {
        return Err(FhirError::PreconditionFailed(format!(
            "{rtype}/{id} was changed by another request; read it again and retry"
        )));
    }
    let stored = Stored {
        rtype: rtype.to_string(),
        id: id.to_string(),
        version_id: version,
        last_updated: now,
        deleted: false,
        patient_id: patient,
        body: text,
    };
    finish_write(conn, ctx, row.rid, &stored, Some(&body), "PUT")?;
    hold_to_constraints(conn, ctx, row.rid, rtype, Interaction::Update)?;
    Ok(WriteOutcome::new(stored, row.deleted != 0, true))
}

fn same_content(stored: Option<&str>, new: &Value) -> bool {
    // Only the server-owned parts of meta differ between an unchanged resource and its copy.
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("meta").and_then(Value::as_object_mut) {
            meta.remove("versionId");
            meta.remove("lastUpdated");
        }
        if v.get("meta").and_then(Value::as_object).is_some_and(|m| m.is_empty()) {
            v.as_object_mut().map(|o| o.remove("meta"));
        }
        v
    };
    stored.and_then(|s| serde_json::from_str::<Value>(s).ok()).is_some_and(|old| strip(&old) == strip(new))
}

pub(crate) fn patch_in(
    conn: &mut Conn,
    ctx: &AccessContext,
    refs: &mut Refs,
    rtype: &str,
    id: &str,
    patch: &Value,
    if_match: Option<i64>,
) -> Result<WriteOutcome, FhirError> {
    // A missing scope is 403 whatever the resource; only then is an out-of-reach one absent.
    ctx.require(rtype, Interaction::Update)?;
    let row = current(conn, rtype, id)?.ok_or_else(|| FhirError::not_found(rtype, id))?;
    if !ctx.may_touch(conn, rtype, row.patient_id.as_deref(), Interaction::Update)? {
        return Err(FhirError::not_found(rtype, id));
    }
    if row.deleted != 0 {
        return Err(FhirError::Gone(format!("{rtype}/{id}")));
    }
    let patch: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| FhirError::invalid(format!("not a JSON Patch document: {e}")))?;
    let mut body: Value = serde_json::from_str(row.body.as_deref().unwrap_or("{}"))
        .map_err(|e| FhirError::invalid(format!("stored resource unreadable: {e}")))?;
    json_patch::patch(&mut body, &patch)
        .map_err(|e| FhirError::unprocessable(format!("the patch cannot be applied: {e}")))?;
    update_in(conn, ctx, refs, rtype, id, body, Some(if_match.unwrap_or(row.version_id)))
}

pub(crate) fn delete_in(
    conn: &mut Conn,
    ctx: &AccessContext,
    rtype: &str,
    id: &str,
) -> Result<Option<Stored>, FhirError> {
    if super::READ_ONLY_TYPES.contains(&rtype) {
        return Err(FhirError::NotSupported(format!("{rtype} cannot be deleted")));
    }
    ctx.require(rtype, Interaction::Delete)?;
    let Some(row) = current(conn, rtype, id)? else { return Ok(None) };
    if !ctx.may_touch(conn, rtype, row.patient_id.as_deref(), Interaction::Delete)?
        || !super::search::within_constraints(conn, ctx, rtype, row.rid, Interaction::Delete)?
    {
        return Ok(None);
    }
    if row.deleted != 0 {
        return Ok(None);
    }
    refuse_copy(conn, ctx, row.rid, rtype, id)?;
    let version = row.version_id + 1;
    let now = now_micros().max(row.last_updated + 1);
    let q = Sql::with(
        "UPDATE resources SET version_id = ?, last_updated = ?, deleted = 1 WHERE rid = ? AND version_id = ?",
        [Bind::Int(version), Bind::Int(now), Bind::Int(row.rid), Bind::Int(row.version_id)],
    );
    // A login would outlive the person it signs in as: the database refuses (migration 000014).
    match conn.execute(&q) {
        Ok(1) => {}
        Ok(_) => return Err(FhirError::Conflict(format!("{rtype}/{id} was changed while deleting it"))),
        Err(e) if e.is_refusal() => {
            return Err(FhirError::Conflict(format!(
                "{rtype}/{id} has a sign-in account here: the account must be closed before the {} is deleted",
                rtype.to_lowercase()
            )))
        }
        Err(e) => return Err(e.into()),
    }
    let stored = Stored {
        rtype: rtype.to_string(),
        id: id.to_string(),
        version_id: version,
        last_updated: now,
        deleted: true,
        patient_id: row.patient_id,
        body: String::new(),
    };
    finish_write(conn, ctx, row.rid, &stored, None, "DELETE")?;
    Ok(Some(stored))
}

/// Relative references a write makes, checked once every write of a request is done.
#[derive(Default, Debug)]
pub(crate) struct Refs(BTreeSet<String>);

impl Refs {
    /// The relative references (`Type`, `id`): not contained (`#id`), absolute or `urn:`.
    pub(crate) fn relative(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().filter_map(|r| reference::local(r))
    }
}

pub(crate) fn collect_refs(v: &Value, refs: &mut Refs) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                match (k.as_str(), child) {
                    ("reference", Value::String(s)) => {
                        refs.0.insert(s.clone());
                    }
                    // Contained resources reference each other by `#id`; nothing to check inside.
                    ("contained", _) => {}
                    _ => collect_refs(child, refs),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, refs)),
        _ => {}
    }
}

/// Every relative reference must resolve to a live resource; absolute URLs are taken as given.
pub(crate) fn check_refs(conn: &mut Conn, refs: &Refs) -> Result<(), FhirError> {
    let mut wanted: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for r in &refs.0 {
        let (t, id) = match reference::target(r) {
            Target::Local(t, id) => (t, id),
            // A `urn:` left over is a Bundle entry's fullUrl that no entry resolved.
            Target::External if !r.starts_with("urn:") => continue,
            Target::Contained => continue,
            Target::External | Target::Malformed => {
                return Err(FhirError::unprocessable(format!(
                    "reference '{r}' is neither Type/id, an absolute URL nor a contained #id"
                )))
            }
        };
        if super::resource_type(t).is_none() {
            return Err(FhirError::unprocessable(format!(
                "reference '{r}' points to a type this server does not hold; use an absolute URL"
            )));
        }
        wanted.entry(t).or_default().push(id);
    }
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Text)]
        id: String,
    }
    // One query per type and chunk: a whole record's worth of references in a few round trips.
    for (t, ids) in wanted {
        for chunk in ids.chunks(500) {
            let mut q = Sql::new("SELECT id FROM resources WHERE deleted = 0 AND res_type = ");
            q.text(t).push(" AND id IN ").list(chunk.iter().map(|id| Bind::Text((*id).into())));
            let found: std::collections::HashSet<String> = conn.load::<Found>(&q)?.into_iter().map(|f| f.id).collect();
            if let Some(missing) = chunk.iter().find(|id| !found.contains(**id)) {
                return Err(FhirError::unprocessable(format!(
                    "reference '{t}/{missing}' does not resolve to a resource on this server"
                )));
            }
        }
    }
    Ok(())
}

/// Who wrote this, when the writer is a provider system or a patient's app (operators' loads
/// carry their own provenance): the author of every version is then visible in the record.
fn author_provenance(conn: &mut Conn, ctx: &AccessContext) -> Result<Option<Value>, FhirError> {
    let client = json!({"identifier": {"system": "https://healthfolio.example/Id/client", "value": ctx.client_id}});
    let (who, on_behalf_of) = match &ctx.reach {
        Reach::All => return Ok(None),
        Reach::Patient(p) => (json!({"reference": format!("Patient/{p}")}), None),
        Reach::Granted { organization, .. } => {
            let org = match organization.as_deref().and_then(reference::local) {
                Some(("Organization", id)) if current(conn, "Organization", id)?.is_some_and(|r| r.deleted == 0) => {
                    Some(json!({"reference": format!("Organization/{id}")}))
                }
                _ => organization.as_ref().map(
                    |o| json!({"identifier": {"system": "https://healthfolio.example/Id/organization", "value": o}}),
                ),
            };
            let who = match &ctx.practitioner {
                Some(p) => json!({"reference": p}),
                None => client.clone(),
            };
            (who, org)
        }
    };
    let mut agent = json!({
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author"}]},
        "who": who,
    });
    if let Some(o) = on_behalf_of {
        agent["onBehalfOf"] = o;
    }
    Ok(Some(json!({
        "resourceType": "Provenance",
        "agent": [agent, {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "assembler"}]}, "who": client}],
    })))
}

/// The `X-Provenance` resource, aimed at the version just written.
/// A Provenance saying the service itself assembled `target` from elsewhere (an import, a copy
/// from a federated source): `who` says how, `what` names where it came from.
pub(crate) fn assembled_provenance(target: &str, recorded: i64, activity: &str, who: &str, what: Value) -> Value {
    json!({
        "resourceType": "Provenance",
        "target": [{"reference": target}],
        "recorded": time::format_instant(recorded),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": activity, "display": activity.to_lowercase()}]},
        "agent": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "assembler"}]},
            "who": {"display": who}
        }],
        "entity": [{"role": "source", "what": what}]
    })
}

fn provenance_for(mut prov: Value, target: &Stored) -> Result<Value, FhirError> {
    if prov.get("resourceType").and_then(Value::as_str) != Some("Provenance") {
        return Err(FhirError::invalid("X-Provenance must hold a Provenance resource"));
    }
    let obj = prov.as_object_mut().ok_or_else(|| FhirError::invalid("X-Provenance must be a JSON object"))?;
    obj.insert(
        "target".into(),
        json!([{ "reference": format!("{}/{}/_history/{}", target.rtype, target.id, target.version_id) }]),
    );
    obj.entry("recorded").or_insert_with(|| Value::String(time::format_instant(target.last_updated)));
    Ok(prov)
}
