//! The portal's "bring your record" pages: send the patient to the partner, finish on return.

use super::oauth::signed_in;
use super::pages::{html, page_error, see_other};
use super::AppState;
use crate::access::AccessContext;
use crate::portability::transfer::{self, Partner};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/portal/transfer", web::get().to(page))
        .route("/portal/transfer", web::post().to(start))
        .route("/portal/transfer/callback", web::get().to(callback));
}

#[derive(Template)]
#[template(path = "portal_transfer.html")]
struct TransferPage {
    section: &'static str,
    csrf: String,
    partners: Vec<Partner>,
    notice: Option<String>,
    error: Option<String>,
    /// What the patient typed as the address, and what to correct in it.
    address: String,
    address_error: Option<String>,
}

fn redirect_uri(state: &AppState) -> String {
    format!("{}/portal/transfer/callback", state.hf.config.base_url)
}

/// What the page says: a notice, the other side's failure (502), or the patient's address to fix (400).
enum Outcome {
    Shown(Option<String>),
    Upstream(String),
    Address { typed: String, error: String },
}

async fn render(state: &web::Data<AppState>, csrf: String, outcome: Outcome) -> HttpResponse {
    let db = state.hf.db.clone();
    let partners = web::block(move || transfer::partners(&db)).await.ok().and_then(Result::ok).unwrap_or_default();
    let page = TransferPage {
        section: "transfer",
        csrf,
        partners,
        notice: None,
        error: None,
        address: String::new(),
        address_error: None,
    };
    let (status, page) = match outcome {
        Outcome::Shown(notice) => (StatusCode::OK, TransferPage { notice, ..page }),
        Outcome::Upstream(e) => (StatusCode::BAD_GATEWAY, TransferPage { error: Some(e), ..page }),
        Outcome::Address { typed, error } => (
            StatusCode::BAD_REQUEST,
            TransferPage { error: Some(error.clone()), address: typed, address_error: Some(error), ..page },
        ),
    };
    html(status, page.render())
}

async fn page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match signed_in(&req, &state).await {
        Ok((csrf, _)) => render(&state, csrf, Outcome::Shown(None)).await,
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct StartForm {
    csrf: String,
    #[serde(default)]
    partner: String,
    /// The FHIR address of a provider not in the list, typed by the patient.
    #[serde(default)]
    address: String,
    mode: Option<String>,
}

async fn start(req: HttpRequest, state: web::Data<AppState>, form: web::Form<StartForm>) -> HttpResponse {
    let (csrf, patient) = match signed_in(&req, &state).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if form.csrf != csrf {
        return page_error(StatusCode::FORBIDDEN, "This form has expired", "Go back, reload the page and try again.");
    }
    let allow_http = state.hf.config.base_url.starts_with("http://");
    // No provider chosen from the list: the typed address is the patient's to get right.
    if form.partner.is_empty() || !form.address.trim().is_empty() {
        if let Err(e) = transfer::parse_address(&form.address, allow_http) {
            let outcome = Outcome::Address { typed: form.address.clone(), error: e.to_string() };
            return render(&state, csrf, outcome).await;
        }
    }
    let (db, redirect, partner) = (state.hf.db.clone(), redirect_uri(&state), form.partner.clone());
    let moving = form.mode.as_deref() == Some("move");
    let address = form.address.trim().to_string();
    let begun = web::block(move || {
        let partner =
            if address.is_empty() { partner } else { transfer::connect_partner(&db, &address, &redirect, allow_http)? };
        transfer::begin(&db, &patient, &partner, &redirect, moving)
    });
    match begun.await {
        Ok(Ok(url)) => see_other(&url),
        Ok(Err(e)) => render(&state, csrf, Outcome::Upstream(e.to_string())).await,
        Err(_) => page_error(StatusCode::SERVICE_UNAVAILABLE, "Please try again", "The service is busy."),
    }
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn callback(req: HttpRequest, state: web::Data<AppState>, q: web::Query<Callback>) -> HttpResponse {
    let (csrf, patient) = match signed_in(&req, &state).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (Some(code), Some(st)) = (q.code.clone(), q.state.clone()) else {
        let why = q.error.clone().unwrap_or_else(|| "no answer".into());
        return render(
            &state,
            csrf,
            Outcome::Upstream(format!("The other provider did not agree ({why}). Nothing was copied.")),
        )
        .await;
    };
    let (store, redirect) = (state.hf.store.clone(), redirect_uri(&state));
    let ctx = AccessContext::patient_self(&patient, &format!("Patient/{patient}"));
    match web::block(move || transfer::finish(&store, &ctx, &st, &code, &redirect)).await {
        Ok(Ok(r)) => {
            let entries = |n: usize| if n == 1 { "1 entry".to_string() } else { format!("{n} entries") };
            let msg = format!(
                "Your record arrived: {} copied, {} already here.",
                entries(r.created),
                entries(r.already_present)
            );
            render(&state, csrf, Outcome::Shown(Some(msg))).await
        }
        Ok(Err(e)) => {
            render(&state, csrf, Outcome::Upstream(format!("{e}. Nothing was copied; you can try again."))).await
        }
        Err(_) => page_error(StatusCode::SERVICE_UNAVAILABLE, "Please try again", "The service is busy."),
    }
}
