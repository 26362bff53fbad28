//! The patient's account: change password (after re-entering the current one), active sessions,
//! and "sign out everywhere". The account is the context's subject, never a form field.

use super::{minute, own_patient, PortalError};
use crate::access::AccessContext;
use crate::audit::{record_in, AuditEntry};
use crate::auth::{accounts, password, session};
use crate::db::Db;

#[derive(Debug, Clone)]
pub struct SessionLine {
    pub started: String,
    pub last_seen: String,
    pub device: String,
    /// The session this page is shown in.
    pub this_one: bool,
}

#[derive(Debug, Clone)]
pub struct AccountView {
    pub email: String,
    pub sessions: Vec<SessionLine>,
    /// Apps the patient connected (signed in to and allowed), still able to use the record.
    pub apps: Vec<super::sharing::Share>,
}

fn account(db: &Db, ctx: &AccessContext) -> Result<accounts::Account, PortalError> {
    own_patient(ctx)?;
    let mut conn = db.conn()?;
    accounts::by_id(&mut conn, &ctx.subject)?.ok_or(PortalError::NoPatient)
}

/// The account and its live sessions; `current` is the id hash of the session viewing it.
pub fn account_view(db: &Db, ctx: &AccessContext, current: &str) -> Result<AccountView, PortalError> {
    let a = account(db, ctx)?;
    let mut conn = db.conn()?;
    let sessions = session::list(&mut conn, &a.id)?
        .into_iter()
        .map(|s| SessionLine {
            started: minute(s.created_at),
            last_seen: minute(s.last_seen_at),
            device: s.user_agent.unwrap_or_else(|| "Unknown browser".into()),
            this_one: s.id_hash == current,
        })
        .collect();
    let apps = super::sharing::sharing(db, ctx)?.into_iter().filter(|s| s.active && s.kind == "An app").collect();
    Ok(AccountView { email: a.email, sessions, apps })
}

/// What the patient typed on the change-password form.
#[derive(Debug, Clone, Default)]
pub struct PasswordChange {
    pub current: String,
    pub new: String,
    pub confirm: String,
}

/// Changes the password once the current one is proved. Slow on purpose (argon2): run it off
/// the async workers.
pub fn change_password(db: &Db, ctx: &AccessContext, change: &PasswordChange) -> Result<(), PortalError> {
    let a = account(db, ctx)?;
    if !password::verify(&change.current, &a.password_hash) {
        return Err(PortalError::Invalid("Your current password is not right.".into()));
    }
    if change.new != change.confirm {
        return Err(PortalError::Invalid("The new password and its confirmation differ.".into()));
    }
    if change.new == change.current {
        return Err(PortalError::Invalid("Choose a new password that differs from the current one.".into()));
    }
    db.transaction(|c| {
        accounts::set_password(c, &a.id, &change.new).map_err(|e| match e {
            crate::auth::AuthError::Invalid(m) => PortalError::Invalid(format!("{}.", capital(&m))),
            other => other.into(),
        })?;
        record_in(c, ctx, &AuditEntry::event("password-changed", &a.fhir_user, None))?;
        Ok::<_, PortalError>(())
    })
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// Ends every session of this account, the current one included; returns how many.
pub fn sign_out_everywhere(db: &Db, ctx: &AccessContext) -> Result<usize, PortalError> {
    let a = account(db, ctx)?;
    let mut conn = db.conn()?;
    let n = session::end_all(&mut conn, &a.id)?;
    record_in(&mut conn, ctx, &AuditEntry::event("signed-out-everywhere", &a.fhir_user, None))?;
    Ok(n)
}
