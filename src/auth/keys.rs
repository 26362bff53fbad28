//! Signing keys as data: the keys live in the database (private halves encrypted with the
//! instance secret), so every replica signs and verifies with the same set. Old public keys stay
//! in the JWKS until every token they signed has expired.
//!
//! One current key per algorithm: ES256 signs access tokens, which only this server verifies
//! (small keys, made in a blink); RS256 signs ID tokens, since OpenID Connect Discovery 1.0 §3
//! and SMART App Launch ("signed with at least RS256") let every relying party count on it.

use super::AuthError;
use crate::db::{Bind, Conn, Db, Sql};
use crate::time::now_micros;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::RngCore;
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Longest lifetime of any token we sign; a retired key is published this long after retirement.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 3600;

/// RFC 7518 §3.3: at least 2048 bits; more only slows every key creation and signature.
const RSA_BITS: usize = 2048;

/// Key creation takes turns on this (`Conn::take_turns`): replicas starting or first signing
/// together find the key the first one made instead of each making their own.
const KEY_TURNS: &str = "signing_keys";

/// What a key signs with (the `alg` column and JWK member).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SigningAlg {
    Es256,
    Rs256,
}

impl SigningAlg {
    pub const ALL: [SigningAlg; 2] = [SigningAlg::Es256, SigningAlg::Rs256];

    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::Es256 => "ES256",
            SigningAlg::Rs256 => "RS256",
        }
    }

    pub fn parse(s: &str) -> Option<SigningAlg> {
        SigningAlg::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn algorithm(self) -> jsonwebtoken::Algorithm {
        match self {
            SigningAlg::Es256 => jsonwebtoken::Algorithm::ES256,
            SigningAlg::Rs256 => jsonwebtoken::Algorithm::RS256,
        }
    }

    /// A new private key (the DER that [`SigningAlg::encoding_key`] reads back) and its public
    /// JWK without a `kid`.
    fn generate(self) -> Result<(Vec<u8>, Value), AuthError> {
        let failed = |what: &str| AuthError::Key(format!("{} key {what}", self.as_str()));
        let (der, mut jwk) = match self {
            SigningAlg::Es256 => {
                let rng = ring::rand::SystemRandom::new();
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| failed("generation failed"))?;
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .map_err(|_| failed("unreadable"))?;
                let point = pair.public_key().as_ref();
                let jwk = json!({
                    "kty": "EC", "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
                });
                (pkcs8.as_ref().to_vec(), jwk)
            }
            SigningAlg::Rs256 => {
                // ring signs RSA but cannot make RSA keys: the `rsa` crate makes them, and ring
                // reads the PKCS#1 DER back here, as it will to sign, before anything is stored.
                use rsa::pkcs1::EncodeRsaPrivateKey;
                let key =
                    rsa::PrivateKey::new(&mut getrandom::SysRng, RSA_BITS).map_err(|_| failed("generation failed"))?;
                let der = key.to_pkcs1_der().map_err(|_| failed("not encodable"))?;
                let pair = RsaKeyPair::from_der(der.as_bytes()).map_err(|_| failed("unreadable"))?;
                let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
                let jwk = json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&public.n), "e": URL_SAFE_NO_PAD.encode(&public.e)});
                (der.as_bytes().to_vec(), jwk)
            }
        };
        jwk["alg"] = json!(self.as_str());
        jwk["use"] = json!("sig");
        Ok((der, jwk))
    }

    fn encoding_key(self, der: &[u8]) -> EncodingKey {
        match self {
            SigningAlg::Es256 => EncodingKey::from_ec_der(der),
            SigningAlg::Rs256 => EncodingKey::from_rsa_der(der),
        }
    }
}

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
    signers: Arc<RwLock<HashMap<SigningAlg, Arc<Signer>>>>,
    verifiers: Arc<RwLock<HashMap<String, Arc<DecodingKey>>>>,
    pub(super) verified: Arc<super::token::VerifiedCache>,
}

fn poisoned<T>(_: T) -> AuthError {
    AuthError::Key("lock poisoned".into())
}

impl Keys {
    pub fn new(db: Db, secret: [u8; 32]) -> Keys {
        Keys { db, secret, signers: Arc::default(), verifiers: Arc::default(), verified: Arc::default() }
    }

    /// Makes sure a current access-token key exists (creating the first one on a new database).
    /// The RS256 key is made on first need instead (an ID token, or the JWKS that will verify
    /// one): a 2048-bit RSA key takes tens of milliseconds to find, which most starts never need.
    pub fn ensure(&self) -> Result<(), AuthError> {
        self.ready(SigningAlg::Es256)
    }

    /// Makes sure a current key for `alg` exists, making it now if not. Not from inside a
    /// transaction: on SQLite the key's own would wait for it.
    pub fn ready(&self, alg: SigningAlg) -> Result<(), AuthError> {
        self.current(alg).map(drop)
    }

    /// The current key for `alg`, made if there is none. Makers take turns and look again once
    /// it is theirs, so replicas needing it together end up with one key, not one each.
    fn current(&self, alg: SigningAlg) -> Result<Arc<Signer>, AuthError> {
        if let Some(s) = self.load_signer(alg)? {
            return Ok(s);
        }
        self.db.transaction(|c| {
            c.take_turns([KEY_TURNS])?;
            let q = Sql::with(
                "SELECT kid, private_key, public_jwk, retired_at FROM signing_keys WHERE retired_at IS NULL AND alg = ? LIMIT 1",
                [Bind::Text(alg.as_str().into())],
            );
            if c.first::<KeyRow>(&q)?.is_none() {
                self.insert(c, alg, now_micros())?;
            }
            Ok::<_, AuthError>(())
        })?;
        self.load_signer(alg)?.ok_or_else(|| AuthError::Key(format!("the new {} key vanished", alg.as_str())))
    }

    /// Makes a new key of `alg` and stores it as current from `now`; returns its kid.
    fn insert(&self, c: &mut Conn, alg: SigningAlg, now: i64) -> Result<String, AuthError> {
        let (der, mut jwk) = alg.generate()?;
        let kid = uuid::Uuid::new_v4().simple().to_string();
        jwk["kid"] = json!(kid);
        c.execute(&Sql::with(
            "INSERT INTO signing_keys (kid, alg, private_key, public_jwk, created_at) VALUES (?, ?, ?, ?, ?)",
            [
                Bind::Text(kid.clone()),
                Bind::Text(alg.as_str().into()),
                Bind::Text(self.seal(&der)?),
                Bind::Text(jwk.to_string()),
                Bind::Int(now),
            ],
        ))?;
        Ok(kid)
    }

    /// Creates a new key for every algorithm and retires the others (they verify until their
    /// tokens expire); returns the new kids.
    pub fn rotate(&self) -> Result<Vec<(SigningAlg, String)>, AuthError> {
        let now = now_micros();
        let kids = self.db.transaction(|c| {
            c.take_turns([KEY_TURNS])?;
            c.execute(&Sql::with("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL", [Bind::Int(now)]))?;
            SigningAlg::ALL
                .into_iter()
                .map(|alg| Ok((alg, self.insert(c, alg, now)?)))
                .collect::<Result<Vec<_>, AuthError>>()
        })?;
        self.signers.write().map_err(poisoned)?.clear();
        Ok(kids)
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

    fn load_signer(&self, alg: SigningAlg) -> Result<Option<Arc<Signer>>, AuthError> {
        if let Some(s) = self.signers.read().map_err(poisoned)?.get(&alg) {
            if s.loaded.elapsed() < SIGNER_REFRESH {
                return Ok(Some(s.clone()));
            }
        }
        let q = Sql::with(
            "SELECT kid, private_key, public_jwk, retired_at FROM signing_keys WHERE retired_at IS NULL AND alg = ? ORDER BY created_at DESC LIMIT 1",
            [Bind::Text(alg.as_str().into())],
        );
        let Some(row) = self.db.conn()?.first::<KeyRow>(&q)? else { return Ok(None) };
        let der = self.open(&row.private_key)?;
        let signer = Arc::new(Signer { kid: row.kid, key: alg.encoding_key(&der), loaded: std::time::Instant::now() });
        self.signers.write().map_err(poisoned)?.insert(alg, signer.clone());
        Ok(Some(signer))
    }

    /// The current key for `alg`: (kid, key). Another replica may have rotated since we cached
    /// it; that is harmless, as both keys verify.
    pub(super) fn signing(&self, alg: SigningAlg) -> Result<(String, EncodingKey), AuthError> {
        let s = self.current(alg)?;
        Ok((s.kid.clone(), s.key.clone()))
    }

    /// The ES256 verification key for `kid` (only access tokens are ours to verify), read from
    /// the database on first sight.
    pub(super) fn verifying(&self, kid: &str) -> Result<Arc<DecodingKey>, AuthError> {
        if let Some(k) = self.verifiers.read().map_err(poisoned)?.get(kid) {
            return Ok(k.clone());
        }
        let jwk = self
            .published()?
            .into_iter()
            .find(|j| j["kid"] == kid && j["alg"] == SigningAlg::Es256.as_str())
            .ok_or(AuthError::InvalidToken("the token's signing key is unknown or expired"))?;
        let key = DecodingKey::from_ec_components(
            jwk["x"].as_str().unwrap_or_default(),
            jwk["y"].as_str().unwrap_or_default(),
        )
        .map_err(|_| AuthError::Key("stored public key unreadable".into()))?;
        let key = Arc::new(key);
        self.verifiers.write().map_err(poisoned)?.insert(kid.to_string(), key.clone());
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

    /// The JWKS, with a current RS256 key in it: a relying party that read it must find the key
    /// of the ID tokens that follow (jose, under openid-client, fetches it again only after a
    /// cool-down), so the first reader makes the key if no ID token has yet.
    pub fn jwks(&self) -> Result<Value, AuthError> {
        self.current(SigningAlg::Rs256)?;
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
