//! Client authentication by signed assertion (`private_key_jwt`, SMART Backend Services §4):
//! ES384, RS384 or ES256, `iss` = `sub` = client id, `aud` the endpoint called, `exp` at most five
//! minutes ahead, and a `jti` never seen before.

use super::clients::Client;
use super::oauth::OAuthError;
use crate::db::{Bind, Conn, Sql};
use crate::time::now_micros;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_AHEAD_SECS: i64 = 300;
const JWKS_CACHE: Duration = Duration::from_secs(300);
/// A key host that failed is not asked again for this long: a slow one cannot hold up every
/// token request (nor, on SQLite, every write behind the token endpoint's transaction).
const JWKS_FAILURE_CACHE: Duration = Duration::from_secs(30);
/// A kid missing from a cached set is looked for again after this long (the client rotated).
const JWKS_REFRESH: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    exp: i64,
    jti: Option<String>,
}

type Fetched = Result<Value, String>;

static FETCHED: Mutex<Option<HashMap<String, (Instant, Fetched)>>> = Mutex::new(None);

fn invalid(msg: &str) -> OAuthError {
    OAuthError::client(msg, true)
}

fn cached(uri: &str) -> Option<(Instant, Fetched)> {
    FETCHED.lock().ok()?.as_ref()?.get(uri).cloned().filter(|(at, got)| match got {
        Ok(_) => at.elapsed() < JWKS_CACHE,
        Err(_) => at.elapsed() < JWKS_FAILURE_CACHE,
    })
}

/// A key set is small: more than this is not one.
const JWKS_MAX_BYTES: u64 = 64 * 1024;
/// Key URLs remembered at most (open registration lets anyone add one).
const JWKS_CACHE_ENTRIES: usize = 1000;

fn fetch(uri: &str) -> Fetched {
    // No redirects: the keys are at the registered address or nowhere (a redirect could point
    // anywhere, this network's own addresses included).
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(3)).redirects(0).build();
    let read = agent.get(uri).call().map_err(|e| e.to_string()).and_then(|r| {
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(r.into_reader(), JWKS_MAX_BYTES), &mut body)
            .map_err(|e| e.to_string())?;
        serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string())
    });
    // The answer says only that the keys could not be had: not what (if anything) answered there.
    let got = read.map_err(|e| {
        tracing::info!(jwks_uri = uri, "a client's keys could not be had: {e}");
        format!("the client's JWKS at {uri} could not be fetched")
    });
    if let Ok(mut guard) = FETCHED.lock() {
        let cache = guard.get_or_insert_with(HashMap::new);
        if cache.len() >= JWKS_CACHE_ENTRIES {
            cache.retain(|_, (at, _)| at.elapsed() < JWKS_CACHE);
            if cache.len() >= JWKS_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(uri.to_string(), (Instant::now(), got.clone()));
    }
    got
}

/// The client's key set: registered by value, or fetched from its URL (with a timeout, cached,
/// failures too).
fn key_set(client: &Client) -> Result<Value, OAuthError> {
    if let Some(j) = &client.jwks {
        return Ok(j.clone());
    }
    let uri = client.jwks_uri.as_deref().ok_or_else(|| invalid("the client has no registered keys"))?;
    cached(uri).map(|(_, got)| got).unwrap_or_else(|| fetch(uri)).map_err(|e| invalid(&e))
}

/// Fetches the keys `assertion` will be checked with, if they live at a URL and are not cached
/// (or lack its kid): called before the token endpoint's transaction, so no network wait happens
/// inside one.
pub fn prefetch(client: &Client, assertion: &str) {
    let Some(uri) = client.jwks_uri.as_deref().filter(|_| client.jwks.is_none()) else { return };
    let kid = decode_header(assertion).ok().and_then(|h| h.kid);
    let has_kid = |set: &Value| {
        set["keys"].as_array().is_some_and(|keys| keys.iter().any(|k| k["kid"].as_str() == kid.as_deref()))
    };
    match cached(uri) {
        Some((_, Ok(set))) if has_kid(&set) => {}
        Some((at, Ok(_))) if at.elapsed() < JWKS_REFRESH => {}
        Some((_, Err(_))) => {}
        _ => {
            let _ = fetch(uri);
        }
    }
}

fn kty_fits(alg: Algorithm, kty: &str) -> bool {
    matches!((alg, kty), (Algorithm::ES384 | Algorithm::ES256, "EC") | (Algorithm::RS384, "RSA"))
}

/// The one key whose `kid` matches and whose type fits `alg`; none or several is a failure.
fn select_key(jwks: &Value, kid: &str, alg: Algorithm) -> Result<DecodingKey, OAuthError> {
    let keys = jwks.get("keys").and_then(Value::as_array).cloned().unwrap_or_default();
    let found: Vec<&Value> = keys
        .iter()
        .filter(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
        .filter(|k| k.get("kty").and_then(Value::as_str).is_some_and(|t| kty_fits(alg, t)))
        .collect();
    let [key] = found.as_slice() else {
        return Err(invalid("no single registered key matches the assertion's kid and alg"));
    };
    let jwk: Jwk =
        serde_json::from_value((*key).clone()).map_err(|_| invalid("the registered key is not a valid JWK"))?;
    DecodingKey::from_jwk(&jwk).map_err(|_| invalid("the registered key cannot verify signatures"))
}

/// Checks `assertion` for `client`; its `aud` must be one of `audiences` (the endpoint it is for).
pub fn verify(conn: &mut Conn, client: &Client, assertion: &str, audiences: &[&str]) -> Result<(), OAuthError> {
    let header = decode_header(assertion).map_err(|_| invalid("client_assertion is not a JWT"))?;
    if !matches!(header.alg, Algorithm::ES384 | Algorithm::RS384 | Algorithm::ES256) {
        return Err(invalid("client_assertion must be signed with ES384, RS384 or ES256"));
    }
    if let Some(jku) = &header.jku {
        if client.jwks_uri.as_deref() != Some(jku.as_str()) {
            return Err(invalid("the assertion's jku is not the client's registered JWKS URL"));
        }
    }
    let kid = header.kid.ok_or_else(|| invalid("client_assertion has no kid"))?;
    let key = select_key(&key_set(client)?, &kid, header.alg)?;
    let mut v = Validation::new(header.alg);
    v.set_audience(audiences);
    v.set_issuer(&[&client.client_id]);
    v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    v.leeway = 5;
    let claims = decode::<AssertionClaims>(assertion, &key, &v)
        .map_err(|e| invalid(&format!("client_assertion rejected: {e}")))?
        .claims;
    if claims.sub != client.client_id || claims.iss != client.client_id {
        return Err(invalid("client_assertion iss and sub must both be the client id"));
    }
    let now = chrono::Utc::now().timestamp();
    if claims.exp > now + MAX_AHEAD_SECS + 5 {
        return Err(invalid("client_assertion exp is more than five minutes ahead"));
    }
    let jti = claims.jti.ok_or_else(|| invalid("client_assertion has no jti"))?;
    remember_jti(conn, &client.client_id, &jti, claims.exp)
}

/// Refuses a `jti` seen before for this issuer (replay), and forgets expired ones.
fn remember_jti(conn: &mut Conn, issuer: &str, jti: &str, exp: i64) -> Result<(), OAuthError> {
    conn.execute(&Sql::with("DELETE FROM assertion_jtis WHERE expires_at < ?", [Bind::Int(now_micros())]))
        .map_err(OAuthError::server)?;
    // In a savepoint: on PostgreSQL a failed insert would otherwise poison the whole transaction.
    let inserted = conn.savepoint(|c| {
        c.execute(&Sql::with(
            "INSERT INTO assertion_jtis (issuer, jti, expires_at) VALUES (?, ?, ?)",
            [Bind::Text(issuer.into()), Bind::Text(jti.into()), Bind::Int((exp + 60) * 1_000_000)],
        ))
    });
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if e.is_unique_violation() => Err(invalid("client_assertion jti was already used (replay)")),
        Err(e) => Err(OAuthError::server(e)),
    }
}
