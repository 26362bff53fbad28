//! The authorization layer: scopes, signing keys, access tokens, and the [`AccessContext`] every
//! domain call takes.

mod access;
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
pub mod scope;
pub mod session;
pub mod token;

pub use access::{interaction_name, letter, AccessContext, Reach};
pub use keys::Keys;
pub use scope::{Scope, Scopes};
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
