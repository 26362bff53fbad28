//! "What I actually take": medicines the patient adds or stops themselves, written as
//! MedicationStatement with `informationSource` the Patient, so providers can tell them apart.

use super::dates::{today_in_england, DateError, DateInput};
use super::{own_patient, PortalError};
use crate::access::AccessContext;
use crate::fhir::store::WriteOptions;
use crate::fhir::{FhirError, Store, DMD_SYSTEM};
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
    /// A dm+d code from the list; [`OTHER`] for a medicine named in `other`; empty when nothing
    /// was chosen (then a name written in `other` is taken as the medicine).
    pub code: String,
    /// The name of a medicine that is not in the list, as the patient writes it.
    pub other: String,
    pub dose: String,
    pub start: DateInput,
}

/// How the start date is named in its messages ("Enter the date you started taking it").
const START: &str = "the date you started taking it";

impl NewTaken {
    /// What is wrong with the start date as typed, if anything (shown against its boxes).
    pub fn start_error(&self) -> Option<DateError> {
        self.start.parse_past(START, today_in_england()).err()
    }
}

/// The tag on what a patient enters themselves until a clinician has reviewed it (and removed
/// the tag): `meta.tag` travels with the resource to every reader, API clients included.
pub const REVIEW_SYSTEM: &str = "https://healthfolio.example/CodeSystem/clinical-review";
pub const UNREVIEWED: &str = "unreviewed";

/// What asking to add a medicine came to.
#[derive(Debug)]
pub enum Added {
    /// Saved, with the new MedicationStatement's id.
    Saved(String),
    /// Not saved: the safety checks found something the patient should confirm first.
    Check { medicine: String, warnings: Vec<String> },
}

/// Adds a patient-reported medicine, unless (and `confirmed` is false) it meets a recorded
/// allergy or repeats a current medicine: then nothing is saved and the warnings, in the
/// patient's words, are returned to be confirmed.
pub fn add_taken(store: &Store, ctx: &AccessContext, new: &NewTaken, confirmed: bool) -> Result<Added, PortalError> {
    let patient = own_patient(ctx)?;
    let (medicine, name) = medicine(new)?;
    let dose = new.dose.trim();
    if dose.is_empty() || dose.chars().count() > MAX_DOSE {
        return Err(PortalError::Invalid(format!("Say how you take it (up to {MAX_DOSE} characters).")));
    }
    let start = new.start.parse_past(START, today_in_england())?.format("%Y-%m-%d").to_string();
    let me = json!({"reference": format!("Patient/{patient}")});
    let body = json!({
        "resourceType": "MedicationStatement",
        "meta": {"tag": [{"system": REVIEW_SYSTEM, "code": UNREVIEWED,
                          "display": "Added by the patient: not yet reviewed by a clinician"}]},
        "status": "active",
        "medicationCodeableConcept": medicine,
        "subject": me,
        "informationSource": me,
        "effectivePeriod": {"start": start},
        "dateAsserted": today_in_england().to_string(),
        "dosage": [{"text": dose}],
        "note": [{"text": "Reported by the patient in the Healthfolio portal"}]
    });
    if !confirmed {
        let warnings = store.medicine_warnings(ctx, "MedicationStatement", &body)?;
        if !warnings.is_empty() {
            return Ok(Added::Check { medicine: name, warnings: warnings.into_iter().map(|w| w.to_patient).collect() });
        }
    }
    Ok(Added::Saved(store.create(ctx, "MedicationStatement", body, &WriteOptions::default())?.stored.id))
}

/// The medicine chosen (or written) on the form, as a CodeableConcept, and its name.
fn medicine(new: &NewTaken) -> Result<(Value, String), PortalError> {
    let other = new.other.trim();
    if new.code.is_empty() || new.code == OTHER {
        // Not in the list: the patient's own words, without a code (a clinician codes it later).
        if other.is_empty() || other.chars().count() > MAX_NAME {
            return Err(PortalError::Invalid(format!(
                "Choose a medicine from the list, or choose \u{201c}Something else\u{201d} and write its name (up to {MAX_NAME} characters)."
            )));
        }
        return Ok((json!({"text": other}), other.to_string()));
    }
    let (code, name) = choices()
        .into_iter()
        .find(|(c, _)| *c == new.code)
        .ok_or_else(|| PortalError::Invalid("Choose a medicine from the list.".into()))?;
    Ok((json!({"coding": [{"system": DMD_SYSTEM, "code": code, "display": name}], "text": name}), name.to_string()))
}

/// The form's value for "something else (write its name)".
pub const OTHER: &str = "other";

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
    // The day the patient stopped is the day it was in England when they said so.
    let mut period = json!({"end": today_in_england().to_string()});
    if !start.is_null() {
        period["start"] = start;
    }
    obj.insert("effectivePeriod".into(), period);
    let opts = WriteOptions { if_match: Some(current.version_id), ..WriteOptions::default() };
    store.update(ctx, "MedicationStatement", id, body, &opts)?;
    Ok(())
}
