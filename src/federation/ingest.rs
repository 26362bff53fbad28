//! Feeds into a persisted copy: what a source sends (a bulk extract loaded by the operator, an
//! `$import`, a background sync) is stored as copies owned by that source. Ids are the source's
//! prefixed with its name, so sending the same thing again updates in place (an unchanged
//! resource makes no new version); a Patient already held here under the same NHS number is
//! linked rather than duplicated, and references follow.

use super::sources;
use super::ORIGIN_TAG;
use crate::access::AccessContext;
use crate::db::Conn;
use crate::fhir::patient::{by_nhs_number, nhs_number};
use crate::fhir::store::{assembled_provenance, check_refs, create_in, new_id, update_in, Refs, WriteOutcome};
use crate::fhir::{copies, reference};
use crate::fhir::{resource_type, valid_id, FhirError};
use serde_json::{json, Value};
use std::collections::HashMap;

/// The source a feed comes from.
pub struct Feed<'a> {
    pub name: &'a str,
    pub fhir_base: &'a str,
}

/// A failure at one item (its line number, or 0 for the feed as a whole).
#[derive(Debug)]
pub struct AtItem(pub usize, pub FhirError);

impl From<crate::db::DbError> for AtItem {
    fn from(e: crate::db::DbError) -> Self {
        AtItem(0, e.into())
    }
}

impl Feed<'_> {
    fn local_id(&self, id: &str) -> String {
        format!("{}-{id}", self.name)
    }

    /// Who the versions are written by, in the audit trail and on each version: the service, for
    /// this source, sent by `sender` (the provider system's client) when the feed is its events.
    pub fn context(&self, sender: Option<&str>) -> AccessContext {
        let mut ctx = AccessContext::service("feed");
        ctx.subject = format!("source:{}", self.name);
        if let Some(client) = sender {
            ctx.client_id = client.to_string();
        }
        ctx
    }
}

/// Writes `items` (line number, resource) from `feed` within the caller's transaction; returns
/// where each landed here (`Type/id`). Nothing is written by the caller's rollback if any item fails.
pub fn ingest(conn: &mut Conn, feed: &Feed, items: Vec<(usize, Value)>) -> Result<Vec<String>, AtItem> {
    ingest_as(conn, feed, &feed.context(None), items)
}

/// [`ingest`], written (and audited) as `ctx`.
pub fn ingest_as(
    conn: &mut Conn,
    feed: &Feed,
    ctx: &AccessContext,
    items: Vec<(usize, Value)>,
) -> Result<Vec<String>, AtItem> {
    // First pass: where each of the feed's resources will live here.
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut keep_local_patient = Vec::new();
    for (line, r) in &items {
        let (Some(t), Some(id)) = (r["resourceType"].as_str(), r["id"].as_str()) else {
            return Err(AtItem(*line, FhirError::invalid("every resource in a feed needs resourceType and id")));
        };
        let t = resource_type(t)
            .ok_or_else(|| AtItem(*line, FhirError::invalid(format!("{t} is not a type this server holds"))))?;
        let local = if t == "Patient" {
            match nhs_number(r).map(|n| by_nhs_number(conn, &n)).transpose().map_err(|e| AtItem(*line, e))?.flatten() {
                Some(existing) if !existing.starts_with(&format!("{}-", feed.name)) => {
                    // A record that moved away takes nothing new, from a source neither.
                    if let Some(to) = crate::fhir::store::moved_to(conn, &existing)? {
                        return Err(AtItem(*line, FhirError::Conflict(format!("this person's record moved to {to}"))));
                    }
                    sources::save_link(conn, feed.name, &existing, id)?;
                    keep_local_patient.push(existing.clone());
                    existing
                }
                _ => feed.local_id(id),
            }
        } else {
            feed.local_id(id)
        };
        if !valid_id(&local) {
            return Err(AtItem(
                *line,
                FhirError::invalid(format!("{t}/{id}: the id is too long to keep with the source's name")),
            ));
        }
        ids.insert(format!("{t}/{id}"), local);
    }
    let mut refs = Refs::default();
    let mut written = Vec::new();
    for (line, mut r) in items {
        let at = |e: FhirError| AtItem(line, e);
        let t = resource_type(r["resourceType"].as_str().unwrap_or_default()).unwrap_or("Patient");
        let remote_id = r["id"].as_str().unwrap_or_default().to_string();
        let id = ids.get(&format!("{t}/{remote_id}")).cloned().unwrap_or_else(|| feed.local_id(&remote_id));
        if keep_local_patient.contains(&id) {
            written.push(format!("Patient/{id}"));
            continue; // the record held here stays the person's record; the feed links to it
        }
        rewrite(conn, feed, &mut r, &ids).map_err(at)?;
        r["id"] = Value::String(id.clone());
        r["meta"] = json!({
            "source": format!("{}/{t}/{remote_id}", feed.fhir_base),
            "tag": [{"system": ORIGIN_TAG, "code": feed.name, "display": format!("{remote_id} at {}", feed.fhir_base)}],
        });
        match copies::owner(conn, t, &id).map_err(|e| at(e.into()))? {
            Some(Some(s)) if s != feed.name => {
                return Err(at(FhirError::Conflict(format!("{t}/{id} belongs to the source '{s}'"))));
            }
            Some(None) => {
                return Err(at(FhirError::Conflict(format!("{t}/{id} is held here, not a copy of '{}'", feed.name))))
            }
            Some(Some(_)) => update_in(conn, ctx, &mut refs, t, &id, r, None),
            None => create_in(conn, ctx, &mut refs, t, r, id.clone(), "POST")
                .map(|stored| WriteOutcome::new(stored, true, true)),
        }
        .and_then(|o| copy_provenance(conn, &mut refs, feed.name, &format!("{}/{t}/{remote_id}", feed.fhir_base), &o))
        .map_err(at)?;
        copies::set_owner(conn, t, &id, feed.name)?;
        written.push(format!("{t}/{id}"));
    }
    check_refs(conn, &refs).map_err(|e| AtItem(0, e))?;
    Ok(written)
}

/// The Provenance of a new version of a persisted copy: which source it came from, and where.
/// Nothing is added when the source sent what was already held (no new version).
pub(crate) fn copy_provenance(
    conn: &mut Conn,
    refs: &mut Refs,
    source: &str,
    origin: &str,
    written: &WriteOutcome,
) -> Result<(), FhirError> {
    if !written.changed {
        return Ok(());
    }
    let copy = &written.stored;
    let prov = assembled_provenance(
        &format!("{}/{}/_history/{}", copy.rtype, copy.id, copy.version_id),
        copy.last_updated,
        if copy.version_id == 1 { "CREATE" } else { "UPDATE" },
        &format!("Healthfolio, copying from the source '{source}'"),
        json!({"display": origin}),
    );
    create_in(conn, &AccessContext::service("federation"), refs, "Provenance", prov, new_id(), "POST")?;
    Ok(())
}

/// Points the feed's relative references at where their targets live here: this feed's items,
/// earlier feeds from the same source, a linked patient; anything else stays at the source.
fn rewrite(conn: &mut Conn, feed: &Feed, v: &mut Value, ids: &HashMap<String, String>) -> Result<(), FhirError> {
    match v {
        Value::Object(o) => {
            for (k, c) in o.iter_mut() {
                match (k.as_str(), c.as_str()) {
                    ("reference", Some(text)) => {
                        if let Some(target) = reference::at_base(text, feed.fhir_base) {
                            *c = Value::String(local_reference(conn, feed, target, ids)?);
                        }
                    }
                    _ => rewrite(conn, feed, c, ids)?,
                }
            }
        }
        Value::Array(a) => {
            for c in a {
                rewrite(conn, feed, c, ids)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn local_reference(
    conn: &mut Conn,
    feed: &Feed,
    (t, id): (&str, &str),
    ids: &HashMap<String, String>,
) -> Result<String, FhirError> {
    if let Some(local) = ids.get(&format!("{t}/{id}")) {
        return Ok(format!("{t}/{local}"));
    }
    if t == "Patient" {
        if let Some(local) = sources::linked_patient(conn, feed.name, id)? {
            return Ok(format!("Patient/{local}"));
        }
    }
    let earlier = feed.local_id(id);
    if copies::owner(conn, t, &earlier)?.flatten().as_deref() == Some(feed.name) {
        return Ok(format!("{t}/{earlier}"));
    }
    if t == "Patient" {
        return Err(FhirError::unprocessable(format!(
            "Patient/{id} is neither in this feed nor linked to a patient here: send the Patient too"
        )));
    }
    Ok(format!("{}/{t}/{id}", feed.fhir_base.trim_end_matches('/')))
}

/// One NDJSON file of a feed: its lines, numbered; a line that is not JSON fails the file.
pub fn parse_ndjson(text: &str) -> Result<Vec<(usize, Value)>, AtItem> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map(|v| (i + 1, v))
                .map_err(|e| AtItem(i + 1, FhirError::invalid(format!("not a JSON resource: {e}"))))
        })
        .collect()
}

/// What became of one file of an `$import`.
pub struct FileOutcome {
    pub url: String,
    pub result: Result<usize, String>,
}

/// Ingests one file in its own transaction: all of it, or (with the line that failed) none.
pub fn ingest_file(db: &crate::db::Db, feed: &Feed, text: &str) -> Result<usize, String> {
    let describe = |AtItem(line, e): AtItem| match line {
        0 => format!("{e}; nothing from this file was written"),
        n => format!("line {n}: {e}; nothing from this file was written"),
    };
    let items = parse_ndjson(text).map_err(describe)?;
    db.transaction(|c| ingest(c, feed, items)).map(|w| w.len()).map_err(describe)
}

/// Bulk Data `$import` (Parameters with `inputSource` and `input` parts of `type` and `url`): the
/// source is the configured one whose FHIR base (or name) is `inputSource`; each file is fetched
/// from that source only, and ingested on its own.
pub fn import(
    db: &crate::db::Db,
    keys: &crate::auth::Keys,
    client: &super::client::SourceClient,
    params: &Value,
) -> Result<Vec<FileOutcome>, FhirError> {
    if params["resourceType"] != "Parameters" {
        return Err(FhirError::invalid("$import takes a Parameters resource"));
    }
    let parts = params["parameter"].as_array().cloned().unwrap_or_default();
    let named = |p: &Value, n: &str| p["name"] == n;
    let input_source = parts
        .iter()
        .find(|p| named(p, "inputSource"))
        .and_then(|p| p["valueUri"].as_str().or(p["valueString"].as_str()))
        .ok_or_else(|| FhirError::invalid("inputSource is required: the FHIR base (or name) of a configured source"))?;
    let mut conn = db.conn()?;
    let source = sources::active(&mut conn, keys)?
        .into_iter()
        .find(|s| s.fhir_base == input_source.trim_end_matches('/') || s.name == input_source)
        .ok_or_else(|| FhirError::unprocessable(format!("{input_source} is not a configured source")))?;
    drop(conn);
    let feed = Feed { name: &source.name, fhir_base: &source.fhir_base };
    let mut out = Vec::new();
    for input in parts.iter().filter(|p| named(p, "input")) {
        let url = input["part"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| named(p, "url")))
            .and_then(|p| p["valueUri"].as_str().or(p["valueUrl"].as_str()))
            .ok_or_else(|| FhirError::invalid("each input needs a url part"))?
            .to_string();
        let result = client
            .fetch_file(&source, &url, std::time::Duration::from_secs(60))
            .and_then(|text| ingest_file(db, &feed, &text));
        out.push(FileOutcome { url, result });
    }
    if out.is_empty() {
        return Err(FhirError::invalid("$import needs at least one input (type and url)"));
    }
    Ok(out)
}
