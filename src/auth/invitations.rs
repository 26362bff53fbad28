//! One-time links: an invitation to a patient's first sign-in (seven days; creates the login), and
//! an operator-issued password reset (one day; no email server is assumed, the operator passes the
//! link on). Each works once; only its hash is stored.

use super::accounts::{self, Account};
use super::AccessContext;
use super::{password, AuthError};
use crate::audit::{record_in, AuditEntry};
use crate::db::{Bind, Conn, Sql};
use crate::fhir::{FhirError, Interaction};
use crate::time::now_micros;

pub const LIFETIME_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;
const RESET_LIFETIME_MICROS: i64 = 24 * 3600 * 1_000_000;

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

/// An invitation asked for by `ctx`: the operator for anyone, a provider for a patient whose
/// grant lets it change their record (`Patient` write). Audited in the patient's log. A record
/// out of the caller's reach is not found.
pub fn invite_by(conn: &mut Conn, ctx: &AccessContext, patient: &str) -> Result<String, FhirError> {
    ctx.require("Patient", Interaction::Update)?;
    let live = crate::fhir::store::current(conn, "Patient", patient)?.is_some_and(|r| r.deleted == 0);
    if !live || !ctx.may_touch(conn, "Patient", Some(patient), Interaction::Update)? {
        return Err(FhirError::not_found("Patient", patient));
    }
    let has_login = conn
        .first::<crate::db::Int>(&Sql::with(
            "SELECT COUNT(*) AS n FROM accounts WHERE fhir_user = ?",
            [Bind::Text(format!("Patient/{patient}"))],
        ))?
        .is_some_and(|r| r.n > 0);
    if has_login {
        return Err(FhirError::Conflict(format!(
            "Patient/{patient} already has a login: they can sign in, or ask for a password reset"
        )));
    }
    let code = invite(conn, patient)?;
    let mut entry = AuditEntry::event("invite", &format!("Patient/{patient}"), None);
    entry.patient_id = Some(patient.to_string());
    record_in(conn, ctx, &entry)?;
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
        "SELECT patient_id FROM invitations WHERE code_hash = ? AND purpose = 'invite' AND used_at IS NULL AND expires_at > ?",
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

/// Creates a password reset for the account with `email`; returns the code.
pub fn reset_link(conn: &mut Conn, email: &str) -> Result<String, AuthError> {
    let account =
        accounts::by_email(conn, email)?.ok_or_else(|| AuthError::Invalid(format!("no login for {email}")))?;
    let code = password::random_token();
    let now = now_micros();
    conn.execute(&Sql::with(
        "INSERT INTO invitations (code_hash, patient_id, account_id, purpose, created_at, expires_at) VALUES (?, ?, ?, 'reset', ?, ?)",
        [
            Bind::Text(password::digest(&code)),
            Bind::Text(account.fhir_user.clone()),
            Bind::Text(account.id),
            Bind::Int(now),
            Bind::Int(now + RESET_LIFETIME_MICROS),
        ],
    ))?;
    Ok(code)
}

#[derive(diesel::QueryableByName)]
struct Reset {
    #[diesel(sql_type = diesel::sql_types::Text)]
    account_id: String,
}

/// The account a live reset link is for.
pub fn check_reset(conn: &mut Conn, code: &str) -> Result<String, AuthError> {
    let q = Sql::with(
        "SELECT account_id FROM invitations WHERE code_hash = ? AND purpose = 'reset' AND account_id IS NOT NULL AND used_at IS NULL AND expires_at > ?",
        [Bind::Text(password::digest(code)), Bind::Int(now_micros())],
    );
    conn.first::<Reset>(&q)?
        .map(|r| r.account_id)
        .ok_or_else(|| AuthError::Invalid("this reset link has expired or was already used: ask for a new one".into()))
}

/// Sets the new password, ends every session of the account (whoever knew the old password is
/// signed out) and spends the link.
pub fn reset(conn: &mut Conn, code: &str, pw: &str) -> Result<Account, AuthError> {
    let account_id = check_reset(conn, code)?;
    let n = conn.execute(&Sql::with(
        "UPDATE invitations SET used_at = ? WHERE code_hash = ? AND used_at IS NULL",
        [Bind::Int(now_micros()), Bind::Text(password::digest(code))],
    ))?;
    if n != 1 {
        return Err(AuthError::Invalid("this reset link was already used".into()));
    }
    accounts::set_password(conn, &account_id, pw)?;
    super::session::end_all(conn, &account_id)?;
    accounts::by_id(conn, &account_id)?.ok_or_else(|| AuthError::Invalid("the account no longer exists".into()))
}
