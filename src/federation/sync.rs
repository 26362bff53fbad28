//! `always` sources, kept in step in the background: each round, one replica (whichever leases
//! the source's sync job in the database) brings what changed since the last round into the
//! persisted copy through [`super::ingest`], by searches (local patients linked by NHS number,
//! then `_lastUpdated=gt…` for each, every page) or, with `--sync bulk`, by one Bulk Data export
//! of what the source shares (`_since`), kept to the people held here.

use super::client::SourceClient;
use super::ingest::{ingest, parse_ndjson, Feed};
use super::sources::{self, Policy, Source};
use crate::auth::Keys;
use crate::db::jobs::{self, Finish, NewJob};
use crate::db::{Conn, Db, Sql};
use crate::fhir::patient::nhs_number;
use crate::fhir::{now_micros, time, FhirError};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Types pulled from a source whose configuration names none.
pub const DEFAULT_TYPES: &[&str] =
    &["MedicationRequest", "MedicationStatement", "MedicationDispense", "AllergyIntolerance", "Condition"];
/// Patients linked per round, so a large population is linked over several rounds.
const LINKS_PER_ROUND: i64 = 200;
/// Clocks differ between servers: each pull starts a little before the last one did (ingest is
/// idempotent, so the overlap costs nothing but a few unchanged resources).
const OVERLAP_MICROS: i64 = 60 * 1_000_000;
/// A marker for "asked, not held there", so an unknown patient is not asked about every round.
pub(crate) const NOT_THERE: &str = "";

/// What one round did for one source.
#[derive(Debug, Default)]
pub struct Round {
    pub linked: usize,
    pub written: usize,
    pub failures: Vec<String>,
}

pub fn start_worker(db: Db, keys: Keys, client: Arc<SourceClient>, interval: Duration, alive: std::sync::Weak<()>) {
    let worker = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    let spawned = std::thread::Builder::new().name("source-sync".into()).spawn(move || loop {
        if alive.upgrade().is_none() {
            return;
        }
        let due = db.conn().map_err(FhirError::from).and_then(|mut c| {
            sources::active(&mut c, &keys).map_err(FhirError::from)
        });
        for s in due.unwrap_or_default().into_iter().filter(|s| s.policy == Policy::Always) {
            match db.transaction(|c| lease(c, &s.name, &worker, interval)) {
                Ok(true) => {
                    let round = sync_source(&db, &client, &s);
                    if !round.failures.is_empty() {
                        tracing::warn!(source = %s.name, failures = round.failures.len(), "source sync: {}", round.failures.join("; "));
                    }
                    let _ = db.transaction(|c| finish(c, &s.name, &worker, &round));
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(source = %s.name, "source sync lease: {e}"),
            }
        }
        // Look again within a second (the lease says whether a round is due); nap in short
        // steps so a stopping server is not kept waiting.
        for _ in 0..10 {
            if alive.upgrade().is_none() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    if let Err(e) = spawned {
        tracing::error!("source sync worker did not start: {e}");
    }
}

/// Pages of one type of one patient a round reads at most (1,000 resources each).
const MAX_PAGES: usize = 100;

/// Takes this source's sync job if no replica holds it and its last round is `interval` old.
fn lease(conn: &mut Conn, source: &str, worker: &str, interval: Duration) -> Result<bool, FhirError> {
    let id = format!("sync-{source}");
    let now = now_micros();
    let request = format!("sync {source}");
    let job = NewJob {
        id: &id,
        kind: "source-sync",
        status: "idle",
        client_id: "healthfolio",
        request: &request,
        params: "{}",
    };
    jobs::add(conn, &job, now)?;
    let every = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX);
    Ok(jobs::lease_due(conn, &id, worker, now + 10 * every.max(30_000_000), now, now - every)?)
}

fn finish(conn: &mut Conn, source: &str, worker: &str, round: &Round) -> Result<(), FhirError> {
    let summary = format!("{} linked, {} written, {} failed", round.linked, round.written, round.failures.len());
    let done = Finish { status: "idle", progress: &summary, result: None, error: round.failures.first().cloned() };
    jobs::finish(conn, &format!("sync-{source}"), worker, done, now_micros())?;
    Ok(())
}

/// One round for one source: a bulk round, or link, then search for what changed. A failure is
/// noted and the round goes on with the next patient or type; nothing half-written stays (each
/// pull is one transaction).
pub fn sync_source(db: &Db, client: &SourceClient, s: &Source) -> Round {
    let mut round = Round::default();
    let timeout = Duration::from_millis(s.timeout_ms.max(1000) as u64);
    if s.bulk_sync {
        bulk_round(db, client, s, &mut round);
        return round;
    }
    if let Err(e) = link_patients(db, client, s, timeout, &mut round) {
        round.failures.push(format!("linking: {e}"));
    }
    let links = match db.conn().map_err(FhirError::from).and_then(|mut c| Ok(sources::linked(&mut c, &s.name)?)) {
        Ok(l) => l,
        Err(e) => {
            round.failures.push(e.to_string());
            return round;
        }
    };
    let types = types_of(s);
    let feed = Feed { name: &s.name, fhir_base: &s.fhir_base };
    for (patient, remote) in links {
        for t in &types {
            let started = now_micros();
            let since =
                db.conn().ok().and_then(|mut c| sources::last_fetch(&mut c, &s.name, &patient, t).ok().flatten());
            // Only what changed since the last pull (a search by `_lastUpdated`, which every FHIR
            // server answers), every page of it.
            let mut path = format!("{t}?patient={remote}&_count=1000");
            if let Some(since) = since {
                path.push_str(&format!("&_lastUpdated=gt{}", overlapping(since)));
            }
            let pulled =
                client.fetch_all(s, &path, timeout, MAX_PAGES).map_err(|e| format!("{t} of {remote}: source {e}"));
            let written = pulled.and_then(|items| {
                let items: Vec<_> = items.into_iter().filter(|i| i["resourceType"] == t.as_str()).enumerate().collect();
                db.transaction(|c| {
                    let n = ingest(c, &feed, items)?.len();
                    sources::record_fetch_at(c, &s.name, &patient, t, started)?;
                    Ok::<_, super::ingest::AtItem>(n)
                })
                .map_err(|super::ingest::AtItem(i, e)| format!("{t} of {remote}, item {i}: {e}"))
            });
            match written {
                Ok(n) => round.written += n,
                Err(e) => round.failures.push(e),
            }
        }
    }
    round
}

fn types_of(s: &Source) -> Vec<String> {
    s.types.clone().unwrap_or_else(|| DEFAULT_TYPES.iter().map(|t| t.to_string()).collect())
}

/// `since`, moved back by the clock overlap, as a query parameter value.
fn overlapping(since: i64) -> String {
    let at = time::format_instant(since - OVERLAP_MICROS);
    percent_encoding::utf8_percent_encode(&at, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Where a bulk round's start is kept (`source_fetches` keyed by a patient no id can be).
const BULK_MARK: (&str, &str) = ("*", "$export");
/// A bulk round waits this long at most for the source to finish its export.
const BULK_DEADLINE: Duration = Duration::from_secs(300);

/// One bulk round: the source's Bulk Data `Patient/$export` of everything it shares with us
/// (Patients included, so each is linked by NHS number), what changed since the last complete
/// round, kept to the people held here ([`held_here`]). Each file is ingested whole or not at all; a failure ends the round, and the
/// next one asks again from the same point (ingest is idempotent).
fn bulk_round(db: &Db, client: &SourceClient, s: &Source, round: &mut Round) {
    let started = now_micros();
    let since =
        db.conn().ok().and_then(|mut c| sources::last_fetch(&mut c, &s.name, BULK_MARK.0, BULK_MARK.1).ok().flatten());
    let mut types = types_of(s);
    if !types.iter().any(|t| t == "Patient") {
        types.insert(0, "Patient".into());
    }
    let mut query = format!("_type={}", types.join(","));
    if let Some(since) = since {
        query.push_str(&format!("&_since={}", overlapping(since)));
    }
    let feed = Feed { name: &s.name, fhir_base: &s.fhir_base };
    let timeout = Duration::from_millis(s.timeout_ms.max(1000) as u64);
    let mut held: HashSet<String> =
        match db.conn().map_err(FhirError::from).and_then(|mut c| Ok(sources::linked(&mut c, &s.name)?)) {
            Ok(links) => links.into_iter().map(|(_, remote)| remote).filter(|r| r != NOT_THERE).collect(),
            Err(e) => return round.failures.push(format!("bulk export: {e}")),
        };
    let exported = client.bulk_export(s, &query, timeout, BULK_DEADLINE, |t, text| {
        let describe = |super::ingest::AtItem(line, e)| format!("{t} file, line {line}: {e}");
        let items = parse_ndjson(&text).map_err(describe)?;
        let items = held_here(db, &feed, t, items, &mut held).map_err(|e| format!("{t} file: {e}"))?;
        round.written += db.transaction(|c| ingest(c, &feed, items)).map_err(describe)?.len();
        Ok(())
    });
    let done = exported.and_then(|_| {
        db.transaction(|c| sources::record_fetch_at(c, &s.name, BULK_MARK.0, BULK_MARK.1, started))
            .map_err(|e| e.to_string())
    });
    if let Err(e) = done {
        round.failures.push(format!("bulk export: source {e}"));
    }
}

/// What of a bulk file is kept here: the source's Patients who are people held here (by NHS
/// number, or linked before), what lies in their compartments, and shared resources (a
/// Medication, a prescriber). Everyone else the source exports stays at the source, as in a
/// search round, which only ever asks about linked patients.
fn held_here(
    db: &Db,
    feed: &Feed,
    rtype: &str,
    items: Vec<(usize, serde_json::Value)>,
    held: &mut HashSet<String>,
) -> Result<Vec<(usize, serde_json::Value)>, FhirError> {
    if rtype == "Patient" {
        let mut conn = db.conn()?;
        let mut kept = Vec::new();
        for (line, p) in items {
            let remote = p["id"].as_str().unwrap_or_default().to_string();
            let here = match nhs_number(&p) {
                Some(n) => crate::fhir::patient::by_nhs_number(&mut conn, &n)?.is_some(),
                None => false,
            };
            if here || held.contains(&remote) {
                held.insert(remote);
                kept.push((line, p));
            }
        }
        return Ok(kept);
    }
    let Some(path) = crate::fhir::params::compartment_path(rtype) else { return Ok(items) };
    Ok(items
        .into_iter()
        .filter(|(_, r)| {
            r[path]["reference"]
                .as_str()
                .and_then(|text| crate::fhir::reference::at_base(text, feed.fhir_base))
                .is_some_and(|(t, id)| t == "Patient" && held.contains(id))
        })
        .collect())
}

/// Local patients (not copies) this source has not been asked about yet, found there by NHS number.
fn link_patients(
    db: &Db,
    client: &SourceClient,
    s: &Source,
    timeout: Duration,
    round: &mut Round,
) -> Result<(), FhirError> {
    let unless = |q: &mut Sql| sources::unlinked_condition(q, &s.name);
    let unlinked = crate::fhir::copies::held_patients(&mut db.conn()?, unless, LINKS_PER_ROUND)?;
    for p in unlinked {
        let body: serde_json::Value = serde_json::from_str(p.body.as_deref().unwrap_or("{}")).unwrap_or_default();
        let Some(nhs) = nhs_number(&body) else { continue };
        let found = client.fetch(s, &format!("Patient?identifier={}|{nhs}", crate::fhir::NHS_NUMBER_SYSTEM), timeout);
        let remote = match found {
            Ok(list) => list.first().and_then(|r| r["id"].as_str()).unwrap_or(NOT_THERE).to_string(),
            Err(e) => return Err(FhirError::invalid(format!("source {e}"))),
        };
        let mut conn = db.conn()?;
        sources::save_link(&mut conn, &s.name, &p.id, &remote)?;
        if remote != NOT_THERE {
            round.linked += 1;
        }
    }
    Ok(())
}
