//! The roadmap as configuration: a search in a linked patient's compartment also asks each
//! federated source, in parallel and within a deadline; results are merged with persisted data,
//! de-duplicated and marked with their origin. A source's policy decides what is kept:
//! `never` (federated), `on-read` (hybrid: fetched copies are kept until `max_age`), `always`
//! (persisted copy). A failing source never fails the search: it is reported in an
//! OperationOutcome entry.

pub mod client;
pub mod ingest;
pub mod messages;
pub mod sources;
pub mod sync;

use crate::access::AccessContext;
use crate::audit::AuditEntry;
use crate::auth::Keys;
use crate::db::Conn;
use crate::fhir::reference;
use crate::fhir::search::{SearchRequest, SearchResult};
use crate::fhir::store::{create_in, current, moved_to, new_id, update_in, Refs, WriteOutcome};
use crate::fhir::{now_micros, params, FhirError, Interaction, Store, NHS_NUMBER_SYSTEM};
use client::SourceClient;
use serde_json::{json, Value};
use sources::{Policy, Source};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The whole federated part of a request must end within this, whatever the sources' timeouts.
const DEADLINE: Duration = Duration::from_secs(5);
pub const ORIGIN_TAG: &str = "https://healthfolio.example/fhir/CodeSystem/origin";

/// The one patient a search is about, if it is about one.
fn target_patient(ctx: &AccessContext, req: &SearchRequest) -> Option<String> {
    if let Some(p) = req.compartment.clone().or(ctx.compartment().map(str::to_string)) {
        return Some(p);
    }
    req.params
        .iter()
        .find(|(k, _)| k == "patient" || k == "subject")
        .map(|(_, v)| v.rsplit('/').next().unwrap_or(v).to_string())
        .filter(|v| crate::fhir::valid_id(v) && !v.contains(','))
}

fn nhs_number(conn: &mut Conn, patient: &str) -> Result<Option<String>, FhirError> {
    let Some(row) = current(conn, "Patient", patient)? else { return Ok(None) };
    let v: Value = serde_json::from_str(row.body.as_deref().unwrap_or("{}")).unwrap_or(Value::Null);
    Ok(v["identifier"]
        .as_array()
        .and_then(|ids| ids.iter().find(|i| i["system"] == NHS_NUMBER_SYSTEM))
        .and_then(|i| i["value"].as_str())
        .map(str::to_string))
}

/// The query passed on to a source: the caller's filters, with the patient named the source's way.
fn remote_query(req: &SearchRequest, remote_patient: &str) -> String {
    let mut q: Vec<(String, String)> = req
        .params
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "patient"
                    | "subject"
                    | "_count"
                    | "_cursor"
                    | "_include"
                    | "_revinclude"
                    | "_total"
                    | "_summary"
                    | "_elements"
                    | "_sort"
                    | "_format"
                    | "_pretty"
            )
        })
        .cloned()
        .collect();
    q.push(("patient".into(), remote_patient.to_string()));
    format!("{}?{}", req.rtype, serde_urlencoded::to_string(&q).unwrap_or_default())
}

/// Makes a source's resource ours to show: the patient reference points at the local patient,
/// other relative references become absolute at the source, and the origin is marked.
fn localise(mut r: Value, s: &Source, remote_patient: &str, local_patient: &str) -> Value {
    fn walk(v: &mut Value, s: &Source, remote: &str, local: &str) {
        match v {
            Value::Object(o) => {
                for (k, c) in o.iter_mut() {
                    if k == "reference" {
                        if let Some(text) = c.as_str() {
                            let new = match reference::at_base(text, &s.fhir_base) {
                                Some(("Patient", id)) if id == remote => format!("Patient/{local}"),
                                Some(_) if !text.contains("://") => format!("{}/{text}", s.fhir_base),
                                _ => text.to_string(),
                            };
                            *c = Value::String(new);
                        }
                    } else {
                        walk(c, s, remote, local);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|c| walk(c, s, remote, local)),
            _ => {}
        }
    }
    walk(&mut r, s, remote_patient, local_patient);
    let remote_id = r["id"].as_str().unwrap_or_default().to_string();
    let tag = json!({"system": ORIGIN_TAG, "code": s.name, "display": format!("{} at {}", remote_id, s.fhir_base)});
    r["meta"] = json!({"source": format!("{}/{}/{remote_id}", s.fhir_base, r["resourceType"].as_str().unwrap_or_default()), "tag": [tag]});
    r
}

/// Identity for de-duplication: business identifiers, else the content without ids and meta.
fn fingerprints(r: &Value) -> Vec<String> {
    let mut out: Vec<String> = r["identifier"]
        .as_array()
        .map(|ids| {
            ids.iter().filter_map(|i| Some(format!("id:{}|{}", i["system"].as_str()?, i["value"].as_str()?))).collect()
        })
        .unwrap_or_default();
    let mut bare = r.clone();
    if let Some(o) = bare.as_object_mut() {
        o.remove("id");
        o.remove("meta");
    }
    out.push(format!("content:{bare}"));
    out
}

/// (the patient's id at the source, what the source answered)
type Answer = (Option<String>, Result<Vec<Value>, String>);

struct Fetched {
    source: Source,
    remote_patient: Option<String>,
    /// The link was found by this call (not cached): it is saved.
    new_link: bool,
    result: Result<Vec<Value>, String>,
}

/// Asks every source that may hold `rtype` for `patient`, in parallel, within the deadline.
fn ask_sources(
    conn: &mut Conn,
    client: &SourceClient,
    sources: Vec<Source>,
    path_for: &(dyn Fn(&str) -> String + Sync),
    patient: &str,
) -> Result<Vec<Fetched>, FhirError> {
    let nhs = nhs_number(conn, patient)?;
    let mut links = Vec::new();
    for s in &sources {
        links.push(sources::cached_link(conn, &s.name, patient)?);
    }
    let cached: Vec<bool> = links.iter().map(Option::is_some).collect();
    let deadline = Instant::now() + DEADLINE;
    let results: Vec<Answer> = std::thread::scope(|scope| {
        let handles: Vec<_> = sources
            .iter()
            .zip(links)
            .map(|(s, link)| {
                let nhs = nhs.clone();
                scope.spawn(move || {
                    // The source's timeout covers its whole answer (finding the patient, then the
                    // search), and no step waits past the request's overall deadline.
                    let started = Instant::now();
                    let budget = Duration::from_millis(s.timeout_ms as u64);
                    let left = || {
                        budget
                            .saturating_sub(started.elapsed())
                            .min(deadline.saturating_duration_since(Instant::now()))
                            .max(Duration::from_millis(1))
                    };
                    let remote = match link {
                        Some(l) if l.is_empty() => return (None, Ok(Vec::new())), // asked before: not held there
                        Some(l) => l,
                        None => match find_patient(client, s, nhs.as_deref(), left()) {
                            Ok(Some(r)) => r,
                            Ok(None) => return (None, Ok(Vec::new())),
                            Err(e) => return (None, Err(e)),
                        },
                    };
                    let r = client.fetch(s, &path_for(&remote), left());
                    (Some(remote), r)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or((None, Err("failed inside the server".into())))).collect()
    });
    Ok(sources
        .into_iter()
        .zip(results)
        .zip(cached)
        .map(|((source, (remote_patient, result)), cached)| Fetched {
            source,
            remote_patient,
            new_link: !cached,
            result,
        })
        .collect())
}

fn find_patient(
    client: &SourceClient,
    s: &Source,
    nhs: Option<&str>,
    timeout: Duration,
) -> Result<Option<String>, String> {
    let Some(nhs) = nhs else { return Ok(None) };
    let found = client.fetch(s, &format!("Patient?identifier={NHS_NUMBER_SYSTEM}|{nhs}"), timeout)?;
    Ok(found.first().and_then(|p| p["id"].as_str()).map(str::to_string))
}

/// Keeps a source's resources as persisted copies owned by that source.
fn persist(conn: &mut Conn, s: &Source, rtype: &str, patient: &str, items: &[Value]) -> Result<(), FhirError> {
    let ctx = AccessContext::service("federation");
    let mut refs = Refs::default();
    for item in items {
        let remote_id =
            item["meta"]["tag"][0]["display"].as_str().and_then(|d| d.split(' ').next()).unwrap_or_default();
        let mut id = format!("{}-{remote_id}", s.name);
        if !crate::fhir::valid_id(&id) {
            id = new_id();
        }
        let mut body = item.clone();
        body["id"] = Value::String(id.clone());
        let written = match current(conn, rtype, &id)? {
            Some(_) => update_in(conn, &ctx, &mut refs, rtype, &id, body, None)?,
            None => WriteOutcome::new(create_in(conn, &ctx, &mut refs, rtype, body, id.clone(), "POST")?, true, true),
        };
        let origin = format!("{}/{rtype}/{remote_id}", s.fhir_base);
        ingest::copy_provenance(conn, &mut refs, &s.name, &origin, &written)?;
        crate::fhir::copies::set_owner(conn, rtype, &id, &s.name)?;
    }
    sources::record_fetch(conn, &s.name, patient, rtype)?;
    Ok(())
}

/// A search, federated when it is about one linked patient and sources are configured.
pub fn search(
    store: &Store,
    keys: &Keys,
    client: &SourceClient,
    ctx: &AccessContext,
    req: &SearchRequest,
) -> Result<SearchResult, FhirError> {
    let Some(patient) = target_patient(ctx, req).filter(|_| !params::is_shared(&req.rtype)) else {
        return store.search(ctx, req);
    };
    let mut conn = store.db.conn()?;
    let mut due = due_sources(&mut conn, keys, &patient, Some(&req.rtype))?;
    let mut moved = moved_to(&mut conn, &patient)?;
    // Only a caller who may search this record is told of its sources or where it moved.
    if (!due.is_empty() || moved.is_some())
        && !ctx.may_touch(&mut conn, &req.rtype, Some(&patient), Interaction::Search)?
    {
        (due, moved) = (Vec::new(), None);
    }
    let (remote, unavailable) = if due.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let path_for = |remote: &str| remote_query(req, remote);
        federate(store, &mut conn, client, ctx, &patient, due, &path_for, &|r| r["resourceType"] == req.rtype.as_str())?
    };
    let mut result = store.search(ctx, req)?;
    merge(&mut result, remote);
    result.unavailable = unavailable;
    result.moved_to = moved;
    Ok(result)
}

/// Asks `due` sources (with `path_for` the patient's id there), audits each call, keeps on-read
/// answers as persisted copies and returns (what to show from `never` sources, who failed).
#[allow(clippy::too_many_arguments)]
fn federate(
    store: &Store,
    conn: &mut Conn,
    client: &SourceClient,
    ctx: &AccessContext,
    patient: &str,
    due: Vec<Source>,
    path_for: &(dyn Fn(&str) -> String + Sync),
    wanted: &dyn Fn(&Value) -> bool,
) -> Result<(Vec<Value>, Vec<String>), FhirError> {
    let fetched = ask_sources(conn, client, due, path_for, patient)?;
    let mut remote = Vec::new();
    let mut unavailable = Vec::new();
    for f in fetched {
        let outcome = f.result.as_ref().err().cloned();
        let mut entry =
            AuditEntry::event("federated-query", &format!("{} {}", f.source.name, path_for("{patient}")), outcome);
        entry.patient_id = Some(patient.to_string());
        store.audit.record(ctx, entry);
        match (f.result, f.remote_patient) {
            (Err(e), _) => unavailable.push(format!("source {} ({}) {e}", f.source.name, f.source.fhir_base)),
            (Ok(items), Some(rp)) => {
                let mut items: Vec<Value> =
                    items.into_iter().filter(|i| wanted(i)).map(|i| localise(i, &f.source, &rp, patient)).collect();
                // Scope and grant apply to what a source sent exactly as to what is held here.
                let mut allowed = Vec::with_capacity(items.len());
                for i in items.drain(..) {
                    let t = i["resourceType"].as_str().unwrap_or_default().to_string();
                    if ctx.may_touch(conn, &t, Some(patient), Interaction::Read)? {
                        allowed.push(i);
                    }
                }
                if f.new_link {
                    sources::save_link(conn, &f.source.name, patient, &rp)?;
                }
                if f.source.policy == Policy::OnRead {
                    let mut by_type: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
                    for i in allowed {
                        by_type.entry(i["resourceType"].as_str().unwrap_or_default().to_string()).or_default().push(i);
                    }
                    for (t, items) in by_type {
                        store.db.transaction(|c| persist(c, &f.source, &t, patient, &items))?;
                    }
                } else {
                    remote.extend(allowed);
                }
            }
            (Ok(_), None) => {}
        }
    }
    Ok((remote, unavailable))
}

/// The sources a request about `patient` should ask now: configured, not `always` (that copy is
/// served locally), holding `rtype` if one is named, and not fresh in the on-read cache.
fn due_sources(conn: &mut Conn, keys: &Keys, patient: &str, rtype: Option<&str>) -> Result<Vec<Source>, FhirError> {
    let now = now_micros();
    let mut due = Vec::new();
    for s in sources::active(conn, keys)? {
        if s.policy == Policy::Always
            || rtype.is_some_and(|t| s.types.as_ref().is_some_and(|ts| !ts.iter().any(|x| x == t)))
        {
            continue;
        }
        let fresh = match (s.policy, rtype) {
            (Policy::OnRead, Some(t)) => {
                sources::last_fetch(conn, &s.name, patient, t)?.is_some_and(|at| now - at < s.max_age_secs * 1_000_000)
            }
            _ => false,
        };
        if !fresh {
            due.push(s);
        }
    }
    Ok(due)
}

/// `$everything` for a linked patient: the record held here (`held`, asked after federating, so
/// on-read copies just kept are part of it), plus each source's `$everything` of `types` (on the
/// first page only: later pages page through what is held here).
#[allow(clippy::too_many_arguments)]
pub fn everything(
    store: &Store,
    keys: &Keys,
    client: &SourceClient,
    ctx: &AccessContext,
    patient: &str,
    types: Option<Vec<String>>,
    first_page: bool,
    held: impl FnOnce() -> Result<SearchResult, FhirError>,
) -> Result<SearchResult, FhirError> {
    let mut conn = store.db.conn()?;
    let mut due = if first_page { due_sources(&mut conn, keys, patient, None)? } else { Vec::new() };
    if !due.is_empty() && !ctx.may_touch(&mut conn, "Patient", Some(patient), Interaction::Read)? {
        due.clear();
    }
    let (remote, unavailable) = if due.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let path_for = |remote: &str| format!("Patient/{remote}/$everything");
        let wanted = move |r: &Value| {
            let t = r["resourceType"].as_str().unwrap_or_default();
            t != "Patient" && types.as_ref().is_none_or(|ts| ts.iter().any(|x| x == t))
        };
        federate(store, &mut conn, client, ctx, patient, due, &path_for, &wanted)?
    };
    let mut result = held()?;
    merge(&mut result, remote);
    result.unavailable = unavailable;
    // `everything` answered, so the caller reaches this record: it may know where it went.
    result.moved_to = moved_to(&mut conn, patient)?;
    Ok(result)
}

/// Adds remote resources that the local result does not already hold.
fn merge(result: &mut SearchResult, remote: Vec<Value>) {
    let mut seen: HashSet<String> = result
        .matches
        .iter()
        .flat_map(|m| fingerprints(&serde_json::from_str(&m.body).unwrap_or(Value::Null)))
        .collect();
    for r in remote {
        let prints = fingerprints(&r);
        if prints.iter().any(|p| seen.contains(p)) {
            continue;
        }
        seen.extend(prints);
        let url = r["meta"]["source"].as_str().unwrap_or_default().to_string();
        result.remote.push((url, r));
    }
}
