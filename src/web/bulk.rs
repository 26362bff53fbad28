//! Bulk Data 2.0 routes: kick-off, status polling, cancel, files.

use super::error::ApiError;
use super::extract::Caller;
use super::AppState;
use crate::fhir::FhirError;
use crate::portability::bulk::{self, Level, Status};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/fhir/$export", web::get().to(system_export))
        .route("/fhir/Patient/$export", web::get().to(patient_export))
        .route("/fhir/Group/{id}/$export", web::get().to(group_export))
        .route("/bulk/status/{id}", web::get().to(poll))
        .route("/bulk/status/{id}", web::delete().to(cancel))
        .route("/bulk/files/{id}/{name}", web::get().to(file));
}

async fn kick_off(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    level: Level,
    group: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let q: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|_| FhirError::invalid("the query string is not valid URL encoding"))?;
    let mut types: Option<Vec<String>> = None;
    let mut since = None;
    for (k, v) in &q {
        match k.as_str() {
            // A repeated parameter means the same as its comma-joined form (Bulk Data 2.0).
            "_type" => types.get_or_insert_with(Vec::new).extend(v.split(',').map(|t| t.trim().to_string())),
            "_since" => since = Some(v.clone()),
            "_outputFormat" if matches!(v.as_str(), "application/fhir+ndjson" | "application/ndjson" | "ndjson") => {}
            "_outputFormat" => {
                return Err(FhirError::invalid(format!(
                    "_outputFormat {v} is not supported: use application/fhir+ndjson"
                ))
                .into())
            }
            other => {
                return Err(FhirError::invalid(format!("bulk export does not support the parameter {other}")).into())
            }
        }
    }
    let request = format!("{}{}", state.hf.config.base_url, req.uri());
    let db = state.hf.db.clone();
    let id =
        web::block(move || bulk::kick_off(&db, &caller.0, level, &request, types, since, group.as_deref())).await??;
    Ok(HttpResponse::Accepted()
        .insert_header((header::CONTENT_LOCATION, format!("{}/bulk/status/{id}", state.hf.config.base_url)))
        .finish())
}

async fn system_export(req: HttpRequest, state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    kick_off(req, state, caller, Level::System, None).await
}

async fn patient_export(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    kick_off(req, state, caller, Level::Patient, None).await
}

async fn group_export(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    kick_off(req, state, caller, Level::Group, Some(path.into_inner())).await
}

async fn poll(state: web::Data<AppState>, caller: Caller, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let db = state.hf.db.clone();
    let id = path.into_inner();
    let job = web::block(move || bulk::get(&db, &caller.0, &id)).await??;
    Ok(match bulk::status(&job) {
        Status::InProgress(p) => HttpResponse::Accepted()
            .insert_header(("X-Progress", p.chars().take(90).collect::<String>()))
            .insert_header((header::RETRY_AFTER, "1"))
            .finish(),
        Status::Completed(manifest) => HttpResponse::Ok()
            .insert_header((
                header::EXPIRES,
                crate::time::format_http_date(crate::time::now_micros() + 24 * 3600 * 1_000_000),
            ))
            .json(manifest),
        Status::Failed(e) => return Err(ApiError::Internal(format!("export job failed: {e}"))),
    })
}

async fn cancel(state: web::Data<AppState>, caller: Caller, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let hf = state.hf.clone();
    let id = path.into_inner();
    web::block(move || bulk::cancel(&hf.db, &caller.0, &id, &hf.bulk_dir())).await??;
    Ok(HttpResponse::Accepted().finish())
}

async fn file(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, name) = path.into_inner();
    let hf = state.hf.clone();
    let p = web::block(move || bulk::file(&hf.db, &caller.0, &hf.bulk_dir(), &id, &name)).await??;
    let f = actix_files::NamedFile::open(p).map_err(|_| FhirError::NotFound("export file".into()))?;
    Ok(f.set_content_type("application/fhir+ndjson".parse().map_err(|_| ApiError::Internal("mime".into()))?)
        .into_response(&req))
}
