//! The home page: who the record belongs to, what they take now, what they are allergic to, and
//! what others changed or looked at since the patient's last visit.

use super::allergies::{allergies, AllergyLine};
use super::detail::author_words;
use super::grouping::MedicineEntry;
use super::medicines::medicines;
use super::medicines::{slug_of, Names};
use super::{concept_text, format_nhs, human_name, minute, own_patient, PortalError};
use crate::access::AccessContext;
use crate::fhir::{Store, NHS_NUMBER_SYSTEM};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Person {
    pub name: String,
    /// Formatted 3-3-4, or empty when the record has none.
    pub nhs_number: String,
    pub birth_date: String,
    /// The record moved to another provider: its new home (this copy takes no new entries).
    pub moved_to: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Home {
    pub person: Person,
    pub current: Vec<MedicineEntry>,
    pub allergies: Vec<AllergyLine>,
    /// Set from the second visit on.
    pub since: Option<SinceLastVisit>,
}

/// What others did to the record since the patient's previous visit.
#[derive(Debug, Clone)]
pub struct SinceLastVisit {
    pub when: String,
    /// Entries others added or changed, newest first, in words.
    pub changes: Vec<Change>,
    /// How many times apps, providers or the operator reached the record.
    pub accesses: i64,
    /// The latest of those, in the access log's words.
    pub accessed: Vec<super::LogLine>,
}

#[derive(Debug, Clone)]
pub struct Change {
    pub what: String,
    pub by: String,
    pub link: Option<String>,
}

/// Types whose changes the home page reports, with the words for a new entry.
const REPORTED: &[(&str, &str)] = &[
    ("MedicationRequest", "Prescription"),
    ("MedicationStatement", "Medicine taken"),
    ("MedicationDispense", "Medicine dispensed"),
    ("AllergyIntolerance", "Allergy"),
    ("Condition", "Health problem"),
];

fn since_last_visit(store: &Store, ctx: &AccessContext, since: i64) -> Result<SinceLastVisit, PortalError> {
    let patient = own_patient(ctx)?;
    let types: Vec<&str> = REPORTED.iter().map(|(t, _)| *t).collect();
    let rows = store.changed_since(ctx, &types, since, 20)?;
    let mut conn = store.db.conn()?;
    let clients = crate::auth::clients::list(&mut conn)?;
    let mut names = Names::new(store, ctx);
    let changes = rows
        .into_iter()
        .filter(|r| !r.author.starts_with("portal|"))
        .map(|r| {
            let body: Value = serde_json::from_str(r.body.as_deref().unwrap_or("{}")).unwrap_or(Value::Null);
            let noun = REPORTED.iter().find(|(t, _)| *t == r.res_type).map_or("Entry", |(_, w)| w);
            let verb = if r.version_id == 1 { "added" } else { "changed" };
            let name = match r.res_type.as_str() {
                "MedicationRequest" | "MedicationStatement" => names.medicine(&body),
                _ => concept_text(&body["code"]).unwrap_or_else(|| "an entry".into()),
            };
            let link = matches!(r.res_type.as_str(), "MedicationRequest" | "MedicationStatement")
                .then(|| format!("/portal/medicines/{}/{}", slug_of(&r.res_type), r.id));
            Change { what: format!("{noun} {verb}: {name}"), by: author_words(&r.author, &clients, &mut names), link }
        })
        .collect();
    let accesses = crate::audit::accesses_since(&mut conn, patient, since, "portal")?;
    let accessed = if accesses > 0 { super::access_log::others_since(store, ctx, since, 5)? } else { Vec::new() };
    Ok(SinceLastVisit { when: minute(since), changes, accesses, accessed })
}

/// The signed-in patient's own Patient resource, in words.
pub fn person(store: &Store, ctx: &AccessContext) -> Result<Person, PortalError> {
    let id = own_patient(ctx)?;
    let p: Value = serde_json::from_str(&store.read(ctx, "Patient", id)?.body).unwrap_or(Value::Null);
    let names = p["name"].as_array().cloned().unwrap_or_default();
    let name = names.iter().find(|n| n["use"] == "official").or(names.first()).map(human_name).unwrap_or_default();
    let nhs = p["identifier"]
        .as_array()
        .and_then(|ids| ids.iter().find(|i| i["system"] == NHS_NUMBER_SYSTEM))
        .and_then(|i| i["value"].as_str())
        .unwrap_or_default();
    Ok(Person {
        name: if name.is_empty() { "Your record".into() } else { name },
        nhs_number: format_nhs(nhs),
        birth_date: p["birthDate"].as_str().unwrap_or_default().to_string(),
        // From the closure (an http(s) URL, set once, by the patient's own app or the operator),
        // not from the Patient's links, which any writer could change. Shown as text, not a link.
        moved_to: crate::fhir::store::moved_to(&mut store.db.conn()?, id)?,
    })
}

/// The home page; `previous_visit` is when the patient last signed in before this visit.
pub fn home(store: &Store, ctx: &AccessContext, previous_visit: Option<i64>) -> Result<Home, PortalError> {
    Ok(Home {
        person: person(store, ctx)?,
        current: medicines(store, ctx)?.into_iter().filter(|m| m.current).collect(),
        allergies: allergies(store, ctx)?,
        since: previous_visit.map(|t| since_last_visit(store, ctx, t)).transpose()?,
    })
}
