//! The home page: who the record belongs to, what they take now, what they are allergic to.

use super::allergies::{allergies, AllergyLine};
use super::medicines::{medicines, MedicineLine};
use super::{format_nhs, human_name, own_patient, PortalError};
use crate::auth::AccessContext;
use crate::fhir::{Store, NHS_NUMBER_SYSTEM};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Person {
    pub name: String,
    /// Formatted 3-3-4, or empty when the record has none.
    pub nhs_number: String,
    pub birth_date: String,
}

#[derive(Debug, Clone)]
pub struct Home {
    pub person: Person,
    pub current: Vec<MedicineLine>,
    pub allergies: Vec<AllergyLine>,
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
    })
}

pub fn home(store: &Store, ctx: &AccessContext) -> Result<Home, PortalError> {
    Ok(Home {
        person: person(store, ctx)?,
        current: medicines(store, ctx)?.into_iter().filter(|m| m.current).collect(),
        allergies: allergies(store, ctx)?,
    })
}
