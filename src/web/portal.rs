//! The patient portal's pages: the signed-in session decides whose record is shown (never an id in
//! the URL), every form carries the session's CSRF token, and errors are pages, not stack traces.

use super::oauth::{current_session, login_page};
use super::pages::{html, page_error, see_other};
use super::AppState;
use crate::auth::session::{self, Session};
use crate::portal::{self, AllergyLine, MedicineLine, Person, Share};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(|| async { see_other("/portal") }))
        .route("/portal", web::get().to(home))
        .route("/portal/login", web::get().to(login))
        .route("/portal/logout", web::post().to(logout))
        .route("/portal/medicines", web::get().to(medicines))
        .route("/portal/medicines/add", web::get().to(add_form))
        .route("/portal/medicines/add", web::post().to(add))
        .route("/portal/print", web::get().to(print))
        .route("/portal/sharing", web::get().to(sharing))
        .route("/portal/sharing", web::post().to(share))
        .route("/portal/sharing/{id}/revoke", web::post().to(revoke))
        .route("/portal/access-log", web::get().to(access_log))
        .route("/portal/access-log.csv", web::get().to(access_log_csv));
}

#[derive(Template)]
#[template(path = "portal_home.html")]
struct HomePage {
    csrf: String,
    person: Person,
    current: Vec<MedicineLine>,
    allergies: Vec<AllergyLine>,
}

#[derive(Template)]
#[template(path = "portal_medicines.html")]
struct MedicinesPage {
    csrf: String,
    medicines: Vec<MedicineLine>,
}

#[derive(Template)]
#[template(path = "portal_print.html")]
struct PrintPage {
    person: Person,
    current: Vec<MedicineLine>,
    allergies: Vec<AllergyLine>,
    today: String,
}

#[derive(Template)]
#[template(path = "portal_add.html")]
struct AddPage {
    csrf: String,
    error: Option<String>,
    choices: Vec<(&'static str, &'static str)>,
}

#[derive(Template)]
#[template(path = "portal_sharing.html")]
struct SharingPage {
    csrf: String,
    shares: Vec<Share>,
    providers: Vec<(String, String)>,
    notice: Option<String>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "portal_log.html")]
struct LogPage {
    csrf: String,
    from: String,
    to: String,
    rows: Vec<(String, String, String, String)>,
}

/// The signed-in patient, or the response that sends them to sign in.
async fn patient(req: &HttpRequest, state: &web::Data<AppState>) -> Result<(Session, String), HttpResponse> {
    let Some(s) = current_session(req, state).await else { return Err(see_other("/portal/login")) };
    match s.account.patient_id().map(str::to_string) {
        Some(p) => Ok((s, p)),
        None => {
            Err(page_error(StatusCode::FORBIDDEN, "This portal is for patients", "Sign in with a patient account."))
        }
    }
}

fn failed() -> HttpResponse {
    page_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "Your record could not be shown just now. Please try again.",
    )
}

async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::fhir::FhirError> + Send + 'static,
) -> Result<T, HttpResponse> {
    match web::block(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::warn!("portal: {e}");
            Err(failed())
        }
        Err(_) => Err(failed()),
    }
}

macro_rules! signed_in {
    ($req:expr, $state:expr) => {
        match patient(&$req, &$state).await {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

macro_rules! or_page {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

async fn login(state: web::Data<AppState>) -> HttpResponse {
    login_page(&state, None, None, "/portal".into(), String::new())
}

async fn home(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (s, p) = signed_in!(req, state);
    let store = state.hf.store.clone();
    let ctx = portal::patient_context(&p, &s.account.id);
    let (person, meds, allergies) = or_page!(
        run(move || Ok((
            portal::person(&store, &ctx, &p)?,
            portal::medicines(&store, &ctx, &p)?,
            portal::allergies(&store, &ctx, &p)?
        )))
        .await
    );
    let current = meds.into_iter().filter(|m| m.current).collect();
    html(StatusCode::OK, HomePage { csrf: s.row.csrf, person, current, allergies }.render())
}

async fn medicines(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (s, p) = signed_in!(req, state);
    let store = state.hf.store.clone();
    let ctx = portal::patient_context(&p, &s.account.id);
    let medicines = or_page!(run(move || portal::medicines(&store, &ctx, &p)).await);
    html(StatusCode::OK, MedicinesPage { csrf: s.row.csrf, medicines }.render())
}

async fn print(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (s, p) = signed_in!(req, state);
    let store = state.hf.store.clone();
    let ctx = portal::patient_context(&p, &s.account.id);
    let (person, meds, allergies) = or_page!(
        run(move || Ok((
            portal::person(&store, &ctx, &p)?,
            portal::medicines(&store, &ctx, &p)?,
            portal::allergies(&store, &ctx, &p)?
        )))
        .await
    );
    let current = meds.into_iter().filter(|m| m.current).collect();
    html(StatusCode::OK, PrintPage { person, current, allergies, today: crate::fhir::time::today() }.render())
}

fn choices() -> Vec<(&'static str, &'static str)> {
    crate::cli::demo_data::medicine_choices()
}

async fn add_form(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (s, _) = signed_in!(req, state);
    html(StatusCode::OK, AddPage { csrf: s.row.csrf, error: None, choices: choices() }.render())
}

#[derive(Deserialize)]
struct AddForm {
    csrf: String,
    medicine: String,
    dose: String,
    start: String,
}

async fn add(req: HttpRequest, state: web::Data<AppState>, form: web::Form<AddForm>) -> HttpResponse {
    let (s, p) = signed_in!(req, state);
    let f = form.into_inner();
    if f.csrf != s.row.csrf {
        return page_error(StatusCode::FORBIDDEN, "This form has expired", "Go back, reload the page and try again.");
    }
    let Some((code, name)) = choices().into_iter().find(|(c, _)| *c == f.medicine) else {
        return html(
            StatusCode::BAD_REQUEST,
            AddPage { csrf: s.row.csrf, error: Some("Choose a medicine from the list.".into()), choices: choices() }
                .render(),
        );
    };
    let store = state.hf.store.clone();
    let ctx = portal::patient_context(&p, &s.account.id);
    match web::block(move || portal::add_taken(&store, &ctx, &p, code, name, &f.dose, &f.start)).await {
        Ok(Ok(_)) => see_other("/portal/medicines"),
        Ok(Err(e)) => html(
            StatusCode::BAD_REQUEST,
            AddPage { csrf: s.row.csrf, error: Some(e.to_string()), choices: choices() }.render(),
        ),
        Err(_) => failed(),
    }
}

async fn sharing_page(
    state: &web::Data<AppState>,
    s: Session,
    p: String,
    notice: Option<String>,
    error: Option<String>,
) -> HttpResponse {
    let db = state.hf.db.clone();
    let (shares, providers) = or_page!(run(move || Ok((portal::sharing(&db, &p)?, portal::providers(&db)?))).await);
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    html(status, SharingPage { csrf: s.row.csrf, shares, providers, notice, error }.render())
}

async fn sharing(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (s, p) = signed_in!(req, state);
    sharing_page(&state, s, p, None, None).await
}

async fn share(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let (s, p) = signed_in!(req, state);
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    if get("csrf") != s.row.csrf {
        return page_error(StatusCode::FORBIDDEN, "This form has expired", "Go back, reload the page and try again.");
    }
    let scope = form.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(" ");
    if scope.is_empty() {
        return sharing_page(&state, s, p, None, Some("Choose at least one thing they may do.".into())).await;
    }
    let (org, until) = (get("organization"), get("until"));
    let db = state.hf.db.clone();
    let pid = p.clone();
    match web::block(move || portal::share_with(&db, &pid, &org, &scope, Some(&until))).await {
        Ok(Ok(())) => {
            sharing_page(&state, s, p, Some("Shared. The provider can use your record from now on.".into()), None).await
        }
        Ok(Err(e)) => sharing_page(&state, s, p, None, Some(e.to_string())).await,
        Err(_) => failed(),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let (s, p) = signed_in!(req, state);
    if form.csrf != s.row.csrf {
        return page_error(StatusCode::FORBIDDEN, "This form has expired", "Go back, reload the page and try again.");
    }
    let db = state.hf.db.clone();
    let (pid, grant) = (p.clone(), path.into_inner());
    match web::block(move || portal::stop_sharing(&db, &pid, &grant)).await {
        Ok(Ok(())) => {
            sharing_page(
                &state,
                s,
                p,
                Some("Access ended. Their very next request for your record will be refused.".into()),
                None,
            )
            .await
        }
        Ok(Err(_)) => page_error(StatusCode::NOT_FOUND, "Not found", "There is no such sharing on your record."),
        Err(_) => failed(),
    }
}

async fn logout(req: HttpRequest, state: web::Data<AppState>, form: web::Form<CsrfForm>) -> HttpResponse {
    let Some(s) = current_session(&req, &state).await else { return see_other("/portal/login") };
    if form.csrf != s.row.csrf {
        return page_error(StatusCode::FORBIDDEN, "This form has expired", "Go back, reload the page and try again.");
    }
    let cookie = req.cookie(session::COOKIE).map(|c| c.value().to_string()).unwrap_or_default();
    let db = state.hf.db.clone();
    let _ = web::block(move || {
        db.conn().map_err(crate::auth::AuthError::from).and_then(|mut c| session::end(&mut c, &cookie))
    })
    .await;
    see_other("/portal/login")
}

#[derive(Deserialize)]
struct Range {
    from: Option<String>,
    to: Option<String>,
}

fn log_rows(rows: Vec<crate::audit::AuditRow>) -> Vec<(String, String, String, String)> {
    rows.into_iter()
        .map(|r| {
            let what = match (&r.res_type, &r.res_id, r.count) {
                (Some(t), Some(id), _) => format!("{} {t}/{id}", r.interaction),
                (Some(t), None, Some(n)) => format!("{} {t} ({n} results)", r.interaction),
                _ => format!("{} {}", r.interaction, r.query.clone().unwrap_or_default()),
            };
            let outcome = if r.outcome == 0 {
                "allowed".to_string()
            } else {
                format!("refused: {}", r.detail.clone().unwrap_or_default())
            };
            let who =
                format!("{} ({})", r.subject.clone().unwrap_or_default(), r.client_id.clone().unwrap_or_default());
            (crate::fhir::time::format_instant(r.recorded), who, what, outcome)
        })
        .collect()
}

async fn log_data(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    q: &Range,
) -> Result<(Session, Vec<(String, String, String, String)>), HttpResponse> {
    let (s, p) = patient(req, state).await?;
    state.hf.store.audit.flush();
    let db = state.hf.db.clone();
    let (from, to) = (q.from.clone(), q.to.clone());
    let rows = run(move || portal::access_log(&db, &p, from.as_deref(), to.as_deref())).await?;
    Ok((s, log_rows(rows)))
}

async fn access_log(req: HttpRequest, state: web::Data<AppState>, q: web::Query<Range>) -> HttpResponse {
    let (s, rows) = or_page!(log_data(&req, &state, &q).await);
    let (from, to) = (q.from.clone().unwrap_or_default(), q.to.clone().unwrap_or_default());
    html(StatusCode::OK, LogPage { csrf: s.row.csrf, from, to, rows }.render())
}

fn csv_field(s: &str) -> String {
    // Quote everything and defuse spreadsheet formulas.
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
    format!("\"{}\"", s.replace('"', "\"\""))
}

async fn access_log_csv(req: HttpRequest, state: web::Data<AppState>, q: web::Query<Range>) -> HttpResponse {
    let (_, rows) = or_page!(log_data(&req, &state, &q).await);
    let mut out = String::from("when,who,what,outcome\n");
    for (a, b, c, d) in rows {
        out.push_str(&[a, b, c, d].iter().map(|x| csv_field(x)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("Content-Disposition", "attachment; filename=\"access-log.csv\""))
        .insert_header(("Cache-Control", "no-store"))
        .body(out)
}
