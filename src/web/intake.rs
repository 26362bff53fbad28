//! What every request must satisfy before a handler sees it: no NUL in the text it carries as
//! URL encoding (path, query, headers, form bodies). Refused here once, in the answer the path
//! speaks (OperationOutcome, OAuth JSON or a page), so no handler needs to think of it.

use super::pages::{page_error, sentence};
use crate::fhir::bundle::outcome;
use crate::fhir::validate::{encodes_nul, NUL_REFUSED};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage, HttpResponse};
use futures_util::StreamExt;

pub async fn intake(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    // Cookies are percent-decoded by actix, and If-None-Exist is a query: headers count as text.
    let uri = req.uri();
    if encodes_nul(uri.path().as_bytes())
        || uri.query().is_some_and(|q| encodes_nul(q.as_bytes()))
        || req.headers().iter().any(|(_, v)| encodes_nul(v.as_bytes()))
    {
        return Ok(refuse(req, StatusCode::BAD_REQUEST, "invalid", NUL_REFUSED));
    }
    if is_form(&req) {
        let limit = req.app_data::<web::Data<super::AppState>>().map_or(usize::MAX, |s| s.hf.config.body_limit);
        match read_all(&mut req, limit).await {
            Ok(body) if encodes_nul(&body) => return Ok(refuse(req, StatusCode::BAD_REQUEST, "invalid", NUL_REFUSED)),
            Ok(body) => req.set_payload(body.into()),
            Err(Refused(status, code, why)) => return Ok(refuse(req, status, code, &why)),
        }
    }
    next.call(req).await.map(ServiceResponse::map_into_boxed_body)
}

/// URL-encoded form bodies are small (the form extractors allow 16 KiB): read whole, checked,
/// and handed on.
fn is_form(req: &ServiceRequest) -> bool {
    req.content_type().eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

struct Refused(StatusCode, &'static str, String);

async fn read_all(req: &mut ServiceRequest, limit: usize) -> Result<web::Bytes, Refused> {
    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            Refused(StatusCode::BAD_REQUEST, "invalid", format!("the request body could not be read: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(Refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-costly",
                format!("the request body is larger than the limit of {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The refusal in the language of the path: the FHIR API, OAuth's machine endpoints, or a page.
fn refuse(req: ServiceRequest, status: StatusCode, code: &str, message: &str) -> ServiceResponse<BoxBody> {
    let path = req.path();
    let response = if path.starts_with("/fhir") {
        HttpResponse::build(status).content_type(super::FHIR_JSON).body(outcome("error", code, message).to_string())
    } else if ["/oauth/token", "/oauth/introspect", "/oauth/revoke", "/oauth/register"].contains(&path) {
        HttpResponse::build(status)
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({"error": "invalid_request", "error_description": message}))
    } else {
        page_error(status, "This request could not be read", &sentence(message))
    };
    req.into_response(response)
}
