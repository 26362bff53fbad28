//! Access tokens: short-lived ES256 JWTs signed with the instance's current key.

use super::{AccessContext, AuthError, Keys, Scopes};
use jsonwebtoken::{decode, decode_header, encode, Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

/// Access tokens live at most this long (the design's "≤ 1 h"; SMART recommends short lives).
pub const ACCESS_TOKEN_SECS: i64 = 3600;

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
}

impl Claims {
    /// Claims for a new token valid for `lifetime` seconds from now.
    pub fn new(issuer: &str, audience: &str, sub: &str, client_id: &str, scope: &str, patient: Option<String>, lifetime: i64) -> Claims {
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
        }
    }

    pub fn into_context(self) -> AccessContext {
        AccessContext {
            subject: self.sub,
            client_id: self.client_id,
            scopes: Scopes::parse(&self.scope),
            patient: self.patient,
            token_id: Some(self.jti),
        }
    }
}

impl Keys {
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        let (kid, key) = self.signing()?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid);
        header.typ = Some("JWT".into());
        encode(&header, claims, &key).map_err(|e| AuthError::Key(e.to_string()))
    }

    /// Verifies signature, expiry, issuer and audience (the FHIR base URL).
    pub fn verify(&self, token: &str, issuer: &str, audience: &str) -> Result<Claims, AuthError> {
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
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::InvalidToken("the bearer token has expired"),
            jsonwebtoken::errors::ErrorKind::InvalidAudience => AuthError::InvalidToken("the bearer token is for another server (aud)"),
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => AuthError::InvalidToken("the bearer token was issued by another server"),
            _ => AuthError::InvalidToken("the bearer token's signature or claims are invalid"),
        })?;
        Ok(data.claims)
    }
}
