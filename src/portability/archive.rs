//! The record archive: one tar file with `manifest.json` (source, time, counts, SHA-256),
//! `record.ndjson` (every resource, its Provenance, Consent and AuditEvent entries) and
//! `summary.html` (for people). Import is validate-everything-then-one-transaction, with new ids,
//! rewritten references, a Provenance naming each resource's origin, and de-duplication on that
//! origin so a second import changes nothing.

use super::summary::label;
use super::{everything_in, EverythingRequest};
use crate::access::{AccessContext, Reach};
use crate::audit::{search_audit_events, write_audit_event, AuditEntry, AuditQuery};
use crate::db::{Bind, Conn, Sql};
use crate::fhir::patient::{by_nhs_number, nhs_number};
use crate::fhir::reference::{self, Target};
use crate::fhir::store::{assembled_provenance, check_refs, create_many_in, new_id, Refs};
use crate::fhir::validate::{holds_nul, NUL_REFUSED};
use crate::fhir::{now_micros, resource_type, time, valid_id, FhirError, Interaction, Store, READ_ONLY_TYPES};
use askama::Template;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;

pub const FORMAT: &str = "healthfolio-archive/1";
/// Hostile-input bounds: more than this is refused before anything is parsed further.
pub const MAX_RESOURCES: usize = 200_000;
pub const MAX_ARCHIVE_BYTES: u64 = 512 * 1024 * 1024;
const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub source: String,
    pub exported_at: String,
    pub patient: String,
    pub nhs_number: Option<String>,
    pub counts: BTreeMap<String, usize>,
    pub resources: usize,
    pub sha256: String,
}

#[derive(Template)]
#[template(path = "archive_summary.html")]
struct SummaryPage<'a> {
    manifest: &'a Manifest,
    /// When it was exported, as the clocks in England showed it: `14 March 2025, 10:05`.
    exported: String,
    name: String,
    lines: Vec<(String, String)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn display_name(patient: &Value) -> String {
    let n = &patient["name"][0];
    let given = n["given"]
        .as_array()
        .map(|g| g.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!("{given} {}", n["family"].as_str().unwrap_or_default()).trim().to_string()
}

/// One line of an exported record: its type, id and JSON text (on one line).
pub struct Line<'a> {
    pub rtype: &'a str,
    pub id: &'a str,
    pub json: &'a [u8],
}

/// Where an export's lines go, one at a time; an error (the reader went away) stops the export.
pub type Emit<'a> = dyn FnMut(Line<'_>) -> std::io::Result<()> + 'a;

/// The access log is read this many rows at a time, newest first.
const AUDIT_PAGE: i64 = 1000;
/// An export carries at most the newest this many rows of the access log (an archive must stay
/// under [`MAX_RESOURCES`] lines to be imported again).
const AUDIT_ROWS: i64 = 100_000;

fn written(e: std::io::Error) -> FhirError {
    FhirError::invalid(format!("the export could not be written: {e}"))
}

/// Every line of the record asked for, to `emit`: resources, shared resources they use, and
/// (unless `_type` leaves them out) the Consent and AuditEvent views of its grants and access
/// log. The access log can hold tens of thousands of rows: it is read a page at a time and each
/// row written out as it is read, so no part of the export is held whole. Returns how many lines.
fn record_lines(
    store: &Store,
    ctx: &AccessContext,
    asked: &EverythingRequest,
    emit: &mut Emit<'_>,
) -> Result<usize, FhirError> {
    let mut conn = store.db.conn()?;
    let mut n = 0;
    let mut seen = HashSet::new();
    let patient = asked.patient.as_str();
    let named = |t: &str| asked.types.as_ref().is_none_or(|types| types.iter().any(|x| x == t));
    // The grants and the access log are views like any other: only a caller whose scopes (and
    // the patient's grant) let it read them gets them, as `Consent` and `AuditEvent` reads do.
    let view = |conn: &mut Conn, t: &str| -> Result<bool, FhirError> {
        Ok(named(t) && ctx.may_touch(conn, t, Some(patient), Interaction::Read)?)
    };
    let mut req = EverythingRequest { count: Some(1000), cursor: None, ..asked.clone() };
    loop {
        let page = everything_in(&mut conn, ctx, &req)?;
        for s in page.matches.iter().chain(page.included.iter()) {
            if seen.insert((s.rtype.clone(), s.id.clone())) {
                emit(Line { rtype: &s.rtype, id: &s.id, json: s.body.as_bytes() }).map_err(written)?;
                n += 1;
            }
        }
        match page.next_cursor.and_then(|c| c.parse().ok()) {
            Some(c) => req.cursor = Some(c),
            None => break,
        }
    }
    let now = now_micros();
    if view(&mut conn, "Consent")? {
        for g in crate::consent::list(&mut conn, Some(patient))? {
            let json = crate::consent::consent_json(&g, now).to_string();
            emit(Line { rtype: "Consent", id: &g.id, json: json.as_bytes() }).map_err(written)?;
            n += 1;
        }
    }
    if view(&mut conn, "AuditEvent")? {
        let mut q = AuditQuery { patient: Some(patient.to_string()), ..AuditQuery::default() };
        let mut json = Vec::new();
        let mut left = AUDIT_ROWS;
        while left > 0 {
            q.limit = left.min(AUDIT_PAGE);
            let rows = search_audit_events(&mut conn, &q)?;
            for r in &rows {
                json.clear();
                write_audit_event(r, &mut json);
                emit(Line { rtype: "AuditEvent", id: &r.id, json: &json }).map_err(written)?;
            }
            n += rows.len();
            left -= rows.len() as i64;
            match rows.last() {
                Some(last) if rows.len() as i64 == q.limit => q.before_aid = Some(last.aid),
                _ => break,
            }
        }
    }
    Ok(n)
}

/// The lines of the record `req` asks for, as the caller may see them (the PHR export), to
/// `emit`; audited as an export. Returns how many.
pub fn export_lines(
    store: &Store,
    ctx: &AccessContext,
    req: &EverythingRequest,
    emit: &mut Emit<'_>,
) -> Result<usize, FhirError> {
    store.read(ctx, "Patient", &req.patient)?;
    let n = record_lines(store, ctx, req, emit)?;
    store.audit.record(ctx, AuditEntry::operation("export", "Patient", &req.patient, Ok(n)));
    Ok(n)
}

/// The PHR export's two shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhrFormat {
    /// One resource a line (`application/fhir+ndjson`).
    Ndjson,
    /// One collection Bundle, its `meta.source` this service (what `$phr-import` reads).
    Bundle,
}

/// Writes the PHR export of the record `req` asks for to `out`, line by line as it is read.
pub fn write_phr_export(
    store: &Store,
    ctx: &AccessContext,
    req: &EverythingRequest,
    format: PhrFormat,
    out: &mut impl std::io::Write,
) -> Result<(), FhirError> {
    let text = |s: &str| Value::String(s.to_string()).to_string();
    if format == PhrFormat::Bundle {
        let head = format!(
            "{{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"meta\":{{\"source\":{}}},\"timestamp\":{},\"entry\":[",
            text(&store.base),
            text(&time::format_instant(now_micros()))
        );
        out.write_all(head.as_bytes()).map_err(written)?;
    }
    let mut first = true;
    export_lines(store, ctx, req, &mut |l| match format {
        PhrFormat::Ndjson => {
            out.write_all(l.json)?;
            out.write_all(b"\n")
        }
        PhrFormat::Bundle => {
            let sep = if std::mem::take(&mut first) { "" } else { "," };
            let url = text(&format!("{}/{}/{}", store.base, l.rtype, l.id));
            out.write_all(format!("{sep}{{\"fullUrl\":{url},\"resource\":").as_bytes())?;
            out.write_all(l.json)?;
            out.write_all(b"}")
        }
    })?;
    if format == PhrFormat::Bundle {
        out.write_all(b"]}").map_err(written)?;
    }
    out.flush().map_err(written)
}

/// Writes the archive of `patient`'s record to `out`; returns its manifest.
pub fn export(
    store: &Store,
    ctx: &AccessContext,
    patient: &str,
    out: impl std::io::Write,
) -> Result<Manifest, FhirError> {
    let p = store.read(ctx, "Patient", patient)?;
    let pv: Value = serde_json::from_str(&p.body).unwrap_or(Value::Null);
    let whole = EverythingRequest { patient: patient.to_string(), ..EverythingRequest::default() };
    let mut ndjson = Vec::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut summary_lines = Vec::new();
    let resources = export_lines(store, ctx, &whole, &mut |l| {
        match counts.get_mut(l.rtype) {
            Some(c) => *c += 1,
            None => {
                counts.insert(l.rtype.to_string(), 1);
            }
        }
        ndjson.extend_from_slice(l.json);
        ndjson.push(b'\n');
        if matches!(l.rtype, "MedicationStatement" | "MedicationRequest" | "AllergyIntolerance" | "Condition") {
            let v: Value = serde_json::from_slice(l.json).unwrap_or(Value::Null);
            summary_lines.push((l.rtype.to_string(), label(&v)));
        }
        Ok(())
    })?;
    let now = now_micros();
    let manifest = Manifest {
        format: FORMAT.into(),
        source: store.base.clone(),
        exported_at: time::format_instant(now),
        patient: patient.to_string(),
        nhs_number: nhs_number(&pv),
        counts,
        resources,
        sha256: hex(&Sha256::digest(&ndjson)),
    };
    let exported = chrono::DateTime::from_timestamp_micros(now).map(crate::time::england_minute).unwrap_or_default();
    let html = SummaryPage { manifest: &manifest, exported, name: display_name(&pv), lines: summary_lines }
        .render()
        .map_err(|e| FhirError::invalid(format!("summary page: {e}")))?;
    write_tar(out, &manifest, &ndjson, html.as_bytes())
        .map_err(|e| FhirError::invalid(format!("the archive could not be written: {e}")))?;
    Ok(manifest)
}

fn write_tar(out: impl std::io::Write, m: &Manifest, ndjson: &[u8], html: &[u8]) -> std::io::Result<()> {
    let mut t = tar::Builder::new(out);
    let manifest = serde_json::to_vec_pretty(m).map_err(std::io::Error::other)?;
    for (name, data) in [("manifest.json", manifest.as_slice()), ("record.ndjson", ndjson), ("summary.html", html)] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
        h.set_cksum();
        t.append_data(&mut h, name, data)?;
    }
    t.into_inner().map(|_| ())
}

/// Reads an archive's manifest and resources, checking format, size and checksum.
pub fn read_archive(bytes: impl Read) -> Result<(Manifest, Vec<Value>), FhirError> {
    let bad = |m: &str| FhirError::invalid(format!("not a valid Healthfolio archive: {m}"));
    let mut manifest: Option<Manifest> = None;
    let mut ndjson: Option<Vec<u8>> = None;
    let mut archive = tar::Archive::new(bytes.take(MAX_ARCHIVE_BYTES));
    let entries = archive.entries().map_err(|e| bad(&e.to_string()))?;
    for (i, entry) in entries.enumerate() {
        if i > 16 {
            return Err(bad("too many files"));
        }
        let mut e = entry.map_err(|e| bad(&format!("truncated or corrupt ({e})")))?;
        let name = e.path().map_err(|_| bad("a file name is unreadable"))?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).map_err(|err| bad(&format!("{name} is truncated ({err})")))?;
        match name.as_str() {
            "manifest.json" => {
                manifest = Some(serde_json::from_slice(&data).map_err(|e| bad(&format!("manifest.json: {e}")))?)
            }
            "record.ndjson" => ndjson = Some(data),
            _ => {}
        }
    }
    let manifest = manifest.ok_or_else(|| bad("manifest.json is missing"))?;
    let ndjson = ndjson.ok_or_else(|| bad("record.ndjson is missing (truncated archive?)"))?;
    if manifest.format != FORMAT {
        return Err(bad(&format!("format '{}' is not {FORMAT}", manifest.format)));
    }
    if hex(&Sha256::digest(&ndjson)) != manifest.sha256 {
        return Err(FhirError::Unprocessable(
            "the archive's content does not match its SHA-256 checksum: it was changed or damaged".into(),
        ));
    }
    Ok((manifest, parse_lines(&ndjson)?))
}

pub fn parse_lines(ndjson: &[u8]) -> Result<Vec<Value>, FhirError> {
    // The record's views of itself (Consent, AuditEvent), as an exported line begins.
    let views: Vec<(&str, String)> =
        READ_ONLY_TYPES.iter().map(|t| (*t, format!("{{\"resourceType\":\"{t}\""))).collect();
    let mut out = Vec::new();
    for (i, line) in ndjson.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if line.len() > MAX_LINE_BYTES {
            return Err(FhirError::TooLarge(format!("line {} is larger than {MAX_LINE_BYTES} bytes", i + 1)));
        }
        if out.len() >= MAX_RESOURCES {
            return Err(FhirError::TooLarge(format!("a record may hold at most {MAX_RESOURCES} resources")));
        }
        let bad = |e: serde_json::Error| FhirError::invalid(format!("line {}: {e}", i + 1));
        // A Consent or AuditEvent (about half of an archive) stays with its source: it is checked
        // to be JSON and counted, without building a tree that would be thrown away.
        match views.iter().find(|(_, prefix)| line.starts_with(prefix.as_bytes())) {
            Some((t, _)) => {
                serde_json::from_slice::<serde::de::IgnoredAny>(line).map_err(bad)?;
                out.push(serde_json::json!({"resourceType": t}));
            }
            None => {
                let v = serde_json::from_slice(line).map_err(bad)?;
                if holds_nul(&v) {
                    return Err(FhirError::invalid(format!("line {}: {NUL_REFUSED}", i + 1)));
                }
                out.push(v)
            }
        }
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// De-duplicate on origin: what was imported before is matched, not written again.
    Merge,
    /// Always write new copies.
    Append,
}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// An existing Patient the record merges into (the signed-in patient, or `--into`).
    pub into: Option<String>,
    pub append: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub patient: String,
    pub created: usize,
    pub already_present: usize,
    /// Consent and AuditEvent entries stay with the source instance's record of them.
    pub not_imported: usize,
}

/// The record `ctx` may import `lines` into: the patient's own (their app), or any (the
/// operator, naming it with `named` or not at all); never a provider's. An import writes the
/// record, so the token (and the patient's grant) must allow creating every type it brings; the
/// views are not imported, a Patient merged into a named record is not created, and the origin
/// Provenance is the service's own.
pub fn import_target(ctx: &AccessContext, named: Option<String>, lines: &[Value]) -> Result<Option<String>, FhirError> {
    let into = match &ctx.reach {
        Reach::All => named,
        Reach::Patient(p) => Some(p.clone()),
        Reach::Granted { .. } => {
            return Err(FhirError::forbidden("only the patient (or an operator) can import a record"))
        }
    };
    let types: std::collections::BTreeSet<&'static str> =
        lines.iter().filter_map(|l| l["resourceType"].as_str().and_then(resource_type)).collect();
    let merged_patient = |t: &str| t == "Patient" && into.is_some();
    for t in types.into_iter().filter(|t| !(READ_ONLY_TYPES.contains(t) || merged_patient(t))) {
        ctx.require(t, Interaction::Create)?;
    }
    Ok(into)
}

/// Imports the resources of one patient's record, exported by `source`, as `ctx`: into the record
/// [`import_target`] allows it (`opts.into` names one for an operator), every resource checked
/// and written with the caller's own access, as through the API.
pub fn import(
    store: &Store,
    ctx: &AccessContext,
    source: &str,
    lines: Vec<Value>,
    opts: &ImportOptions,
) -> Result<ImportReport, FhirError> {
    import_reporting(store, ctx, source, lines, opts, &mut |_, _| {})
}

/// [`import`], telling `progress` (written, to write) after each group of resources.
pub fn import_reporting(
    store: &Store,
    ctx: &AccessContext,
    source: &str,
    lines: Vec<Value>,
    opts: &ImportOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ImportReport, FhirError> {
    let result = (|| {
        if source.trim_end_matches('/') == store.base.trim_end_matches('/') {
            // Its origins are this service's own resources: there is nothing to bring in.
            return Err(FhirError::Conflict(
                "this record file was made by this service, so everything in it is already here".into(),
            ));
        }
        let opts = ImportOptions { into: import_target(ctx, opts.into.clone(), &lines)?, append: opts.append };
        let (resources, not_imported) = split_views(lines)?;
        store.db.transaction(|conn| import_in(conn, ctx, source, resources, not_imported, &opts, progress))
    })();
    let patient = match &result {
        Ok(r) => r.patient.clone(),
        Err(_) => opts.into.clone().or_else(|| ctx.compartment().map(str::to_string)).unwrap_or_default(),
    };
    store.audit.record(
        ctx,
        AuditEntry::operation(
            "import",
            "Patient",
            &patient,
            result.as_ref().map(|r| r.created).map_err(|e| e.to_string()),
        ),
    );
    result
}

fn split_views(lines: Vec<Value>) -> Result<(Vec<Value>, usize), FhirError> {
    let mut keep = Vec::new();
    let mut views = 0;
    for (i, l) in lines.into_iter().enumerate() {
        let t =
            l["resourceType"].as_str().ok_or_else(|| FhirError::invalid(format!("entry {i} has no resourceType")))?;
        if READ_ONLY_TYPES.contains(&t) {
            views += 1;
            continue;
        }
        if resource_type(t).is_none() {
            return Err(FhirError::unprocessable(format!("entry {i}: {t} is not a type this record holds")));
        }
        if !l["id"].as_str().is_some_and(valid_id) {
            return Err(FhirError::invalid(format!("entry {i} ({t}) has no valid id")));
        }
        keep.push(l);
    }
    Ok((keep, views))
}

/// A resource's `Type/id`.
pub(crate) fn key(v: &Value) -> String {
    format!("{}/{}", v["resourceType"].as_str().unwrap_or_default(), v["id"].as_str().unwrap_or_default())
}

fn known_origins(conn: &mut Conn, origins: &[String]) -> Result<HashMap<String, String>, FhirError> {
    #[derive(diesel::QueryableByName)]
    struct O {
        #[diesel(sql_type = diesel::sql_types::Text)]
        origin: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        res_id: String,
    }
    let mut out = HashMap::new();
    for chunk in origins.chunks(500) {
        let mut q = Sql::new("SELECT origin, res_id FROM imported_origins WHERE origin IN ");
        q.list(chunk.iter().map(|o| Bind::Text(o.clone())));
        for o in conn.load::<O>(&q)? {
            out.insert(o.origin, o.res_id);
        }
    }
    Ok(out)
}

fn target_patient(
    conn: &mut Conn,
    patient: &Value,
    mapped: Option<&String>,
    opts: &ImportOptions,
) -> Result<(String, bool), FhirError> {
    if let Some(id) = mapped.filter(|_| !opts.append) {
        // Merging into a named record: the file's patient must have been imported into that one,
        // not into another record (which the caller may not reach, and whose id is not theirs).
        if opts.into.as_ref().is_some_and(|into| into != id) {
            return Err(FhirError::Conflict(
                "the archive's patient was imported into another record here, not this one".into(),
            ));
        }
        return Ok((id.clone(), false));
    }
    let theirs = nhs_number(patient);
    if let Some(into) = &opts.into {
        // The import writes as the service: a moved record still takes nothing new.
        if let Some(to) = crate::fhir::store::moved_to(conn, into)? {
            return Err(FhirError::Conflict(format!("this record has moved to {to}: import there")));
        }
        // Merging into a named record (the signed-in patient's): it must be the same person.
        let row = crate::fhir::store::current(conn, "Patient", into)?
            .filter(|r| r.deleted == 0)
            .ok_or_else(|| FhirError::not_found("Patient", into))?;
        let ours = nhs_number(&serde_json::from_str(row.body.as_deref().unwrap_or("{}")).unwrap_or(Value::Null));
        if let (Some(t), Some(o)) = (&theirs, &ours) {
            if t != o {
                return Err(FhirError::Conflict(format!(
                    "the archive is the record of another person (NHS number {t}), not of Patient/{into}"
                )));
            }
        }
    }
    let local = match theirs {
        Some(n) => by_nhs_number(conn, &n)?,
        None => None,
    };
    match (&opts.into, local) {
        (Some(into), Some(l)) if *into != l => Err(FhirError::Conflict(format!("the archive's NHS number belongs to Patient/{l} here, not Patient/{into}"))),
        (Some(into), _) => Ok((into.clone(), false)),
        (None, Some(l)) => Err(FhirError::Conflict(format!(
            "the archive's NHS number already belongs to Patient/{l} here: import into that record (--into Patient/{l}, or sign in as that patient)"
        ))),
        (None, None) => Ok((new_id(), true)),
    }
}

fn import_in(
    conn: &mut Conn,
    ctx: &AccessContext,
    source: &str,
    resources: Vec<Value>,
    not_imported: usize,
    opts: &ImportOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ImportReport, FhirError> {
    let patients: Vec<&Value> = resources.iter().filter(|r| r["resourceType"] == "Patient").collect();
    let [patient] = patients.as_slice() else {
        return Err(FhirError::unprocessable(format!(
            "an archive holds exactly one Patient, this one has {}",
            patients.len()
        )));
    };
    let origin = |v: &Value| format!("{source}|{}", key(v));
    let origins: Vec<String> = resources.iter().map(origin).collect();
    let known = if opts.append { HashMap::new() } else { known_origins(conn, &origins)? };
    let (patient_id, write_patient) = target_patient(conn, patient, known.get(&origin(patient)), opts)?;
    let mut ids: HashMap<String, String> = HashMap::new();
    for r in &resources {
        let new = match (r["resourceType"].as_str(), known.get(&origin(r))) {
            (Some("Patient"), _) => patient_id.clone(),
            (_, Some(existing)) => existing.clone(),
            _ => new_id(),
        };
        ids.insert(key(r), new);
    }
    let mut refs = Refs::default();
    let mut present = 0;
    let mut new_resources = Vec::new();
    for mut r in resources {
        let k = key(&r);
        rewrite_refs(&mut r, &ids, &k)?;
        let is_patient = r["resourceType"] == "Patient";
        if known.contains_key(&origin(&r)) || (is_patient && !write_patient) {
            present += 1;
            continue;
        }
        let t = resource_type(r["resourceType"].as_str().unwrap_or_default())
            .ok_or_else(|| FhirError::invalid("unknown type"))?;
        let id = ids.get(&k).cloned().unwrap_or_else(new_id);
        strip_server_meta(&mut r);
        new_resources.push((k, (t, r, id)));
    }
    // A Provenance finds its patient through its target: targets are written first.
    new_resources.sort_by_key(|(_, (t, _, _))| *t == "Provenance");
    // A group at a time (the resources, then their Provenance, which finds its patient through
    // its target), all in the caller's one transaction.
    let total = new_resources.len();
    let mut created = 0;
    let mut rest = new_resources.into_iter().peekable();
    while rest.peek().is_some() {
        let (keys, items): (Vec<String>, Vec<_>) = rest.by_ref().take(IMPORT_GROUP).unzip();
        let stored = create_many_in(conn, ctx, &mut refs, items, "POST").map_err(|(_, e)| e)?;
        // Whatever its references said, nothing lands outside the record being imported.
        if let Some(s) = stored.iter().find(|s| s.patient_id.as_ref().is_some_and(|p| *p != patient_id)) {
            return Err(FhirError::unprocessable(format!(
                "{}/{}: the archive places it in another patient's record",
                s.rtype, s.id
            )));
        }
        let provenance = keys
            .iter()
            .zip(&stored)
            .map(|(k, s)| ("Provenance", origin_provenance(source, k, &s.rtype, &s.id), new_id()))
            .collect();
        // Where each resource came from is the service's statement, not the importer's.
        create_many_in(conn, &AccessContext::service("import"), &mut refs, provenance, "POST").map_err(|(_, e)| e)?;
        let now = now_micros();
        let origins: Vec<Vec<Bind>> = keys
            .iter()
            .zip(&stored)
            .map(|(k, s)| {
                vec![
                    Bind::Text(format!("{source}|{k}")),
                    Bind::Text(s.rtype.clone()),
                    Bind::Text(s.id.clone()),
                    Bind::Int(now),
                ]
            })
            .collect();
        conn.insert_rows("INSERT INTO imported_origins (origin, res_type, res_id, imported_at) VALUES", &origins)?;
        created += stored.len();
        progress(created, total);
    }
    check_refs(conn, &refs)?;
    Ok(ImportReport { patient: patient_id, created, already_present: present, not_imported })
}

const IMPORT_GROUP: usize = 1000;

fn strip_server_meta(r: &mut Value) {
    if let Some(meta) = r.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
    }
}

/// Rewrites every relative reference to its new id; a reference to something outside the record
/// is refused (the record must arrive whole).
fn rewrite_refs(v: &mut Value, ids: &HashMap<String, String>, at: &str) -> Result<(), FhirError> {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                if k == "reference" {
                    if let Some(s) = child.as_str() {
                        let (t, id) = match reference::target(s) {
                            Target::Local(t, id) => (t, id),
                            Target::External | Target::Contained => continue,
                            Target::Malformed => {
                                return Err(FhirError::invalid(format!("{at}: reference '{s}' is malformed")))
                            }
                        };
                        let new = ids.get(&format!("{t}/{id}")).ok_or_else(|| {
                            FhirError::unprocessable(format!("{at}: reference '{s}' points outside the record"))
                        })?;
                        *child = Value::String(format!("{t}/{new}"));
                    }
                } else if k != "contained" {
                    rewrite_refs(child, ids, at)?;
                }
            }
        }
        Value::Array(a) => {
            for c in a {
                rewrite_refs(c, ids, at)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The Provenance of an imported resource: where it came from and under which id.
fn origin_provenance(source: &str, original: &str, rtype: &str, id: &str) -> Value {
    let (otype, oid) = original.split_once('/').unwrap_or((original, ""));
    let what = json!({"identifier": {"system": format!("{source}/{otype}"), "value": oid},
                      "display": format!("{original} at {source}")});
    assembled_provenance(&format!("{rtype}/{id}"), now_micros(), "CREATE", "Healthfolio import", what)
}
