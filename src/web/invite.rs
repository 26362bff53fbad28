//! One-time links: `/portal/invite/{code}` creates a patient's first login; `/portal/reset/{code}`
//! (issued by the operator) sets a new password. Each works once, then signs the person in.

use super::oauth::session_cookie;
use super::pages::{html, page_error, see_other};
use super::AppState;
use crate::auth::{invitations, password, session};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

const CSRF_COOKIE: &str = "hf_link_csrf";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/portal/invite/{code}", web::get().to(|s, p| form(s, p, Link::Invite)))
        .route("/portal/invite/{code}", web::post().to(|r, s, p, f| accept(r, s, p, f, Link::Invite)))
        .route("/portal/reset/{code}", web::get().to(|s, p| form(s, p, Link::Reset)))
        .route("/portal/reset/{code}", web::post().to(|r, s, p, f| accept(r, s, p, f, Link::Reset)));
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    Invite,
    Reset,
}

impl Link {
    fn path(self) -> &'static str {
        match self {
            Link::Invite => "/portal/invite",
            Link::Reset => "/portal/reset",
        }
    }
}

#[derive(Template)]
#[template(path = "portal_invite.html")]
struct LinkPage {
    action: String,
    reset: bool,
    csrf: String,
    email: String,
    error: Option<String>,
}

fn page(state: &AppState, link: Link, code: &str, email: String, error: Option<String>) -> HttpResponse {
    let csrf = password::random_token();
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let action = format!("{}/{code}", link.path());
    let body = LinkPage { action, reset: link == Link::Reset, csrf: csrf.clone(), email, error }.render();
    let mut r = html(status, body);
    let cookie = Cookie::build(CSRF_COOKIE, csrf)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.hf.config.base_url.starts_with("https://"))
        .path(link.path())
        .finish();
    let _ = r.add_cookie(&cookie);
    r
}

async fn form(state: web::Data<AppState>, path: web::Path<String>, link: Link) -> HttpResponse {
    let code = path.into_inner();
    let (db, c) = (state.hf.db.clone(), code.clone());
    let checked = web::block(move || {
        let mut conn = db.conn()?;
        match link {
            Link::Invite => invitations::check(&mut conn, &c),
            Link::Reset => invitations::check_reset(&mut conn, &c),
        }
    })
    .await;
    match checked {
        Ok(Ok(_)) => page(&state, link, &code, String::new(), None),
        Ok(Err(e)) => {
            page_error(StatusCode::NOT_FOUND, "This link cannot be used", &super::pages::sentence(&e.to_string()))
        }
        Err(_) => page_error(StatusCode::SERVICE_UNAVAILABLE, "Please try again", "The service is busy."),
    }
}

#[derive(Deserialize)]
struct LinkForm {
    csrf: String,
    #[serde(default)]
    email: String,
    password: String,
    confirm: String,
}

async fn accept(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    f: web::Form<LinkForm>,
    link: Link,
) -> HttpResponse {
    let (code, f) = (path.into_inner(), f.into_inner());
    if req.cookie(CSRF_COOKIE).map(|c| c.value().to_string()).as_deref() != Some(f.csrf.as_str()) {
        return page(&state, link, &code, f.email, Some("This form expired. Please try again.".into()));
    }
    if f.password != f.confirm {
        return page(&state, link, &code, f.email, Some("The two passwords are not the same.".into()));
    }
    let (db, c, email, pw) = (state.hf.db.clone(), code.clone(), f.email.clone(), f.password);
    let ua = req.headers().get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_string);
    let done = web::block(move || {
        db.transaction(|conn| {
            let account = match link {
                Link::Invite => invitations::accept(conn, &c, &email, &pw)?,
                Link::Reset => invitations::reset(conn, &c, &pw)?,
            };
            session::start(conn, &account.id, ua.as_deref())
        })
    })
    .await;
    match done {
        Ok(Ok(cookie)) => {
            let mut r = see_other("/portal");
            let _ = r.add_cookie(&session_cookie(&state, cookie));
            r
        }
        Ok(Err(e)) => page(&state, link, &code, f.email, Some(super::pages::sentence(&e.to_string()))),
        Err(_) => page_error(StatusCode::SERVICE_UNAVAILABLE, "Please try again", "The service is busy."),
    }
}
