//! The patient portal's pages. Thin: session → the patient's own [`AccessContext`] → a
//! `crate::portal` function → a template. The session decides whose record is shown (never an id
//! in the URL), every form carries the session's CSRF token, and errors are pages, not traces.

use super::oauth::{current_session, login_page, session_cookie};
use super::pages::{html, page_error, see_other};
use super::AppState;
use crate::access::AccessContext;
use crate::auth::session::{self, Session};
use crate::portal::access_log::{self, LogView, Period};
use crate::portal::account::{self, PasswordChange};
use crate::portal::dates::{self, DateError, DateInput};
use crate::portal::sharing::{self, NewShare, PERMISSIONS};
use crate::portal::taken::{self, Added, NewTaken};
use crate::portal::{allergies, detail, home, medicines, PortalError};
use crate::portal::{AccountView, AllergyLine, Home, MedicineDetail, MedicineEntry, Person};
use crate::portal::{ProblemLine, Provider, Share};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

/// Template filters: a FHIR date (`2025-03-14`) as the portal shows it (`14 March 2025`).
mod filters {
    pub fn long_date<T: std::fmt::Display>(s: T) -> askama::Result<String> {
        Ok(crate::portal::dates::long_date(&s.to_string()))
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(|| async { see_other("/portal") }))
        .route("/portal", web::get().to(home_page))
        .route("/portal/login", web::get().to(login))
        .route("/portal/logout", web::post().to(logout))
        .route("/portal/medicines", web::get().to(medicines_page))
        .route("/portal/timeline", web::get().to(timeline_page))
        .route("/portal/medicines/add", web::get().to(add_form))
        .route("/portal/medicines/add", web::post().to(add))
        .route("/portal/medicines/{id}/stop", web::post().to(stop))
        .route("/portal/medicines/{kind}/{id}", web::get().to(detail_page))
        .route("/portal/allergies", web::get().to(allergies_page))
        .route("/portal/print", web::get().to(print))
        .route("/portal/sharing", web::get().to(sharing_get))
        .route("/portal/sharing", web::post().to(share))
        .route("/portal/sharing/{id}/revoke", web::post().to(revoke))
        .route("/portal/sharing/{id}/change", web::post().to(change_share))
        .route("/portal/access-log", web::get().to(log_page))
        .route("/portal/access-log.csv", web::get().to(log_csv))
        .route("/portal/account", web::get().to(account_get))
        .route("/portal/account/password", web::post().to(change_password))
        .route("/portal/account/sign-out-everywhere", web::post().to(sign_out_everywhere));
}

#[derive(Template)]
#[template(path = "portal_home.html")]
struct HomePage {
    section: &'static str,
    csrf: String,
    home: Home,
}

#[derive(Template)]
#[template(path = "portal_medicines.html")]
struct MedicinesPage {
    section: &'static str,
    csrf: String,
    medicines: Vec<MedicineEntry>,
    notice: Option<String>,
}

#[derive(Template)]
#[template(path = "portal_timeline.html")]
struct TimelinePage {
    section: &'static str,
    csrf: String,
    timeline: crate::portal::timeline::Timeline,
    medicines: Vec<MedicineEntry>,
}

#[derive(Template)]
#[template(path = "portal_medicine.html")]
struct DetailPage {
    section: &'static str,
    csrf: String,
    d: MedicineDetail,
}

#[derive(Template)]
#[template(path = "portal_add.html")]
struct AddPage {
    section: &'static str,
    csrf: String,
    error: Option<String>,
    choices: Vec<(&'static str, &'static str)>,
    form: NewTaken,
}

impl AddPage {
    /// The option to show chosen: what was sent back, else "Choose a medicine" (never a
    /// medicine: one sent untouched would add a medicine the patient did not pick).
    fn selected(&self, code: &str) -> bool {
        self.form.code == code
    }

    fn other(&self) -> &'static str {
        taken::OTHER
    }

    /// The start date's problem, once the form has been sent back with one.
    fn start_error(&self) -> Option<DateError> {
        self.error.as_ref()?;
        self.form.start_error()
    }
}

/// "Check before you add": what the safety checks found, before anything is saved; the form's
/// values travel on in hidden fields to "Save anyway" or back to the form.
#[derive(Template)]
#[template(path = "portal_add_check.html")]
struct AddCheckPage {
    section: &'static str,
    csrf: String,
    medicine: String,
    warnings: Vec<String>,
    form: NewTaken,
}

#[derive(Template)]
#[template(path = "portal_allergies.html")]
struct AllergiesPage {
    section: &'static str,
    csrf: String,
    allergies: Vec<AllergyLine>,
    problems: Vec<ProblemLine>,
}

#[derive(Template)]
#[template(path = "portal_print.html")]
struct PrintPage {
    person: Person,
    current: Vec<MedicineEntry>,
    allergies: Vec<AllergyLine>,
    today: String,
}

#[derive(Template)]
#[template(path = "portal_sharing.html")]
struct SharingPage {
    section: &'static str,
    csrf: String,
    shares: Vec<Share>,
    providers: Vec<Provider>,
    permissions: &'static [(&'static str, &'static str, &'static str)],
    notice: Option<String>,
    error: Option<String>,
}

impl SharingPage {
    fn boxes(&self, iso: &str) -> DateInput {
        DateInput::from_iso(iso)
    }

    /// No error against the date boxes (it is in the page's summary).
    fn no_error(&self) -> Option<DateError> {
        None
    }
}

/// The sharing form's optional end date, as `YYYY-MM-DD` (empty boxes: until the patient stops it).
const UNTIL: &str = "the date sharing ends";

#[derive(Template)]
#[template(path = "portal_log.html")]
struct LogPage {
    section: &'static str,
    csrf: String,
    period: Period,
    /// The period's date boxes as typed (or as the period's dates).
    boxes: [DateInput; 2],
    log: LogView,
    error: Option<String>,
}

/// How the access log's dates are named in their messages.
const PERIOD_DATES: [&str; 2] = ["the start of the period", "the end of the period"];

impl LogPage {
    /// What is wrong with the period's `i`th date as typed, shown against its boxes.
    fn date_error(&self, i: usize) -> Option<DateError> {
        self.error.as_ref()?;
        self.boxes.get(i)?.optional_iso(PERIOD_DATES.get(i)?).err()
    }

    fn chosen(&self, who: &str) -> bool {
        self.period.who == who
    }

    /// The filters as a query string, for the CSV link and the next page.
    fn query(&self) -> String {
        let own = if self.period.own { "yes" } else { "" };
        let fields =
            [("from", self.period.from.as_str()), ("to", &self.period.to), ("who", &self.period.who), ("own", own)];
        serde_urlencoded::to_string(fields).unwrap_or_default()
    }
}

#[derive(Template)]
#[template(path = "portal_account.html")]
struct AccountPage {
    section: &'static str,
    csrf: String,
    account: AccountView,
    notice: Option<String>,
    error: Option<String>,
}

/// The signed-in patient: their session and their own access context.
struct Patient {
    session: Session,
    ctx: AccessContext,
}

impl Patient {
    fn csrf(&self) -> String {
        self.session.row.csrf.clone()
    }
}

async fn signed_in(req: &HttpRequest, state: &web::Data<AppState>) -> Result<Patient, HttpResponse> {
    let Some(session) = current_session(req, state).await else { return Err(see_other("/portal/login")) };
    let Some(patient) = session.account.patient_id().map(str::to_string) else {
        return Err(page_error(
            StatusCode::FORBIDDEN,
            "This portal is for patients",
            "Sign in with a patient account.",
        ));
    };
    super::oauth::record_held(state, &patient, &session.row.csrf).await?;
    let ctx = AccessContext::patient_self(&patient, &session.account.id);
    Ok(Patient { session, ctx })
}

/// The form fields of a POST body; a malformed body is simply a form with nothing in it.
struct Fields(Vec<(String, String)>);

impl Fields {
    fn parse(body: &[u8]) -> Fields {
        Fields(serde_urlencoded::from_bytes(body).unwrap_or_default())
    }
    fn get(&self, k: &str) -> String {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default()
    }
    /// The three boxes of the date input called `name` (`templates/portal_date_input.html`).
    fn date(&self, name: &str) -> DateInput {
        let part = |p: &str| self.get(&format!("{name}-{p}"));
        DateInput { day: part("day"), month: part("month"), year: part("year") }
    }
    fn all(&self, k: &str) -> Vec<String> {
        self.0.iter().filter(|(n, _)| n == k).map(|(_, v)| v.clone()).collect()
    }
}

/// The signed-in patient, once the form proves it came from one of our pages (CSRF).
async fn signed_form(req: &HttpRequest, state: &web::Data<AppState>, f: &Fields) -> Result<Patient, HttpResponse> {
    let p = signed_in(req, state).await?;
    if f.get("csrf") != p.session.row.csrf {
        return Err(page_error(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "Go back, reload the page and try again.",
        ));
    }
    Ok(p)
}

/// The page for a failed portal call: what the patient can act on, never internals.
fn error_page(e: &PortalError) -> HttpResponse {
    match e {
        PortalError::Invalid(m) => page_error(StatusCode::BAD_REQUEST, "There is a problem", m),
        PortalError::NotFound | PortalError::Fhir(crate::fhir::FhirError::NotFound(_)) => {
            page_error(StatusCode::NOT_FOUND, "Not found", "There is nothing with that name on your record.")
        }
        PortalError::NoPatient => {
            page_error(StatusCode::FORBIDDEN, "This portal is for patients", "Sign in with a patient account.")
        }
        PortalError::Fhir(crate::fhir::FhirError::Forbidden(_)) => {
            page_error(StatusCode::FORBIDDEN, "Not allowed", "Your account may not do this.")
        }
        other => {
            tracing::error!("portal: {other}");
            page_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Your record could not be shown just now. Please try again.",
            )
        }
    }
}

/// Runs a (blocking) portal call off the async workers.
async fn call<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PortalError> + Send + 'static,
) -> Result<Result<T, PortalError>, HttpResponse> {
    web::block(f)
        .await
        .map_err(|_| page_error(StatusCode::SERVICE_UNAVAILABLE, "Please try again", "The service is busy just now."))
}

/// Like [`call`], with every error already a page.
async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PortalError> + Send + 'static,
) -> Result<T, HttpResponse> {
    call(f).await?.map_err(|e| error_page(&e))
}

macro_rules! or_page {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

/// A validation message to show on the form, or (returned at once) the error page for anything else.
macro_rules! form_message {
    ($e:expr) => {
        match $e {
            PortalError::Invalid(m) => m,
            other => return error_page(&other),
        }
    };
}

async fn login(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if current_session(&req, &state).await.is_some_and(|s| s.account.patient_id().is_some()) {
        return see_other("/portal");
    }
    login_page(&state, None, None, "/portal".into(), String::new())
}

async fn logout(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let f = Fields::parse(&body);
    let Some(s) = current_session(&req, &state).await else { return see_other("/portal/login") };
    if f.get("csrf") != s.row.csrf {
        return page_error(StatusCode::FORBIDDEN, "This form has expired", "Go back, reload the page and try again.");
    }
    let cookie = req.cookie(session::COOKIE).map(|c| c.value().to_string()).unwrap_or_default();
    let db = state.hf.db.clone();
    let ended = web::block(move || {
        db.conn().map_err(crate::auth::AuthError::from).and_then(|mut c| session::end(&mut c, &cookie))
    })
    .await;
    if !matches!(ended, Ok(Ok(()))) {
        return error_page(&PortalError::Invalid("You could not be signed out. Please try again.".into()));
    }
    signed_out(&state)
}

/// To the sign-in page, with the browser's session cookie removed.
fn signed_out(state: &AppState) -> HttpResponse {
    let mut r = see_other("/portal/login");
    let mut gone = session_cookie(state, String::new());
    gone.make_removal();
    let _ = r.add_cookie(&gone);
    r
}

async fn home_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let p = or_page!(signed_in(&req, &state).await);
    let (store, ctx, account) = (state.hf.store.clone(), p.ctx.clone(), p.session.account.id.clone());
    let home = or_page!(
        run(move || {
            let previous = crate::auth::accounts::previous_visit(&mut store.db.conn()?, &account)?;
            home::home(&store, &ctx, previous)
        })
        .await
    );
    html(StatusCode::OK, HomePage { section: "home", csrf: p.csrf(), home }.render())
}

async fn medicines_list(state: &web::Data<AppState>, p: &Patient, notice: Option<String>) -> HttpResponse {
    let (store, ctx) = (state.hf.store.clone(), p.ctx.clone());
    let medicines = or_page!(run(move || medicines::medicines(&store, &ctx)).await);
    html(StatusCode::OK, MedicinesPage { section: "medicines", csrf: p.csrf(), medicines, notice }.render())
}

async fn medicines_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let p = or_page!(signed_in(&req, &state).await);
    medicines_list(&state, &p, None).await
}

async fn timeline_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let p = or_page!(signed_in(&req, &state).await);
    let (store, ctx) = (state.hf.store.clone(), p.ctx.clone());
    let medicines = or_page!(run(move || medicines::medicines(&store, &ctx)).await);
    let timeline = crate::portal::timeline::timeline(&medicines, &dates::today_in_england().to_string());
    html(StatusCode::OK, TimelinePage { section: "timeline", csrf: p.csrf(), timeline, medicines }.render())
}

async fn detail_page(req: HttpRequest, state: web::Data<AppState>, path: web::Path<(String, String)>) -> HttpResponse {
    let p = or_page!(signed_in(&req, &state).await);
    let (kind, id) = path.into_inner();
    let (store, ctx) = (state.hf.store.clone(), p.ctx.clone());
    let d = or_page!(run(move || detail::detail(&store, &ctx, &kind, &id)).await);
    html(StatusCode::OK, DetailPage { section: "medicines", csrf: p.csrf(), d }.render())
}

fn add_page(csrf: String, error: Option<String>, form: NewTaken) -> HttpResponse {
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    html(status, AddPage { section: "medicines", csrf, error, choices: taken::choices(), form }.render())
}

async fn add_form(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let p = or_page!(signed_in(&req, &state).await);
    let form = NewTaken { start: DateInput::from_iso(&dates::today_in_england().to_string()), ..NewTaken::default() };
    add_page(p.csrf(), None, form)
}

async fn add(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let f = Fields::parse(&body);
    let p = or_page!(signed_form(&req, &state, &f).await);
    let new = NewTaken { code: f.get("medicine"), other: f.get("other"), dose: f.get("dose"), start: f.date("start") };
    if f.get("back") == "yes" {
        return add_page(p.csrf(), None, new);
    }
    let confirmed = f.get("confirm") == "yes";
    let (store, ctx, form) = (state.hf.store.clone(), p.ctx.clone(), new.clone());
    match or_page!(call(move || taken::add_taken(&store, &ctx, &form, confirmed)).await) {
        Ok(Added::Saved(_)) => see_other("/portal/medicines"),
        Ok(Added::Check { medicine, warnings }) => {
            let page = AddCheckPage { section: "medicines", csrf: p.csrf(), medicine, warnings, form: new };
            html(StatusCode::OK, page.render())
        }
        Err(e) => add_page(p.csrf(), Some(form_message!(e)), new),
    }
}

async fn stop(req: HttpRequest, state: web::Data<AppState>, path: web::Path<String>, body: web::Bytes) -> HttpResponse {
    let f = Fields::parse(&body);
    let p = or_page!(signed_form(&req, &state, &f).await);
    let (store, ctx, id) = (state.hf.store.clone(), p.ctx.clone(), path.into_inner());
    or_page!(run(move || taken::stop_taken(&store, &ctx, &id)).await);
    medicines_list(&state, &p, Some("Recorded: you no longer take that medicine.".into())).await
}

async fn allergies_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let p = or_page!(signed_in(&req, &state).await);
    let (store, ctx) = (state.hf.store.clone(), p.ctx.clone());
    let (allergies, problems) =
        or_page!(run(move || Ok((allergies::allergies(&store, &ctx)?, allergies::problems(&store, &ctx)?))).await);
    html(StatusCode::OK, AllergiesPage { section: "allergies", csrf: p.csrf(), allergies, problems }.render())
}

async fn print(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let p = or_page!(signed_in(&req, &state).await);
    let (store, ctx) = (state.hf.store.clone(), p.ctx.clone());
    let h = or_page!(run(move || home::home(&store, &ctx, None)).await);
    let today = dates::today_in_england().to_string();
    html(StatusCode::OK, PrintPage { person: h.person, current: h.current, allergies: h.allergies, today }.render())
}

async fn sharing_page(
    state: &web::Data<AppState>,
    p: &Patient,
    notice: Option<String>,
    error: Option<String>,
) -> HttpResponse {
    let (db, ctx) = (state.hf.db.clone(), p.ctx.clone());
    let (shares, providers) = or_page!(run(move || Ok((sharing::sharing(&db, &ctx)?, sharing::providers(&db)?))).await);
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let page =
        SharingPage { section: "sharing", csrf: p.csrf(), shares, providers, permissions: PERMISSIONS, notice, error };
    html(status, page.render())
}

async fn sharing_get(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let p = or_page!(signed_in(&req, &state).await);
    sharing_page(&state, &p, None, None).await
}

async fn share(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let f = Fields::parse(&body);
    let p = or_page!(signed_form(&req, &state, &f).await);
    let until = match f.date("until").optional_iso(UNTIL) {
        Ok(u) => u,
        Err(e) => return sharing_page(&state, &p, None, Some(e.message)).await,
    };
    let new = NewShare { organization: f.get("organization"), permissions: f.all("permission"), until };
    let (db, ctx) = (state.hf.db.clone(), p.ctx.clone());
    match or_page!(call(move || sharing::share_with(&db, &ctx, &new)).await) {
        Ok(()) => {
            let notice = "Shared. The provider can use your record from now on, within what you chose.";
            sharing_page(&state, &p, Some(notice.into()), None).await
        }
        Err(e) => sharing_page(&state, &p, None, Some(form_message!(e))).await,
    }
}

async fn change_share(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let f = Fields::parse(&body);
    let p = or_page!(signed_form(&req, &state, &f).await);
    let until = match f.date("until").optional_iso(UNTIL) {
        Ok(u) => u,
        Err(e) => return sharing_page(&state, &p, None, Some(e.message)).await,
    };
    let new = NewShare { organization: String::new(), permissions: f.all("permission"), until };
    let (db, ctx, grant) = (state.hf.db.clone(), p.ctx.clone(), path.into_inner());
    match or_page!(call(move || sharing::change_sharing(&db, &ctx, &grant, &new)).await) {
        Ok(()) => {
            let notice = "Changed. From their next request, they may do only what you chose now.";
            sharing_page(&state, &p, Some(notice.into()), None).await
        }
        Err(e) => sharing_page(&state, &p, None, Some(form_message!(e))).await,
    }
}

async fn revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let f = Fields::parse(&body);
    let p = or_page!(signed_form(&req, &state, &f).await);
    let (db, ctx, grant) = (state.hf.db.clone(), p.ctx.clone(), path.into_inner());
    or_page!(run(move || sharing::stop_sharing(&db, &ctx, &grant)).await);
    let notice = "Access ended. Their very next request for your record will be refused.";
    sharing_page(&state, &p, Some(notice.into()), None).await
}

/// The access log's filters. Its dates come from the date boxes (`from-day`, …), or as
/// `YYYY-MM-DD` in `from` and `to` from the page's own links (next page, CSV). Also the boxes, to
/// show again, and what is wrong with a typed date.
fn period(req: &HttpRequest) -> (Period, [DateInput; 2], Option<String>) {
    let q: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let mut error = None;
    let mut date = |k: &str, what: &str| {
        let boxes = DateInput {
            day: get(&format!("{k}-day")),
            month: get(&format!("{k}-month")),
            year: get(&format!("{k}-year")),
        };
        if boxes.is_empty() {
            return (get(k), DateInput::from_iso(&get(k)));
        }
        match boxes.optional_iso(what) {
            Ok(iso) => (iso, boxes),
            Err(e) => {
                error.get_or_insert(e.message);
                (String::new(), boxes)
            }
        }
    };
    let (from, from_boxes) = date("from", PERIOD_DATES[0]);
    let (to, to_boxes) = date("to", PERIOD_DATES[1]);
    (
        Period { from, to, who: get("who"), own: get("own") == "yes", before: get("before").parse().ok() },
        [from_boxes, to_boxes],
        error,
    )
}

async fn log_rows(state: &web::Data<AppState>, p: &Patient, period: &Period) -> Result<LogView, PortalError> {
    let (store, ctx, period) = (state.hf.store.clone(), p.ctx.clone(), period.clone());
    match call(move || access_log::access_log(&store, &ctx, &period)).await {
        Ok(r) => r,
        Err(_) => Err(PortalError::Invalid("The service is busy just now. Please try again.".into())),
    }
}

async fn log_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let p = or_page!(signed_in(&req, &state).await);
    let (period, boxes, typed) = period(&req);
    let rows = match typed {
        Some(m) => Err(PortalError::Invalid(m)),
        None => log_rows(&state, &p, &period).await,
    };
    let (log, error) = match rows {
        Ok(log) => (log, None),
        Err(e) => (LogView::default(), Some(form_message!(e))),
    };
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    html(status, LogPage { section: "log", csrf: p.csrf(), period, boxes, log, error }.render())
}

async fn log_csv(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let p = or_page!(signed_in(&req, &state).await);
    let (store, ctx, period) = (state.hf.store.clone(), p.ctx.clone(), period(&req).0);
    let rows = or_page!(run(move || access_log::access_log_all(&store, &ctx, &period)).await);
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("Content-Disposition", "attachment; filename=\"access-log.csv\""))
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(access_log::to_csv(&rows))
}

async fn account_page(
    state: &web::Data<AppState>,
    p: &Patient,
    notice: Option<String>,
    error: Option<String>,
) -> HttpResponse {
    let (db, ctx, current) = (state.hf.db.clone(), p.ctx.clone(), p.session.row.id_hash.clone());
    let account = or_page!(run(move || account::account_view(&db, &ctx, &current)).await);
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    html(status, AccountPage { section: "account", csrf: p.csrf(), account, notice, error }.render())
}

async fn account_get(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let p = or_page!(signed_in(&req, &state).await);
    account_page(&state, &p, None, None).await
}

async fn change_password(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let f = Fields::parse(&body);
    let p = or_page!(signed_form(&req, &state, &f).await);
    let change = PasswordChange { current: f.get("current"), new: f.get("new"), confirm: f.get("confirm") };
    let (db, ctx) = (state.hf.db.clone(), p.ctx.clone());
    match or_page!(call(move || account::change_password(&db, &ctx, &change)).await) {
        Ok(()) => account_page(&state, &p, Some("Your password has been changed.".into()), None).await,
        Err(e) => account_page(&state, &p, None, Some(form_message!(e))).await,
    }
}

async fn sign_out_everywhere(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let f = Fields::parse(&body);
    let p = or_page!(signed_form(&req, &state, &f).await);
    let (db, ctx) = (state.hf.db.clone(), p.ctx.clone());
    or_page!(run(move || account::sign_out_everywhere(&db, &ctx)).await);
    signed_out(&state)
}
