//! New patients with a login: created by the operator (`patient add`), or by the person
//! themselves when the deployment allows self sign-up.

use super::PortalError;
use crate::access::AccessContext;
use crate::auth::accounts::{self, Account};
use crate::fhir::patient::by_nhs_number;
use crate::fhir::store::{check_refs, create_in, new_id, Refs};
use crate::fhir::{Store, NHS_NUMBER_SYSTEM};
use serde_json::json;

#[derive(Debug, Clone, Default)]
pub struct NewPatient {
    pub nhs_number: String,
    pub given: String,
    pub family: String,
    /// YYYY-MM-DD
    pub birth_date: String,
    pub email: String,
    pub password: String,
}

/// The Patient resource and its login, in one transaction, written as `ctx`: the operator adding
/// a patient, or the service itself for a person signing up (no caller yet has a record to act
/// from).
pub fn create_patient_with_login(store: &Store, ctx: &AccessContext, p: &NewPatient) -> Result<Account, PortalError> {
    let body = json!({
        "resourceType": "Patient",
        "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": p.nhs_number.replace(' ', "")}],
        "name": [{"use": "official", "family": p.family.trim(), "given": [p.given.trim()]}],
        "birthDate": p.birth_date.trim(),
        "telecom": [{"system": "email", "value": p.email.trim()}],
    });
    let account = store.db.transaction(|conn| {
        let mut refs = Refs::default();
        let s = create_in(conn, ctx, &mut refs, "Patient", body, new_id(), "POST")?;
        check_refs(conn, &refs)?;
        Ok::<_, PortalError>(accounts::create(
            conn,
            "patient",
            &p.email,
            &p.password,
            &format!("Patient/{}", s.id),
            None,
        )?)
    })?;
    store.audit.flush();
    Ok(account)
}

/// Self sign-up. A record already held here under the NHS number is not handed to whoever types
/// that number in: its owner gets an invitation from their provider instead.
pub fn sign_up(store: &Store, p: &NewPatient) -> Result<Account, PortalError> {
    for (value, what) in
        [(&p.given, "your given name"), (&p.family, "your family name"), (&p.email, "your email address")]
    {
        if value.trim().is_empty() {
            return Err(PortalError::Invalid(format!("Enter {what}.")));
        }
    }
    if by_nhs_number(&mut store.db.conn()?, &p.nhs_number.replace(' ', ""))?.is_some() {
        return Err(PortalError::Invalid(
            "A record with this NHS number is already held here. Ask your GP practice or pharmacy for an invitation to it."
                .into(),
        ));
    }
    create_patient_with_login(store, &AccessContext::service("sign-up"), p).map_err(|e| match e {
        // Validation messages name FHIR elements; say it in the form's words.
        PortalError::Fhir(f) if f.to_string().contains("NHS number") => {
            PortalError::Invalid("That NHS number is not valid: check the 10 digits.".into())
        }
        PortalError::Fhir(f) if f.to_string().contains("birthDate") => {
            PortalError::Invalid("Enter your date of birth as a real date.".into())
        }
        PortalError::Auth(a) => PortalError::Invalid(super::capitalised(&a.to_string())),
        other => other,
    })
}
