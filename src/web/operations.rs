//! FHIR operations on a record: `$everything`, `$summary`, `$phr-export`, `$phr-import`.

use super::error::ApiError;
use super::extract::{json, nul_free, read_body, Caller};
use super::AppState;
use crate::access::Reach;
use crate::fhir::bundle::searchset_text;
use crate::fhir::FhirError;
use crate::portability::archive::{self, ImportOptions, PhrFormat};
use crate::portability::{federated, summary, EverythingRequest};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/fhir/$phr-import", web::post().to(phr_import))
        .route("/fhir/$process-message", web::post().to(process_message))
        .route("/fhir/$import", web::post().to(bulk_import))
        .route("/fhir/Patient/{id}/$close", web::post().to(close_record))
        .route("/fhir/Patient/{id}/$invite", web::post().to(invite))
        .route("/fhir/Bundle/$phr-export", web::get().to(phr_export_by_param));
}

fn params(req: &HttpRequest) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(req.query_string())
        .map_err(|_| FhirError::invalid("the query string is not valid URL encoding").into())
}

fn json_response(v: &Value) -> HttpResponse {
    HttpResponse::Ok().content_type(super::FHIR_JSON).body(v.to_string())
}

/// `Patient/{id}/${op}`; called by the instance route for names starting with `$`.
pub async fn patient_operation(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    caller: Caller,
    id: String,
    op: &str,
) -> Result<HttpResponse, ApiError> {
    let q = params(req)?;
    let store = state.hf.store.clone();
    match op {
        "$everything" => {
            let er = EverythingRequest::from_params(&id, &q)?;
            let path = format!("Patient/{id}/$everything");
            let base = store.base.clone();
            let (keys, sources) = (state.hf.keys.clone(), state.sources.clone());
            let r = web::block(move || federated::everything(&store, &keys, &sources, &caller.0, &er)).await??;
            Ok(HttpResponse::Ok().content_type(super::FHIR_JSON).body(searchset_text(&base, &path, &r)))
        }
        "$summary" => Ok(json_response(&web::block(move || summary(&store, &caller.0, &id)).await??)),
        "$phr-export" => phr_export(state, caller, id, &q).await,
        other => Err(FhirError::NotFound(format!("operation {other} on Patient")).into()),
    }
}

async fn phr_export_by_param(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let q = params(&req)?;
    let patient = q
        .iter()
        .find(|(k, _)| k == "patient")
        .map(|(_, v)| v.trim_start_matches("Patient/").to_string())
        .or_else(|| match &caller.0.reach {
            Reach::Patient(p) => Some(p.clone()),
            _ => None,
        })
        .ok_or_else(|| FhirError::invalid("Bundle/$phr-export needs a patient parameter"))?;
    phr_export(&state, caller, patient, &q).await
}

/// The PHR export: the record as one collection Bundle (default) or NDJSON.
async fn phr_export(
    state: &web::Data<AppState>,
    caller: Caller,
    patient: String,
    q: &[(String, String)],
) -> Result<HttpResponse, ApiError> {
    let phr = match q.iter().find(|(k, _)| k == "outputFormat").map(|(_, v)| v.as_str()).unwrap_or("bundle") {
        "bundle" => PhrFormat::Bundle,
        "ndjson" | "application/fhir+ndjson" => PhrFormat::Ndjson,
        other => return Err(FhirError::invalid(format!("outputFormat={other} is not one of bundle, ndjson")).into()),
    };
    let req = EverythingRequest::from_params(&patient, q)?;
    let store = state.hf.store.clone();
    let body = web::block(move || {
        let mut body = Vec::new();
        archive::write_phr_export(&store, &caller.0, &req, phr, &mut body).map(|()| body)
    })
    .await??;
    let content_type = if phr == PhrFormat::Bundle { super::FHIR_JSON } else { "application/fhir+ndjson" };
    Ok(HttpResponse::Ok().content_type(content_type).body(body))
}

/// `POST /fhir/$phr-import?strategy=merge|append` with a collection Bundle (or NDJSON).
async fn phr_import(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let q = params(&req)?;
    let strategy = q.iter().find(|(k, _)| k == "strategy").map(|(_, v)| v.as_str()).unwrap_or("merge");
    let append = match strategy {
        "merge" => false,
        "append" => true,
        other => return Err(FhirError::invalid(format!("strategy={other} is not one of merge, append")).into()),
    };
    let named = q.iter().find(|(k, _)| k == "patient").map(|(_, v)| v.trim_start_matches("Patient/").to_string());
    let body = read_body(payload, state.hf.config.body_limit).await?;
    let (source, lines) = import_lines(&body)?;
    let store = state.hf.store.clone();
    let opts = ImportOptions { into: named, append };
    let report = web::block(move || archive::import(&store, &caller.0, &source, lines, &opts)).await??;
    let outcome = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational",
        "diagnostics": format!("Patient/{}: {} created, {} already present, {} consent/audit entries kept at the source", report.patient, report.created, report.already_present, report.not_imported)}]});
    Ok(HttpResponse::build(StatusCode::OK).content_type(super::FHIR_JSON).body(outcome.to_string()))
}

/// A collection Bundle (source from `meta.source`) or NDJSON lines (source unknown).
fn import_lines(body: &[u8]) -> Result<(String, Vec<Value>), ApiError> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        nul_free(&v)?;
        if v["resourceType"] != "Bundle" {
            return Err(FhirError::invalid("$phr-import takes a Bundle or NDJSON").into());
        }
        let source = v["meta"]["source"].as_str().unwrap_or("urn:unknown-source").to_string();
        let entries = v["entry"].as_array().cloned().unwrap_or_default();
        if entries.len() > archive::MAX_RESOURCES {
            return Err(
                FhirError::TooLarge(format!("a record may hold at most {} resources", archive::MAX_RESOURCES)).into()
            );
        }
        return Ok((source, entries.into_iter().filter_map(|e| e.get("resource").cloned()).collect()));
    }
    Ok(("urn:unknown-source".into(), archive::parse_lines(body)?))
}

/// `POST /fhir/$process-message`: an event from a provider system, answered with a response message.
async fn process_message(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ct = req.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !(ct.starts_with("application/fhir+json") || ct.starts_with("application/json")) {
        return Err(ApiError::UnsupportedMedia("send the message as application/fhir+json".into()));
    }
    let body = read_body(payload, state.hf.config.body_limit).await?;
    let bundle = json(&body)?;
    let writer = state.messages.clone();
    let answer = writer.process(caller.0, bundle).await?;
    Ok(json_response(&answer))
}

/// `POST /fhir/$import`: bulk extracts from a configured source into its persisted copy. Either
/// Parameters naming files at the source (each fetched and ingested on its own), or one uploaded
/// NDJSON file with `?source=NAME`. Operators only: a feed writes many patients' records.
async fn bulk_import(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    if caller.0.reach != Reach::All {
        return Err(FhirError::forbidden("$import is for the service operator's token").into());
    }
    let ct = req.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let ndjson = ct.contains("ndjson");
    if !(ndjson || ct.starts_with("application/fhir+json") || ct.starts_with("application/json")) {
        return Err(ApiError::UnsupportedMedia(
            "send Parameters as application/fhir+json, or a file as application/fhir+ndjson".into(),
        ));
    }
    let source = params(&req)?.into_iter().find(|(k, _)| k == "source").map(|(_, v)| v);
    let body = read_body(payload, state.hf.config.body_limit).await?;
    let p = if ndjson { Value::Null } else { json(&body)? };
    let hf = state.hf.clone();
    let client = state.sources.clone();
    let outcomes = web::block(move || -> Result<_, FhirError> {
        use crate::federation::ingest::{self, Feed, FileOutcome};
        if !ndjson {
            return ingest::import(&hf.db, &hf.keys, &client, &p);
        }
        let name = source.ok_or_else(|| FhirError::invalid("name the source: $import?source=NAME"))?;
        let s = crate::federation::sources::get(&mut hf.db.conn()?, &hf.keys, &name)
            .map_err(|e| FhirError::invalid(e.to_string()))?
            .ok_or_else(|| FhirError::unprocessable(format!("{name} is not a configured source")))?;
        let text = String::from_utf8(body.to_vec()).map_err(|_| FhirError::invalid("the file is not UTF-8"))?;
        let result = ingest::ingest_file(&hf.db, &Feed { name: &s.name, fhir_base: &s.fhir_base }, &text);
        Ok(vec![FileOutcome { url: "upload".into(), result }])
    })
    .await??;
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    let issues: Vec<Value> = outcomes
        .iter()
        .map(|o| match &o.result {
            Ok(n) => json!({"severity": "information", "code": "informational", "diagnostics": format!("{}: {n} resources written", o.url)}),
            Err(e) => json!({"severity": "error", "code": "processing", "diagnostics": format!("{}: {e}", o.url)}),
        })
        .collect();
    let status = if failed == outcomes.len() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    Ok(HttpResponse::build(status)
        .content_type(super::FHIR_JSON)
        .body(json!({"resourceType": "OperationOutcome", "issue": issues}).to_string()))
}

/// `POST /fhir/Patient/{id}/$close` (Parameters `replacedBy`): the record moved; it keeps a pointer
/// to its new home and takes no new writes.
async fn close_record(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, state.hf.config.body_limit).await?;
    let params = json(&body)?;
    let replaced_by = params["parameter"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "replacedBy"))
        .and_then(|p| p["valueUrl"].as_str().or(p["valueUri"].as_str()).or(p["valueString"].as_str()))
        .map(str::to_string)
        .ok_or_else(|| FhirError::invalid("$close needs a Parameters body with replacedBy (the record's new URL)"))?;
    let (store, id) = (state.hf.store.clone(), path.into_inner());
    let stored = web::block(move || crate::fhir::store::close_record(&store, &caller.0, &id, &replaced_by)).await??;
    Ok(HttpResponse::Ok().content_type(super::FHIR_JSON).body(stored.body))
}

/// `POST /fhir/Patient/{id}/$invite`: a one-time link (seven days) with which the patient sets up
/// their own portal login; for a provider whose grant lets it change the record, or an operator.
async fn invite(state: web::Data<AppState>, caller: Caller, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let patient = path.into_inner();
    let db = state.hf.db.clone();
    let code =
        web::block(move || db.transaction(|c| crate::auth::invitations::invite_by(c, &caller.0, &patient))).await??;
    let link = format!("{}/portal/invite/{code}", state.hf.config.base_url);
    let expires = crate::time::format_instant(crate::time::now_micros() + crate::auth::invitations::LIFETIME_MICROS);
    Ok(json_response(&json!({"resourceType": "Parameters", "parameter": [
        {"name": "link", "valueUrl": link}, {"name": "expires", "valueInstant": expires}]})))
}
