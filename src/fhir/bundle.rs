//! Bundles: searchset and history responses, and batch / transaction processing (conformance §1.9).

use super::search::{self, SearchRequest, SearchResult};
use super::store::{
    attribute, check_refs, create_in, current, delete_in, new_id, patch_in, read_in, record_author, update_in, Refs,
    Stored,
};
use super::{resource_type, time, FhirError, Interaction, Store};
use crate::access::AccessContext;
use crate::audit::AuditEntry;
use crate::db::Conn;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};

/// Bundles larger than this are refused before any work (hostile input).
pub const MAX_ENTRIES: usize = 100_000;

pub fn url_encode(params: &[(String, String)]) -> String {
    serde_urlencoded::to_string(params).unwrap_or_default()
}

/// Keeps only the requested top-level elements (plus the mandatory ones) and marks the result.
fn subset(body: &str, elements: &[String]) -> Value {
    let Ok(Value::Object(full)) = serde_json::from_str::<Value>(body) else { return json!({}) };
    let mut out = Map::new();
    for (k, v) in full {
        if matches!(k.as_str(), "resourceType" | "id" | "meta") || elements.contains(&k) {
            out.insert(k, v);
        }
    }
    let mut v = Value::Object(out);
    v["meta"]["tag"] =
        json!([{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}]);
    v
}

fn raw(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

fn entry(base: &str, s: &Stored, mode: &str, elements: Option<&[String]>) -> Value {
    let resource = match elements {
        Some(e) => subset(&s.body, e),
        None => raw(&s.body),
    };
    json!({
        "fullUrl": format!("{base}/{}/{}", s.rtype, s.id),
        "resource": resource,
        "search": {"mode": mode}
    })
}

pub fn outcome(severity: &str, code: &str, diagnostics: &str) -> Value {
    json!({"resourceType": "OperationOutcome", "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}]})
}

/// A searchset Bundle; `path` is the search URL below the base (e.g. `MedicationRequest`).
pub fn searchset(base: &str, path: &str, r: &SearchResult) -> Value {
    let mut b = shell(base, path, r);
    if !r.summary_count {
        let elements = r.elements.as_deref();
        let mut entries: Vec<Value> = r.matches.iter().map(|s| entry(base, s, "match", elements)).collect();
        entries.extend(remote_entries(r));
        entries.extend(r.included.iter().map(|s| entry(base, s, "include", elements)));
        entries.extend(outcome_entry(r));
        b["entry"] = Value::Array(entries);
    }
    b
}

/// The same Bundle as JSON text, with each held resource's stored JSON spliced in as it is: no
/// parsing and re-serialising of every body, which is most of the cost of a large page.
pub fn searchset_text(base: &str, path: &str, r: &SearchResult) -> String {
    if r.summary_count || r.elements.is_some() {
        return searchset(base, path, r).to_string();
    }
    let mut out = shell(base, path, r).to_string();
    out.pop(); // the shell's closing brace: the entries go before it
    out.push_str(",\"entry\":[");
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
    };
    let held = |out: &mut String, s: &Stored, mode: &str| {
        let url = Value::String(format!("{base}/{}/{}", s.rtype, s.id));
        let body = if s.body.is_empty() { "null" } else { s.body.as_str() };
        out.push_str(&format!("{{\"fullUrl\":{url},\"resource\":{body},\"search\":{{\"mode\":\"{mode}\"}}}}"));
    };
    for s in &r.matches {
        sep(&mut out);
        held(&mut out, s, "match");
    }
    for e in remote_entries(r) {
        sep(&mut out);
        out.push_str(&e.to_string());
    }
    for s in &r.included {
        sep(&mut out);
        held(&mut out, s, "include");
    }
    if let Some(e) = outcome_entry(r) {
        sep(&mut out);
        out.push_str(&e.to_string());
    }
    out.push_str("]}");
    out
}

/// Everything but the entries.
fn shell(base: &str, path: &str, r: &SearchResult) -> Value {
    let query = url_encode(&r.applied);
    let self_url = if query.is_empty() { format!("{base}/{path}") } else { format!("{base}/{path}?{query}") };
    let mut links = vec![json!({"relation": "self", "url": self_url})];
    if let Some(c) = &r.next_cursor {
        let mut params = r.applied.clone();
        params.push(("_cursor".into(), c.clone()));
        links.push(json!({"relation": "next", "url": format!("{base}/{path}?{}", url_encode(&params))}));
    }
    let mut b = json!({
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": time::format_instant(super::now_micros())},
        "type": "searchset",
        "link": links,
    });
    if let Some(t) = r.total {
        b["total"] = json!(t);
    }
    b
}

fn remote_entries(r: &SearchResult) -> impl Iterator<Item = Value> + '_ {
    r.remote.iter().map(|(url, res)| json!({"fullUrl": url, "resource": res, "search": {"mode": "match"}}))
}

/// Warnings and unavailable sources, as one OperationOutcome entry.
fn outcome_entry(r: &SearchResult) -> Option<Value> {
    if r.warnings.is_empty() && r.unavailable.is_empty() && r.moved_to.is_none() {
        return None;
    }
    let warn = |code: &str, w: &String| json!({"severity": "warning", "code": code, "diagnostics": w});
    let moved = r.moved_to.iter().map(|to| {
        json!({"severity": "information", "code": "informational",
               "diagnostics": format!("this record moved to {to}: what is here is kept read-only, as it was when it moved")})
    });
    let issues: Vec<Value> = moved
        .chain(r.warnings.iter().map(|w| warn("not-supported", w)))
        .chain(r.unavailable.iter().map(|w| warn("transient", w)))
        .collect();
    Some(json!({"resource": {"resourceType": "OperationOutcome", "issue": issues}, "search": {"mode": "outcome"}}))
}

impl Store {
    pub fn search(&self, ctx: &AccessContext, req: &SearchRequest) -> Result<SearchResult, FhirError> {
        let result = self.read_conn(ctx).map_err(FhirError::from).and_then(|mut c| search::run(&mut c, ctx, req));
        let query = url_encode(&req.params);
        let named = super::audited::searched_patient(&req.params);
        let patient = req.compartment.as_deref().or(ctx.compartment()).or(named.as_deref());
        let counted = result.as_ref().map(|r| r.matches.len() + r.included.len());
        self.audit.record_durably(ctx, crate::audit::AuditEntry::search(Some(&req.rtype), &query, patient, counted))?;
        result
    }

    /// Conditional create: `If-None-Exist` finds 0 (create), 1 (return it, 200) or more (412).
    /// The search and the create are one transaction, taking turns with every other conditional
    /// write on the same criteria: of concurrent requests one creates, the others find it.
    pub fn create_if_none_exist(
        &self,
        ctx: &AccessContext,
        rtype: &str,
        body: Value,
        query: &str,
        opts: &super::store::WriteOptions,
    ) -> Result<super::WriteOutcome, FhirError> {
        let result = self.db.transaction(|conn| {
            search::serialise_conditional(conn, [(rtype, query)])?;
            match search::matching_ids(conn, ctx, rtype, query)?.as_slice() {
                [] => {
                    let mut refs = Refs::default();
                    let stored = create_in(conn, ctx, &mut refs, rtype, body, new_id(), "POST")?;
                    attribute(conn, ctx, &mut refs, opts, &stored)?;
                    check_refs(conn, &refs)?;
                    let mut out = super::WriteOutcome::new(stored, true, true);
                    if opts.warnings_heard {
                        let found = super::safety::check_written(conn, &out.stored)?;
                        out.warnings = super::safety::as_seen_by(conn, ctx, out.stored.patient_id.as_deref(), found)?;
                    }
                    Ok(out)
                }
                [id] => {
                    let found = read_in(conn, ctx, rtype, id, Interaction::Read);
                    crate::audit::record_in(conn, ctx, &AuditEntry::read("read", rtype, Some(id), &found))?;
                    Ok(super::WriteOutcome::new(found?, false, false))
                }
                _ => Err(FhirError::MultipleMatches(format!("If-None-Exist '{query}' matches more than one {rtype}"))),
            }
        });
        self.wrote(ctx, &result);
        self.audit_failed_write(ctx, &result);
        result
    }

    /// Conditional update: `PUT [type]?query` updates the one match, creates on none, 412 on many.
    /// One transaction, in turns with other conditional writes on the criteria (as a conditional
    /// create): of concurrent requests that find none, one creates and the others update it.
    pub fn conditional_update(
        &self,
        ctx: &AccessContext,
        rtype: &str,
        query: &str,
        mut body: Value,
        opts: &super::store::WriteOptions,
    ) -> Result<super::WriteOutcome, FhirError> {
        self.write(
            ctx,
            |conn, refs| {
                search::serialise_conditional(conn, [(rtype, query)])?;
                match search::matching_ids(conn, ctx, rtype, query)?.as_slice() {
                    [] => match body.get("id").and_then(Value::as_str).map(str::to_string) {
                        Some(id) => update_in(conn, ctx, refs, rtype, &id, body, opts.if_match),
                        None => create_in(conn, ctx, refs, rtype, body, new_id(), "POST")
                            .map(|stored| super::WriteOutcome::new(stored, true, true)),
                    },
                    [id] => {
                        if body.get("id").and_then(Value::as_str).is_some_and(|b| b != id) {
                            return Err(FhirError::invalid(format!(
                                "the body id does not match the resource the query found ({id})"
                            )));
                        }
                        body["id"] = Value::String(id.clone());
                        update_in(conn, ctx, refs, rtype, id, body, opts.if_match)
                    }
                    _ => Err(FhirError::MultipleMatches(format!(
                        "conditional update '{query}' matches more than one {rtype}"
                    ))),
                }
            },
            opts,
        )
    }

    /// `POST [base]` with a batch or transaction Bundle.
    /// `warnings_heard`: the client asked for outcomes (`Prefer: return=OperationOutcome`), so each
    /// entry that wrote carries the medicine safety warnings in `response.outcome`. They read each
    /// patient's current record, which costs a large record dearly: only when they are heard.
    pub fn process_bundle(
        &self,
        ctx: &AccessContext,
        mut bundle: Value,
        warnings_heard: bool,
    ) -> Result<Value, FhirError> {
        super::reference::relativise(&mut bundle, &self.base);
        let kind = bundle.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
        let entries = parse_entries(&bundle)?;
        let result = match kind.as_str() {
            "transaction" => self.db.transaction(|conn| transaction(conn, ctx, &self.base, entries, warnings_heard)),
            "batch" => self.db.transaction(|conn| batch(conn, ctx, &self.base, entries, warnings_heard)),
            other => Err(FhirError::invalid(format!(
                "POST to the base takes a Bundle of type batch or transaction, not '{other}'"
            ))),
        };
        self.wrote(ctx, &result);
        result
    }
}

#[derive(Debug, Clone)]
struct Entry {
    index: usize,
    method: String,
    url: String,
    full_url: Option<String>,
    resource: Option<Value>,
    if_none_exist: Option<String>,
    if_match: Option<i64>,
}

fn parse_entries(bundle: &Value) -> Result<Vec<Entry>, FhirError> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(FhirError::invalid("the body must be a Bundle"));
    }
    let list = bundle.get("entry").and_then(Value::as_array).cloned().unwrap_or_default();
    if list.len() > MAX_ENTRIES {
        return Err(FhirError::TooLarge(format!("a Bundle may hold at most {MAX_ENTRIES} entries")));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (index, e) in list.into_iter().enumerate() {
        let req =
            e.get("request").ok_or_else(|| FhirError::invalid(format!("entry {index} has no request (bdl-3)")))?;
        let text = |k: &str| req.get(k).and_then(Value::as_str).map(str::to_string);
        let method =
            text("method").ok_or_else(|| FhirError::invalid(format!("entry {index} has no request.method")))?;
        let url = text("url").ok_or_else(|| FhirError::invalid(format!("entry {index} has no request.url")))?;
        let full_url = e.get("fullUrl").and_then(Value::as_str).map(str::to_string);
        if let Some(f) = &full_url {
            if !seen.insert(f.clone()) {
                return Err(FhirError::invalid(format!("fullUrl {f} appears twice (bdl-7)")));
            }
        }
        let if_match = text("ifMatch").map(|m| parse_etag(&m)).transpose()?;
        let resource = e.get("resource").cloned();
        if resource.as_ref().is_some_and(|r| !r.is_object()) {
            return Err(FhirError::invalid(format!("entry {index}: the resource must be a JSON object")));
        }
        if matches!(method.as_str(), "POST" | "PUT") && resource.is_none() {
            return Err(FhirError::invalid(format!("entry {index} ({method} {url}) has no resource")));
        }
        out.push(Entry { index, method, url, full_url, resource, if_none_exist: text("ifNoneExist"), if_match });
    }
    Ok(out)
}

/// `W/"3"` (or `"3"`, or `3`) as a version number.
pub fn parse_etag(s: &str) -> Result<i64, FhirError> {
    s.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map_err(|_| FhirError::invalid(format!("'{s}' is not an ETag of the form W/\"n\"")))
}

/// `Type`, `Type/id` or `Type?query` from an entry URL (which may be absolute).
fn split_url<'a>(base: &str, url: &'a str) -> (&'a str, Option<&'a str>, Option<&'a str>) {
    let rel = url.strip_prefix(base).map(|r| r.trim_start_matches('/')).unwrap_or(url);
    let (path, query) = match rel.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rel, None),
    };
    match path.split_once('/') {
        Some((t, id)) => (t, Some(id), query),
        None => (path, None, query),
    }
}

fn known_type(t: &str, index: usize) -> Result<&str, FhirError> {
    resource_type(t).map(|_| t).ok_or_else(|| FhirError::NotFound(format!("entry {index}: resource type '{t}'")))
}

/// What the medicine safety checks found in the entries that wrote, as each entry's
/// `response.outcome` (FHIR R4 Bundle.entry.response.outcome: "hints and warnings about the
/// outcome"), each against its patient's record as the whole Bundle left it.
fn add_warnings(
    conn: &mut Conn,
    ctx: &AccessContext,
    results: &mut [Value],
    wrote: &[(usize, Stored)],
) -> Result<(), FhirError> {
    let stored: Vec<&Stored> = wrote.iter().map(|(_, s)| s).collect();
    for ((i, s), found) in wrote.iter().zip(super::safety::check_all(conn, &stored)?) {
        let warnings = super::safety::as_seen_by(conn, ctx, s.patient_id.as_deref(), found)?;
        if !warnings.is_empty() {
            results[*i]["response"]["outcome"] = super::safety::outcome(&s.rtype, &warnings);
        }
    }
    Ok(())
}

/// An entry's response, and the version it wrote (if any).
type EntryResult = (Value, Option<Stored>);

fn wrote(out: super::WriteOutcome) -> EntryResult {
    let status = if out.created { "201 Created" } else { "200 OK" };
    let v = response(status, Some(&out.stored));
    (v, out.changed.then_some(out.stored))
}

fn response(status: &str, s: Option<&Stored>) -> Value {
    let mut r = json!({"status": status});
    if let Some(s) = s {
        r["location"] = json!(format!("{}/{}/_history/{}", s.rtype, s.id, s.version_id));
        r["etag"] = json!(s.etag());
        r["lastModified"] = json!(time::format_instant(s.last_updated));
    }
    json!({"response": r})
}

/// Rewrites every reference found in `map` (urn:uuid fullUrls, conditional references).
fn rewrite(v: &mut Value, map: &HashMap<String, String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                if k == "reference" {
                    if let Some(new) = child.as_str().and_then(|s| map.get(s)) {
                        *child = Value::String(new.clone());
                    }
                } else {
                    rewrite(child, map);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite(c, map)),
        _ => {}
    }
}

/// Calls `f` with every `reference` string in `v`.
fn each_reference<'a>(v: &'a Value, f: &mut impl FnMut(&'a str)) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                match (k.as_str(), child) {
                    ("reference", Value::String(s)) => f(s),
                    _ => each_reference(child, f),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| each_reference(c, f)),
        _ => {}
    }
}

fn conditional_refs(v: &Value, out: &mut Vec<String>) {
    each_reference(v, &mut |s| {
        if s.contains('?') {
            out.push(s.to_string())
        }
    });
}

/// Assigns ids to the transaction's new resources and resolves conditional references, so every
/// reference can be rewritten before anything is written (the result must not depend on order).
/// Returns the reference rewrites and, per entry index, the existing resource an `ifNoneExist` matched.
fn resolve_identities(
    conn: &mut Conn,
    ctx: &AccessContext,
    base: &str,
    entries: &mut [Entry],
) -> Result<Identities, FhirError> {
    search::serialise_conditional(conn, conditional_writes(base, entries))?;
    let mut map = HashMap::new();
    let mut existing = HashMap::new();
    for e in entries.iter_mut() {
        let (t, id, _) = split_url(base, &e.url);
        let t = known_type(t, e.index)?.to_string();
        let target = match (e.method.as_str(), id, &e.if_none_exist) {
            ("POST", _, Some(q)) => match search::matching_ids(conn, ctx, &t, q)?.as_slice() {
                [] => format!("{t}/{}", new_id()),
                [found] => {
                    existing.insert(e.index, found.clone());
                    format!("{t}/{found}")
                }
                _ => {
                    return Err(FhirError::MultipleMatches(format!(
                        "entry {}: ifNoneExist '{q}' matches more than one {t}",
                        e.index
                    )))
                }
            },
            ("POST", _, None) => format!("{t}/{}", new_id()),
            (_, Some(id), _) => format!("{t}/{id}"),
            _ => continue,
        };
        if let Some(f) = &e.full_url {
            map.insert(f.clone(), target.clone());
        }
        if e.method == "POST" {
            e.url = target;
        }
    }
    let mut conditional = Vec::new();
    entries.iter().filter_map(|e| e.resource.as_ref()).for_each(|r| conditional_refs(r, &mut conditional));
    for c in conditional {
        let (t, query) = c.split_once('?').unwrap_or((&c, ""));
        let t = known_type(t, 0)?;
        match search::matching_ids(conn, ctx, t, query)?.as_slice() {
            [id] => map.insert(c.clone(), format!("{t}/{id}")),
            [] => return Err(FhirError::unprocessable(format!("conditional reference '{c}' matches nothing"))),
            _ => {
                return Err(FhirError::MultipleMatches(format!(
                    "conditional reference '{c}' matches more than one {t}"
                )))
            }
        };
    }
    Ok((map, existing))
}

type Identities = (HashMap<String, String>, HashMap<usize, String>);

/// The (type, criteria) of the Bundle's conditional creates and updates: taken all at once,
/// before any search, so that two Bundles never wait for each other.
fn conditional_writes<'e>(base: &str, entries: &'e [Entry]) -> Vec<(&'e str, &'e str)> {
    entries
        .iter()
        .filter_map(|e| match (e.method.as_str(), split_url(base, &e.url)) {
            ("POST", (t, _, _)) => Some((t, e.if_none_exist.as_deref()?)),
            ("PUT", (t, None, Some(q))) => Some((t, q)),
            _ => None,
        })
        .collect()
}

fn method_rank(m: &str) -> u8 {
    match m {
        "DELETE" => 0,
        "POST" => 1,
        "PUT" | "PATCH" => 2,
        _ => 3,
    }
}

fn transaction(
    conn: &mut Conn,
    ctx: &AccessContext,
    base: &str,
    mut entries: Vec<Entry>,
    warnings_heard: bool,
) -> Result<Value, FhirError> {
    let (map, existing) = resolve_identities(conn, ctx, base, &mut entries)?;
    for e in entries.iter_mut() {
        if let Some(r) = e.resource.as_mut() {
            rewrite(r, &map);
        }
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|i| method_rank(&entries[*i].method));
    let mut refs = Refs::default();
    let mut results: Vec<Value> = vec![Value::Null; entries.len()];
    let mut written = Vec::new();
    for i in order {
        let e = &entries[i];
        results[i] = match existing.get(&e.index) {
            Some(id) => {
                let (t, _, _) = split_url(base, &e.url);
                response("200 OK", current(conn, t, id)?.map(Stored::from).as_ref())
            }
            None => {
                let (v, s) = run_entry(conn, ctx, base, e, &mut refs).map_err(|err| prefix_error(err, e))?;
                written.extend(s.map(|s| (i, s)));
                v
            }
        };
    }
    check_refs(conn, &refs)?;
    if warnings_heard {
        add_warnings(conn, ctx, &mut results, &written)?;
    }
    Ok(json!({"resourceType": "Bundle", "id": new_id(), "type": "transaction-response", "entry": results}))
}

fn prefix_error(err: FhirError, e: &Entry) -> FhirError {
    let at = format!("entry {} ({} {}): ", e.index, e.method, e.url);
    match err {
        FhirError::Invalid(m) => FhirError::Invalid(at + &m),
        FhirError::Unprocessable(m) => FhirError::Unprocessable(at + &m),
        FhirError::Conflict(m) => FhirError::Conflict(at + &m),
        FhirError::PreconditionFailed(m) => FhirError::PreconditionFailed(at + &m),
        FhirError::Forbidden(m) => FhirError::Forbidden(at + &m),
        other => other,
    }
}

/// FHIR R4 §3.1.0.11.1: batch entries must not depend on each other, and the server checks it.
/// A reference to another entry's fullUrl is refused for that entry; it is never resolved.
fn refers_to_another_entry(e: &Entry, full_urls: &HashSet<&str>) -> Result<(), FhirError> {
    let mut found = None;
    if let Some(r) = &e.resource {
        each_reference(r, &mut |s| {
            if found.is_none() && full_urls.contains(s) && e.full_url.as_deref() != Some(s) {
                found = Some(s.to_string());
            }
        });
    }
    match found {
        Some(r) => Err(FhirError::invalid(format!(
            "reference '{r}' names another entry of this batch: batch entries are independent and are not \
             resolved against each other; send them as a transaction, or refer to a resource already stored"
        ))),
        None => Ok(()),
    }
}

fn batch(
    conn: &mut Conn,
    ctx: &AccessContext,
    base: &str,
    entries: Vec<Entry>,
    warnings_heard: bool,
) -> Result<Value, FhirError> {
    search::serialise_conditional(conn, conditional_writes(base, &entries))?;
    let full_urls: HashSet<&str> = entries.iter().filter_map(|e| e.full_url.as_deref()).collect();
    let mut results = Vec::with_capacity(entries.len());
    let mut written = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let r = conn.savepoint(|c| {
            refers_to_another_entry(e, &full_urls)?;
            let mut refs = Refs::default();
            let out = match &e.if_none_exist {
                Some(q) => {
                    let (t, _, _) = split_url(base, &e.url);
                    match search::matching_ids(c, ctx, t, q)?.as_slice() {
                        [] => run_entry(c, ctx, base, e, &mut refs)?,
                        [id] => (response("200 OK", current(c, t, id)?.map(Stored::from).as_ref()), None),
                        _ => {
                            return Err(FhirError::MultipleMatches(format!("ifNoneExist '{q}' matches more than one")))
                        }
                    }
                }
                None => run_entry(c, ctx, base, e, &mut refs)?,
            };
            check_refs(c, &refs)?;
            Ok(out)
        });
        results.push(match r {
            Ok((v, s)) => {
                written.extend(s.map(|s| (i, s)));
                v
            }
            Err(err) => {
                let (status, code) = crate::fhir::status_of(&err);
                json!({"response": {"status": status.to_string(), "outcome": outcome("error", code, &err.to_string())}})
            }
        });
    }
    if warnings_heard {
        add_warnings(conn, ctx, &mut results, &written)?;
    }
    Ok(json!({"resourceType": "Bundle", "id": new_id(), "type": "batch-response", "entry": results}))
}

fn run_entry(
    conn: &mut Conn,
    ctx: &AccessContext,
    base: &str,
    e: &Entry,
    refs: &mut Refs,
) -> Result<EntryResult, FhirError> {
    let (t, id, query) = split_url(base, &e.url);
    let t = known_type(t, e.index)?;
    match (e.method.as_str(), id, query) {
        // A transaction has assigned the id already (its entries may refer to it); a batch's
        // entries stand alone and get theirs here.
        ("POST", id, None) => {
            let body = e.resource.clone().unwrap_or_default();
            let id = id.map_or_else(new_id, str::to_string);
            let s = create_in(conn, ctx, refs, t, body, id, "POST")?;
            record_author(conn, ctx, refs, &s)?;
            Ok((response("201 Created", Some(&s)), Some(s)))
        }
        ("PUT", Some(id), None) => {
            let out = update_in(conn, ctx, refs, t, id, e.resource.clone().unwrap_or_default(), e.if_match)?;
            record_author(conn, ctx, refs, &out.stored)?;
            Ok(wrote(out))
        }
        ("PUT", None, Some(q)) => {
            let found = search::matching_ids(conn, ctx, t, q)?;
            let mut body = e.resource.clone().unwrap_or_default();
            let id = match found.as_slice() {
                [] => body.get("id").and_then(Value::as_str).map(str::to_string).unwrap_or_else(new_id),
                [id] => id.clone(),
                _ => {
                    return Err(FhirError::MultipleMatches(format!(
                        "conditional update '{q}' matches more than one {t}"
                    )))
                }
            };
            body["id"] = Value::String(id.clone());
            let out = update_in(conn, ctx, refs, t, &id, body, e.if_match)?;
            record_author(conn, ctx, refs, &out.stored)?;
            Ok(wrote(out))
        }
        ("PATCH", Some(id), None) => {
            let patch = binary_patch(e.resource.as_ref())?;
            let out = patch_in(conn, ctx, refs, t, id, &patch, e.if_match)?;
            record_author(conn, ctx, refs, &out.stored)?;
            Ok(wrote(out))
        }
        ("DELETE", Some(id), None) => {
            delete_in(conn, ctx, t, id)?;
            Ok((response("204 No Content", None), None))
        }
        ("GET", Some(id), None) => {
            // Checked and audited as a read on its own is; the audit row commits with the entry
            // (a refused read is rolled back with it).
            let found = read_in(conn, ctx, t, id, Interaction::Read).map_err(|e| match e {
                FhirError::Gone(_) => FhirError::not_found(t, id),
                other => other,
            });
            crate::audit::record_in(conn, ctx, &AuditEntry::read("read", t, Some(id), &found))?;
            let s = found?;
            let mut v = response("200 OK", Some(&s));
            v["resource"] = raw(&s.body);
            Ok((v, None))
        }
        ("GET", None, q) => {
            let params: Vec<(String, String)> = serde_urlencoded::from_str(q.unwrap_or_default())
                .map_err(|_| FhirError::invalid("the search query is malformed"))?;
            let req = SearchRequest { rtype: t.to_string(), params, compartment: None, strict: false };
            let r = search::run(conn, ctx, &req);
            let entry = AuditEntry::search(
                Some(t),
                q.unwrap_or_default(),
                ctx.compartment(),
                r.as_ref().map(|r| r.matches.len()),
            );
            crate::audit::record_in(conn, ctx, &entry)?;
            let r = r?;
            let mut v = response("200 OK", None);
            v["resource"] = searchset(base, t, &r);
            Ok((v, None))
        }
        (m, _, _) => Err(FhirError::invalid(format!("{m} {} is not a supported entry request", e.url))),
    }
}

/// A JSON Patch inside a Bundle travels as a Binary (FHIR R4 §3.1.0.7.1).
fn binary_patch(resource: Option<&Value>) -> Result<Value, FhirError> {
    use base64::Engine;
    let r =
        resource.ok_or_else(|| FhirError::invalid("a PATCH entry needs a Binary resource holding the JSON Patch"))?;
    let data =
        r.get("data").and_then(Value::as_str).ok_or_else(|| FhirError::invalid("the PATCH Binary has no data"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| FhirError::invalid("the PATCH Binary data is not base64"))?;
    serde_json::from_slice(&bytes).map_err(|e| FhirError::invalid(format!("the PATCH Binary is not JSON: {e}")))
}

/// An instance, type or system history Bundle.
pub fn history_bundle(base: &str, path: &str, h: &super::history::History) -> Value {
    let entries: Vec<Value> = h
        .versions
        .iter()
        .map(|s| {
            let url = format!("{}/{}", s.rtype, s.id);
            let (method, status) = match (s.deleted, s.version_id) {
                (true, _) => ("DELETE", "204 No Content"),
                (false, 1) => ("POST", "201 Created"),
                _ => ("PUT", "200 OK"),
            };
            let mut e = json!({
                "fullUrl": format!("{base}/{url}"),
                "request": {"method": method, "url": if method == "POST" { s.rtype.clone() } else { url }},
                "response": {"status": status, "etag": s.etag(), "lastModified": time::format_instant(s.last_updated)}
            });
            if !s.deleted {
                e["resource"] = raw(&s.body);
            }
            e
        })
        .collect();
    let mut links = vec![json!({"relation": "self", "url": format!("{base}/{path}")})];
    if let Some(next) = &h.next {
        links.push(json!({"relation": "next", "url": format!("{base}/{path}?{}", url_encode(next))}));
    }
    json!({"resourceType": "Bundle", "id": new_id(), "type": "history", "link": links, "entry": entries})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(rtype: &str, id: &str, body: Value) -> Stored {
        Stored {
            rtype: rtype.into(),
            id: id.into(),
            version_id: 1,
            last_updated: 0,
            deleted: false,
            patient_id: None,
            body: body.to_string(),
        }
    }

    #[test]
    fn text_searchset_is_the_same_bundle() {
        let r = SearchResult {
            matches: vec![stored(
                "MedicationRequest",
                "a",
                json!({"resourceType": "MedicationRequest", "id": "a", "note": [{"text": "\"quoted\" ü"}]}),
            )],
            included: vec![stored("Medication", "m", json!({"resourceType": "Medication", "id": "m"}))],
            remote: vec![(
                "https://gp.example/fhir/MedicationRequest/r".into(),
                json!({"resourceType": "MedicationRequest", "id": "r"}),
            )],
            unavailable: vec!["source gone".into()],
            total: Some(1),
            next_cursor: Some("c1".into()),
            applied: vec![("patient".into(), "p 1&2".into())],
            ..SearchResult::default()
        };
        let strip = |mut v: Value| {
            v.as_object_mut().map(|o| {
                o.remove("id");
                o.remove("meta")
            });
            v
        };
        let text: Value =
            serde_json::from_str(&searchset_text("http://x/fhir", "MedicationRequest", &r)).expect("valid JSON");
        assert_eq!(strip(text), strip(searchset("http://x/fhir", "MedicationRequest", &r)));
    }
}
