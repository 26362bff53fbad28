//! First sign-in by invitation: `/portal/invite/{code}` creates the patient's login, once.

use super::oauth::session_cookie;
use super::pages::{html, page_error, see_other};
use super::AppState;
use crate::auth::{invitations, password, session};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

const CSRF_COOKIE: &str = "hf_invite_csrf";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/portal/invite/{code}", web::get().to(form)).route("/portal/invite/{code}", web::post().to(accept));
}

#[derive(Template)]
#[template(path = "portal_invite.html")]
struct InvitePage {
    code: String,
    csrf: String,
    email: String,
    error: Option<String>,
}

fn page(state: &AppState, code: String, email: String, error: Option<String>) -> HttpResponse {
    let csrf = password::random_token();
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let mut r = html(status, InvitePage { code, csrf: csrf.clone(), email, error }.render());
    let cookie = Cookie::build(CSRF_COOKIE, csrf)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.hf.config.base_url.starts_with("https://"))
        .path("/portal/invite")
        .finish();
    let _ = r.add_cookie(&cookie);
    r
}

async fn form(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let code = path.into_inner();
    let (db, c) = (state.hf.db.clone(), code.clone());
    match web::block(move || invitations::check(&mut db.conn()?, &c)).await {
        Ok(Ok(_)) => page(&state, code, String::new(), None),
        Ok(Err(e)) => page_error(StatusCode::NOT_FOUND, "This invitation cannot be used", &e.to_string()),
        Err(_) => page_error(StatusCode::SERVICE_UNAVAILABLE, "Please try again", "The service is busy."),
    }
}

#[derive(Deserialize)]
struct AcceptForm {
    csrf: String,
    email: String,
    password: String,
    confirm: String,
}

async fn accept(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    f: web::Form<AcceptForm>,
) -> HttpResponse {
    let (code, f) = (path.into_inner(), f.into_inner());
    if req.cookie(CSRF_COOKIE).map(|c| c.value().to_string()).as_deref() != Some(f.csrf.as_str()) {
        return page(&state, code, f.email, Some("This form expired. Please try again.".into()));
    }
    if f.password != f.confirm {
        return page(&state, code, f.email, Some("The two passwords are not the same.".into()));
    }
    let (db, c, email, pw) = (state.hf.db.clone(), code.clone(), f.email.clone(), f.password);
    let ua = req.headers().get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_string);
    let created = web::block(move || {
        db.transaction(|conn| {
            let account = invitations::accept(conn, &c, &email, &pw)?;
            session::start(conn, &account.id, ua.as_deref())
        })
    })
    .await;
    match created {
        Ok(Ok(cookie)) => {
            let mut r = see_other("/portal");
            let _ = r.add_cookie(&session_cookie(&state, cookie));
            r
        }
        Ok(Err(e)) => page(&state, code, f.email, Some(e.to_string())),
        Err(_) => page_error(StatusCode::SERVICE_UNAVAILABLE, "Please try again", "The service is busy."),
    }
}
