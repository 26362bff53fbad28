//! The authorization server: accounts, clients, signing keys, access tokens, the OAuth flows.
//! What a token allows once issued is decided by [`crate::access`].

pub mod accounts;
mod assertion;
pub mod client_auth;
pub mod clients;
pub mod invitations;
pub mod keys;
pub mod live;
pub mod oauth;
pub mod password;
mod pkce;
pub mod scope_words;
pub mod session;
pub mod token;

pub use crate::access::{interaction_name, letter, AccessContext, Reach};
pub use crate::scope::{Scope, Scopes};
pub use keys::Keys;
pub use token::Claims;

use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidToken(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("signing key problem: {0}")]
    Key(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<crate::consent::ConsentError> for AuthError {
    fn from(e: crate::consent::ConsentError) -> Self {
        match e {
            crate::consent::ConsentError::Db(d) => AuthError::Db(d),
            other => AuthError::Invalid(other.to_string()),
        }
    }
}

/// Where the authorization server's failures reach the record's callers (a source's keys, an
/// invitation): a database failure stays one, the rest is the service's fault, not the caller's.
impl From<AuthError> for crate::fhir::FhirError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Db(d) => crate::fhir::FhirError::Db(d),
            other => crate::fhir::FhirError::Internal(other.to_string()),
        }
    }
}
