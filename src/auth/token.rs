//! Access tokens: short-lived ES256 JWTs signed with the instance's current key.

use super::keys::SigningAlg;
use super::oauth::Endpoints;
use super::{AccessContext, AuthError, Keys, Reach, Scopes};
use jsonwebtoken::{decode, decode_header, encode, Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

/// Access tokens live at most this long (the design's "≤ 1 h"; SMART recommends short lives).
pub const ACCESS_TOKEN_SECS: i64 = 3600;

/// How far ahead of our clock a token's `iat` may be: another replica's clock may run fast.
const CLOCK_SKEW_SECS: i64 = 60;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    /// The patient in context (SMART `patient`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// The provider organisation a backend client acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// The practitioner acting through a clinical app (`Practitioner/…`), recorded as the author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// `all` for operator tokens minted by this instance's command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<String>,
    /// The authorization (code or refresh family) this token came from, for revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fam: Option<String>,
}

impl Claims {
    /// Claims for a new token valid for `lifetime` seconds from now.
    pub fn new(
        issuer: &str,
        audience: &str,
        sub: &str,
        client_id: &str,
        scope: &str,
        patient: Option<String>,
        lifetime: i64,
    ) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            iss: issuer.to_string(),
            sub: sub.to_string(),
            aud: audience.to_string(),
            exp: now + lifetime.min(ACCESS_TOKEN_SECS),
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            client_id: client_id.to_string(),
            scope: scope.to_string(),
            patient,
            org: None,
            fhir_user: None,
            reach: None,
            fam: None,
        }
    }

    pub fn reach(&self) -> Reach {
        match (&self.reach, &self.patient) {
            (Some(r), _) if r == "all" => Reach::All,
            (_, Some(p)) => Reach::Patient(p.clone()),
            _ => Reach::Granted { client_id: self.client_id.clone(), organization: self.org.clone() },
        }
    }

    /// The context of a verified token; `grant_scopes` comes from the live grant check.
    pub fn into_context(self, grant_scopes: Option<Scopes>) -> AccessContext {
        AccessContext {
            reach: self.reach(),
            subject: self.sub,
            client_id: self.client_id,
            scopes: Scopes::parse(&self.scope),
            grant_scopes,
            token_id: Some(self.jti),
            practitioner: self.fhir_user.filter(|u| u.starts_with("Practitioner/")),
            service: false,
        }
    }
}

impl Keys {
    /// Signs an access token (ES256).
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        self.sign_with(claims, SigningAlg::Es256)
    }

    /// Signs `claims` with the current key of `alg` (RS256 for the OpenID id_token, unless the
    /// client registered another).
    pub fn sign_with(&self, claims: &impl Serialize, alg: SigningAlg) -> Result<String, AuthError> {
        let (kid, key) = self.signing(alg)?;
        let mut header = Header::new(alg.algorithm());
        header.kid = Some(kid);
        header.typ = Some("JWT".into());
        encode(&header, claims, &key).map_err(|e| AuthError::Key(e.to_string()))
    }

    /// Verifies signature, expiry, issuer, audience (the FHIR base URL) and lifetime. A token
    /// verified once is remembered until it expires: ES256 verification costs more than the read
    /// it guards.
    pub fn verify(&self, token: &str, ep: &Endpoints) -> Result<Claims, AuthError> {
        let now = chrono::Utc::now().timestamp();
        if let Some(c) = self.verified.get(token, now) {
            return Ok(c);
        }
        let claims = self.verify_signature(token, &ep.issuer, &ep.fhir_base)?;
        // `exp` alone would let a token dated ahead outlive every token this server issues (and
        // the publication of the key that signed it): `iat` must be now and the life no longer
        // than the one configured.
        if claims.iat > now + CLOCK_SKEW_SECS {
            return Err(AuthError::InvalidToken("the bearer token is dated in the future (iat)"));
        }
        if claims.exp - claims.iat > ep.access_lifetime {
            return Err(AuthError::InvalidToken("the bearer token lives longer than this server allows"));
        }
        self.verified.put(token, &claims);
        Ok(claims)
    }

    fn verify_signature(&self, token: &str, issuer: &str, audience: &str) -> Result<Claims, AuthError> {
        let header = decode_header(token).map_err(|_| AuthError::InvalidToken("the bearer token is not a JWT"))?;
        if header.alg != Algorithm::ES256 {
            return Err(AuthError::InvalidToken("the bearer token is not signed with ES256"));
        }
        let kid = header.kid.ok_or(AuthError::InvalidToken("the bearer token has no kid"))?;
        let key = self.verifying(&kid)?;
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[audience]);
        v.set_issuer(&[issuer]);
        v.leeway = 5;
        v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        let data = decode::<Claims>(token, &key, &v).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                AuthError::InvalidToken("the bearer token has expired")
            }
            jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                AuthError::InvalidToken("the bearer token is for another server (aud)")
            }
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => {
                AuthError::InvalidToken("the bearer token was issued by another server")
            }
            _ => AuthError::InvalidToken("the bearer token's signature or claims are invalid"),
        })?;
        Ok(data.claims)
    }
}

/// Tokens whose signature and claims were verified, until their `exp`.
#[derive(Default)]
pub struct VerifiedCache {
    map: std::sync::Mutex<std::collections::HashMap<String, Claims>>,
}

const CACHE_LIMIT: usize = 10_000;

impl VerifiedCache {
    fn get(&self, token: &str, now: i64) -> Option<Claims> {
        let map = self.map.lock().ok()?;
        map.get(token).filter(|c| c.exp > now).cloned()
    }

    fn put(&self, token: &str, claims: &Claims) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= CACHE_LIMIT {
                let now = chrono::Utc::now().timestamp();
                map.retain(|_, c| c.exp > now);
                if map.len() >= CACHE_LIMIT {
                    map.clear();
                }
            }
            map.insert(token.to_string(), claims.clone());
        }
    }
}
