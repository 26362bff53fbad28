//! The OAuth 2 / SMART App Launch state machine, without HTTP: the web layer parses a request,
//! calls one of these functions, and renders the typed result or error.

use super::accounts::{self, Account};
use super::client_auth::{self, ClientCredentials, Prepared};
use super::clients::{self, Client, ClientKind};
use super::keys::SigningAlg;
use super::scope_words::describe;
use super::{live, password, pkce, AccessContext, AuthError, Claims, Keys, Reach, Scope, Scopes};
use crate::audit::{record_in, AuditEntry};
use crate::consent::{self, Grantee, NewGrant};
use crate::db::{Bind, Conn, DbError, Sql};
use crate::scope::Context;
use crate::time::now_micros;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const CODE_LIFETIME_MICROS: i64 = 60 * 1_000_000;
const REFRESH_LIFETIME_MICROS: i64 = 90 * 24 * 3600 * 1_000_000;
const BACKEND_TOKEN_SECS: i64 = 300;

/// The URLs the protocol needs to know about this instance.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub issuer: String,
    pub fhir_base: String,
    pub token_endpoint: String,
    /// Access token lifetime in seconds.
    pub access_lifetime: i64,
}

impl Endpoints {
    /// The URL of one of this server's paths (`/oauth/introspect`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}

/// The RFC 6749 §5.2 error codes (and RFC 6749 §4.1.2.1's `access_denied`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    /// Client authentication failed or is missing. `challenge`: the client used `Authorization`,
    /// sent an assertion, or has credentials it did not present, so the answer asks it to
    /// authenticate (RFC 6749 §5.2); otherwise it only named an unknown client or a wrong secret.
    InvalidClient {
        challenge: bool,
    },
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    AccessDenied,
    ServerError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient { .. } => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ServerError => "server_error",
        }
    }
}

/// An RFC 6749 §5.2 error; the web edge chooses the HTTP status.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: &str) -> OAuthError {
        OAuthError { code, description: description.to_string() }
    }
    pub fn request(d: &str) -> OAuthError {
        OAuthError::new(ErrorCode::InvalidRequest, d)
    }
    fn grant(d: &str) -> OAuthError {
        OAuthError::new(ErrorCode::InvalidGrant, d)
    }
    fn scope(d: &str) -> OAuthError {
        OAuthError::new(ErrorCode::InvalidScope, d)
    }
    /// `invalid_client`; `challenge` as in [`ErrorCode::InvalidClient`].
    pub fn client(d: &str, challenge: bool) -> OAuthError {
        OAuthError::new(ErrorCode::InvalidClient { challenge }, d)
    }
    pub fn server(e: impl std::fmt::Display) -> OAuthError {
        tracing::error!("token endpoint: {e}");
        OAuthError::new(ErrorCode::ServerError, "the server could not complete the request")
    }
}

impl From<DbError> for OAuthError {
    fn from(e: DbError) -> Self {
        OAuthError::server(e)
    }
}

impl From<AuthError> for OAuthError {
    fn from(e: AuthError) -> Self {
        OAuthError::server(e)
    }
}

// ---- authorization endpoint ---------------------------------------------------------------

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub aud: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub nonce: Option<String>,
}

/// A checked authorization request, ready for sign-in and consent.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub client: Client,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub state: String,
    pub code_challenge: String,
    pub nonce: Option<String>,
}

#[derive(Debug, Clone)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: show the error, never redirect.
    Page(String),
    /// Report to the client at its redirect URI.
    Redirect { uri: String, error: &'static str, description: String, state: Option<String> },
}

impl AuthorizeError {
    pub fn redirect_url(&self) -> Option<String> {
        match self {
            AuthorizeError::Page(_) => None,
            AuthorizeError::Redirect { uri, error, description, state } => {
                let mut q = vec![("error", error.to_string()), ("error_description", description.clone())];
                if let Some(s) = state {
                    q.push(("state", s.clone()));
                }
                Some(with_query(uri, &q))
            }
        }
    }
}

fn with_query(uri: &str, params: &[(&str, String)]) -> String {
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{}", serde_urlencoded::to_string(params).unwrap_or_default())
}

/// Whether the client may ever be given `word` (its registered scope bounds what it can ask).
fn client_may_ask(client: &Client, word: &str) -> bool {
    if client.scope.trim().is_empty() {
        return true;
    }
    let Some(want) = Scope::parse(word) else {
        return client.scope.split_whitespace().any(|w| w == word);
    };
    Scopes::parse(&client.scope).resources.iter().any(|have| have.covers(&want))
}

/// A query-constrained scope this server cannot hold on every route is dropped from the
/// authorization rather than refused with `invalid_scope`: the app is given less than it asked
/// (RFC 6749 §3.3; the token response's `scope` says what it got), the patient is never asked to
/// approve what would not be enforced, and an app asking for several scopes still gets the rest.
fn constraint_held(word: &str) -> bool {
    Scope::parse(word).is_none_or(|s| {
        s.filter.is_empty() || crate::fhir::search::supported_constraint(s.resource.as_deref(), &s.filter)
    })
}

pub fn check_authorize(conn: &mut Conn, ep: &Endpoints, p: &AuthorizeParams) -> Result<Authorization, AuthorizeError> {
    let page = |m: &str| AuthorizeError::Page(m.to_string());
    let client_id =
        p.client_id.as_deref().ok_or_else(|| page("the app did not say who it is (client_id is missing)"))?;
    let client = clients::get(conn, client_id)
        .map_err(|e| page(&e.to_string()))?
        .filter(|c| c.kind != ClientKind::Backend)
        .ok_or_else(|| page("this app is not registered with Healthfolio"))?;
    let redirect_uri = p.redirect_uri.clone().ok_or_else(|| page("the app gave no redirect_uri"))?;
    if !client.redirect_uris.contains(&redirect_uri) {
        return Err(page("the app's redirect_uri is not one it registered"));
    }
    let redirect = |error: &'static str, d: &str| AuthorizeError::Redirect {
        uri: redirect_uri.clone(),
        error,
        description: d.to_string(),
        state: p.state.clone(),
    };
    if p.response_type.as_deref() != Some("code") {
        return Err(redirect("unsupported_response_type", "response_type must be code"));
    }
    let state =
        p.state.clone().filter(|s| !s.is_empty()).ok_or_else(|| redirect("invalid_request", "state is required"))?;
    if p.aud.as_deref().map(|a| a.trim_end_matches('/')) != Some(ep.fhir_base.as_str()) {
        return Err(redirect("invalid_request", &format!("aud must be this FHIR server: {}", ep.fhir_base)));
    }
    let code_challenge = p
        .code_challenge
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| redirect("invalid_request", "PKCE is required: send code_challenge"))?;
    if p.code_challenge_method.as_deref() != Some("S256") {
        return Err(redirect("invalid_request", "code_challenge_method must be S256"));
    }
    let scopes: Vec<String> = p
        .scope
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .filter(|w| !w.starts_with("system/"))
        .filter(|w| client_may_ask(&client, w))
        .filter(|w| constraint_held(w))
        .map(str::to_string)
        .collect();
    if !scopes.iter().any(|w| Scope::parse(w).is_some()) {
        return Err(redirect(
            "invalid_scope",
            "ask for at least one resource scope such as patient/MedicationRequest.rs",
        ));
    }
    Ok(Authorization { client, redirect_uri, scopes, state, code_challenge, nonce: p.nonce.clone() })
}

/// One line of the consent screen.
#[derive(Debug, Clone)]
pub struct ConsentItem {
    pub scope: String,
    pub label: String,
}

pub enum ConsentState {
    /// The patient already granted all of this to the app: no screen.
    AlreadyGranted,
    Ask(Vec<ConsentItem>),
}

pub fn consent_state(conn: &mut Conn, patient: &str, auth: &Authorization) -> Result<ConsentState, AuthError> {
    let wanted: Vec<Scope> = auth.scopes.iter().filter_map(|w| Scope::parse(w)).collect();
    let existing = consent::active_for(conn, patient, &Grantee::Client(auth.client.client_id.clone()))
        .map_err(|e| AuthError::Key(e.to_string()))?;
    if let Some(g) = existing {
        let have = g.scopes();
        if wanted.iter().all(|w| have.resources.iter().any(|h| h.covers(w))) {
            return Ok(ConsentState::AlreadyGranted);
        }
    }
    Ok(ConsentState::Ask(
        wanted
            .iter()
            .zip(auth.scopes.iter().filter(|w| Scope::parse(w).is_some()))
            .map(|(s, w)| ConsentItem { scope: w.clone(), label: describe(s) })
            .collect(),
    ))
}

/// The patient approved `approved` (a subset of what was asked): record the grant and issue a code.
pub fn approve(
    conn: &mut Conn,
    account: &Account,
    auth: &Authorization,
    approved: &[String],
) -> Result<String, AuthError> {
    let patient =
        account.patient_id().ok_or_else(|| AuthError::Invalid("only a patient can share their record".into()))?;
    let resource: Vec<&String> =
        auth.scopes.iter().filter(|w| Scope::parse(w).is_some() && approved.contains(w)).collect();
    if resource.is_empty() {
        return Ok(deny(auth));
    }
    let grant_scope = resource.iter().map(|w| w.replacen("user/", "patient/", 1)).collect::<Vec<_>>().join(" ");
    let existing = consent::active_for(conn, patient, &Grantee::Client(auth.client.client_id.clone()))
        .map_err(|e| AuthError::Key(e.to_string()))?;
    let covered = existing.as_ref().is_some_and(|g| {
        let have = g.scopes();
        Scopes::parse(&grant_scope).resources.iter().all(|w| have.resources.iter().any(|h| h.covers(w)))
    });
    if !covered {
        let g = NewGrant {
            patient_id: patient.to_string(),
            grantee: Grantee::Client(auth.client.client_id.clone()),
            scope: grant_scope,
            expires_at: None,
            created_by: format!("Patient/{patient}"),
        };
        consent::grant(conn, &g)?;
    }
    let scope: Vec<&str> =
        auth.scopes.iter().filter(|w| Scope::parse(w).is_none() || approved.contains(w)).map(String::as_str).collect();
    new_code(conn, account, auth, &scope.join(" "), Some(patient))
}

/// A practitioner signing in to a clinical app: no patient consents here (each patient's grant to
/// the practitioner's organisation decides what the token reaches, request by request), so the
/// code carries the app's `user/` scopes and no patient.
pub fn practitioner_approve(conn: &mut Conn, account: &Account, auth: &Authorization) -> Result<String, AuthError> {
    if account.kind != "practitioner" {
        return Err(AuthError::Invalid("only a practitioner signs in for user/ scopes".into()));
    }
    let scope: Vec<&str> = auth
        .scopes
        .iter()
        .filter(|w| Scope::parse(w).map_or(!w.starts_with("launch"), |s| s.context == Context::User))
        .map(String::as_str)
        .collect();
    if !scope.iter().any(|w| Scope::parse(w).is_some()) {
        return Ok(with_query(
            &auth.redirect_uri,
            &[
                ("error", "invalid_scope".into()),
                (
                    "error_description",
                    "a practitioner signs in for user/ scopes, such as user/MedicationRequest.cruds".into(),
                ),
                ("state", auth.state.clone()),
            ],
        ));
    }
    new_code(conn, account, auth, &scope.join(" "), None)
}

/// Stores a single-use code (hashed) for `scope` and returns the app's redirect with it.
fn new_code(
    conn: &mut Conn,
    account: &Account,
    auth: &Authorization,
    scope: &str,
    patient: Option<&str>,
) -> Result<String, AuthError> {
    let code = password::random_token();
    conn.execute(&Sql::with(
        "INSERT INTO auth_codes (code_hash, client_id, account_id, redirect_uri, scope, patient_id, code_challenge, nonce, family, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            Bind::Text(password::digest(&code)),
            Bind::Text(auth.client.client_id.clone()),
            Bind::Text(account.id.clone()),
            Bind::Text(auth.redirect_uri.clone()),
            Bind::Text(scope.to_string()),
            Bind::OptText(patient.map(str::to_string)),
            Bind::Text(auth.code_challenge.clone()),
            Bind::OptText(auth.nonce.clone()),
            Bind::Text(uuid::Uuid::new_v4().to_string()),
            Bind::Int(now_micros() + CODE_LIFETIME_MICROS),
        ],
    ))?;
    Ok(with_query(&auth.redirect_uri, &[("code", code), ("state", auth.state.clone())]))
}

pub fn deny(auth: &Authorization) -> String {
    with_query(
        &auth.redirect_uri,
        &[
            ("error", "access_denied".into()),
            ("error_description", "the patient declined".into()),
            ("state", auth.state.clone()),
        ],
    )
}

// ---- token endpoint -----------------------------------------------------------------------

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    #[serde(flatten)]
    pub client: ClientCredentials,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub need_patient_banner: Option<bool>,
}

/// RFC 6749 §6: a refresh request need not name its client. A public client cannot
/// authenticate anyway and its refresh token names it; any other client must prove itself.
fn named_by_refresh_token(conn: &mut Conn, req: &TokenRequest) -> Result<Client, OAuthError> {
    let unnamed = || OAuthError::client("the client must identify itself (client_id)", false);
    let token = req.refresh_token.as_deref().filter(|_| req.grant_type.as_deref() == Some("refresh_token"));
    let token = token.ok_or_else(unnamed)?;
    let row = find_refresh(conn, token)?.ok_or_else(|| OAuthError::grant("the refresh token is not valid"))?;
    let client = clients::get(conn, &row.client_id)?.ok_or_else(unnamed)?;
    match client.kind {
        ClientKind::Public => Ok(client),
        _ => Err(client_auth::must_authenticate(&client)),
    }
}

#[derive(diesel::QueryableByName)]
struct CodeRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    client_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    account_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    redirect_uri: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    scope: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    patient_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    code_challenge: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    nonce: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    family: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    expires_at: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    used_at: Option<i64>,
}

/// Everything issued from one authorization (code and its refresh tokens) stops working.
pub(crate) fn revoke_family(conn: &mut Conn, family: &str) -> Result<(), AuthError> {
    let until = now_micros() + REFRESH_LIFETIME_MICROS;
    live::revoke(conn, &format!("fam:{family}"), until)?;
    conn.execute(&Sql::with(
        "UPDATE refresh_tokens SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL",
        [Bind::Int(now_micros()), Bind::Text(family.into())],
    ))?;
    Ok(())
}

/// Makes the keys a token request may sign with, if missing (an ID token's is made on first
/// need), before the request's transaction: on SQLite that is the one writer, and a key made
/// inside it would wait for itself.
pub fn prepare_keys(keys: &Keys, req: &TokenRequest) -> Result<(), OAuthError> {
    if req.grant_type.as_deref() != Some("client_credentials") {
        for alg in ID_TOKEN_ALGS {
            keys.ready(alg)?;
        }
    }
    Ok(())
}

/// Runs a token request. Refusals have effects that must stay (a reused code or refresh token
/// revokes its family; the attempt is audited), so callers commit whatever this returns.
pub fn token(
    conn: &mut Conn,
    keys: &Keys,
    ep: &Endpoints,
    req: &TokenRequest,
    basic: Option<(String, String)>,
    prepared: &Prepared,
) -> Result<TokenResponse, OAuthError> {
    let grant_type = req.grant_type.as_deref().ok_or_else(|| OAuthError::request("grant_type is required"))?;
    if !matches!(grant_type, "authorization_code" | "refresh_token" | "client_credentials") {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            &format!("grant_type {grant_type} is not supported"),
        ));
    }
    let client = match client_auth::identify(conn, &req.client, basic, prepared, &[&ep.token_endpoint])? {
        Some(c) => c,
        None => named_by_refresh_token(conn, req)?,
    };
    let out = match grant_type {
        "authorization_code" => authorization_code(conn, keys, ep, req, &client),
        "refresh_token" => refresh(conn, keys, ep, req, &client),
        _ => client_credentials(conn, keys, ep, req, &client),
    };
    let ctx = AccessContext::client(&client.client_id);
    let entry = AuditEntry::event("token", grant_type, out.as_ref().err().map(|e| e.description.clone()));
    record_in(conn, &ctx, &entry)?;
    out
}

fn authorization_code(
    conn: &mut Conn,
    keys: &Keys,
    ep: &Endpoints,
    req: &TokenRequest,
    client: &Client,
) -> Result<TokenResponse, OAuthError> {
    let code = req.code.as_deref().ok_or_else(|| OAuthError::request("code is required"))?;
    let row: CodeRow = conn
        .first(&Sql::with(
            "SELECT client_id, account_id, redirect_uri, scope, patient_id, code_challenge, nonce, family, expires_at, used_at FROM auth_codes WHERE code_hash = ?",
            [Bind::Text(password::digest(code))],
        ))?
        .ok_or_else(|| OAuthError::grant("the authorization code is not valid"))?;
    if row.used_at.is_some() {
        // RFC 6749 §4.1.2: a code used twice revokes what it already issued.
        revoke_family(conn, &row.family)?;
        return Err(OAuthError::grant("the authorization code was already used; the tokens it gave are revoked"));
    }
    if row.client_id != client.client_id {
        return Err(OAuthError::grant("the authorization code was issued to another client"));
    }
    if row.expires_at < now_micros() {
        return Err(OAuthError::grant("the authorization code has expired"));
    }
    if req.redirect_uri.as_deref() != Some(row.redirect_uri.as_str()) {
        return Err(OAuthError::grant("redirect_uri does not match the authorization request"));
    }
    let verifier = req.code_verifier.as_deref().ok_or_else(|| OAuthError::grant("code_verifier is required (PKCE)"))?;
    if !pkce::matches(verifier, &row.code_challenge) {
        return Err(OAuthError::grant("code_verifier does not match the code_challenge"));
    }
    let n = conn.execute(&Sql::with(
        "UPDATE auth_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL",
        [Bind::Int(now_micros()), Bind::Text(password::digest(code))],
    ))?;
    if n != 1 {
        return Err(OAuthError::grant("the authorization code was already used"));
    }
    let account =
        accounts::by_id(conn, &row.account_id)?.ok_or_else(|| OAuthError::grant("the account no longer exists"))?;
    let issued = Issue {
        account: &account,
        client,
        scope: row.scope,
        patient: row.patient_id,
        family: row.family,
        nonce: row.nonce,
    };
    issue(conn, keys, ep, issued)
}

struct Issue<'a> {
    account: &'a Account,
    client: &'a Client,
    scope: String,
    patient: Option<String>,
    family: String,
    nonce: Option<String>,
}

fn issue(conn: &mut Conn, keys: &Keys, ep: &Endpoints, i: Issue) -> Result<TokenResponse, OAuthError> {
    let scopes = Scopes::parse(&i.scope);
    let mut claims = Claims::new(
        &ep.issuer,
        &ep.fhir_base,
        &i.account.id,
        &i.client.client_id,
        &i.scope,
        i.patient.clone(),
        ep.access_lifetime,
    );
    claims.fam = Some(i.family.clone());
    if i.account.kind == "practitioner" {
        // Reach follows the practitioner's organisation; writes name the practitioner as author.
        claims.org = i.account.organization.clone();
        claims.fhir_user = Some(i.account.fhir_user.clone());
    }
    let access_token = keys.sign(&claims)?;
    let refresh_token = if scopes.offline_access {
        let t = password::random_token();
        conn.execute(&Sql::with(
            "INSERT INTO refresh_tokens (token_hash, family, client_id, account_id, scope, patient_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                Bind::Text(password::digest(&t)),
                Bind::Text(i.family.clone()),
                Bind::Text(i.client.client_id.clone()),
                Bind::Text(i.account.id.clone()),
                Bind::Text(i.scope.clone()),
                Bind::OptText(i.patient.clone()),
                Bind::Int(now_micros()),
                Bind::Int(now_micros() + REFRESH_LIFETIME_MICROS),
            ],
        ))?;
        Some(t)
    } else {
        None
    };
    let id_token = if scopes.openid && scopes.fhir_user { Some(id_token(keys, ep, &i)?) } else { None };
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: claims.exp - claims.iat,
        scope: i.scope.clone(),
        refresh_token,
        id_token,
        need_patient_banner: i.patient.as_ref().map(|_| false),
        patient: i.patient,
    })
}

/// What an ID token may be signed with: RS256, which OpenID Connect Discovery 1.0 §3 requires
/// and every relying party expects by default, and ES256 for a client that registered it.
pub const ID_TOKEN_ALGS: [SigningAlg; 2] = [SigningAlg::Rs256, SigningAlg::Es256];

fn id_token(keys: &Keys, ep: &Endpoints, i: &Issue) -> Result<String, OAuthError> {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "iss": ep.issuer, "sub": i.account.id, "aud": i.client.client_id, "iat": now, "exp": now + ep.access_lifetime,
        "fhirUser": format!("{}/{}", ep.fhir_base, i.account.fhir_user),
    });
    if let Some(n) = &i.nonce {
        claims["nonce"] = json!(n);
    }
    Ok(keys.sign_with(&claims, i.client.id_token_alg)?)
}

#[derive(diesel::QueryableByName)]
struct RefreshRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    family: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    client_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    account_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    scope: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    patient_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    expires_at: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    used_at: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    revoked_at: Option<i64>,
}

fn find_refresh(conn: &mut Conn, token: &str) -> Result<Option<RefreshRow>, OAuthError> {
    Ok(conn.first(&Sql::with(
        "SELECT family, client_id, account_id, scope, patient_id, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = ?",
        [Bind::Text(password::digest(token))],
    ))?)
}

fn refresh(
    conn: &mut Conn,
    keys: &Keys,
    ep: &Endpoints,
    req: &TokenRequest,
    client: &Client,
) -> Result<TokenResponse, OAuthError> {
    let token = req.refresh_token.as_deref().ok_or_else(|| OAuthError::request("refresh_token is required"))?;
    let row = find_refresh(conn, token)?.ok_or_else(|| OAuthError::grant("the refresh token is not valid"))?;
    if row.client_id != client.client_id {
        return Err(OAuthError::grant("the refresh token was issued to another client"));
    }
    if row.used_at.is_some() || row.revoked_at.is_some() {
        // A rotated-out token presented again means it leaked: end the whole lineage.
        revoke_family(conn, &row.family)?;
        return Err(OAuthError::grant("the refresh token was already used; its family is revoked"));
    }
    if row.expires_at < now_micros() {
        return Err(OAuthError::grant("the refresh token has expired"));
    }
    if let Some(p) = &row.patient_id {
        consent::active_for(conn, p, &Grantee::Client(client.client_id.clone()))
            .map_err(OAuthError::server)?
            .ok_or_else(|| OAuthError::grant("the patient has withdrawn this app's access"))?;
    }
    let scope = match &req.scope {
        Some(s) => narrow(&row.scope, s)?,
        None => row.scope.clone(),
    };
    conn.execute(&Sql::with(
        "UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ?",
        [Bind::Int(now_micros()), Bind::Text(password::digest(token))],
    ))?;
    let account =
        accounts::by_id(conn, &row.account_id)?.ok_or_else(|| OAuthError::grant("the account no longer exists"))?;
    issue(
        conn,
        keys,
        ep,
        Issue { account: &account, client, scope, patient: row.patient_id, family: row.family, nonce: None },
    )
}

/// A refresh may ask for less than was granted, never more.
fn narrow(granted: &str, asked: &str) -> Result<String, OAuthError> {
    let have: Vec<&str> = granted.split_whitespace().collect();
    let have_scopes = Scopes::parse(granted);
    for w in asked.split_whitespace() {
        let ok =
            have.contains(&w) || Scope::parse(w).is_some_and(|s| have_scopes.resources.iter().any(|h| h.covers(&s)));
        if !ok {
            return Err(OAuthError::scope(&format!("'{w}' was not granted")));
        }
    }
    Ok(asked.to_string())
}

fn client_credentials(
    conn: &mut Conn,
    keys: &Keys,
    ep: &Endpoints,
    req: &TokenRequest,
    client: &Client,
) -> Result<TokenResponse, OAuthError> {
    if client.kind != ClientKind::Backend || req.client.client_assertion.is_none() {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "client_credentials is for backend clients authenticating with a signed assertion",
        ));
    }
    let asked = req.scope.as_deref().unwrap_or("system/*.rs");
    let mut kept = Vec::new();
    for w in asked.split_whitespace() {
        match Scope::parse(w) {
            Some(s) if w.starts_with("system/") && client_may_ask(client, w) => kept.push((w.to_string(), s)),
            _ => return Err(OAuthError::scope(&format!("'{w}' is not a system scope this client may have"))),
        }
    }
    let scope = kept.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>().join(" ");
    let mut claims = Claims::new(
        &ep.issuer,
        &ep.fhir_base,
        &client.client_id,
        &client.client_id,
        &scope,
        None,
        ep.access_lifetime.min(BACKEND_TOKEN_SECS),
    );
    claims.org = client.organization.clone();
    let _ = conn;
    Ok(TokenResponse {
        access_token: keys.sign(&claims)?,
        token_type: "bearer",
        expires_in: claims.exp - claims.iat,
        scope,
        refresh_token: None,
        id_token: None,
        patient: None,
        need_patient_banner: None,
    })
}

// ---- introspection and revocation ----------------------------------------------------------

/// RFC 7662: `{"active": false}` for anything not live.
/// RFC 7662, for an authenticated `caller`: an operator learns about any token, a client only
/// about its own (anything else is `active: false`, so tokens cannot be probed).
pub fn introspect(conn: &mut Conn, keys: &Keys, ep: &Endpoints, caller: &AccessContext, token: &str) -> Value {
    let Ok(claims) = keys.verify(token, ep) else { return json!({"active": false}) };
    if caller.reach != Reach::All && caller.client_id != claims.client_id {
        return json!({"active": false});
    }
    let Ok(ctx) = live::check(conn, claims.clone()) else { return json!({"active": false}) };
    let mut v = json!({
        "active": true, "scope": claims.scope, "client_id": claims.client_id, "exp": claims.exp, "iat": claims.iat,
        "sub": claims.sub, "iss": claims.iss, "aud": claims.aud, "jti": claims.jti, "token_type": "Bearer",
    });
    if let Reach::Patient(p) = &ctx.reach {
        v["patient"] = json!(p);
    }
    if let Ok(Some(a)) = accounts::by_id(conn, &claims.sub) {
        v["fhirUser"] = json!(format!("{}/{}", ep.fhir_base, a.fhir_user));
    }
    v
}

/// RFC 7009: revokes an access or refresh token; unknown tokens are not an error.
pub fn revoke(conn: &mut Conn, keys: &Keys, ep: &Endpoints, token: &str) -> Result<(), OAuthError> {
    if let Ok(claims) = keys.verify(token, ep) {
        live::revoke(conn, &format!("jti:{}", claims.jti), claims.exp * 1_000_000)?;
        record_in(conn, &AccessContext::client(&claims.client_id), &AuditEntry::event("revoke", "access_token", None))?;
        return Ok(());
    }
    if let Some(row) = find_refresh(conn, token)? {
        revoke_family(conn, &row.family)?;
        record_in(conn, &AccessContext::client(&row.client_id), &AuditEntry::event("revoke", "refresh_token", None))?;
    }
    Ok(())
}

/// The OpenID userinfo of a token's subject.
pub fn userinfo(conn: &mut Conn, ctx: &AccessContext, ep: &Endpoints) -> Result<Value, AuthError> {
    if !ctx.scopes.openid {
        return Err(AuthError::Invalid("userinfo needs a token with the openid scope".into()));
    }
    let account =
        accounts::by_id(conn, &ctx.subject)?.ok_or(AuthError::InvalidToken("the token's user no longer exists"))?;
    Ok(
        json!({"sub": account.id, "fhirUser": format!("{}/{}", ep.fhir_base, account.fhir_user), "email": account.email}),
    )
}
