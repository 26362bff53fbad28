//! Sign-in accounts: a patient's login is linked to their Patient resource; a practitioner's to a
//! Practitioner and an Organization. Passwords are argon2id; failures are rate limited.

use super::{password, AuthError};
use crate::db::{Bind, Conn, Int, Sql};
use crate::time::now_micros;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

/// Failed sign-ins before an account pauses, and for how long.
const ACCOUNT_FAILURES: i64 = 5;
const ACCOUNT_LOCK_MICROS: i64 = 5 * 60 * 1_000_000;
/// Failed sign-ins from one address within the window before it is refused.
const ADDRESS_FAILURES: i64 = 20;
const ADDRESS_WINDOW_MICROS: i64 = 15 * 60 * 1_000_000;

#[derive(QueryableByName, Debug, Clone)]
pub struct Account {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Text)]
    pub email: String,
    #[diesel(sql_type = Text)]
    pub password_hash: String,
    /// `Patient/…` or `Practitioner/…`.
    #[diesel(sql_type = Text)]
    pub fhir_user: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub organization: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub failed_logins: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub locked_until: Option<i64>,
}

impl Account {
    /// The Patient id of a patient's account.
    pub fn patient_id(&self) -> Option<&str> {
        self.fhir_user.strip_prefix("Patient/")
    }
}

const COLUMNS: &str = "id, kind, email, password_hash, fhir_user, organization, failed_logins, locked_until";

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The same answer for an unknown email and a wrong password.
    #[error("the email address or password is not right")]
    Wrong,
    /// Refused without checking the password; `retry_after_secs` is the most the caller waits.
    #[error("too many attempts: wait a few minutes and try again")]
    Throttled { retry_after_secs: i64 },
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl From<crate::db::DbError> for LoginError {
    fn from(e: crate::db::DbError) -> Self {
        LoginError::Auth(e.into())
    }
}

pub fn create(
    conn: &mut Conn,
    kind: &str,
    email: &str,
    pw: &str,
    fhir_user: &str,
    organization: Option<&str>,
) -> Result<Account, AuthError> {
    if pw.chars().count() < 10 {
        return Err(AuthError::Invalid("a password needs at least 10 characters".into()));
    }
    let email = email.trim().to_lowercase();
    if !email.contains('@') {
        return Err(AuthError::Invalid(format!("'{email}' is not an email address")));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let result = conn.execute(&Sql::with(
        "INSERT INTO accounts (id, kind, email, password_hash, fhir_user, organization, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            Bind::Text(id.clone()),
            Bind::Text(kind.into()),
            Bind::Text(email.clone()),
            Bind::Text(password::hash(pw)?),
            Bind::Text(fhir_user.into()),
            Bind::OptText(organization.map(str::to_string)),
            Bind::Int(now_micros()),
        ],
    ));
    match result {
        Err(e) if e.is_unique_violation() => {
            return Err(AuthError::Invalid(format!("an account for {email} already exists")))
        }
        other => other?,
    };
    by_id(conn, &id)?.ok_or_else(|| AuthError::Key("account vanished".into()))
}

pub fn by_id(conn: &mut Conn, id: &str) -> Result<Option<Account>, AuthError> {
    Ok(conn.first(&Sql::with(&format!("SELECT {COLUMNS} FROM accounts WHERE id = ?"), [Bind::Text(id.into())]))?)
}

pub fn by_email(conn: &mut Conn, email: &str) -> Result<Option<Account>, AuthError> {
    let q = Sql::with(
        &format!("SELECT {COLUMNS} FROM accounts WHERE email = ?"),
        [Bind::Text(email.trim().to_lowercase())],
    );
    Ok(conn.first(&q)?)
}

pub fn by_fhir_user(conn: &mut Conn, fhir_user: &str) -> Result<Option<Account>, AuthError> {
    let q = Sql::with(&format!("SELECT {COLUMNS} FROM accounts WHERE fhir_user = ?"), [Bind::Text(fhir_user.into())]);
    Ok(conn.first(&q)?)
}

/// Closes the login of `email`, as the operator does before a record may be deleted: every
/// session ends, every authorization it gave apps stops working at once (their access and refresh
/// tokens), its open invitations and codes go, and the account is removed. Audited in the
/// record's log. `None` when no such login exists.
pub fn close(conn: &mut Conn, ctx: &crate::access::AccessContext, email: &str) -> Result<Option<Account>, AuthError> {
    let Some(account) = by_email(conn, email)? else { return Ok(None) };
    #[derive(diesel::QueryableByName)]
    struct Family {
        #[diesel(sql_type = Text)]
        family: String,
    }
    let id = || Bind::Text(account.id.clone());
    let families: Vec<Family> = conn.load(&Sql::with(
        "SELECT DISTINCT family FROM refresh_tokens WHERE account_id = ? AND revoked_at IS NULL \
         UNION SELECT DISTINCT family FROM auth_codes WHERE account_id = ?",
        [id(), id()],
    ))?;
    for f in families {
        super::oauth::revoke_family(conn, &f.family)?;
    }
    let now = now_micros();
    conn.execute(&Sql::with(
        "UPDATE sessions SET revoked_at = ? WHERE account_id = ? AND revoked_at IS NULL",
        [Bind::Int(now), id()],
    ))?;
    conn.execute(&Sql::with("DELETE FROM auth_codes WHERE account_id = ?", [id()]))?;
    conn.execute(&Sql::with("DELETE FROM invitations WHERE account_id = ?", [id()]))?;
    conn.execute(&Sql::with("DELETE FROM accounts WHERE id = ?", [id()]))?;
    let mut entry = crate::audit::AuditEntry::event("account-closed", &account.fhir_user, None);
    entry.patient_id = account.patient_id().map(str::to_string);
    crate::audit::record_in(conn, ctx, &entry)?;
    Ok(Some(account))
}

/// Whether someone signs in as `fhir_user` (`Patient/…`, `Practitioner/…`) here.
pub fn exists_for(conn: &mut Conn, fhir_user: &str) -> Result<bool, crate::db::DbError> {
    let q = Sql::with("SELECT COUNT(*) AS n FROM accounts WHERE fhir_user = ?", [Bind::Text(fhir_user.into())]);
    Ok(conn.first::<Int>(&q)?.is_some_and(|c| c.n > 0))
}

/// Checks a sign-in. Slow on purpose (argon2), so callers run it off the async workers.
pub fn login(conn: &mut Conn, email: &str, pw: &str, address: &str) -> Result<Account, LoginError> {
    let now = now_micros();
    // Failures within `window` (micros) by `column` = `value`: `limit` of them and no more tries.
    let mut throttle = |column: &str, value: &str, window: i64, limit: i64| -> Result<(), LoginError> {
        let q = format!("SELECT COUNT(*) AS n FROM login_failures WHERE {column} = ? AND at > ?");
        let failures = conn.first::<Int>(&Sql::with(&q, [Bind::Text(value.into()), Bind::Int(now - window)]))?;
        match failures {
            Some(f) if f.n >= limit => Err(LoginError::Throttled { retry_after_secs: window / 1_000_000 }),
            _ => Ok(()),
        }
    };
    throttle("address", address, ADDRESS_WINDOW_MICROS, ADDRESS_FAILURES)?;
    // Counted per email whether an account has it or not, so being throttled says nothing about
    // which emails have accounts.
    let key = email_key(email);
    throttle("email_key", &key, ACCOUNT_LOCK_MICROS, ACCOUNT_FAILURES)?;
    let account = by_email(conn, email)?;
    let hash = account.as_ref().map_or(password::dummy_hash(), |a| a.password_hash.as_str());
    let ok = password::verify(pw, hash);
    match (account, ok) {
        (Some(a), true) => {
            // The visit before this one is what "new since your last visit" counts from.
            conn.execute(&Sql::with(
                "UPDATE accounts SET failed_logins = 0, locked_until = NULL, previous_login_at = last_login_at, last_login_at = ? WHERE id = ?",
                [Bind::Int(now), Bind::Text(a.id.clone())],
            ))?;
            conn.execute(&Sql::with("DELETE FROM login_failures WHERE email_key = ?", [Bind::Text(key)]))?;
            Ok(a)
        }
        _ => {
            conn.execute(&Sql::with(
                "INSERT INTO login_failures (address, at, email_key) VALUES (?, ?, ?)",
                [Bind::Text(address.into()), Bind::Int(now), Bind::Text(key)],
            ))?;
            Err(LoginError::Wrong)
        }
    }
}

/// The failure counter's key for an email: a hash, so the table holds no addresses in clear.
fn email_key(email: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(email.trim().to_lowercase().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// When the account last signed in before the current visit (`None`: this is the first).
pub fn previous_visit(conn: &mut Conn, id: &str) -> Result<Option<i64>, AuthError> {
    #[derive(QueryableByName)]
    struct V {
        #[diesel(sql_type = Nullable<BigInt>)]
        previous_login_at: Option<i64>,
    }
    let q = Sql::with("SELECT previous_login_at FROM accounts WHERE id = ?", [Bind::Text(id.into())]);
    Ok(conn.first::<V>(&q)?.and_then(|v| v.previous_login_at))
}

pub fn set_password(conn: &mut Conn, id: &str, pw: &str) -> Result<(), AuthError> {
    if pw.chars().count() < 10 {
        return Err(AuthError::Invalid("a password needs at least 10 characters".into()));
    }
    conn.execute(&Sql::with(
        "UPDATE accounts SET password_hash = ? WHERE id = ?",
        [Bind::Text(password::hash(pw)?), Bind::Text(id.into())],
    ))?;
    Ok(())
}
