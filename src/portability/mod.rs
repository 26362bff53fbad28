//! The record leaving and arriving: `$everything`, the IPS `$summary`, and the archive.

pub mod archive;
pub mod bulk;
pub mod federated;
mod summary;
pub mod transfer;

pub use summary::summary;

use crate::access::AccessContext;
use crate::audit::AuditEntry;
use crate::db::Conn;
use crate::fhir::compartment;
use crate::fhir::search::SearchResult;
use crate::fhir::store::{collect_refs, Refs, Row, Stored};
use crate::fhir::{params, time, FhirError, Interaction, Store, RESOURCE_TYPES};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

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
        let mut conn = self.read_conn(ctx)?;
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
    let since = bound(&req.since, "_since")?.map(|s| s.lo);
    let (start, end) = (bound(&req.start, "start")?, bound(&req.end, "end")?);
    let care = (start.is_some() || end.is_some())
        .then(|| time::Range { lo: start.map_or(time::OPEN_LO, |r| r.lo), hi: end.map_or(time::OPEN_HI, |r| r.hi) });
    let page =
        compartment::Page { patient: &req.patient, types: &types, since, care, after: req.cursor, limit: count + 1 };
    let rows = compartment::page(conn, ctx, &page)?;
    let more = rows.len() as i64 > count;
    let rows: Vec<Row> = rows.into_iter().take(count as usize).collect();
    let mut out = SearchResult { applied: req.applied(), ..SearchResult::default() };
    if more {
        out.next_cursor = rows.last().map(|r| r.rid.to_string());
    }
    out.matches = rows.into_iter().map(Stored::from).collect();
    // `_type` names the types returned, included ones too (FHIR R4 `$everything`).
    let named = |t: &str| req.types.as_ref().is_none_or(|types| types.iter().any(|x| x == t));
    out.included = referenced_shared(conn, &out.matches, named)?;
    Ok(out)
}

/// How many levels of references `$everything` follows from the record: a prescription, its
/// prescriber's role, the role's practitioner and organisation, and one more for good measure.
const REFERENCE_LEVELS: usize = 4;

/// FHIR R4 `Patient/$everything` returns the compartment "and any resource referenced from
/// those": the shared resources (medicines, practitioners, organisations) that `from` refers to,
/// and what those refer to in turn, each once and none already in `from`. Every relative reference
/// in a body counts, not only those a search parameter indexes (a Provenance's
/// `agent.onBehalfOf` is in no index), so that the record can be imported elsewhere whole. Only
/// shared resources of the types `wanted` come this way: another patient's record is never reached
/// through a reference, and the patient's own resources are in the compartment already.
pub fn referenced_shared(
    conn: &mut Conn,
    from: &[Stored],
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<Stored>, FhirError> {
    let mut held: HashSet<String> = from.iter().map(|s| format!("{}/{}", s.rtype, s.id)).collect();
    let mut out: Vec<Stored> = Vec::new();
    // Each level's resources are `from`, then the last ones added to `out`.
    let mut level_start = None;
    for _ in 0..REFERENCE_LEVELS {
        let level = level_start.map_or(from, |i| &out[i..]);
        let mut refs = Refs::default();
        for s in level {
            collect_refs(&serde_json::from_str(&s.body).unwrap_or(Value::Null), &mut refs);
        }
        let mut ids: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (t, id) in refs.relative().filter(|(t, _)| params::is_shared(t) && wanted(t)) {
            if held.insert(format!("{t}/{id}")) {
                ids.entry(t).or_default().push(id);
            }
        }
        let before = out.len();
        for (t, ids) in ids {
            out.extend(compartment::live_by_ids(conn, t, &ids)?);
        }
        if out.len() == before {
            break;
        }
        level_start = Some(before);
    }
    Ok(out)
}
