//! "What I actually take": medicines the patient adds or stops themselves, written as
//! MedicationStatement with `informationSource` the Patient, so providers can tell them apart.

use super::{own_patient, parse_day, PortalError};
use crate::access::AccessContext;
use crate::fhir::store::WriteOptions;
use crate::fhir::{time, FhirError, Store, DMD_SYSTEM};
use serde_json::{json, Value};

const MAX_DOSE: usize = 500;
const MAX_NAME: usize = 200;

/// (dm+d code, name) of the medicines a patient can pick from.
pub fn choices() -> Vec<(&'static str, &'static str)> {
    crate::catalogue::medicine_choices()
}

/// What the patient typed on the "add a medicine" form.
#[derive(Debug, Clone, Default)]
pub struct NewTaken {
    /// A dm+d code from the list, or empty for a medicine named in `other`.
    pub code: String,
    /// The name of a medicine that is not in the list, as the patient writes it.
    pub other: String,
    pub dose: String,
    pub start: String,
}

/// Adds a patient-reported medicine; returns the new MedicationStatement's id.
pub fn add_taken(store: &Store, ctx: &AccessContext, new: &NewTaken) -> Result<String, PortalError> {
    let patient = own_patient(ctx)?;
    let other = new.other.trim();
    let medicine = if new.code.is_empty() {
        // Not in the list: the patient's own words, without a code (a clinician codes it later).
        if other.is_empty() || other.chars().count() > MAX_NAME {
            return Err(PortalError::Invalid(format!(
                "Choose a medicine from the list, or write its name (up to {MAX_NAME} characters)."
            )));
        }
        json!({"text": other})
    } else {
        let (code, name) = choices()
            .into_iter()
            .find(|(c, _)| *c == new.code)
            .ok_or_else(|| PortalError::Invalid("Choose a medicine from the list.".into()))?;
        json!({"coding": [{"system": DMD_SYSTEM, "code": code, "display": name}], "text": name})
    };
    let dose = new.dose.trim();
    if dose.is_empty() || dose.chars().count() > MAX_DOSE {
        return Err(PortalError::Invalid(format!("Say how you take it (up to {MAX_DOSE} characters).")));
    }
    let start = new.start.trim();
    let range = parse_day(start, "The start date")?;
    if range.lo > crate::time::now_micros() {
        return Err(PortalError::Invalid("The start date cannot be in the future.".into()));
    }
    let me = json!({"reference": format!("Patient/{patient}")});
    let body = json!({
        "resourceType": "MedicationStatement",
        "status": "active",
        "medicationCodeableConcept": medicine,
        "subject": me,
        "informationSource": me,
        "effectivePeriod": {"start": start},
        "dateAsserted": time::today(),
        "dosage": [{"text": dose}],
        "note": [{"text": "Reported by the patient in the Healthfolio portal"}]
    });
    Ok(store.create(ctx, "MedicationStatement", body, &WriteOptions::default())?.stored.id)
}

/// Marks a medicine the patient added as stopped today. Prescriptions and entries recorded by a
/// clinician are not the patient's to stop here: their prescriber changes those.
pub fn stop_taken(store: &Store, ctx: &AccessContext, id: &str) -> Result<(), PortalError> {
    let patient = own_patient(ctx)?;
    let current = match store.read(ctx, "MedicationStatement", id) {
        Ok(s) => s,
        Err(FhirError::NotFound(_) | FhirError::Gone(_)) => return Err(PortalError::NotFound),
        Err(e) => return Err(e.into()),
    };
    let mut body: Value = serde_json::from_str(&current.body).map_err(|_| PortalError::NotFound)?;
    if body["informationSource"]["reference"].as_str() != Some(format!("Patient/{patient}").as_str()) {
        return Err(PortalError::Invalid(
            "Only medicines you added yourself can be stopped here. Ask your prescriber to change a prescription."
                .into(),
        ));
    }
    if body["status"] == "stopped" {
        return Ok(());
    }
    let start = body["effectivePeriod"]["start"].clone();
    let start = if start.is_null() { body["effectiveDateTime"].clone() } else { start };
    let obj = body.as_object_mut().ok_or(PortalError::NotFound)?;
    obj.remove("effectiveDateTime");
    obj.insert("status".into(), json!("stopped"));
    let mut period = json!({"end": time::today()});
    if !start.is_null() {
        period["start"] = start;
    }
    obj.insert("effectivePeriod".into(), period);
    let opts = WriteOptions { if_match: Some(current.version_id), ..WriteOptions::default() };
    store.update(ctx, "MedicationStatement", id, body, &opts)?;
    Ok(())
}
