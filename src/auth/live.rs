//! The checks a signature cannot make: has the token, its authorization or its client been
//! revoked, and does the patient's grant still stand? Asked of the database on every request, so a
//! revocation takes effect at once on every replica.

use super::{AccessContext, AuthError, Claims, Scopes};
use crate::consent;
use crate::db::{Bind, Conn, Sql};
use crate::time::now_micros;

pub fn check(conn: &mut Conn, claims: Claims) -> Result<AccessContext, AuthError> {
    let mut keys = vec![Bind::Text(format!("jti:{}", claims.jti)), Bind::Text(format!("client:{}", claims.client_id))];
    if let Some(f) = &claims.fam {
        keys.push(Bind::Text(format!("fam:{f}")));
    }
    // One round trip per request: the revocations, and for an app in patient context the grant
    // that stands now (newest first), together.
    let mut q = Sql::new(
        "SELECT r.n AS revoked, g.scope AS scope FROM (SELECT COUNT(*) AS n FROM revocations WHERE token_key IN ",
    );
    q.list(keys);
    q.push(") r");
    let patient_app = claims.reach.is_none() && claims.patient.is_some();
    let standing = claims.patient.as_deref().filter(|_| patient_app);
    consent::join_standing_grant(&mut q, "g", standing, &claims.client_id, now_micros());
    let row =
        conn.first::<Live>(&q.reused())?.ok_or(AuthError::InvalidToken("the access token could not be checked"))?;
    if row.revoked > 0 {
        return Err(AuthError::InvalidToken("the access token has been revoked"));
    }
    let grant_scopes = match (patient_app, row.scope) {
        (true, Some(scope)) => Some(Scopes::parse(&scope)),
        (true, None) => return Err(AuthError::InvalidToken("the patient has withdrawn this app's access")),
        (false, _) => None,
    };
    Ok(claims.into_context(grant_scopes))
}

#[derive(diesel::QueryableByName)]
struct Live {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    revoked: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    scope: Option<String>,
}

/// Revokes one key (`jti:…`, `fam:…` or `client:…`) until `expires_at` (micros).
pub fn revoke(conn: &mut Conn, key: &str, expires_at: i64) -> Result<(), AuthError> {
    let q = Sql::with("DELETE FROM revocations WHERE token_key = ?", [Bind::Text(key.into())]);
    conn.execute(&q)?;
    conn.execute(&Sql::with(
        "INSERT INTO revocations (token_key, expires_at) VALUES (?, ?)",
        [Bind::Text(key.into()), Bind::Int(expires_at.max(now_micros()))],
    ))?;
    Ok(())
}
