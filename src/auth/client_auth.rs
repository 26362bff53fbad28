//! Client authentication (RFC 6749 §2.3, RFC 7523 §2.2): the same methods, checked the same way,
//! at the token, introspection and revocation endpoints, and the lists discovery publishes.

use super::clients::{self, Client, ClientKind};
use super::oauth::{Endpoints, OAuthError};
use super::{assertion, password, AccessContext};
use crate::db::{Conn, Db};
use serde::Deserialize;
use serde_json::Value;

/// Methods the token endpoint accepts (RFC 8414 names): `none` is a public app naming itself.
pub const TOKEN_METHODS: &[&str] = &["none", "client_secret_basic", "client_secret_post", "private_key_jwt"];
/// Methods introspection accepts: only a client that can prove itself learns about tokens (a
/// caller may also present its own access token as `Bearer`, which has no RFC 8414 name).
pub const INTROSPECTION_METHODS: &[&str] = &["client_secret_basic", "client_secret_post", "private_key_jwt"];
/// Methods revocation accepts: anyone holding a token may end it (RFC 7009 §2.1 lets a public
/// app revoke without authenticating); credentials presented must still be right.
pub const REVOCATION_METHODS: &[&str] = TOKEN_METHODS;

/// The algorithms a client assertion may be signed with (SMART Backend Services; see `assertion`).
pub const ASSERTION_ALGS: &[&str] = &["ES384", "RS384", "ES256"];

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The client credentials a form may carry; `Authorization: Basic` travels beside them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClientCredentials {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
}

fn bad(d: &str, challenge: bool) -> OAuthError {
    OAuthError::client(d, challenge)
}

/// The calling client, proven by secret or assertion (addressed to one of `audiences`), or a
/// public app only named; `None` when the request names no client at all.
pub fn identify(
    conn: &mut Conn,
    creds: &ClientCredentials,
    basic: Option<(String, String)>,
    prepared: &Prepared,
    audiences: &[&str],
) -> Result<Option<Client>, OAuthError> {
    if let Some(assertion) = &creds.client_assertion {
        if creds.client_assertion_type.as_deref() != Some(ASSERTION_TYPE) {
            return Err(OAuthError::request(
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
        }
        let claimed = unverified_issuer(assertion).ok_or_else(|| bad("client_assertion has no iss", true))?;
        let client = clients::get(conn, &claimed)?.ok_or_else(|| bad("unknown client", true))?;
        assertion::verify(conn, &client, assertion, audiences)?;
        return Ok(Some(client));
    }
    // RFC 6749 §5.2: a client that used `Authorization` is answered with a challenge.
    let (id, secret, challenge) = match (basic, &creds.client_id) {
        (Some((id, secret)), _) => (id, Some(secret), true),
        (None, Some(id)) => (id.clone(), creds.client_secret.clone(), false),
        (None, None) => return Ok(None),
    };
    let client = clients::get(conn, &id)?.ok_or_else(|| bad("unknown client", challenge))?;
    match (client.kind, &client.secret_hash, secret) {
        (ClientKind::Public, _, None) => Ok(Some(client)),
        (ClientKind::Confidential, _, None) => Err(must_authenticate(&client)),
        (ClientKind::Confidential, Some(hash), Some(s)) => {
            let checked = prepared
                .secret
                .as_ref()
                .filter(|(id, checked_hash, _)| *id == client.client_id && checked_hash == hash)
                .map(|(_, _, ok)| *ok);
            if checked.unwrap_or_else(|| password::verify(&s, hash)) {
                Ok(Some(client))
            } else {
                Err(bad("client authentication failed", challenge))
            }
        }
        (ClientKind::Backend, _, _) => {
            Err(bad("a backend client must authenticate with a signed client_assertion", challenge))
        }
        _ => Err(bad("client authentication failed", challenge)),
    }
}

/// A client with a secret or keys that presented neither: the answer asks it to authenticate.
pub fn must_authenticate(client: &Client) -> OAuthError {
    let how = match client.secret_hash {
        Some(_) => "with its secret (client_secret_basic or client_secret_post)",
        None => "with a signed client_assertion (private_key_jwt)",
    };
    bad(&format!("this client must authenticate {how}"), true)
}

/// [`identify`] at an endpoint other than the token endpoint: an assertion may be addressed to
/// that endpoint or to the token endpoint (RFC 7523 §3: any value that identifies this server).
fn identify_at(
    db: &Db,
    ep: &Endpoints,
    endpoint: &str,
    creds: &ClientCredentials,
    basic: Option<(String, String)>,
) -> Result<Option<Client>, OAuthError> {
    let prepared = prepare(db, creds, basic.as_ref())?;
    let audiences = [endpoint, ep.token_endpoint.as_str()];
    match creds.client_assertion {
        // Its jti is recorded in a savepoint, which needs a transaction.
        Some(_) => db.transaction(|c| identify(c, creds, basic, &prepared, &audiences)),
        None => identify(&mut db.conn()?, creds, basic, &prepared, &audiences),
    }
}

/// RFC 7662 §2.1: who asks to introspect, proven by its credentials. A public app cannot prove
/// who it is, so naming one is not enough.
pub fn introspecting_client(
    db: &Db,
    ep: &Endpoints,
    creds: &ClientCredentials,
    basic: Option<(String, String)>,
) -> Result<AccessContext, OAuthError> {
    match identify_at(db, ep, &ep.url("/oauth/introspect"), creds, basic)? {
        Some(c) if c.kind != ClientKind::Public => Ok(AccessContext::client(&c.client_id)),
        _ => Err(bad(
            "introspection needs the caller's credentials (client_secret_basic, client_secret_post or \
             private_key_jwt) or its own access token (Authorization: Bearer)",
            true,
        )),
    }
}

/// RFC 7009 §2.1: credentials presented with a revocation must be right; none is allowed.
pub fn check_revoking_client(
    db: &Db,
    ep: &Endpoints,
    creds: &ClientCredentials,
    basic: Option<(String, String)>,
) -> Result<(), OAuthError> {
    identify_at(db, ep, &ep.url("/oauth/revoke"), creds, basic).map(|_| ())
}

/// What a token request settles before its transaction, because it waits on the network or
/// burns CPU and needs no lock: the keys of a client published at a URL are fetched (into the
/// cache), and a confidential client's secret is checked (argon2).
#[derive(Debug, Default)]
pub struct Prepared {
    /// (client id, the secret hash checked against, whether the secret presented matched it)
    secret: Option<(String, String, bool)>,
}

pub fn prepare(db: &Db, creds: &ClientCredentials, basic: Option<&(String, String)>) -> Result<Prepared, OAuthError> {
    // The client is looked up on a connection given back before any waiting starts.
    let client = |id: &str| -> Result<Option<Client>, OAuthError> { Ok(clients::get(&mut db.conn()?, id)?) };
    if let Some(a) = &creds.client_assertion {
        if let Some(c) = unverified_issuer(a).map(|iss| client(&iss)).transpose()?.flatten() {
            assertion::prefetch(&c, a);
        }
        return Ok(Prepared::default());
    }
    let claimed = basic.cloned().or_else(|| creds.client_id.clone().zip(creds.client_secret.clone()));
    let Some((id, secret)) = claimed else { return Ok(Prepared::default()) };
    let hash = client(&id)?.filter(|c| c.kind == ClientKind::Confidential).and_then(|c| c.secret_hash);
    // Kept with the hash it was checked against: a secret changed meanwhile is checked again.
    Ok(Prepared { secret: hash.map(|h| (id, h.clone(), password::verify(&secret, &h))) })
}

/// The `iss` of a JWT before verification: it names the client whose keys will verify it.
fn unverified_issuer(jwt: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}
