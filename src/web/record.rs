//! The portal's "Your record file" page: download the whole record as an archive, or import one
//! (from another Healthfolio) into the signed-in patient's record.

use super::oauth::signed_in;
use super::pages::{html, page_error};
use super::AppState;
use crate::access::AccessContext;
use crate::portability::archive::{self, ImportOptions, ImportReport};
use actix_multipart::Multipart;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use futures_util::StreamExt;

/// Largest archive the portal accepts; bigger records move by transfer or by the operator's CLI.
const UPLOAD_LIMIT: usize = 64 * 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/portal/record", web::get().to(page))
        .route("/portal/record/download", web::get().to(download))
        .route("/portal/record/import", web::post().to(import));
}

#[derive(Template)]
#[template(path = "portal_record.html")]
struct RecordPage {
    section: &'static str,
    csrf: String,
    report: Option<ImportReport>,
    error: Option<String>,
}

fn render(status: StatusCode, csrf: String, report: Option<ImportReport>, error: Option<String>) -> HttpResponse {
    html(status, RecordPage { section: "record", csrf, report, error }.render())
}

async fn page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match signed_in(&req, &state).await {
        Ok((csrf, _)) => render(StatusCode::OK, csrf, None, None),
        Err(r) => r,
    }
}

/// The archive, built in memory: one patient's record is small next to the upload limit.
async fn download(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (_, patient) = match signed_in(&req, &state).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let hf = state.hf.clone();
    let account = format!("Patient/{patient}");
    let built = web::block(move || {
        let ctx = AccessContext::patient_self(&patient, &account);
        let mut bytes = Vec::new();
        archive::export(&hf.store, &ctx, &patient, &mut bytes).map(|_| bytes)
    })
    .await;
    match built {
        Ok(Ok(bytes)) => {
            let name = format!("healthfolio-record-{}.tar", chrono::Utc::now().format("%Y-%m-%d"));
            HttpResponse::Ok()
                .content_type("application/x-tar")
                .insert_header((header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .body(bytes)
        }
        _ => page_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Your record could not be prepared",
            "Nothing was changed. Please try again in a moment.",
        ),
    }
}

/// The form's fields: the CSRF token and the archive file.
async fn read_form(mut form: Multipart) -> Result<(String, Vec<u8>), String> {
    let (mut csrf, mut file) = (String::new(), Vec::new());
    while let Some(field) = form.next().await {
        let mut field = field.map_err(|e| format!("the upload could not be read: {e}"))?;
        let name = field.name().unwrap_or_default().to_string();
        let mut buf = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| format!("the upload could not be read: {e}"))?;
            if buf.len() + chunk.len() > UPLOAD_LIMIT {
                return Err(format!("the file is larger than {} MB", UPLOAD_LIMIT / (1024 * 1024)));
            }
            buf.extend_from_slice(&chunk);
        }
        match name.as_str() {
            "csrf" => csrf = String::from_utf8_lossy(&buf).into_owned(),
            "archive" => file = buf,
            _ => {}
        }
    }
    Ok((csrf, file))
}

async fn import(req: HttpRequest, state: web::Data<AppState>, form: Multipart) -> HttpResponse {
    let (csrf, patient) = match signed_in(&req, &state).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (sent_csrf, file) = match read_form(form).await {
        Ok(f) => f,
        Err(e) => return render(StatusCode::BAD_REQUEST, csrf, None, Some(e)),
    };
    if sent_csrf != csrf {
        return page_error(StatusCode::FORBIDDEN, "This form has expired", "Go back to the page and try again.");
    }
    if file.is_empty() {
        return render(StatusCode::BAD_REQUEST, csrf, None, Some("Choose the record file to import.".into()));
    }
    let hf = state.hf.clone();
    let done = web::block(move || {
        let (manifest, lines) = archive::read_archive(file.as_slice())?;
        // Into this patient's own record only: an archive of someone else is refused on its NHS number.
        let ctx = AccessContext::patient_self(&patient, &format!("Patient/{patient}"));
        archive::import(&hf.store, &ctx, &manifest.source, lines, &ImportOptions::default())
    })
    .await;
    match done {
        Ok(Ok(report)) => render(StatusCode::OK, csrf, Some(report), None),
        Ok(Err(e)) => render(StatusCode::UNPROCESSABLE_ENTITY, csrf, None, Some(format!("Nothing was imported: {e}"))),
        Err(_) => render(StatusCode::SERVICE_UNAVAILABLE, csrf, None, Some("The service is busy. Try again.".into())),
    }
}
