//! The record leaving and arriving: `$everything`, the IPS `$summary`, and the archive.

pub mod archive;
pub mod bulk;
pub mod federated;
mod summary;
pub mod transfer;

pub use summary::summary;

use crate::access::AccessContext;
use crate::audit::AuditEntry;
use crate::db::{Bind, Conn, Sql};
use crate::fhir::search::SearchResult;
use crate::fhir::store::{Row, Stored, ROW_COLUMNS};
use crate::fhir::{params, time, FhirError, Interaction, Store, RESOURCE_TYPES};

/// `Patient/{id}/$everything` parameters.
#[derive(Debug, Clone, Default)]
pub struct EverythingRequest {
    pub patient: String,
    pub since: Option<String>,
    pub types: Option<Vec<String>>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub count: Option<i64>,
    pub cursor: Option<i64>,
}

impl EverythingRequest {
    pub fn from_params(patient: &str, params: &[(String, String)]) -> Result<EverythingRequest, FhirError> {
        let mut r = EverythingRequest { patient: patient.to_string(), ..EverythingRequest::default() };
        for (k, v) in params {
            match k.as_str() {
                "_since" => r.since = Some(v.clone()),
                "_type" => r.types = Some(v.split(',').map(|t| t.trim().to_string()).collect()),
                "start" => r.start = Some(v.clone()),
                "end" => r.end = Some(v.clone()),
                "_count" => r.count = Some(v.parse().map_err(|_| FhirError::invalid("_count must be a number"))?),
                "_cursor" => {
                    r.cursor = Some(v.parse().map_err(|_| FhirError::invalid("the paging cursor is malformed"))?)
                }
                _ => {}
            }
        }
        Ok(r)
    }

    fn applied(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut add = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                p.push((k.to_string(), v.clone()));
            }
        };
        add("_since", &self.since);
        add("_type", &self.types.as_ref().map(|t| t.join(",")));
        add("start", &self.start);
        add("end", &self.end);
        add("_count", &self.count.map(|c| c.to_string()));
        p
    }
}

/// The types of the patient's record this caller may read (scope and grant, per type).
pub fn readable_types(
    conn: &mut Conn,
    ctx: &AccessContext,
    patient: &str,
    wanted: Option<&[String]>,
) -> Result<Vec<&'static str>, FhirError> {
    let mut out = Vec::new();
    for t in
        RESOURCE_TYPES.iter().copied().filter(|t| !params::is_shared(t) && !crate::fhir::READ_ONLY_TYPES.contains(t))
    {
        if wanted.is_some_and(|w| !w.iter().any(|x| x == t)) {
            continue;
        }
        if ctx.may_touch(conn, t, Some(patient), Interaction::Read)? {
            out.push(t);
        }
    }
    Ok(out)
}

fn bound(s: &Option<String>, name: &str) -> Result<Option<time::Range>, FhirError> {
    s.as_deref()
        .map(|v| time::parse_range(v).ok_or_else(|| FhirError::invalid(format!("{name} '{v}' is not a date"))))
        .transpose()
}

impl Store {
    /// Every resource of the patient's compartment the caller may read, with the shared resources
    /// they reference, one keyset page at a time.
    pub fn everything(&self, ctx: &AccessContext, req: &EverythingRequest) -> Result<SearchResult, FhirError> {
        let mut conn = self.db.conn()?;
        let result = everything_in(&mut conn, ctx, req);
        let n = result.as_ref().map(|r| r.matches.len() + r.included.len());
        self.audit.record(
            ctx,
            AuditEntry::operation(
                "$everything",
                "Patient",
                &req.patient,
                n.as_ref().map(|n| *n).map_err(|e| e.to_string()),
            ),
        );
        result
    }
}

pub(crate) fn everything_in(
    conn: &mut Conn,
    ctx: &AccessContext,
    req: &EverythingRequest,
) -> Result<SearchResult, FhirError> {
    let types = readable_types(conn, ctx, &req.patient, req.types.as_deref())?;
    if !ctx.may_touch(conn, "Patient", Some(&req.patient), Interaction::Read)? && types.is_empty() {
        return Err(FhirError::not_found("Patient", &req.patient));
    }
    let count = req.count.unwrap_or(200).clamp(1, 1000);
    let mut q = Sql::new(&format!("SELECT {ROW_COLUMNS} FROM resources r WHERE r.patient_id = "));
    q.text(req.patient.clone()).push(" AND r.deleted = 0");
    crate::fhir::search::readable_types_condition(&mut q, ctx, &types)?;
    if let Some(s) = bound(&req.since, "_since")? {
        q.push(" AND r.last_updated > ").int(s.lo);
    }
    let (start, end) = (bound(&req.start, "start")?, bound(&req.end, "end")?);
    if start.is_some() || end.is_some() {
        // Care dates: a resource with no date at all is kept (it may still be current).
        let lo = start.map_or(time::OPEN_LO, |r| r.lo);
        let hi = end.map_or(time::OPEN_HI, |r| r.hi);
        q.push(" AND (r.res_type = 'Patient' OR NOT EXISTS (SELECT 1 FROM idx_date d WHERE d.rid = r.rid) OR EXISTS (SELECT 1 FROM idx_date d WHERE d.rid = r.rid AND d.hi >= ");
        q.int(lo).push(" AND d.lo <= ").int(hi).push("))");
    }
    if let Some(c) = req.cursor {
        q.push(" AND r.rid > ").int(c);
    }
    q.push(" ORDER BY r.rid LIMIT ").int(count + 1);
    let rows: Vec<Row> = conn.load(&q)?;
    let more = rows.len() as i64 > count;
    let rows: Vec<Row> = rows.into_iter().take(count as usize).collect();
    let rids: Vec<i64> = rows.iter().map(|r| r.rid).collect();
    let mut out = SearchResult { applied: req.applied(), ..SearchResult::default() };
    if more {
        out.next_cursor = rids.last().map(|r| r.to_string());
    }
    out.matches = rows.into_iter().map(Stored::from).collect();
    out.included = referenced_shared(conn, &rids)?;
    Ok(out)
}

/// The shared resources (medicines, practitioners, organisations) a set of resources references.
pub fn referenced_shared(conn: &mut Conn, rids: &[i64]) -> Result<Vec<Stored>, FhirError> {
    if rids.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = Sql::new(&format!(
        "SELECT {ROW_COLUMNS} FROM resources r WHERE r.deleted = 0 AND r.res_type IN ('Medication', 'Practitioner', 'PractitionerRole', 'Organization') \
         AND EXISTS (SELECT 1 FROM idx_ref x WHERE x.target_type = r.res_type AND x.target_id = r.id AND x.rid IN "
    ));
    q.list(rids.iter().map(|r| Bind::Int(*r))).push(")");
    let rows: Vec<Row> = conn.load(&q)?;
    Ok(rows.into_iter().map(Stored::from).collect())
}
