//! Signing keys as data: ES256 keys live in the database (private halves encrypted with the
//! instance secret), so every replica signs and verifies with the same set. Old public keys stay
//! in the JWKS until every token they signed has expired.

use super::AuthError;
use crate::db::{Bind, Db, Sql};
use crate::time::now_micros;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::RngCore;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Longest lifetime of any token we sign; a retired key is published this long after retirement.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 3600;

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = Text)]
    kid: String,
    #[diesel(sql_type = Text)]
    private_key: String,
    #[diesel(sql_type = Text)]
    public_jwk: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    retired_at: Option<i64>,
}

struct Signer {
    kid: String,
    key: EncodingKey,
    loaded: std::time::Instant,
}

/// How long a replica signs with the key it read before looking for a newer one (another replica
/// may have rotated): well inside the time a retired key stays published.
const SIGNER_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Clone)]
pub struct Keys {
    db: Db,
    secret: [u8; 32],
    signer: Arc<RwLock<Option<Arc<Signer>>>>,
    verifiers: Arc<RwLock<HashMap<String, Arc<DecodingKey>>>>,
    pub(super) verified: Arc<super::token::VerifiedCache>,
}

impl Keys {
    pub fn new(db: Db, secret: [u8; 32]) -> Keys {
        Keys { db, secret, signer: Arc::default(), verifiers: Arc::default(), verified: Arc::default() }
    }

    /// Makes sure a current signing key exists (creating the first one on a new database).
    pub fn ensure(&self) -> Result<(), AuthError> {
        if self.load_signer()?.is_none() {
            self.rotate()?;
        }
        Ok(())
    }

    /// Creates a new signing key and retires the others (they verify until their tokens expire).
    pub fn rotate(&self) -> Result<String, AuthError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| AuthError::Key("key generation failed".into()))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| AuthError::Key("generated key unreadable".into()))?;
        let point = pair.public_key().as_ref();
        let kid = uuid::Uuid::new_v4().simple().to_string();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        let sealed = self.seal(pkcs8.as_ref())?;
        let now = now_micros();
        self.db.transaction(|c| {
            c.execute(&Sql::with("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL", [Bind::Int(now)]))?;
            c.execute(&Sql::with(
                "INSERT INTO signing_keys (kid, alg, private_key, public_jwk, created_at) VALUES (?, 'ES256', ?, ?, ?)",
                [Bind::Text(kid.clone()), Bind::Text(sealed), Bind::Text(jwk.to_string()), Bind::Int(now)],
            ))?;
            Ok::<_, AuthError>(())
        })?;
        *self.signer.write().map_err(|_| AuthError::Key("lock poisoned".into()))? = None;
        Ok(kid)
    }

    pub(crate) fn seal(&self, plain: &[u8]) -> Result<String, AuthError> {
        let cipher = Aes256Gcm::new_from_slice(&self.secret).map_err(|_| AuthError::Key("bad secret".into()))?;
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        out.extend(
            cipher.encrypt(Nonce::from_slice(&nonce), plain).map_err(|_| AuthError::Key("encryption failed".into()))?,
        );
        Ok(STANDARD.encode(out))
    }

    pub(crate) fn open(&self, sealed: &str) -> Result<Vec<u8>, AuthError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| AuthError::Key("stored key is not base64".into()))?;
        if bytes.len() < 12 {
            return Err(AuthError::Key("stored key too short".into()));
        }
        let cipher = Aes256Gcm::new_from_slice(&self.secret).map_err(|_| AuthError::Key("bad secret".into()))?;
        cipher.decrypt(Nonce::from_slice(&bytes[..12]), &bytes[12..]).map_err(|_| {
            AuthError::Key(
                "the signing key cannot be decrypted: is HEALTHFOLIO_SECRET_KEY the one it was made with?".into(),
            )
        })
    }

    fn rows(&self, sql: &str) -> Result<Vec<KeyRow>, AuthError> {
        let mut conn = self.db.conn()?;
        Ok(conn.load(&Sql::new(sql))?)
    }

    fn load_signer(&self) -> Result<Option<Arc<Signer>>, AuthError> {
        if let Some(s) = self.signer.read().map_err(|_| AuthError::Key("lock poisoned".into()))?.clone() {
            if s.loaded.elapsed() < SIGNER_REFRESH {
                return Ok(Some(s));
            }
        }
        let rows = self.rows(
            "SELECT kid, private_key, public_jwk, retired_at FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC LIMIT 1",
        )?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        let der = self.open(&row.private_key)?;
        let signer =
            Arc::new(Signer { kid: row.kid, key: EncodingKey::from_ec_der(&der), loaded: std::time::Instant::now() });
        *self.signer.write().map_err(|_| AuthError::Key("lock poisoned".into()))? = Some(signer.clone());
        Ok(Some(signer))
    }

    /// The current signing key: (kid, key). Another replica may have rotated since we cached it;
    /// that is harmless, as both keys verify.
    pub(super) fn signing(&self) -> Result<(String, EncodingKey), AuthError> {
        let s = self
            .load_signer()?
            .ok_or_else(|| AuthError::Key("no signing key: run `healthfolio keys rotate`".into()))?;
        Ok((s.kid.clone(), s.key.clone()))
    }

    /// The verification key for `kid`, read from the database on first sight.
    pub(super) fn verifying(&self, kid: &str) -> Result<Arc<DecodingKey>, AuthError> {
        if let Some(k) = self.verifiers.read().map_err(|_| AuthError::Key("lock poisoned".into()))?.get(kid) {
            return Ok(k.clone());
        }
        let jwk = self
            .published()?
            .into_iter()
            .find(|j| j["kid"] == kid)
            .ok_or(AuthError::InvalidToken("the token's signing key is unknown or expired"))?;
        let key = DecodingKey::from_ec_components(
            jwk["x"].as_str().unwrap_or_default(),
            jwk["y"].as_str().unwrap_or_default(),
        )
        .map_err(|_| AuthError::Key("stored public key unreadable".into()))?;
        let key = Arc::new(key);
        self.verifiers
            .write()
            .map_err(|_| AuthError::Key("lock poisoned".into()))?
            .insert(kid.to_string(), key.clone());
        Ok(key)
    }

    /// Public keys that may still verify a live token.
    pub fn published(&self) -> Result<Vec<Value>, AuthError> {
        let horizon = now_micros() - MAX_TOKEN_LIFETIME_SECS * 1_000_000;
        let rows =
            self.rows("SELECT kid, private_key, public_jwk, retired_at FROM signing_keys ORDER BY created_at DESC")?;
        Ok(rows
            .into_iter()
            .filter(|r| r.retired_at.is_none_or(|t| t > horizon))
            .filter_map(|r| serde_json::from_str(&r.public_jwk).ok())
            .collect())
    }

    pub fn jwks(&self) -> Result<Value, AuthError> {
        Ok(json!({ "keys": self.published()? }))
    }
}

/// Reads the instance secret from `HEALTHFOLIO_SECRET_KEY` (base64 of 32 bytes), or from
/// `secret.key` in the data directory, creating that file when neither exists.
pub fn load_secret(configured: Option<&str>, data_dir: &std::path::Path) -> Result<[u8; 32], AuthError> {
    let decode = |s: &str| -> Result<[u8; 32], AuthError> {
        STANDARD
            .decode(s.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| AuthError::Key("the secret key must be base64 of exactly 32 bytes".into()))
    };
    if let Some(s) = configured {
        return decode(s);
    }
    let path = data_dir.join("secret.key");
    if let Ok(s) = std::fs::read_to_string(&path) {
        return decode(&s);
    }
    tracing::warn!(path = %path.display(), "HEALTHFOLIO_SECRET_KEY is not set: generated a secret key file; set the variable in production");
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    std::fs::create_dir_all(data_dir)
        .map_err(|e| AuthError::Key(format!("cannot create {}: {e}", data_dir.display())))?;
    write_private(&path, &STANDARD.encode(key))?;
    Ok(key)
}

fn write_private(path: &std::path::Path, text: &str) -> Result<(), AuthError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| AuthError::Key(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(text.as_bytes()).map_err(|e| AuthError::Key(format!("cannot write {}: {e}", path.display())))
}
