//! Self sign-up at `/portal/signup`, only where the deployment enables it (`--open-signup`).

use super::oauth::session_cookie;
use super::pages::{html, page_error, see_other};
use super::AppState;
use crate::auth::{password, session};
use crate::portal::dates::{self, DateError, DateInput};
use crate::portal::registration::{self, NewPatient};
use crate::portal::PortalError;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

const CSRF_COOKIE: &str = "hf_signup_csrf";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/portal/signup", web::get().to(form)).route("/portal/signup", web::post().to(submit));
}

#[derive(Template)]
#[template(path = "portal_signup.html")]
struct SignupPage {
    csrf: String,
    form: SignupForm,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
struct SignupForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    given: String,
    #[serde(default)]
    family: String,
    /// The date of birth's boxes (templates/portal_date_input.html).
    #[serde(default, rename = "birth_date-day")]
    birth_day: String,
    #[serde(default, rename = "birth_date-month")]
    birth_month: String,
    #[serde(default, rename = "birth_date-year")]
    birth_year: String,
    #[serde(default)]
    nhs_number: String,
    #[serde(default)]
    email: String,
    #[serde(default, skip_serializing)]
    password: String,
    #[serde(default, skip_serializing)]
    confirm: String,
}

const BIRTH: &str = "your date of birth";

impl SignupForm {
    fn birth(&self) -> DateInput {
        DateInput { day: self.birth_day.clone(), month: self.birth_month.clone(), year: self.birth_year.clone() }
    }
}

impl SignupPage {
    /// The date of birth's problem, once the form has been sent back with one.
    fn birth_error(&self) -> Option<DateError> {
        self.error.as_ref()?;
        self.form.birth().parse_past(BIRTH, dates::today_in_england()).err()
    }
}

fn closed() -> HttpResponse {
    page_error(StatusCode::NOT_FOUND, "Sign-up is not open here", "Ask your GP practice or pharmacy for an invitation.")
}

fn page(state: &AppState, mut form: SignupForm, error: Option<String>) -> HttpResponse {
    let csrf = password::random_token();
    form.password.clear();
    form.confirm.clear();
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let mut r = html(status, SignupPage { csrf: csrf.clone(), form, error }.render());
    let cookie = Cookie::build(CSRF_COOKIE, csrf)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.hf.config.base_url.starts_with("https://"))
        .path("/portal/signup")
        .finish();
    let _ = r.add_cookie(&cookie);
    r
}

async fn form(state: web::Data<AppState>) -> HttpResponse {
    if !state.hf.config.open_signup {
        return closed();
    }
    page(&state, SignupForm::default(), None)
}

async fn submit(req: HttpRequest, state: web::Data<AppState>, f: web::Form<SignupForm>) -> HttpResponse {
    if !state.hf.config.open_signup {
        return closed();
    }
    let f = f.into_inner();
    if req.cookie(CSRF_COOKIE).map(|c| c.value().to_string()).as_deref() != Some(f.csrf.as_str()) {
        return page(&state, f, Some("This form expired. Please try again.".into()));
    }
    if f.password != f.confirm {
        return page(&state, f, Some("The two passwords are not the same.".into()));
    }
    let birth_date = match f.birth().parse_past(BIRTH, dates::today_in_england()) {
        Ok(d) => d.format("%Y-%m-%d").to_string(),
        Err(e) => return page(&state, f, Some(e.message)),
    };
    let new = NewPatient {
        nhs_number: f.nhs_number.clone(),
        given: f.given.clone(),
        family: f.family.clone(),
        birth_date,
        email: f.email.clone(),
        password: f.password.clone(),
    };
    let (store, ua) =
        (state.hf.store.clone(), req.headers().get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_string));
    let done = web::block(move || {
        let account = registration::sign_up(&store, &new)?;
        Ok::<_, PortalError>(session::start(&mut store.db.conn()?, &account.id, ua.as_deref())?)
    })
    .await;
    match done {
        Ok(Ok(cookie)) => {
            let mut r = see_other("/portal");
            let _ = r.add_cookie(&session_cookie(&state, cookie));
            r
        }
        Ok(Err(PortalError::Invalid(msg))) => page(&state, f, Some(msg)),
        Ok(Err(e)) => page(&state, f, Some(super::pages::sentence(&e.to_string()))),
        Err(_) => page_error(StatusCode::SERVICE_UNAVAILABLE, "Please try again", "The service is busy."),
    }
}
