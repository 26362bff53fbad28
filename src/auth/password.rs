//! Passwords and client secrets: argon2id, verified in constant time by the argon2 crate.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

pub fn hash(secret: &str) -> Result<String, super::AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| super::AuthError::Key(format!("password hashing failed: {e}")))
}

pub fn verify(secret: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| Argon2::default().verify_password(secret.as_bytes(), &h).is_ok())
}

/// A hash to verify against when the account does not exist, so both answers take as long.
pub fn dummy_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$kyyCeqLwhm6tdvaCgPk1vGY7ATZ8Hv3lRCO6M8z4hOo"
}

/// SHA-256 of an opaque token (codes, refresh tokens, session ids): what the database keeps.
pub fn digest(token: &str) -> String {
    use sha2::{Digest, Sha256};
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, Sha256::digest(token.as_bytes()))
}

/// A new opaque random token (256 bits).
pub fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_verify_and_differ() {
        let a = super::hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert!(super::verify("correct horse", &a));
        assert!(!super::verify("wrong", &a));
        assert!(!super::verify("x", "not a hash"));
        assert!(!super::verify("x", super::dummy_hash()));
    }
}
