//! What the patient portal shows, assembled from the record through the same access checks and
//! audit as the API: every function takes the signed-in patient's [`AccessContext`]
//! ([`AccessContext::patient_self`]) and finds the patient in it, never in an argument a URL
//! could fill. No HTTP here: the web layer renders these view models.

pub mod access_log;
pub mod account;
pub mod allergies;
pub mod dates;
pub mod detail;
pub mod grouping;
pub mod home;
pub mod log_words;
pub mod medicines;
pub mod registration;
pub mod sharing;
pub mod taken;
pub mod timeline;
pub mod words;

use crate::access::AccessContext;
use crate::fhir::search::{SearchRequest, SearchResult};
use crate::fhir::{FhirError, Store};
use serde_json::Value;

pub use access_log::{access_log, LogLine};
pub use account::{AccountView, SessionLine};
pub use allergies::{AllergyLine, ProblemLine};
pub(crate) use dates::{date_part, day, long_date, minute, parse_day};
pub use detail::{MedicineDetail, VersionLine};
pub use grouping::{MedicineEntry, Said};
pub use home::{Home, Person};
pub use medicines::MedicineLine;
pub use sharing::{Provider, Share};

/// What went wrong, in the terms a patient can act on.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// The patient's input cannot be used; the message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// Nothing of this patient's has that name (or it is someone else's: not ours to reveal).
    #[error("not found")]
    NotFound,
    /// The context reaches no patient (not a patient's session).
    #[error("this is not a patient's session")]
    NoPatient,
    #[error(transparent)]
    Fhir(#[from] FhirError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

impl From<crate::access::AccessError> for PortalError {
    fn from(e: crate::access::AccessError) -> Self {
        PortalError::Fhir(e.into())
    }
}

impl From<crate::consent::ConsentError> for PortalError {
    fn from(e: crate::consent::ConsentError) -> Self {
        match e {
            crate::consent::ConsentError::Invalid(m) => PortalError::Invalid(m),
            crate::consent::ConsentError::NotFound(_) => PortalError::NotFound,
            crate::consent::ConsentError::Db(d) => PortalError::Db(d),
        }
    }
}

/// The patient whose record this context may reach: the only patient a portal page shows.
/// A message that starts a sentence.
pub(crate) fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// Whether `patient`'s record is held here: a login can outlive it (a restore of an older
/// backup, a deletion made before logins kept their records).
pub fn record_held(store: &Store, patient: &str) -> Result<bool, PortalError> {
    let mut conn = store.db.conn()?;
    Ok(crate::fhir::store::current(&mut conn, "Patient", patient)?.is_some_and(|r| r.deleted == 0))
}

pub fn own_patient(ctx: &AccessContext) -> Result<&str, PortalError> {
    ctx.compartment().ok_or(PortalError::NoPatient)
}

/// `9434765919` as `943 476 5919` (NHS numbers are read out 3-3-4).
pub fn format_nhs(n: &str) -> String {
    if n.len() == 10 && n.chars().all(|c| c.is_ascii_digit()) {
        format!("{} {} {}", &n[..3], &n[3..6], &n[6..])
    } else {
        n.to_string()
    }
}

/// Up to 1000 resources of `rtype` in the patient's own compartment, through the API's search.
pub(crate) fn search(
    store: &Store,
    ctx: &AccessContext,
    rtype: &str,
    params: &[(&str, &str)],
) -> Result<Vec<Value>, PortalError> {
    let patient = own_patient(ctx)?;
    let mut p: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    p.push(("_count".into(), crate::fhir::search::MAX_COUNT.to_string()));
    let mut req = SearchRequest { rtype: rtype.into(), params: p, compartment: Some(patient.into()), strict: false };
    // Every page: a long record is shown whole (up to PAGES_AT_MOST pages of 1,000).
    let mut out = Vec::new();
    for _ in 0..PAGES_AT_MOST {
        let page = store.search(ctx, &req)?;
        out.extend(bodies(&page));
        let Some(cursor) = page.next_cursor else { break };
        req.params.retain(|(k, _)| k != "_cursor");
        req.params.push(("_cursor".into(), cursor));
    }
    Ok(out)
}

const PAGES_AT_MOST: usize = 20;

fn bodies(r: &SearchResult) -> Vec<Value> {
    r.matches.iter().filter_map(|m| serde_json::from_str(&m.body).ok()).collect()
}

/// A CodeableConcept in words: its text, else the first coding's display.
pub(crate) fn concept_text(c: &Value) -> Option<String> {
    c["text"].as_str().or(c["coding"][0]["display"].as_str()).map(str::to_string)
}

/// A person's name in display order: `Dr Helen Carter`.
pub(crate) fn human_name(n: &Value) -> String {
    if let Some(t) = n["text"].as_str() {
        return t.to_string();
    }
    let words = |k: &str| {
        n[k].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")).unwrap_or_default()
    };
    [words("prefix"), words("given"), n["family"].as_str().unwrap_or_default().to_string()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nhs_numbers_read_three_three_four() {
        assert_eq!(format_nhs("9434765919"), "943 476 5919");
        assert_eq!(format_nhs("12345"), "12345");
    }

    #[test]
    fn names_in_display_order() {
        assert_eq!(human_name(&json!({"prefix": ["Dr"], "given": ["Helen"], "family": "Carter"})), "Dr Helen Carter");
        assert_eq!(human_name(&json!({"family": "Okafor"})), "Okafor");
    }
}
