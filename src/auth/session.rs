//! Browser sessions for sign-in, consent and the portal: an opaque cookie whose hash is stored,
//! with a CSRF token per session.

use super::accounts::{self, Account};
use super::{password, AuthError};
use crate::db::{Bind, Conn, Sql};
use crate::time::now_micros;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

pub const COOKIE: &str = "hf_session";
const LIFETIME_MICROS: i64 = 12 * 3600 * 1_000_000;

#[derive(QueryableByName, Debug, Clone)]
pub struct SessionRow {
    #[diesel(sql_type = Text)]
    pub id_hash: String,
    #[diesel(sql_type = Text)]
    pub account_id: String,
    #[diesel(sql_type = Text)]
    pub csrf: String,
    #[diesel(sql_type = BigInt)]
    pub created_at: i64,
    #[diesel(sql_type = BigInt)]
    pub last_seen_at: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub row: SessionRow,
    pub account: Account,
}

/// Starts a session; returns the cookie value (shown to the browser once, stored hashed).
pub fn start(conn: &mut Conn, account_id: &str, user_agent: Option<&str>) -> Result<String, AuthError> {
    let token = password::random_token();
    let now = now_micros();
    conn.execute(&Sql::with(
        "INSERT INTO sessions (id_hash, account_id, csrf, created_at, expires_at, last_seen_at, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            Bind::Text(password::digest(&token)),
            Bind::Text(account_id.into()),
            Bind::Text(password::random_token()),
            Bind::Int(now),
            Bind::Int(now + LIFETIME_MICROS),
            Bind::Int(now),
            Bind::OptText(user_agent.map(|u| u.chars().take(200).collect())),
        ],
    ))?;
    Ok(token)
}

pub fn find(conn: &mut Conn, cookie: &str) -> Result<Option<Session>, AuthError> {
    let q = Sql::with(
        "SELECT id_hash, account_id, csrf, created_at, last_seen_at, user_agent FROM sessions \
         WHERE id_hash = ? AND revoked_at IS NULL AND expires_at > ?",
        [Bind::Text(password::digest(cookie)), Bind::Int(now_micros())],
    );
    let Some(row) = conn.first::<SessionRow>(&q)? else { return Ok(None) };
    let Some(account) = accounts::by_id(conn, &row.account_id)? else { return Ok(None) };
    conn.execute(&Sql::with(
        "UPDATE sessions SET last_seen_at = ? WHERE id_hash = ?",
        [Bind::Int(now_micros()), Bind::Text(row.id_hash.clone())],
    ))?;
    Ok(Some(Session { row, account }))
}

pub fn end(conn: &mut Conn, cookie: &str) -> Result<(), AuthError> {
    conn.execute(&Sql::with(
        "UPDATE sessions SET revoked_at = ? WHERE id_hash = ?",
        [Bind::Int(now_micros()), Bind::Text(password::digest(cookie))],
    ))?;
    Ok(())
}

/// "Sign out everywhere".
pub fn end_all(conn: &mut Conn, account_id: &str) -> Result<usize, AuthError> {
    Ok(conn.execute(&Sql::with(
        "UPDATE sessions SET revoked_at = ? WHERE account_id = ? AND revoked_at IS NULL",
        [Bind::Int(now_micros()), Bind::Text(account_id.into())],
    ))?)
}

pub fn list(conn: &mut Conn, account_id: &str) -> Result<Vec<SessionRow>, AuthError> {
    Ok(conn.load(&Sql::with(
        "SELECT id_hash, account_id, csrf, created_at, last_seen_at, user_agent FROM sessions \
         WHERE account_id = ? AND revoked_at IS NULL AND expires_at > ? ORDER BY last_seen_at DESC",
        [Bind::Text(account_id.into()), Bind::Int(now_micros())],
    ))?)
}
