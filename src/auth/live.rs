//! The checks a signature cannot make: has the token, its authorization or its client been
//! revoked, and does the patient's grant still stand? Asked of the database on every request, so a
//! revocation takes effect at once on every replica.

use super::{AccessContext, AuthError, Claims};
use crate::consent::{self, Grantee};
use crate::db::{Bind, Conn, Int, Sql};
use crate::fhir::now_micros;

pub fn check(conn: &mut Conn, claims: Claims) -> Result<AccessContext, AuthError> {
    let mut keys = vec![Bind::Text(format!("jti:{}", claims.jti)), Bind::Text(format!("client:{}", claims.client_id))];
    if let Some(f) = &claims.fam {
        keys.push(Bind::Text(format!("fam:{f}")));
    }
    let mut q = Sql::new("SELECT COUNT(*) AS n FROM revocations WHERE token_key IN ");
    q.list(keys);
    if conn.first::<Int>(&q)?.is_some_and(|r| r.n > 0) {
        return Err(AuthError::InvalidToken("the access token has been revoked"));
    }
    let grant_scopes = match (&claims.reach, &claims.patient) {
        (None, Some(patient)) => {
            let grant = consent::active_for(conn, patient, &Grantee::Client(claims.client_id.clone()))
                .map_err(|e| AuthError::Key(e.to_string()))?
                .ok_or(AuthError::InvalidToken("the patient has withdrawn this app's access"))?;
            Some(grant.scopes())
        }
        _ => None,
    };
    Ok(claims.into_context(grant_scopes))
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
