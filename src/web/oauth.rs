//! OAuth endpoints: a few lines each around `auth::oauth`; errors as RFC 6749 JSON, pages as HTML.

use super::extract::Caller;
use super::pages::{self, page_error};
use super::AppState;
use crate::access::AccessContext;
use crate::audit::{record_in, AuditEntry};
use crate::auth::client_auth::{self, ClientCredentials};
use crate::auth::oauth::{self, AuthorizeError, AuthorizeParams, ConsentState, ErrorCode, OAuthError, TokenRequest};
use crate::auth::session::{self, Session};
use crate::auth::{accounts, password};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use base64::Engine;
use serde::Deserialize;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/oauth/authorize", web::get().to(authorize_get))
        .route("/oauth/authorize", web::post().to(authorize_post))
        .route("/oauth/login", web::post().to(login))
        .route("/oauth/consent", web::post().to(consent))
        .route("/oauth/token", web::post().to(token))
        .route("/oauth/introspect", web::post().to(introspect))
        .route("/oauth/revoke", web::post().to(revoke))
        .route("/oauth/userinfo", web::get().to(userinfo))
        .route("/oauth/register", web::post().to(register));
}

const LOGIN_CSRF: &str = "hf_login_csrf";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    app_name: Option<String>,
    error: Option<String>,
    csrf: String,
    continue_to: String,
    email: String,
    signup: bool,
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage {
    app_name: String,
    who: String,
    csrf: String,
    request: String,
    items: Vec<oauth::ConsentItem>,
}

/// RFC 6749 §5.2: 400, except a challenge to authenticate (401 naming the scheme), a refusal
/// (403) and our own failure (500).
fn oauth_error(e: &OAuthError) -> HttpResponse {
    let status = match e.code {
        ErrorCode::InvalidClient { challenge: true } => StatusCode::UNAUTHORIZED,
        ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut r = HttpResponse::build(status);
    if status == StatusCode::UNAUTHORIZED {
        r.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"healthfolio\""));
    }
    r.insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(serde_json::json!({"error": e.code.as_str(), "error_description": e.description}))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OAuthError> + Send + 'static,
) -> Result<T, HttpResponse> {
    match web::block(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(oauth_error(&e)),
        Err(_) => Err(oauth_error(&OAuthError::server("worker pool unavailable"))),
    }
}

pub fn session_cookie<'a>(state: &AppState, value: String) -> Cookie<'a> {
    Cookie::build(session::COOKIE, value)
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.hf.config.base_url.starts_with("https://"))
        .path("/")
        .finish()
}

/// The signed-in patient's session, if the cookie names a live one.
pub async fn current_session(req: &HttpRequest, state: &web::Data<AppState>) -> Option<Session> {
    let cookie = req.cookie(session::COOKIE)?.value().to_string();
    let db = state.hf.db.clone();
    web::block(move || {
        let mut conn = db.conn().ok()?;
        session::find(&mut conn, &cookie).ok().flatten()
    })
    .await
    .ok()
    .flatten()
}

/// The signed-in patient's (CSRF token, Patient id), or the answer to give instead: the sign-in
/// page, or a refusal for an account that is not a patient's.
pub(super) async fn signed_in(
    req: &HttpRequest,
    state: &web::Data<AppState>,
) -> Result<(String, String), HttpResponse> {
    let s = current_session(req, state).await.ok_or_else(|| pages::see_other("/portal/login"))?;
    let p = s.account.patient_id().map(str::to_string).ok_or_else(|| {
        page_error(StatusCode::FORBIDDEN, "This portal is for patients", "Sign in with a patient account.")
    })?;
    record_held(state, &p, &s.row.csrf).await?;
    Ok((s.row.csrf, p))
}

#[derive(Template)]
#[template(path = "portal_unavailable.html")]
struct UnavailablePage<'a> {
    csrf: &'a str,
}

/// A signed-in patient whose record is not held here (deleted, or absent after a restore) gets a
/// page saying so, with sign-out, instead of pages that have nothing to show.
pub(super) async fn record_held(state: &web::Data<AppState>, patient: &str, csrf: &str) -> Result<(), HttpResponse> {
    let (store, id) = (state.hf.store.clone(), patient.to_string());
    match web::block(move || crate::portal::record_held(&store, &id)).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(pages::html(StatusCode::NOT_FOUND, UnavailablePage { csrf }.render())),
        Ok(Err(e)) => {
            tracing::error!("portal: {e}");
            Err(page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "Your record could not be reached just now.",
            ))
        }
        Err(_) => Err(page_error(StatusCode::SERVICE_UNAVAILABLE, "Please try again", "The service is busy just now.")),
    }
}

pub(super) fn login_page(
    state: &AppState,
    app_name: Option<String>,
    error: Option<String>,
    continue_to: String,
    email: String,
) -> HttpResponse {
    let csrf = password::random_token();
    let signup = state.hf.config.open_signup;
    let body = LoginPage { app_name, error: error.clone(), csrf: csrf.clone(), continue_to, email, signup }.render();
    let cookie = Cookie::build(LOGIN_CSRF, csrf)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.hf.config.base_url.starts_with("https://"))
        .path("/")
        .finish();
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    let mut r = pages::html(status, body);
    let _ = r.add_cookie(&cookie);
    r
}

async fn authorize_get(req: HttpRequest, state: web::Data<AppState>, q: web::Query<AuthorizeParams>) -> HttpResponse {
    authorize(req, state, q.into_inner()).await
}

async fn authorize_post(req: HttpRequest, state: web::Data<AppState>, f: web::Form<AuthorizeParams>) -> HttpResponse {
    authorize(req, state, f.into_inner()).await
}

async fn authorize(req: HttpRequest, state: web::Data<AppState>, p: AuthorizeParams) -> HttpResponse {
    let hf = state.hf.clone();
    let ep = state.endpoints();
    let params = p.clone();
    let checked = web::block(move || {
        let mut conn = hf.db.conn().map_err(|e| AuthorizeError::Page(e.to_string()))?;
        oauth::check_authorize(&mut conn, &ep, &params)
    })
    .await;
    let auth = match checked {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return authorize_error(&e),
        Err(_) => return page_error(StatusCode::SERVICE_UNAVAILABLE, "Please try again", "The service is busy."),
    };
    let request = serde_urlencoded::to_string(&p).unwrap_or_default();
    let Some(s) = current_session(&req, &state).await else {
        return login_page(
            &state,
            Some(auth.client.name.clone()),
            None,
            format!("/oauth/authorize?{request}"),
            String::new(),
        );
    };
    if s.account.kind == "practitioner" {
        let hf = state.hf.clone();
        let account = s.account.clone();
        let done = web::block(move || hf.db.transaction(|c| oauth::practitioner_approve(c, &account, &auth))).await;
        return match done {
            Ok(Ok(url)) => pages::see_other(&url),
            _ => page_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Your request could not be completed. Please try again.",
            ),
        };
    }
    let Some(patient) = s.account.patient_id().map(str::to_string) else {
        return page_error(
            StatusCode::FORBIDDEN,
            "This account cannot connect apps",
            "Sign in with a patient or practitioner account to connect an app.",
        );
    };
    let hf = state.hf.clone();
    let account = s.account.clone();
    let decided = web::block(move || {
        let mut conn = hf.db.conn()?;
        match oauth::consent_state(&mut conn, &patient, &auth)? {
            ConsentState::AlreadyGranted => {
                let all = auth.scopes.clone();
                drop(conn);
                hf.db.transaction(|c| oauth::approve(c, &account, &auth, &all)).map(Ok)
            }
            ConsentState::Ask(items) => Ok(Err((auth.client.name.clone(), items))),
        }
    })
    .await;
    match decided {
        Ok(Ok(Ok(url))) => pages::see_other(&url),
        Ok(Ok(Err((app_name, items)))) => {
            let body = ConsentPage { app_name, who: s.account.email.clone(), csrf: s.row.csrf.clone(), request, items }
                .render();
            pages::html(StatusCode::OK, body)
        }
        _ => page_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "Your request could not be completed. Please try again.",
        ),
    }
}

fn authorize_error(e: &AuthorizeError) -> HttpResponse {
    match (e, e.redirect_url()) {
        (_, Some(url)) => pages::see_other(&url),
        (AuthorizeError::Page(msg), None) => page_error(StatusCode::BAD_REQUEST, "This app cannot connect", msg),
        _ => page_error(StatusCode::BAD_REQUEST, "This app cannot connect", "The request was not valid."),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: String,
    csrf: String,
    #[serde(rename = "continue")]
    continue_to: Option<String>,
}

/// Only our own pages may be returned to after sign-in (no open redirect).
fn safe_continue(c: Option<&str>) -> String {
    match c {
        Some(c) if (c.starts_with("/oauth/authorize?") || c.starts_with("/portal")) && !c.starts_with("//") => {
            c.to_string()
        }
        _ => "/portal".to_string(),
    }
}

async fn login(req: HttpRequest, state: web::Data<AppState>, form: web::Form<LoginForm>) -> HttpResponse {
    let form = form.into_inner();
    let address = super::limits::client_address(&req, state.hf.config.behind_proxy);
    if !state.limits.allow(&address, None) {
        state.metrics.rate_limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut r = page_error(StatusCode::TOO_MANY_REQUESTS, "Too many attempts", "Wait a few minutes and try again.");
        r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
        return r;
    }
    let continue_to = safe_continue(form.continue_to.as_deref());
    let cookie_csrf = req.cookie(LOGIN_CSRF).map(|c| c.value().to_string());
    if cookie_csrf.as_deref() != Some(form.csrf.as_str()) {
        return login_page(
            &state,
            None,
            Some("Your sign-in form expired. Please try again.".into()),
            continue_to,
            form.email,
        );
    }
    let ua = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string);
    let hf = state.hf.clone();
    let (email, pw) = (form.email.clone(), form.password);
    let result = web::block(move || {
        let mut conn = hf.db.conn().map_err(|e| accounts::LoginError::Auth(e.into()))?;
        let account = accounts::login(&mut conn, &email, &pw, &address)?;
        let cookie = session::start(&mut conn, &account.id, ua.as_deref())?;
        // In the patient's own access log too: a sign-in they did not make is worth seeing.
        let mut entry = AuditEntry::event("login", &account.fhir_user, None);
        entry.patient_id = account.patient_id().map(str::to_string);
        record_in(&mut conn, &AccessContext::client("portal"), &entry)
            .map_err(|e| accounts::LoginError::Auth(e.into()))?;
        Ok::<_, accounts::LoginError>(cookie)
    })
    .await;
    match result {
        Ok(Ok(cookie)) => {
            let mut r = pages::see_other(&continue_to);
            let _ = r.add_cookie(&session_cookie(&state, cookie));
            r
        }
        Ok(Err(e)) => {
            state.metrics.failed_logins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut r = login_page(&state, None, Some(pages::sentence(&e.to_string())), continue_to, form.email);
            if let accounts::LoginError::Throttled { retry_after_secs } = e {
                // RFC 6585: a throttled sign-in is 429 and says how long to wait.
                *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after_secs));
            }
            r
        }
        Err(_) => page_error(StatusCode::SERVICE_UNAVAILABLE, "Please try again", "The service is busy."),
    }
}

async fn consent(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(s) = current_session(&req, &state).await else {
        return page_error(StatusCode::UNAUTHORIZED, "Please sign in again", "Your session has ended.");
    };
    if get("csrf").as_deref() != Some(s.row.csrf.as_str()) {
        return page_error(StatusCode::FORBIDDEN, "This form has expired", "Go back to the app and start again.");
    }
    let params: AuthorizeParams = serde_urlencoded::from_str(&get("request").unwrap_or_default()).unwrap_or_default();
    let approved: Vec<String> = form.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.clone()).collect();
    let allow = get("decision").as_deref() == Some("allow");
    let hf = state.hf.clone();
    let ep = state.endpoints();
    let account = s.account.clone();
    let result = web::block(move || {
        let mut conn = hf.db.conn().map_err(|e| AuthorizeError::Page(e.to_string()))?;
        let auth = oauth::check_authorize(&mut conn, &ep, &params)?;
        if !allow {
            return Ok(oauth::deny(&auth));
        }
        drop(conn);
        hf.db
            .transaction(|c| oauth::approve(c, &account, &auth, &approved))
            .map_err(|e: crate::auth::AuthError| AuthorizeError::Page(e.to_string()))
    })
    .await;
    match result {
        Ok(Ok(url)) => pages::see_other(&url),
        Ok(Err(e)) => authorize_error(&e),
        Err(_) => page_error(StatusCode::SERVICE_UNAVAILABLE, "Please try again", "The service is busy."),
    }
}

fn basic_auth(req: &HttpRequest) -> Option<(String, String)> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    // Percent-encoded inside base64, out of the request guard's sight: a NUL names no client.
    if crate::fhir::validate::encodes_nul(text.as_bytes()) {
        return None;
    }
    let unescape = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    Some((unescape(id), unescape(secret)))
}

fn form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<HttpResponse>> {
    serde_urlencoded::from_bytes(body)
        .map_err(|e| Box::new(oauth_error(&OAuthError::request(&format!("the form body is malformed: {e}")))))
}

/// The answer to give instead when this address or client has tried too often: secrets and
/// assertions are guessed by retrying.
fn throttled(
    req: &HttpRequest,
    state: &AppState,
    basic: Option<&(String, String)>,
    creds: &ClientCredentials,
) -> Option<HttpResponse> {
    let address = super::limits::client_address(req, state.hf.config.behind_proxy);
    let client = basic.map(|(id, _)| id.clone()).or(creds.client_id.clone());
    if state.limits.allow(&address, client.as_deref()) {
        return None;
    }
    state.metrics.rate_limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(super::limits::too_many())
}

async fn token(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let tr: TokenRequest = match form(&body) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let basic = basic_auth(&req);
    if let Some(r) = throttled(&req, &state, basic.as_ref(), &tr.client) {
        return r;
    }
    let hf = state.hf.clone();
    let ep = state.endpoints();
    let result = blocking(move || {
        // Outside the transaction (on SQLite, the one writer): key fetches, secret checks, and
        // our own signing keys, which the first ID token may have to make.
        let prepared = client_auth::prepare(&hf.db, &tr.client, basic.as_ref())?;
        oauth::prepare_keys(&hf.keys, &tr)?;
        // Committed whatever the outcome: see `oauth::token`.
        hf.db.transaction(|c| Ok::<_, crate::db::DbError>(oauth::token(c, &hf.keys, &ep, &tr, basic, &prepared)))?
    })
    .await;
    match result {
        Ok(t) => {
            state.metrics.tokens_issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .insert_header((header::PRAGMA, "no-cache"))
                .json(t)
        }
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct TokenForm {
    token: Option<String>,
    #[serde(flatten)]
    client: ClientCredentials,
}

/// The `token` of an introspection or revocation form, and the caller's credentials in it.
fn token_form(body: &[u8]) -> Result<(String, ClientCredentials), Box<HttpResponse>> {
    let f: TokenForm = form(body)?;
    let token = f.token.ok_or_else(|| Box::new(oauth_error(&OAuthError::request("token is required"))))?;
    Ok((token, f.client))
}

/// RFC 7662 asks the endpoint to know who is asking: a client by its credentials (as at the
/// token endpoint), or any caller by a bearer token of this server.
async fn introspect(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let (token, creds) = match token_form(&body) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let auth = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let caller = if auth.as_deref().is_some_and(|a| a.to_ascii_lowercase().starts_with("bearer ")) {
        match super::extract::bearer(&state, auth).await {
            Ok(c) => c,
            Err(_) => {
                return HttpResponse::Unauthorized()
                    .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                    .json(serde_json::json!({"error": "invalid_client", "error_description": "the caller's access token is not valid"}))
            }
        }
    } else {
        let basic = basic_auth(&req);
        if let Some(r) = throttled(&req, &state, basic.as_ref(), &creds) {
            return r;
        }
        let (hf, ep) = (state.hf.clone(), state.endpoints());
        match blocking(move || client_auth::introspecting_client(&hf.db, &ep, &creds, basic)).await {
            Ok(c) => c,
            Err(r) => return r,
        }
    };
    let (hf, ep) = (state.hf.clone(), state.endpoints());
    let answer = blocking(move || Ok(oauth::introspect(&mut hf.db.conn()?, &hf.keys, &ep, &caller, &token))).await;
    match answer {
        Ok(v) => HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(v),
        Err(r) => r,
    }
}

async fn revoke(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let (token, creds) = match token_form(&body) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let basic = basic_auth(&req);
    if let Some(r) = throttled(&req, &state, basic.as_ref(), &creds) {
        return r;
    }
    let (hf, ep) = (state.hf.clone(), state.endpoints());
    let done = blocking(move || {
        client_auth::check_revoking_client(&hf.db, &ep, &creds, basic)?;
        hf.db.transaction(|c| oauth::revoke(c, &hf.keys, &ep, &token))
    });
    match done.await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({})),
        Err(r) => r,
    }
}

async fn userinfo(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, super::error::ApiError> {
    if !caller.0.scopes.openid {
        // RFC 6750 §3.1: a valid token without the scope the resource needs.
        return Ok(HttpResponse::Forbidden()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer error=\"insufficient_scope\", scope=\"openid\""))
            .json(serde_json::json!({"error": "insufficient_scope", "error_description": "userinfo needs a token with the openid scope"})));
    }
    let hf = state.hf.clone();
    let ep = state.endpoints();
    let v = web::block(move || {
        let mut conn = hf.db.conn()?;
        oauth::userinfo(&mut conn, &caller.0, &ep)
    })
    .await??;
    Ok(HttpResponse::Ok().json(v))
}

/// RFC 7591 dynamic registration, for public and asymmetric clients, when the operator enabled it.
async fn register(state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    if !state.hf.config.open_registration {
        return oauth_error(&OAuthError::new(
            ErrorCode::AccessDenied,
            "self-registration is disabled here: ask the operator to register your app",
        ));
    }
    let parsed = super::extract::json(&body)
        .map_err(|e| e.to_string())
        .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()));
    let r: crate::auth::clients::Registration = match parsed {
        Ok(r) => r,
        Err(e) => {
            return HttpResponse::BadRequest()
                .json(serde_json::json!({"error": "invalid_client_metadata", "error_description": e.to_string()}))
        }
    };
    let db = state.hf.db.clone();
    let out = web::block(move || db.transaction(|c| crate::auth::clients::register_dynamic(c, &r))).await;
    match out {
        Ok(Ok(v)) => HttpResponse::Created().insert_header((header::CACHE_CONTROL, "no-store")).json(v),
        Ok(Err(e)) => HttpResponse::BadRequest()
            .json(serde_json::json!({"error": "invalid_client_metadata", "error_description": e.to_string()})),
        Err(_) => oauth_error(&OAuthError::server("worker pool unavailable")),
    }
}
