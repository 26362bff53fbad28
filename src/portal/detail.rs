//! One medicine entry in full: every version, and who wrote each (the version's author as the
//! store recorded it, and any Provenance that targets it).

use super::medicines::{kind_of, prescription_line, statement_line, MedicineLine, Names};
use super::{capitalised, minute, own_patient, PortalError};
use crate::access::AccessContext;
use crate::fhir::history::HistoryRequest;
use crate::fhir::search::SearchRequest;
use crate::fhir::{FhirError, Store};
use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct VersionLine {
    pub version: i64,
    pub when: String,
    pub status: String,
    pub dose: String,
    /// Who wrote this version, in words.
    pub author: String,
    /// What Provenance says about this version ("Author: Dr Helen Carter, for Riverside …").
    pub provenance: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct MedicineDetail {
    pub line: MedicineLine,
    /// Newest first.
    pub versions: Vec<VersionLine>,
}

/// The stored author of each version (`client_id|subject`), in words.
fn authors(store: &Store, ctx: &AccessContext, rtype: &str, id: &str) -> Result<HashMap<i64, String>, PortalError> {
    let rows = store.version_authors(ctx, rtype, id)?;
    let clients = crate::auth::clients::list(&mut store.db.conn()?).unwrap_or_default();
    let mut names = Names::new(store, ctx);
    let mut words = |a: &str| author_words(a, &clients, &mut names);
    Ok(rows.into_iter().map(|(version, author)| (version, words(&author))).collect())
}

/// A version's stored author (`client_id|subject`) in words: the app or provider, and the
/// practitioner using it when one signed in.
pub(crate) fn author_words(a: &str, clients: &[crate::auth::clients::Client], names: &mut Names) -> String {
    let (client, subject) = a.split_once('|').unwrap_or((a, ""));
    let app = match client {
        "portal" => "You, in the portal".to_string(),
        "healthfolio-cli" | "" => "Healthfolio (loaded by the service operator)".to_string(),
        c => clients.iter().find(|x| x.client_id == c).map_or_else(|| format!("App {c}"), |x| x.name.clone()),
    };
    match subject.starts_with("Practitioner/").then(|| names.name(subject)).flatten() {
        Some(person) => format!("{person}, using {app}"),
        None => app,
    }
}

/// Provenance targeting this entry, as (version it names, description).
fn provenance(store: &Store, ctx: &AccessContext, rtype: &str, id: &str) -> Result<Vec<(i64, String)>, PortalError> {
    let req = SearchRequest {
        rtype: "Provenance".into(),
        params: vec![("target".into(), format!("{rtype}/{id}")), ("_count".into(), "1000".into())],
        compartment: Some(own_patient(ctx)?.to_string()),
        strict: false,
    };
    let mut names = Names::new(store, ctx);
    let mut out = Vec::new();
    for m in store.search(ctx, &req)?.matches {
        let p: Value = serde_json::from_str(&m.body).unwrap_or(Value::Null);
        let targets = p["target"].as_array().cloned().unwrap_or_default();
        let version = targets
            .iter()
            .filter_map(|t| t["reference"].as_str())
            .find_map(|r| r.rsplit_once("/_history/").and_then(|(_, v)| v.parse().ok()))
            .unwrap_or(0);
        let agents = p["agent"].as_array().cloned().unwrap_or_default();
        for a in &agents {
            out.push((version, agent_words(a, &mut names)));
        }
    }
    Ok(out)
}

fn agent_words(a: &Value, names: &mut Names) -> String {
    let role = a["type"]["coding"][0]["code"].as_str().or(a["type"]["text"].as_str()).unwrap_or("involved");
    let who = |v: &Value, names: &mut Names| {
        v["reference"]
            .as_str()
            .and_then(|r| names.name(r))
            .or(v["display"].as_str().map(str::to_string))
            .or(v["identifier"]["value"].as_str().map(str::to_string))
            .unwrap_or_else(|| "someone unnamed".into())
    };
    let mut s = format!("{}: {}", capitalised(role), who(&a["who"], names));
    if a.get("onBehalfOf").is_some() {
        s.push_str(&format!(", for {}", who(&a["onBehalfOf"], names)));
    }
    s
}

/// The entry `slug/id` of the signed-in patient, with its full history.
pub fn detail(store: &Store, ctx: &AccessContext, slug: &str, id: &str) -> Result<MedicineDetail, PortalError> {
    let rtype = kind_of(slug).ok_or(PortalError::NotFound)?;
    let patient = own_patient(ctx)?.to_string();
    let current = match store.read(ctx, rtype, id) {
        Ok(s) => s,
        Err(FhirError::NotFound(_) | FhirError::Gone(_)) => return Err(PortalError::NotFound),
        Err(e) => return Err(e.into()),
    };
    let body: Value = serde_json::from_str(&current.body).unwrap_or(Value::Null);
    let mut names = Names::new(store, ctx);
    let line = if rtype == "MedicationRequest" {
        prescription_line(&body, &mut names, &HashMap::new())
    } else {
        statement_line(&body, &patient, &mut names)
    };
    let req =
        HistoryRequest { rtype: Some(rtype.into()), id: Some(id.into()), count: Some(1000), ..Default::default() };
    let history = store.history(ctx, &req)?;
    let authors = authors(store, ctx, rtype, id)?;
    let provenance = provenance(store, ctx, rtype, id)?;
    let versions = history
        .versions
        .iter()
        .map(|v| {
            let b: Value = serde_json::from_str(&v.body).unwrap_or(Value::Null);
            let dosage = if rtype == "MedicationRequest" { &b["dosageInstruction"][0] } else { &b["dosage"][0] };
            VersionLine {
                version: v.version_id,
                when: minute(v.last_updated),
                status: super::words::medicine_status(if v.deleted {
                    "removed"
                } else {
                    b["status"].as_str().unwrap_or("")
                })
                .to_string(),
                dose: if v.deleted { String::new() } else { super::medicines::dose_words(dosage) },
                author: authors.get(&v.version_id).cloned().unwrap_or_else(|| "not recorded".into()),
                provenance: provenance.iter().filter(|(n, _)| *n == v.version_id).map(|(_, s)| s.clone()).collect(),
            }
        })
        .collect();
    Ok(MedicineDetail { line, versions })
}
