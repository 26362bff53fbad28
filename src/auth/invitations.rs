//! One-time invitations: a provider or operator invites a patient to their first sign-in; the link
//! works once, for seven days, and creates the patient's login.

use super::accounts::{self, Account};
use super::{password, AuthError};
use crate::db::{Bind, Conn, Sql};
use crate::fhir::now_micros;

const LIFETIME_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;

/// Creates an invitation for `patient`; returns the code (shown once, stored hashed).
pub fn invite(conn: &mut Conn, patient: &str) -> Result<String, AuthError> {
    let code = password::random_token();
    let now = now_micros();
    conn.execute(&Sql::with(
        "INSERT INTO invitations (code_hash, patient_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        [
            Bind::Text(password::digest(&code)),
            Bind::Text(patient.into()),
            Bind::Int(now),
            Bind::Int(now + LIFETIME_MICROS),
        ],
    ))?;
    Ok(code)
}

#[derive(diesel::QueryableByName)]
struct Invitation {
    #[diesel(sql_type = diesel::sql_types::Text)]
    patient_id: String,
}

/// The patient a live invitation is for.
pub fn check(conn: &mut Conn, code: &str) -> Result<String, AuthError> {
    let q = Sql::with(
        "SELECT patient_id FROM invitations WHERE code_hash = ? AND used_at IS NULL AND expires_at > ?",
        [Bind::Text(password::digest(code)), Bind::Int(now_micros())],
    );
    conn.first::<Invitation>(&q)?
        .map(|i| i.patient_id)
        .ok_or_else(|| AuthError::Invalid("this invitation has expired or was already used: ask for a new one".into()))
}

/// Accepts an invitation: the patient's login is created and the invitation is spent.
pub fn accept(conn: &mut Conn, code: &str, email: &str, pw: &str) -> Result<Account, AuthError> {
    let patient = check(conn, code)?;
    if accounts::by_fhir_user(conn, &format!("Patient/{patient}"))?.is_some() {
        return Err(AuthError::Invalid("this record already has a login: sign in instead".into()));
    }
    let n = conn.execute(&Sql::with(
        "UPDATE invitations SET used_at = ? WHERE code_hash = ? AND used_at IS NULL",
        [Bind::Int(now_micros()), Bind::Text(password::digest(code))],
    ))?;
    if n != 1 {
        return Err(AuthError::Invalid("this invitation was already used".into()));
    }
    accounts::create(conn, "patient", email, pw, &format!("Patient/{patient}"), None)
}
