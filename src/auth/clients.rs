//! Registered OAuth clients: patient apps (public or confidential) and provider systems
//! (backend, authenticated by signed assertions).

use super::keys::SigningAlg;
use super::oauth::ID_TOKEN_ALGS;
use super::{live, password, AuthError};
use crate::db::{Bind, Conn, Sql};
use crate::time::now_micros;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    Public,
    Confidential,
    Backend,
}

impl ClientKind {
    pub fn parse(s: &str) -> Option<ClientKind> {
        match s {
            "public" => Some(ClientKind::Public),
            "confidential" => Some(ClientKind::Confidential),
            "backend" => Some(ClientKind::Backend),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Public => "public",
            ClientKind::Confidential => "confidential",
            ClientKind::Backend => "backend",
        }
    }
}

#[derive(QueryableByName, Debug, Clone)]
struct ClientRow {
    #[diesel(sql_type = Text)]
    client_id: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Nullable<Text>)]
    secret_hash: Option<String>,
    #[diesel(sql_type = Text)]
    redirect_uris: String,
    #[diesel(sql_type = Text)]
    scope: String,
    #[diesel(sql_type = Nullable<Text>)]
    jwks: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    jwks_uri: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    organization: Option<String>,
    #[diesel(sql_type = BigInt)]
    created_at: i64,
    #[diesel(sql_type = Nullable<Text>)]
    id_token_alg: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    pub kind: ClientKind,
    pub secret_hash: Option<String>,
    pub redirect_uris: Vec<String>,
    /// The most this client may ever be granted.
    pub scope: String,
    pub jwks: Option<Value>,
    pub jwks_uri: Option<String>,
    pub organization: Option<String>,
    pub created_at: i64,
    /// What its ID tokens are signed with (`id_token_signed_response_alg`, RS256 unless registered).
    pub id_token_alg: SigningAlg,
}

impl TryFrom<ClientRow> for Client {
    type Error = AuthError;
    fn try_from(r: ClientRow) -> Result<Client, AuthError> {
        Ok(Client {
            kind: ClientKind::parse(&r.kind)
                .ok_or_else(|| AuthError::Key(format!("client {} has unknown kind", r.client_id)))?,
            id_token_alg: match r.id_token_alg.as_deref() {
                None => SigningAlg::Rs256,
                Some(a) => SigningAlg::parse(a)
                    .ok_or_else(|| AuthError::Key(format!("client {} has unknown ID token alg {a}", r.client_id)))?,
            },
            redirect_uris: serde_json::from_str(&r.redirect_uris).unwrap_or_default(),
            jwks: r.jwks.and_then(|j| serde_json::from_str(&j).ok()),
            client_id: r.client_id,
            name: r.name,
            secret_hash: r.secret_hash,
            scope: r.scope,
            jwks_uri: r.jwks_uri,
            organization: r.organization,
            created_at: r.created_at,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct NewClient {
    pub name: String,
    pub kind: Option<ClientKind>,
    pub redirect_uris: Vec<String>,
    pub scope: String,
    pub jwks: Option<Value>,
    pub jwks_uri: Option<String>,
    pub organization: Option<String>,
    /// `None`: RS256, OpenID Connect's default.
    pub id_token_alg: Option<SigningAlg>,
}

impl NewClient {
    fn has_keys(&self) -> bool {
        self.jwks.is_some() || self.jwks_uri.is_some()
    }
}

const COLUMNS: &str =
    "client_id, name, kind, secret_hash, redirect_uris, scope, jwks, jwks_uri, organization, created_at, id_token_alg";

fn check(c: &NewClient, kind: ClientKind) -> Result<(), AuthError> {
    let bad = |m: &str| Err(AuthError::Invalid(m.to_string()));
    if c.name.trim().is_empty() {
        return bad("a client needs a name");
    }
    match kind {
        ClientKind::Backend if !c.has_keys() => bad("a backend client needs --jwks-file or --jwks-uri"),
        ClientKind::Public if c.has_keys() => {
            bad("a public app has no keys: register it as confidential to sign in with them")
        }
        ClientKind::Public | ClientKind::Confidential if c.redirect_uris.is_empty() => {
            bad("an app needs at least one --redirect-uri")
        }
        _ => {
            for u in &c.redirect_uris {
                if !(u.starts_with("https://")
                    || u.starts_with("http://127.0.0.1")
                    || u.starts_with("http://localhost"))
                {
                    return bad("redirect URIs must be https (or http on localhost)");
                }
            }
            Ok(())
        }
    }
}

/// Registers a client; returns it and, for a confidential client, its secret (shown once).
pub fn register(conn: &mut Conn, c: &NewClient) -> Result<(Client, Option<String>), AuthError> {
    let kind = c.kind.unwrap_or(ClientKind::Public);
    check(c, kind)?;
    let client_id = uuid::Uuid::new_v4().simple().to_string();
    // A confidential app with keys authenticates by signed assertion (asymmetric): it has no secret.
    let secret = (kind == ClientKind::Confidential && !c.has_keys()).then(password::random_token);
    let secret_hash = secret.as_deref().map(password::hash).transpose()?;
    conn.execute(&Sql::with(
        "INSERT INTO clients (client_id, name, kind, secret_hash, redirect_uris, scope, jwks, jwks_uri, organization, created_at, id_token_alg) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            Bind::Text(client_id.clone()),
            Bind::Text(c.name.clone()),
            Bind::Text(kind.as_str().into()),
            Bind::OptText(secret_hash),
            Bind::Text(serde_json::to_string(&c.redirect_uris).unwrap_or_else(|_| "[]".into())),
            Bind::Text(c.scope.clone()),
            Bind::OptText(c.jwks.as_ref().map(Value::to_string)),
            Bind::OptText(c.jwks_uri.clone()),
            Bind::OptText(c.organization.clone()),
            Bind::Int(now_micros()),
            Bind::OptText(c.id_token_alg.map(|a| a.as_str().to_string())),
        ],
    ))?;
    let client = get(conn, &client_id)?.ok_or_else(|| AuthError::Key("client vanished".into()))?;
    Ok((client, secret))
}

pub fn get(conn: &mut Conn, client_id: &str) -> Result<Option<Client>, AuthError> {
    let q = Sql::with(
        &format!("SELECT {COLUMNS} FROM clients WHERE client_id = ? AND removed_at IS NULL"),
        [Bind::Text(client_id.into())],
    );
    conn.first::<ClientRow>(&q)?.map(Client::try_from).transpose()
}

pub fn list(conn: &mut Conn) -> Result<Vec<Client>, AuthError> {
    let q = Sql::new(&format!("SELECT {COLUMNS} FROM clients WHERE removed_at IS NULL ORDER BY created_at"));
    conn.load::<ClientRow>(&q)?.into_iter().map(Client::try_from).collect()
}

/// An RFC 7591 registration request: public apps (`none`), and asymmetric apps and backend
/// systems (`private_key_jwt`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Registration {
    pub client_name: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    pub grant_types: Vec<String>,
    pub jwks: Option<Value>,
    pub jwks_uri: Option<String>,
    pub scope: Option<String>,
    pub id_token_signed_response_alg: Option<String>,
}

/// Registers a client from an RFC 7591 request; returns the RFC 7591 response body.
pub fn register_dynamic(conn: &mut Conn, r: &Registration) -> Result<Value, AuthError> {
    let method = r.token_endpoint_auth_method.as_deref().unwrap_or("none");
    let kind = match (method, r.grant_types.iter().any(|g| g == "client_credentials")) {
        ("none", false) => ClientKind::Public,
        ("private_key_jwt", true) => ClientKind::Backend,
        // An app that signs the patient in and proves itself with its keys (SMART asymmetric).
        ("private_key_jwt", false) => ClientKind::Confidential,
        ("none", true) => {
            return Err(AuthError::Invalid(
                "client_credentials needs token_endpoint_auth_method private_key_jwt".into(),
            ))
        }
        (m, _) => {
            return Err(AuthError::Invalid(format!(
                "token_endpoint_auth_method {m} is not offered: use none or private_key_jwt"
            )))
        }
    };
    if method == "private_key_jwt" && r.jwks.is_none() && r.jwks_uri.is_none() {
        return Err(AuthError::Invalid("private_key_jwt needs the client's public keys (jwks or jwks_uri)".into()));
    }
    // Anyone may register here: the address we will fetch keys from must be a public https URL,
    // not one of this network's own (an operator registering a client may name any).
    if let Some(uri) = &r.jwks_uri {
        if !public_https(uri) {
            return Err(AuthError::Invalid("jwks_uri must be an https URL on a public host".into()));
        }
    }
    let id_token_alg = match r.id_token_signed_response_alg.as_deref() {
        None => None,
        Some(a) => Some(ID_TOKEN_ALGS.into_iter().find(|o| o.as_str() == a).ok_or_else(|| {
            AuthError::Invalid(format!("id_token_signed_response_alg {a} is not offered: use RS256 or ES256"))
        })?),
    };
    // A self-registered backend client reaches nothing until patients grant it, and never acts for an organisation.
    let new = NewClient {
        name: r.client_name.clone().unwrap_or_else(|| "Unnamed app".into()),
        kind: Some(kind),
        redirect_uris: r.redirect_uris.clone(),
        scope: r.scope.clone().unwrap_or_default(),
        jwks: r.jwks.clone(),
        jwks_uri: r.jwks_uri.clone(),
        organization: None,
        id_token_alg,
    };
    let (c, _) = register(conn, &new)?;
    Ok(serde_json::json!({
        "client_id": c.client_id,
        "client_id_issued_at": c.created_at / 1_000_000,
        "client_name": c.name,
        "redirect_uris": c.redirect_uris,
        "token_endpoint_auth_method": method,
        "grant_types": if kind == ClientKind::Backend { serde_json::json!(["client_credentials"]) } else { serde_json::json!(["authorization_code", "refresh_token"]) },
        "scope": c.scope,
        "id_token_signed_response_alg": c.id_token_alg.as_str(),
    }))
}

/// Whether `uri` is https to a host that is not this machine or a private network by its name or
/// literal address. (A name that resolves to a private address is still fetched: the fetch has a
/// short timeout and its error says nothing about what answered.)
fn public_https(uri: &str) -> bool {
    let Ok(u) = url::Url::parse(uri) else { return false };
    let private_v4 = |v4: std::net::Ipv4Addr| {
        let shared = v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64; // 100.64.0.0/10
        v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast() || shared
    };
    let private_ip = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(v4) => private_v4(v4),
        std::net::IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(private_v4)
        }
    };
    u.scheme() == "https"
        && match u.host() {
            Some(url::Host::Domain(d)) => {
                let d = d.trim_end_matches('.');
                d != "localhost" && !d.ends_with(".localhost") && !d.ends_with(".internal")
            }
            Some(url::Host::Ipv4(ip)) => !private_ip(ip.into()),
            Some(url::Host::Ipv6(ip)) => !private_ip(ip.into()),
            None => false,
        }
}

/// Removes a client; every token it holds stops working on the next request.
pub fn remove(conn: &mut Conn, client_id: &str) -> Result<bool, AuthError> {
    let n = conn.execute(&Sql::with(
        "UPDATE clients SET removed_at = ? WHERE client_id = ? AND removed_at IS NULL",
        [Bind::Int(now_micros()), Bind::Text(client_id.into())],
    ))?;
    if n == 1 {
        live::revoke(
            conn,
            &format!("client:{client_id}"),
            now_micros() + super::keys::MAX_TOKEN_LIFETIME_SECS * 2_000_000,
        )?;
    }
    Ok(n == 1)
}
