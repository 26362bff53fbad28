//! Bulk Data 2.0 export: jobs live in the database and are leased by whichever replica's worker
//! is free (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so they survive restarts; output streams to
//! NDJSON files page by page, so memory stays flat whatever the size.

use crate::access::{AccessContext, Reach};
use crate::audit::AuditEntry;
use crate::config::BulkSettings;
use crate::db::jobs::{self, Finish, NewJob};
use crate::db::Db;
use crate::fhir::compartment;
use crate::fhir::{now_micros, params, time, FhirError, Interaction, READ_ONLY_TYPES, RESOURCE_TYPES};
use crate::scope::Scopes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PAGE: i64 = 2000;

/// Which resources a job exports.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Level {
    System,
    Patient,
    /// The members of one Group (its `member.entity` Patients), looked up when the job runs.
    Group,
}

/// The caller as stored with the job, so the worker applies the same scope and grants.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobParams {
    pub level: Level,
    /// For a Group export: the Group's row, whose `member` references say which patients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_rid: Option<i64>,
    pub types: Option<Vec<String>>,
    pub since: Option<String>,
    pub subject: String,
    pub client_id: String,
    pub scope: String,
    /// What the patient's grant allowed an app in patient context at kick-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_scope: Option<String>,
    pub reach: StoredReach,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredReach {
    All,
    Patient(String),
    Granted { client_id: String, organization: Option<String> },
}

impl JobParams {
    fn context(&self) -> AccessContext {
        AccessContext {
            subject: self.subject.clone(),
            client_id: self.client_id.clone(),
            scopes: Scopes::parse(&self.scope),
            reach: match &self.reach {
                StoredReach::All => Reach::All,
                StoredReach::Patient(p) => Reach::Patient(p.clone()),
                StoredReach::Granted { client_id, organization } => {
                    Reach::Granted { client_id: client_id.clone(), organization: organization.clone() }
                }
            },
            grant_scopes: self.grant_scope.as_deref().map(Scopes::parse),
            token_id: None,
            practitioner: None,
            service: false,
        }
    }
}

pub use crate::db::jobs::Job;

const KIND: &str = "bulk-export";

/// Starts an export job for `ctx`; returns its id.
pub fn kick_off(
    db: &Db,
    ctx: &AccessContext,
    level: Level,
    request: &str,
    types: Option<Vec<String>>,
    since: Option<String>,
    group: Option<&str>,
) -> Result<String, FhirError> {
    let group_rid = match group {
        Some(id) => Some(group_for(db, ctx, id)?),
        None => None,
    };
    if let Some(s) = &since {
        time::parse_range(s).ok_or_else(|| FhirError::invalid(format!("_since '{s}' is not a FHIR instant")))?;
    }
    if let Some(ts) = &types {
        if let Some(bad) = ts.iter().find(|t| crate::fhir::resource_type(t).is_none()) {
            return Err(FhirError::invalid(format!("_type {bad} is not a type this server holds")));
        }
    }
    let reach = match &ctx.reach {
        Reach::All => StoredReach::All,
        Reach::Patient(p) => StoredReach::Patient(p.clone()),
        Reach::Granted { client_id, organization } => {
            StoredReach::Granted { client_id: client_id.clone(), organization: organization.clone() }
        }
    };
    let scope = scopes_text(&ctx.scopes);
    let params = JobParams {
        level,
        group_rid,
        types,
        since,
        subject: ctx.subject.clone(),
        client_id: ctx.client_id.clone(),
        scope,
        grant_scope: ctx.grant_scopes.as_ref().map(scopes_text),
        reach,
    };
    let id = uuid::Uuid::new_v4().to_string();
    db.transaction(|c| {
        let params = serde_json::to_string(&params).unwrap_or_default();
        let job = NewJob { id: &id, kind: KIND, status: "queued", client_id: &ctx.client_id, request, params: &params };
        jobs::add(c, &job, now_micros())?;
        crate::audit::record_in(c, ctx, &AuditEntry::bulk_export("kick-off", &id, None, None))
    })?;
    Ok(id)
}

/// Scopes as the worker will read them back: every type and permission, with any query
/// constraint (`?status=active`), as `system/` scopes (the reach is stored beside them).
fn scopes_text(scopes: &Scopes) -> String {
    scopes
        .resources
        .iter()
        .map(|s| {
            let filter = if s.filter.is_empty() {
                String::new()
            } else {
                format!("?{}", serde_urlencoded::to_string(&s.filter).unwrap_or_default())
            };
            format!("system/{}.{}{filter}", s.resource.as_deref().unwrap_or("*"), crate::consent::perms(s))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The row of a Group the caller may export: the operator any; a provider system the groups its
/// organisation manages (`managingEntity`); patient apps none. Others are not found.
fn group_for(db: &Db, ctx: &AccessContext, id: &str) -> Result<i64, FhirError> {
    ctx.require("Group", Interaction::Read)?;
    let mut conn = db.conn()?;
    let row = crate::fhir::store::current(&mut conn, "Group", id)?
        .filter(|r| r.deleted == 0)
        .ok_or_else(|| FhirError::not_found("Group", id))?;
    let body: Value = serde_json::from_str(row.body.as_deref().unwrap_or("{}")).unwrap_or(Value::Null);
    let manager = body["managingEntity"]["reference"].as_str();
    let allowed = match &ctx.reach {
        Reach::All => true,
        Reach::Granted { organization: Some(org), .. } => manager == Some(org.as_str()),
        _ => false,
    };
    if allowed {
        Ok(row.rid)
    } else {
        Err(FhirError::not_found("Group", id))
    }
}

/// A job as its owner sees it: the client that started it, acting for the same records (one app
/// used by two patients must not see the other's export). Anyone else's job is not found.
pub fn get(db: &Db, ctx: &AccessContext, id: &str) -> Result<Job, FhirError> {
    let mut conn = db.conn()?;
    let same_reach = |j: &Job| {
        serde_json::from_str::<JobParams>(&j.params).is_ok_and(|p| p.context().owner_key() == ctx.owner_key())
    };
    jobs::get(&mut conn, id, KIND, &ctx.client_id)?
        .filter(|j| j.status != "cancelled" && same_reach(j))
        .ok_or_else(|| FhirError::NotFound(format!("export job {id}")))
}

pub fn cancel(db: &Db, ctx: &AccessContext, id: &str, files: &Path) -> Result<(), FhirError> {
    get(db, ctx, id)?;
    db.transaction(|c| jobs::end(c, id, "cancelled", None, now_micros()))?;
    let _ = std::fs::remove_dir_all(files.join(id));
    Ok(())
}

/// One export worker: its lease identity (`pid-uuid`, so an operator can tell which process held a
/// job) and the deployment's lease and pace.
struct Worker {
    id: String,
    settings: BulkSettings,
}

impl Worker {
    fn lease_micros(&self) -> i64 {
        i64::try_from(self.settings.lease_secs).unwrap_or(30).saturating_mul(1_000_000)
    }
}

/// Runs on its own thread while `alive` can be upgraded (the server that started it is up):
/// lease, export, repeat.
pub fn start_worker(db: Db, base: String, files: PathBuf, settings: BulkSettings, alive: std::sync::Weak<()>) {
    let worker = Worker { id: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()), settings };
    let spawned = std::thread::Builder::new().name("bulk-export".into()).spawn(move || loop {
        if alive.upgrade().is_none() {
            return;
        }
        let now = now_micros();
        let leased = db.transaction(|c| jobs::lease_next(c, KIND, &worker.id, now + worker.lease_micros(), now));
        match leased {
            Ok(Some(job)) => {
                if let Err(e) = run(&db, &base, &files, &job, &worker) {
                    tracing::warn!(job = %job.id, "bulk export failed: {e}");
                    let _ = db.transaction(|c| jobs::end(c, &job.id, "failed", Some(e.to_string()), now_micros()));
                }
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => {
                tracing::warn!("bulk export worker: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!("bulk export worker did not start: {e}");
    }
}

fn types_for(p: &JobParams) -> Vec<&'static str> {
    RESOURCE_TYPES
        .iter()
        .copied()
        .filter(|t| !READ_ONLY_TYPES.contains(t))
        .filter(|t| p.level == Level::System || !params::is_shared(t))
        .filter(|t| p.level != Level::Group || *t != "Group")
        .filter(|t| p.types.as_ref().is_none_or(|w| w.iter().any(|x| x == t)))
        .collect()
}

/// Still ours? A cancelled job, or one another worker took over, stops here.
fn renew(db: &Db, job: &str, worker: &Worker, progress: &str) -> Result<bool, FhirError> {
    Ok(db.transaction(|c| jobs::renew(c, job, &worker.id, now_micros() + worker.lease_micros(), progress))?)
}

fn run(db: &Db, base: &str, files: &Path, job: &Job, worker: &Worker) -> Result<(), FhirError> {
    let p: JobParams = serde_json::from_str(&job.params)
        .map_err(|e| FhirError::Internal(format!("job parameters unreadable: {e}")))?;
    let ctx = p.context();
    let dir = files.join(&job.id);
    std::fs::create_dir_all(&dir).map_err(|e| FhirError::Internal(format!("cannot write export files: {e}")))?;
    let transaction_time = time::format_instant(now_micros());
    let since = p.since.as_deref().and_then(time::parse_range).map(|r| r.lo);
    let mut output = Vec::new();
    let types = types_for(&p);
    let mut written = 0usize;
    let mut per_patient: BTreeMap<String, usize> = BTreeMap::new();
    for (i, t) in types.iter().enumerate() {
        if !ctx.scopes.allows(t, Interaction::Read) {
            continue;
        }
        let path = dir.join(format!("{t}.ndjson"));
        // After every page: renew the lease (with progress), then pause if the operator asked.
        let mut page_done = |n: usize| -> Result<bool, FhirError> {
            let progress = format!("{} resources; type {} of {} ({t})", written + n, i + 1, types.len());
            let ours = renew(db, &job.id, worker, &progress)?;
            if worker.settings.pause_ms > 0 {
                std::thread::sleep(Duration::from_millis(worker.settings.pause_ms));
            }
            Ok(ours)
        };
        let which = Selection { rtype: t, since, group_rid: p.group_rid };
        let Some(n) = export_type(db, &ctx, &which, &path, &mut per_patient, &mut page_done)? else {
            return Ok(());
        };
        written += n;
        if n > 0 {
            output.push(json!({"type": t, "url": format!("{base}/bulk/files/{}/{t}.ndjson", job.id), "count": n}));
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    let manifest = json!({
        "transactionTime": transaction_time, "request": job.request, "requiresAccessToken": true,
        "output": output, "deleted": [], "error": []
    });
    let exported: Vec<AuditEntry> =
        per_patient.iter().map(|(p, n)| AuditEntry::bulk_export("exported", &job.id, Some(p), Some(*n))).collect();
    db.transaction(|c| {
        let done = Finish { status: "completed", progress: "done", result: Some(manifest.to_string()), error: None };
        if jobs::finish(c, &job.id, &worker.id, done, now_micros())? {
            crate::audit::record_many_in(c, &ctx, &exported)?;
        }
        Ok::<_, crate::db::DbError>(())
    })?;
    Ok(())
}

/// Streams one type to a file, a keyset page at a time; returns the count written, or `None`
/// when `page_done` says the job is no longer ours.
/// What one file of an export holds: a type, changed since, of a Group's members.
struct Selection<'a> {
    rtype: &'a str,
    since: Option<i64>,
    group_rid: Option<i64>,
}

fn export_type(
    db: &Db,
    ctx: &AccessContext,
    which: &Selection,
    path: &Path,
    per_patient: &mut BTreeMap<String, usize>,
    page_done: &mut dyn FnMut(usize) -> Result<bool, FhirError>,
) -> Result<Option<usize>, FhirError> {
    let Selection { rtype, since, group_rid } = *which;
    let io = |e: std::io::Error| FhirError::Internal(format!("cannot write {}: {e}", path.display()));
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).map_err(io)?);
    let mut conn = crate::fhir::store::read_conn(db, ctx)?;
    let (mut after, mut n) = (0i64, 0usize);
    loop {
        let page = compartment::Export { rtype, since, group_rid, after, limit: PAGE };
        let rows = compartment::export_page(&mut conn, ctx, &page)?;
        let Some(last) = rows.last().map(|r| r.rid) else { break };
        for r in &rows {
            out.write_all(r.body.as_deref().unwrap_or("{}").as_bytes()).map_err(io)?;
            out.write_all(b"\n").map_err(io)?;
            if let Some(p) = &r.patient_id {
                *per_patient.entry(p.clone()).or_default() += 1;
            } else if rtype == "Patient" {
                *per_patient.entry(r.id.clone()).or_default() += 1;
            }
        }
        n += rows.len();
        after = last;
        if !page_done(n)? {
            return Ok(None);
        }
    }
    out.flush().map_err(io)?;
    Ok(Some(n))
}

/// (queued, running) jobs, for the metrics.
pub fn counts(db: &Db) -> Result<(i64, i64), FhirError> {
    let mut conn = db.conn()?;
    Ok((jobs::count(&mut conn, "queued")?, jobs::count(&mut conn, "running")?))
}

/// The manifest of a completed job, or where it stands.
pub enum Status {
    InProgress(String),
    Completed(Value),
    Failed(String),
}

pub fn status(job: &Job) -> Status {
    match job.status.as_str() {
        "completed" => {
            Status::Completed(job.result.as_deref().and_then(|r| serde_json::from_str(r).ok()).unwrap_or(Value::Null))
        }
        "failed" => Status::Failed(job.error.clone().unwrap_or_default()),
        _ => Status::InProgress(job.progress.clone().unwrap_or_else(|| job.status.clone())),
    }
}

/// The path of an output file, checked against the job's owner and the file name.
pub fn file(db: &Db, ctx: &AccessContext, files: &Path, id: &str, name: &str) -> Result<PathBuf, FhirError> {
    let job = get(db, ctx, id)?;
    let valid = name.strip_suffix(".ndjson").is_some_and(|t| crate::fhir::resource_type(t).is_some());
    if job.status != "completed" || !valid {
        return Err(FhirError::NotFound(format!("export file {id}/{name}")));
    }
    db.transaction(|c| {
        crate::audit::record_in(c, ctx, &AuditEntry::bulk_export(&format!("file {name}"), id, None, None))
    })?;
    Ok(files.join(id).join(name))
}
